package balancer

import (
	"math"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/limit"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/transport"
	"github.com/caddy-workerpool/caddy-workerpool/internal/procfs"
)

// Endpoint is one place a request can be sent: a worker process, or an
// address found by discovery. It carries its load (requests in flight,
// open streams, latency), its in-flight limit, its circuit breaker and
// its own keep-alive connections. Create it with Balancer.NewEndpoint.
//
// Whether an endpoint is in rotation is not its own business: whoever
// owns its lifecycle (the pool) calls Balancer.Add and Remove.
type Endpoint struct {
	// Worker is the worker slot id (0 when not spawned by us).
	Worker int
	// PID of the worker process (0 when unknown).
	PID int
	// Network is "tcp" or "unix"; Address is host:port or a socket path.
	Network, Address string

	seed     uint64
	inflight atomic.Int64 // requests holding a slot
	streams  atomic.Int64 // long-lived responses that gave their slot back
	limit    atomic.Int64 // 0 = unlimited
	served   atomic.Uint64
	adaptive *limit.Adaptive

	ewmaMu   sync.Mutex
	ewma     atomic.Uint64 // float64 bits: peak-EWMA latency in seconds
	ewmaLast time.Time
	decay    float64 // seconds

	breaker *gobreaker.TwoStepCircuitBreaker[struct{}]
	// halfOpen mirrors the breaker's half-open state for the lock-free
	// request path, written only by the breaker's state-change callback;
	// probeMax is how many requests a half-open breaker lets through.
	halfOpen atomic.Bool
	probeMax int64

	passiveFails atomic.Int32

	transport *transport.Transport
}

// NewEndpoint prepares an endpoint with the balancer's settings. It is
// not in rotation until Add.
func (b *Balancer) NewEndpoint(worker, pid int, network, address string) *Endpoint {
	cfg := &b.cfg
	e := &Endpoint{
		Worker: worker, PID: pid, Network: network, Address: address,
		seed:     endpointSeed(worker, address),
		decay:    cfg.Policy.Decay.Seconds(),
		probeMax: int64(cfg.Breaker.HalfOpenRequests),
	}
	if e.decay <= 0 {
		e.decay = DefaultDecay.Seconds()
	}
	if cfg.AdaptiveLimit {
		var cpu func() (time.Duration, bool)
		if pid > 0 {
			cpu = procfs.CPUTime(pid)
		}
		e.adaptive = limit.NewAdaptive(e.limit.Store, cpu)
	} else {
		e.limit.Store(int64(cfg.MaxInflight))
	}
	e.breaker = b.newBreaker(e)
	e.transport = transport.New(transport.Config{
		Network: network, Address: address,
		IdleTimeout: cfg.IdleConnTimeout, MaxIdle: cfg.MaxIdleConns,
		TrustForwarded: cfg.TrustForwarded, Standard: cfg.StandardProxy,
		Protocol: cfg.UpstreamProtocol,
	})
	return e
}

// Inflight is the number of requests the endpoint is serving now, not
// counting open streams.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Streams is the number of long-lived responses (WebSockets, server-sent
// events, gRPC calls whose answer has passed its first message) the
// endpoint holds open now. They hold no slot, but the worker serves
// them: a drain waits for them.
func (e *Endpoint) Streams() int64 { return e.streams.Load() }

// Busy reports whether the endpoint holds any request or stream.
func (e *Endpoint) Busy() bool { return e.inflight.Load() > 0 || e.streams.Load() > 0 }

// Served is the number of requests the endpoint has finished.
func (e *Endpoint) Served() uint64 { return e.served.Load() }

// Limit is the endpoint's in-flight limit now (0 = unlimited); with an
// adaptive limit it moves.
func (e *Endpoint) Limit() int64 { return e.limit.Load() }

// BreakerState is "closed", "half-open" or "open". Reading it may move
// an open breaker whose open_for has passed to half-open.
func (e *Endpoint) BreakerState() string { return e.breaker.State().String() }

// Latency is the endpoint's peak-EWMA latency.
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.ewma.Load()) * float64(time.Second))
}

// Close drops the endpoint's idle connections. Requests in flight finish.
func (e *Endpoint) Close() { e.transport.CloseIdle() }

// capacity is the endpoint's limit of requests in flight now (0 =
// unlimited): its in-flight limit, and while its breaker is half-open
// no more than the probes the breaker lets through, so that requests
// beyond them wait for the verdict instead of being refused.
func (e *Endpoint) capacity() int64 {
	l := e.limit.Load()
	if e.halfOpen.Load() && (l == 0 || e.probeMax < l) {
		return e.probeMax
	}
	return l
}

// available reports whether the endpoint may take one more request now.
func (e *Endpoint) available() bool {
	l := e.capacity()
	return l == 0 || e.inflight.Load() < l
}

// tryAcquire takes one in-flight slot if the limit allows.
func (e *Endpoint) tryAcquire() bool {
	for {
		n := e.inflight.Load()
		if l := e.capacity(); l != 0 && n >= l {
			return false
		}
		if e.inflight.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// cost is p2c_ewma's load measure: latency × (in flight + 1).
func (e *Endpoint) cost() float64 {
	return math.Float64frombits(e.ewma.Load()) * float64(e.inflight.Load()+1)
}

// observe folds a completed request's latency into the peak-EWMA: a
// sample above the average replaces it at once (peak), one below it is
// averaged in with a weight that decays over time.
func (e *Endpoint) observe(rtt time.Duration, now time.Time) {
	s := rtt.Seconds()
	e.ewmaMu.Lock()
	cur := math.Float64frombits(e.ewma.Load())
	if s > cur || e.ewmaLast.IsZero() {
		cur = s
	} else {
		w := math.Exp(-now.Sub(e.ewmaLast).Seconds() / e.decay)
		cur = cur*w + s*(1-w)
	}
	e.ewmaLast = now
	e.ewma.Store(math.Float64bits(cur))
	e.ewmaMu.Unlock()
}

// workerName is how logs and breakers name an endpoint.
func (e *Endpoint) workerName() string {
	if e.Worker > 0 {
		return "worker " + strconv.Itoa(e.Worker)
	}
	return e.Address
}

// CloseSockets ends the endpoint's open WebSockets as a server that goes
// away does: each client gets a close frame with status 1001, then its
// connection closes. The pool calls it when a drain or a stop reaches
// its timeout with sockets still open. It reports how many it ended.
func (e *Endpoint) CloseSockets() int { return e.transport.CloseSockets() }
