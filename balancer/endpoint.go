package balancer

import (
	"bufio"
	"context"
	"io"
	"log"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// Endpoint is one place a request can be sent: a worker process, or an
// address found by discovery. It carries its load (requests in flight,
// latency), its in-flight limit, its circuit breaker and its own
// keep-alive connections. Create it with Balancer.NewEndpoint.
type Endpoint struct {
	// Worker is the worker slot id (0 when not spawned by us).
	Worker int
	// PID of the worker process (0 when unknown).
	PID int
	// Network is "tcp" or "unix"; Address is host:port or a socket path.
	Network, Address string

	seed     uint64
	inflight atomic.Int64
	limit    atomic.Int64 // 0 = unlimited
	served   atomic.Uint64
	adaptive *adaptiveLimit

	ewmaMu   sync.Mutex
	ewma     atomic.Uint64 // float64 bits: peak-EWMA latency in seconds
	ewmaLast time.Time
	decay    float64 // seconds

	breaker   *gobreaker.TwoStepCircuitBreaker[struct{}]
	open      atomic.Bool  // breaker open, mirrored for the lock-free path
	openUntil atomic.Int64 // unix nanoseconds when an open breaker may probe

	passiveFails atomic.Int32

	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

// NewEndpoint prepares an endpoint with the balancer's settings. It is
// not in rotation until Add.
func (b *Balancer) NewEndpoint(worker, pid int, network, address string) *Endpoint {
	cfg := &b.cfg
	e := &Endpoint{
		Worker: worker, PID: pid, Network: network, Address: address,
		seed:  endpointSeed(worker, address),
		decay: cfg.Policy.Decay.Seconds(),
	}
	if e.decay <= 0 {
		e.decay = DefaultDecay.Seconds()
	}
	if cfg.AdaptiveLimit {
		var cpu func() (time.Duration, bool)
		if pid > 0 {
			cpu = processCPUTime(pid)
		}
		e.adaptive = newAdaptiveLimit(e.limit.Store, cpu)
	} else {
		e.limit.Store(int64(cfg.MaxInflight))
	}
	e.breaker = b.newBreaker(e)

	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	e.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		MaxIdleConns:        cfg.MaxIdleConns,
		MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout:     cfg.IdleConnTimeout,
		DisableCompression:  true,
		// Workers speak HTTP/1.1 on loopback; h2c would gain nothing.
		ForceAttemptHTTP2: false,
	}
	urlHost := address
	if network == "unix" {
		urlHost = "localhost"
	}
	trust := cfg.TrustForwarded
	e.proxy = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = urlHost
			// Pass the client's Host through, as Caddy's reverse_proxy does.
			pr.Out.Host = pr.In.Host
			if trust != nil && trust(pr.In) {
				// ReverseProxy dropped these from Out; keep what a trusted
				// proxy before us said, and append to it.
				if v := pr.In.Header.Values("X-Forwarded-For"); len(v) > 0 {
					pr.Out.Header["X-Forwarded-For"] = v
				}
				pr.SetXForwarded()
				for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
					if v := pr.In.Header.Get(h); v != "" {
						pr.Out.Header.Set(h, v)
					}
				}
				return
			}
			pr.SetXForwarded()
		},
		Transport:    e.transport,
		BufferPool:   bufferPool{},
		ErrorLog:     log.New(io.Discard, "", 0),
		ErrorHandler: recordError,
	}
	return e
}

// Inflight is the number of requests the endpoint is serving now.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Served is the number of requests the endpoint has finished.
func (e *Endpoint) Served() uint64 { return e.served.Load() }

// Limit is the endpoint's in-flight limit now (0 = unlimited); with an
// adaptive limit it moves.
func (e *Endpoint) Limit() int64 { return e.limit.Load() }

// BreakerState is "closed", "half-open" or "open".
func (e *Endpoint) BreakerState() string { return e.breaker.State().String() }

// Latency is the endpoint's peak-EWMA latency.
func (e *Endpoint) Latency() time.Duration {
	return time.Duration(math.Float64frombits(e.ewma.Load()) * float64(time.Second))
}

