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

	seed uint64
	// slots is the requests holding a slot (low 32 bits) and the
	// epoch they took it in (high 32 bits): parking a worker's requests
	// starts a new epoch, so that each slot, when it goes back, knows
	// whether it still counts (see park).
	slots atomic.Uint64
	// streams: long-lived responses, and parked requests, that hold no
	// slot but are still served.
	streams  atomic.Int64
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

	// server is the process that serves, whose CPU the limit and the
	// idle watch read; nil where the pid is unknown. idle is the
	// balancer's watch, under Balancer.parkMu.
	server    atomic.Pointer[serverProc]
	idle      idleWatch
	parked    atomic.Uint64 // requests parked so far
	parkedNow atomic.Int64  // parked requests still open (among streams)

	// token names the endpoint in an affinity cookie (balance cookie).
	token string

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
	if pid > 0 {
		e.SetServerPID(pid)
	}
	if cfg.AdaptiveLimit {
		var cpu func() (time.Duration, bool)
		if pid > 0 {
			cpu = e.serverCPU
		}
		e.adaptive = limit.NewAdaptive(e.limit.Store, cpu)
	} else {
		e.limit.Store(int64(cfg.MaxInflight))
	}
	if b.cookie != nil {
		e.token = b.cookie.token(worker, pid, network, address)
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

// serverProc is the process that serves an endpoint's requests, and
// how its CPU is read.
type serverProc struct {
	pid int
	// noPark: the process shares its listening socket with others (a
	// prefork server's master and its children), whose CPU is not read:
	// its idle requests are never parked.
	noPark bool
	// cpu reads the CPU time the process used; busy how long its main
	// thread wanted a CPU (see procfs.Busy); running whether it is on a
	// CPU or waiting for one now (procfs.Runnable).
	cpu, busy func() (time.Duration, bool)
	running   func() (bool, bool)
}

// SetServerPID names the process that serves the endpoint's requests,
// whose CPU its limit (max_inflight auto) and the idle watch (ParkIdle)
// read: the worker process itself, unless that is a launcher (npm
// start, a shell) and the server its child.
func (e *Endpoint) SetServerPID(pid int) {
	e.server.Store(&serverProc{pid: pid, cpu: procfs.CPUTime(pid), busy: procfs.Busy(pid), running: procfs.Runnable(pid)})
}

// SharedServer says that several processes hold the endpoint's listening
// socket (a prefork server): no one process's CPU says whether its
// requests are idle, so none is parked.
func (e *Endpoint) SharedServer() {
	if s := e.server.Load(); s != nil {
		c := *s
		c.noPark = true
		e.server.Store(&c)
	}
}

// ServerPID is the pid SetServerPID named, 0 if none.
func (e *Endpoint) ServerPID() int {
	if s := e.server.Load(); s != nil {
		return s.pid
	}
	return 0
}

// serverCPU reads the serving process's CPU time.
func (e *Endpoint) serverCPU() (time.Duration, bool) {
	if s := e.server.Load(); s != nil {
		return s.cpu()
	}
	return 0, false
}

// Inflight is the number of requests the endpoint is serving now, not
// counting open streams.
func (e *Endpoint) Inflight() int64 { return slotCount(e.slots.Load()) }

// Streams is the number of long-lived responses (WebSockets, server-sent
// events, gRPC calls whose answer has passed its first message) and
// parked requests (long polls, see Config.ParkIdle) the
// endpoint holds open now. They hold no slot, but the worker serves
// them: a drain waits for them.
func (e *Endpoint) Streams() int64 { return e.streams.Load() }

// Busy reports whether the endpoint holds any request or stream.
func (e *Endpoint) Busy() bool { return e.Inflight() > 0 || e.streams.Load() > 0 }

// Parked is the number of requests parked so far: held while the
// worker was idle at its limit, they stopped counting toward it (see
// Config.ParkIdle).
func (e *Endpoint) Parked() uint64 { return e.parked.Load() }

// ParkedNow is the number of parked requests still open: they are
// counted among Streams, and a stop waits for them as for requests in
// flight.
func (e *Endpoint) ParkedNow() int64 { return e.parkedNow.Load() }

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
	return l == 0 || e.Inflight() < l
}

// slotCount is the number of slots held in a value of Endpoint.slots,
// slotEpoch the epoch they were taken in.
func slotCount(v uint64) int64  { return int64(uint32(v)) }
func slotEpoch(v uint64) uint32 { return uint32(v >> 32) }

// tryAcquire takes one in-flight slot if the limit allows, and returns
// the epoch it was taken in, which giving it back needs.
func (e *Endpoint) tryAcquire() (epoch uint32, ok bool) {
	for {
		v := e.slots.Load()
		if l := e.capacity(); l != 0 && slotCount(v) >= l {
			return 0, false
		}
		if e.slots.CompareAndSwap(v, v+1) {
			return slotEpoch(v), true
		}
	}
}

// unslot gives back a slot taken in epoch. It reports false if the slot
// had been parked since: it no longer counts as a slot, but as a stream
// (see park), and the caller settles that.
func (e *Endpoint) unslot(epoch uint32) (held bool) {
	for {
		v := e.slots.Load()
		if slotEpoch(v) != epoch {
			return false
		}
		if e.slots.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// park moves every request holding a slot now, if the slots are still
// at v, from the slots to the streams: the worker is idle while it holds
// them (long polls, "wait for changes" requests), so they stop keeping
// other requests from it. Their slots go back as streams when they end.
// It reports whether it moved them.
func (e *Endpoint) park(v uint64) bool {
	n := slotCount(v)
	if n == 0 {
		return false
	}
	// Counted as streams first, so that a drain never sees them in
	// neither place.
	e.streams.Add(n)
	if !e.slots.CompareAndSwap(v, uint64(slotEpoch(v)+1)<<32) {
		e.streams.Add(-n)
		return false
	}
	return true
}

// cost is p2c_ewma's load measure: latency × (in flight + 1).
func (e *Endpoint) cost() float64 {
	return math.Float64frombits(e.ewma.Load()) * float64(e.Inflight()+1)
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