// Close drops the endpoint's idle connections. Requests in flight finish.
func (e *Endpoint) Close() { e.transport.CloseIdleConnections() }

// available reports whether the endpoint may take one more request now.
// An open breaker whose open_for has passed counts as available: the
// breaker itself decides, in Allow, whether a probe may go.
func (e *Endpoint) available() bool {
	if e.open.Load() && time.Now().UnixNano() < e.openUntil.Load() {
		return false
	}
	l := e.limit.Load()
	return l == 0 || e.inflight.Load() < l
}

// tryAcquire takes one in-flight slot if the limit allows.
func (e *Endpoint) tryAcquire() bool {
	for {
		n := e.inflight.Load()
		if l := e.limit.Load(); l != 0 && n >= l {
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

// attemptWriter is the response writer of one proxy attempt: it learns
// the status the worker answered with, and takes a transport error from
// ReverseProxy instead of an error response, so the balancer can decide
// between a retry and a 502.
//
// A long-lived response — a WebSocket (or other) upgrade, a stream of
// server-sent events — gives its in-flight slot back as soon as it
// starts: it would otherwise hold the worker's only slot for as long as
// the client stays, though the worker serves other requests meanwhile.
type attemptWriter struct {
	http.ResponseWriter
	status int
	err    error

	bal      *Balancer
	ep       *Endpoint
	done     func(error) // the breaker's, called once
	released bool        // the slot went back early
	timeout  *time.Timer // request_timeout, until the response starts
}

// start resets w for an attempt on e.
func (w *attemptWriter) start(rw http.ResponseWriter, b *Balancer, e *Endpoint, done func(error)) {
	*w = attemptWriter{ResponseWriter: rw, bal: b, ep: e, done: done}
}

// answered is called when the worker's response starts: the request
// timeout bounds only the wait for it.
func (w *attemptWriter) answered() {
	if w.timeout != nil {
		w.timeout.Stop()
		w.timeout = nil
	}
}

func (w *attemptWriter) WriteHeader(code int) {
	w.answered()
	if code >= 200 {
		w.status = code
		if strings.HasPrefix(w.Header().Get("Content-Type"), "text/event-stream") {
			w.releaseEarly()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *attemptWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.answered()
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Hijack is how ReverseProxy takes over the connection of a switched
// protocol (101); the slot goes back then.
func (w *attemptWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.answered()
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.status = http.StatusSwitchingProtocols
		w.releaseEarly()
	}
	return conn, brw, err
}

// releaseEarly gives the slot back, and tells the breaker how the
// request went as far as the worker is concerned (it answered), so a
// long stream taken as a half-open probe does not hold the breaker.
func (w *attemptWriter) releaseEarly() {
	if w.released {
		return
	}
	w.released = true
	w.finish(w.bal.statusVerdict(w.status))
	w.bal.release(w.ep)
}

// finish reports the attempt's verdict to the breaker, once.
func (w *attemptWriter) finish(verdict error) {
	if w.done != nil {
		w.done(verdict)
		w.done = nil
	}
}

// Unwrap lets http.ResponseController reach the real writer, for
// flushing streamed responses.
func (w *attemptWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// recordError is every endpoint's ReverseProxy.ErrorHandler. ReverseProxy
// calls it only before anything was written to the client.
func recordError(w http.ResponseWriter, _ *http.Request, err error) {
	if aw, ok := w.(*attemptWriter); ok {
		// After a protocol switch the connection is the client's and the
		// worker's; a failure to write the 101 is not the worker's fault.
		if !aw.released {
			aw.err = err
		}
		return
	}
	problem.Write(w, problem.Details{Status: http.StatusBadGateway, Detail: "the worker did not answer"})
}

// workerName is how logs and breakers name an endpoint.
func (e *Endpoint) workerName() string {
	if e.Worker > 0 {
		return "worker " + strconv.Itoa(e.Worker)
	}
	return e.Address
}

// bufferPool recycles the copy buffers of ReverseProxy. It stores array
// pointers, so neither Get nor Put allocates.
type bufferPool struct{}

const bufSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([bufSize]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[bufSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) >= bufSize {
		buffers.Put((*[bufSize]byte)(b[:bufSize]))
	}
}
