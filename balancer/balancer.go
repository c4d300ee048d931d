// Package balancer owns the live set of endpoints a pool serves from,
// their load, the policy that picks one per request, and the request
// path that composes the units below it:
//
//   - internal/transport sends one request to one address and copies the
//     answer back, reporting failures as its own values;
//   - internal/limit holds the limit algorithms (max_inflight auto);
//   - internal/cost learns what each route costs;
//   - internal/queue holds the requests that wait for a slot, given a
//     function that tries to take one;
//   - internal/retry decides whether to send a request again.
//
// The Balancer picks an endpoint (a Policy over the endpoints' load),
// waits for a slot in the queue when none is free, attempts the
// request, and hands the attempt's one outcome to the breaker, passive
// health, the latency average, the limit and the cost table. Nothing
// below imports this package.
package balancer

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/cost"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/queue"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/retry"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/transport"
	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// DefaultIdleConnTimeout closes idle upstream connections before Node's
// default keepAliveTimeout (5 s) would, so a request is never written to
// a socket the worker is closing at that moment — a classic source of
// stray 502s behind proxies.
const DefaultIdleConnTimeout = transport.DefaultIdleTimeout

// Queue defaults (see Config.QueueSize).
const (
	DefaultQueueSize    = queue.DefaultQueueSize
	DefaultQueueTimeout = queue.DefaultQueueTimeout
)

// DefaultCostKeys is how many routes' costs are kept by default.
const DefaultCostKeys = cost.DefaultKeys

// Upstream protocols (Config.UpstreamProtocol).
const (
	UpstreamHTTP1 = transport.ProtocolHTTP1
	UpstreamH2C   = transport.ProtocolH2C
	UpstreamAuto  = transport.ProtocolAuto
)

// Schedules: the order in which waiting requests get a free endpoint.
const (
	// ScheduleFIFO serves waiting requests in their order of arrival.
	ScheduleFIFO = "fifo"
	// ScheduleCost serves the cheapest expected request first, with
	// aging, and keeps a worker for cheap requests while expensive ones
	// can wait.
	ScheduleCost = "cost"
)

// Retry defaults.
const (
	// DefaultRetries is how many times a failed attempt is sent to
	// another endpoint when Config.Retries is nil.
	DefaultRetries = retry.DefaultRetries
	// MaxRetries bounds Config.Retries.
	MaxRetries = retry.MaxRetries
	// DefaultRetryBodyLimit is the largest request body kept in memory so
	// that a request can be sent again.
	DefaultRetryBodyLimit = retry.DefaultRetryBodyLimit
)

// DefaultParkIdle is Config.ParkIdle's default: long against the
// pauses of a worker that computes (a hand-off between two requests
// takes well under a millisecond), short against a long poll's seconds.
const DefaultParkIdle = 50 * time.Millisecond

// parkBusyShare is the most of the watched time a worker may want a CPU
// and still be idle: timers and the odd event, not a request's work.
const parkBusyShare = 0.1

// DefaultPassiveFails is how many transport failures in a row take an
// endpoint out of rotation until its health check passes again.
const DefaultPassiveFails = 3

// Config sets up a balancer. Zero fields take the documented defaults.
type Config struct {
	// Policy picks an endpoint per request.
	Policy PolicyConfig
	// MaxInflight is each endpoint's limit of requests in flight; 0 means
	// unlimited. Ignored when AdaptiveLimit is set.
	MaxInflight int
	// AdaptiveLimit lets each endpoint's limit follow its latency.
	AdaptiveLimit bool
	// QueueSize bounds the requests waiting for a free endpoint: a
	// memory guard. Admission is by deadline: a request is refused at
	// once when the requests before it would keep it waiting past
	// QueueTimeout.
	QueueSize int
	// QueueTimeout bounds how long one request waits.
	QueueTimeout time.Duration
	// Schedule orders the waiting requests: ScheduleCost or
	// ScheduleFIFO; empty means ScheduleCost.
	Schedule string
	// CostKey names the route of a request, whose cost the balancer
	// learns (see Costs): for example an API's path template. The route
	// is the method and this key; nil, or an empty key, means the first
	// segment of the path.
	CostKey func(*http.Request) string
	// CostKeys bounds the routes whose cost is kept, the least recently
	// used making room; zero means DefaultCostKeys.
	CostKeys int
	// Retries is how many times a failed attempt may be sent to another
	// endpoint, 0 for never; nil means DefaultRetries.
	Retries *int
	// RetryBodyLimit is the largest request body kept for a retry.
	RetryBodyLimit int64
	// RequestTimeout bounds one attempt; 0 means none. A request that
	// exceeds it gets 504 and is not retried, and OnHung is told.
	RequestTimeout time.Duration
	// ParkIdle is how long a worker must hold requests at its limit
	// without wanting a CPU before they stop counting toward the limit:
	// they are long polls, or wait on something else, and the worker
	// is free to serve others meanwhile. A drain still waits for them.
	// Zero means DefaultParkIdle; negative, never. It needs the
	// worker's pid (workers the pool spawns, on Linux).
	ParkIdle time.Duration
	// Breaker sets up each endpoint's circuit breaker.
	Breaker BreakerConfig
	// PassiveFails is how many transport failures in a row make
	// OnPassiveDown fire.
	PassiveFails int
	// IdleConnTimeout of upstream keep-alive connections.
	IdleConnTimeout time.Duration
	// MaxIdleConns per endpoint; zero means 256.
	MaxIdleConns int
	// UpstreamProtocol is what the workers speak: UpstreamHTTP1,
	// UpstreamH2C, or UpstreamAuto (empty: auto), which sends gRPC calls
	// over h2c and everything else over HTTP/1.1.
	UpstreamProtocol string
	// StandardProxy sends every request through httputil.ReverseProxy
	// and http.Transport, instead of a lean HTTP/1.1 forwarder for
	// plain exchanges (what the forwarder does not handle — upgrades,
	// Expect, trailers — takes that path anyway). For comparison.
	StandardProxy bool

	// TrustForwarded reports whether a request came through a trusted
	// proxy, whose X-Forwarded-* headers are then kept and extended. nil
	// trusts nobody: the headers are replaced, as Caddy does by default.
	TrustForwarded func(*http.Request) bool
	// ClientIP returns the client address that "hash client_ip" uses;
	// nil means the connection's remote address.
	ClientIP func(*http.Request) string
	// OnError is told about each failed attempt (not about clients that
	// went away). It must not write to the response.
	OnError func(e *Endpoint, r *http.Request, err error)
	// OnBreakerChange is told when an endpoint's breaker changes state,
	// under the breaker's lock: it must not read the breaker (e's
	// BreakerState) or wait for anything that does. Whoever owns the
	// endpoint's lifecycle takes it out of rotation while its breaker is
	// open, and back for probes after BreakerConfig.OpenFor; without
	// that, an open breaker refuses each request, which then tries
	// another endpoint.
	OnBreakerChange func(e *Endpoint, from, to string)
	// OnPassiveDown is told when an endpoint failed PassiveFails times in
	// a row; the caller takes it out of rotation until it is healthy.
	OnPassiveDown func(e *Endpoint)
	// OnHung is told when a request to e exceeded RequestTimeout: a
	// single-threaded worker that does not answer in time is stuck.
	OnHung func(e *Endpoint)
	// OnResult is told how each request went, after its last attempt.
	// The Result is only valid during the call.
	OnResult func(r *http.Request, res *Result)
	// OnAttempt, when set, is told before each attempt is sent. It
	// returns the request to send instead (a tracer's span in its
	// context, its headers carrying the trace), and a function that the
	// balancer calls with the attempt's outcome; both may be r and nil,
	// which is what a request that is not traced must cost.
	OnAttempt func(r *http.Request, a *Attempt) (*http.Request, func(status int, err error))
}

// Attempt describes one try of a request at an endpoint.
type Attempt struct {
	// Endpoint the attempt goes to.
	Endpoint *Endpoint
	// N counts attempts of the request, from 1.
	N int
	// QueueWait is how long the request waited for this endpoint.
	QueueWait time.Duration
}

func (c Config) withDefaults() Config {
	if c.QueueSize <= 0 {
		c.QueueSize = DefaultQueueSize
	}
	if c.QueueTimeout <= 0 {
		c.QueueTimeout = DefaultQueueTimeout
	}
	if c.Schedule == "" {
		c.Schedule = ScheduleCost
	}
	if c.CostKeys <= 0 {
		c.CostKeys = DefaultCostKeys
	}
	if c.Retries == nil {
		n := DefaultRetries
		c.Retries = &n
	}
	if c.RetryBodyLimit <= 0 {
		c.RetryBodyLimit = DefaultRetryBodyLimit
	}
	if c.PassiveFails <= 0 {
		c.PassiveFails = DefaultPassiveFails
	}
	if c.IdleConnTimeout <= 0 {
		c.IdleConnTimeout = DefaultIdleConnTimeout
	}
	if c.ParkIdle == 0 {
		c.ParkIdle = DefaultParkIdle
	}
	c.Breaker = c.Breaker.withDefaults()
	return c
}

// Validate reports the first bad setting, naming its option.
func (c Config) Validate() error {
	if _, err := NewPolicy(c.Policy); err != nil {
		return fmt.Errorf("balance: %w", err)
	}
	switch {
	case c.MaxInflight < 0:
		return fmt.Errorf("max_inflight %d: give a positive number, 0 for no limit, or auto", c.MaxInflight)
	case c.QueueSize < 0:
		return fmt.Errorf("queue_size %d: must not be negative", c.QueueSize)
	case c.QueueTimeout < 0:
		return fmt.Errorf("queue_timeout %v: must not be negative", c.QueueTimeout)
	case c.Schedule != "" && c.Schedule != ScheduleFIFO && c.Schedule != ScheduleCost:
		return fmt.Errorf("schedule %q: use cost (the cheapest expected request first) or fifo", c.Schedule)
	case c.UpstreamProtocol != "" && c.UpstreamProtocol != UpstreamHTTP1 && c.UpstreamProtocol != UpstreamH2C && c.UpstreamProtocol != UpstreamAuto:
		return fmt.Errorf("upstream_protocol %q: use http1 (HTTP/1.1 workers), h2c (HTTP/2-only workers such as grpc-js servers) or auto (gRPC calls over h2c, the rest over HTTP/1.1)", c.UpstreamProtocol)
	case c.CostKeys < 0:
		return fmt.Errorf("cost keys %d: must not be negative", c.CostKeys)
	case c.Retries != nil && (*c.Retries < 0 || *c.Retries > MaxRetries):
		return fmt.Errorf("retries %d: give 0 for none, or a count of at most %d", *c.Retries, MaxRetries)
	case c.RequestTimeout < 0:
		return fmt.Errorf("request_timeout %v: must not be negative", c.RequestTimeout)
	case c.RetryBodyLimit < 0:
		return fmt.Errorf("retry_body_limit %d: must not be negative", c.RetryBodyLimit)
	case c.Breaker.OpenFor < 0:
		return fmt.Errorf("breaker open_for %v: must not be negative", c.Breaker.OpenFor)
	}
	for _, s := range c.Breaker.Statuses {
		if s < 100 || s > 599 {
			return fmt.Errorf("breaker statuses: %d is not an HTTP status code", s)
		}
	}
	return nil
}

// Result says how one request went.
type Result struct {
	// Endpoint that served the last attempt; nil if none was reached.
	Endpoint *Endpoint
	// Attempts made (0 if the request never got an endpoint).
	Attempts int
	// QueueWait is the time spent waiting for a free endpoint.
	QueueWait time.Duration
	// Status sent to the client (499: the client went away).
	Status int
	// Duration from the request's arrival in the balancer until the
	// handler is done with it (for a stream: until it ends).
	Duration time.Duration
	// GRPC: the request is a gRPC call. GRPCStatus is then the status
	// its client got: the worker's (from its trailers, or its headers
	// for a trailers-only answer), the pool's own (see Error), CANCELLED
	// for a client that went away, or what gRPC makes of an answer
	// without one. GRPCByWorker says that a worker's answer carried it.
	GRPC         bool
	GRPCStatus   int
	GRPCByWorker bool

	start time.Time
}

// Balancer serves each request from one endpoint of its live set, chosen
// by its policy. The set is copy-on-write: the request path reads it
// without a lock.
type Balancer struct {
	cfg    Config
	policy Policy
	budget retry.Budget
	queue  *queue.Queue
	costs  *cost.Table

	mu   sync.Mutex // serialises writers of live
	live atomic.Pointer[[]*Endpoint]

	expected atomic.Int64 // endpoints starting, see Expect

	// The watch for idle workers whose held requests keep others
	// waiting (see park.go): it runs while requests wait.
	parkMu    sync.Mutex
	parkTimer *time.Timer
	parkArmed atomic.Bool
	parkTick  time.Duration

	cookie *affinityCookie // balance cookie; nil otherwise
}

// New returns a balancer with an empty set.
func New(cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	policy, _ := NewPolicy(cfg.Policy)
	b := &Balancer{cfg: cfg, policy: policy, costs: cost.New(cfg.CostKeys)}
	if c, ok := policy.(*cookiePolicy); ok {
		b.cookie = &c.cookie
	}
	b.live.Store(&[]*Endpoint{})
	var waiting func()
	if cfg.ParkIdle > 0 {
		b.parkTick = min(max(cfg.ParkIdle/5, time.Millisecond), 10*time.Millisecond)
		b.parkTimer = time.AfterFunc(time.Hour, b.parkCheck)
		b.parkTimer.Stop()
		waiting = b.watchIdle
	}
	b.queue = queue.New(queue.Config{
		Size: cfg.QueueSize, Timeout: cfg.QueueTimeout, ByCost: cfg.Schedule == ScheduleCost,
		Average: b.costs.Average(),
		Servers: func() int { return len(b.Endpoints()) },
		AnyFree: b.anyFree,
		Waiting: waiting,
	})
	return b, nil
}

// Add puts e in rotation, in worker order; adding it twice is harmless.
func (b *Balancer) Add(e *Endpoint) {
	b.mu.Lock()
	cur := *b.live.Load()
	if slices.Contains(cur, e) {
		b.mu.Unlock()
		return
	}
	b.parkMu.Lock()
	e.idle.watching = false // what it did out of rotation says nothing
	b.parkMu.Unlock()
	next := append(slices.Clone(cur), e)
	slices.SortStableFunc(next, func(x, y *Endpoint) int {
		return cmp.Or(cmp.Compare(x.Worker, y.Worker), cmp.Compare(x.Address, y.Address))
	})
	b.live.Store(&next)
	b.mu.Unlock()
	b.queue.Dispatch()
}

// Remove takes e out of rotation; its requests in flight finish. It
// reports whether e was in rotation.
func (b *Balancer) Remove(e *Endpoint) bool {
	b.mu.Lock()
	cur := *b.live.Load()
	i := slices.Index(cur, e)
	if i < 0 {
		b.mu.Unlock()
		return false
	}
	next := slices.Delete(slices.Clone(cur), i, i+1)
	b.live.Store(&next)
	b.mu.Unlock()
	b.queue.FailHopeless()
	// Requests that waited for e alone (sticky ones) are placed anew.
	b.queue.Dispatch()
	return true
}

// Endpoints returns the endpoints in rotation now. The slice must not be
// modified.
func (b *Balancer) Endpoints() []*Endpoint { return *b.live.Load() }

// Pick is what a Policy decides with: the request, and which endpoints
// it may still use.
type Pick struct {
	// Request being balanced.
	Request *http.Request
	// ClientIP returns the client address for hashing; nil means the
	// connection's remote address.
	ClientIP func(*http.Request) string

	tried    []*Endpoint
	triedBuf [8]*Endpoint

	b     *Balancer
	e     *Endpoint // the endpoint take took a slot on
	epoch uint32    // the epoch of that slot
	w     queue.Waiter
	// cookie is the request's affinity cookie (balance cookie), "" if
	// none.
	cookie string
}

// Usable reports whether e may take this request now: it has room below
// its limit, its breaker lets requests through, and this request has not
// tried it yet.
func (p *Pick) Usable(e *Endpoint) bool {
	return !p.hasTried(e) && e.available()
}

// hasTried reports whether this request has been sent to e already.
func (p *Pick) hasTried(e *Endpoint) bool { return slices.Contains(p.tried, e) }

// Expect tells the balancer how many endpoints are starting and are
// expected to join rotation soon (workers waiting for their first
// health check). While some are, a request that finds no endpoint waits
// in the queue, bounded by the queue timeout, for the first to join;
// when none are, it gets 503 at once, and so do those waiting.
func (b *Balancer) Expect(n int) {
	if old := b.expected.Swap(int64(n)); old > 0 && n == 0 {
		b.queue.FailHopeless()
	}
}

// hopeful reports whether a request may wait for an endpoint: one in
// rotation it has not tried, or one expected to join.
func (b *Balancer) hopeful(p *Pick, eps []*Endpoint) bool {
	return b.expected.Load() > 0 || p.anyCandidate(eps)
}

// anyCandidate reports whether some endpoint in rotation could take the
// request once it has room: one it has not tried yet.
func (p *Pick) anyCandidate(eps []*Endpoint) bool {
	for _, e := range eps {
		if !slices.Contains(p.tried, e) {
			return true
		}
	}
	return false
}

// request is a Pick as the queue sees it: a request that takes a slot
// of the endpoint its policy picks.
type request Pick

// Take takes a slot on the endpoint the policy picks, if it has room.
func (p *request) Take() bool {
	e, epoch := p.b.selectAcquire((*Pick)(p))
	p.e, p.epoch = e, epoch
	return e != nil
}

// Hopeless reports whether no endpoint could ever take the request.
func (p *request) Hopeless() bool { return !p.b.hopeful((*Pick)(p), p.b.Endpoints()) }

// Untake gives back the slot Take took.
func (p *request) Untake() {
	if !p.e.unslot(p.epoch) {
		p.e.streams.Add(-1)
		p.e.parkedNow.Add(-1)
	}
	p.e = nil
	p.b.queue.Dispatch()
}

// selectAcquire asks the policy for an endpoint and takes a slot on it;
// another request may take the slot between the two, so it asks again a
// few times.
func (b *Balancer) selectAcquire(pick *Pick) (*Endpoint, uint32) {
	eps := b.Endpoints()
	for range 3 {
		e := b.policy.Select(eps, pick)
		if e == nil {
			return nil, 0
		}
		if epoch, ok := e.tryAcquire(); ok {
			return e, epoch
		}
	}
	return nil, 0
}

// anyFree reports whether some endpoint could take a request now.
func (b *Balancer) anyFree() bool {
	for _, e := range b.Endpoints() {
		if e.available() {
			return true
		}
	}
	return false
}

// QueueLen is the number of requests waiting for a worker.
func (b *Balancer) QueueLen() int { return b.queue.Len() }

// reqState is the per-request scratch space, pooled so that balancing a
// request does not allocate.
type reqState struct {
	pick     Pick
	x        transport.Exchange
	slot     slot
	onStream func()    // streamStarted, bound once
	deadline time.Time // a gRPC call's own
	grpc     bool      // the request is a gRPC call
	result   Result
	attempt  Attempt
}

var states = sync.Pool{New: func() any {
	st := &reqState{}
	st.pick.w.Init((*request)(&st.pick))
	st.onStream = st.streamStarted
	return st
}}

// streamStarted is the transport's word that the answer is a stream: the
// slot goes back early.
func (st *reqState) streamStarted() { st.slot.toStream(st.x.Status) }

// Error is an answer the balancer makes itself, when no worker's answer
// can be passed on: 400 (the client's body could not be read), 502 (the
// worker failed and no retry was possible), 503 (no worker could take
// the request; RetryAfter says when to try again) or 504 (the worker
// did not answer within the request timeout). Serve returns it with
// nothing written; Write sends it as problem+json.
type Error struct {
	Status int
	// RetryAfter is in seconds; 0 means no Retry-After header.
	RetryAfter int
	// Detail says what happened, for the client.
	Detail string
	// Err is the cause.
	Err error
	// GRPC: the request is a gRPC call, which Write answers in gRPC's
	// terms (HTTP 200, trailers-only, grpc-status and grpc-message).
	GRPC bool
}

func (e *Error) Error() string { return e.Detail }

func (e *Error) Unwrap() error { return e.Err }

// Write sends the error as an RFC 9457 problem+json response, or to a
// gRPC call as a gRPC status.
func (e *Error) Write(w http.ResponseWriter) {
	if e.GRPC {
		grpcstatus.Write(w, e.grpcCode(), e.Detail)
		return
	}
	if e.RetryAfter > 0 {
		problem.Unavailable(w, e.RetryAfter, e.Detail)
		return
	}
	problem.Write(w, problem.Details{Status: e.Status, Detail: e.Detail})
}

// ServeHTTP proxies r to an endpoint, and answers with problem+json
// when Serve returns an Error.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := b.Serve(w, r); err != nil {
		err.Write(w)
	}
}

// Serve proxies r to an endpoint; see the package documentation for
// queueing, breakers and retries. It returns nil once the response is
// written (a worker's, or an empty 499 when the client went away), or
// the Error the balancer answers with, unwritten, so that the caller
// may render it its own way. OnResult hears of every request once, when
// Serve returns.
func (b *Balancer) Serve(w http.ResponseWriter, r *http.Request) (failed *Error) {
	grpc := grpcstatus.IsCall(r)
	var deadline time.Time
	if grpc {
		var cancel context.CancelFunc
		r, deadline, cancel = withCallDeadline(r)
		defer cancel()
	}
	st := states.Get().(*reqState)
	st.pick.Request, st.pick.ClientIP, st.pick.b = r, b.cfg.ClientIP, b
	st.pick.w.SetDeadline(deadline)
	st.deadline, st.grpc = deadline, grpc
	if b.cookie != nil {
		st.pick.cookie = b.cookie.read(r)
	}
	st.pick.tried = st.pick.triedBuf[:0]
	st.result = Result{start: time.Now()}
	key := ""
	if b.cfg.CostKey != nil {
		key = b.cfg.CostKey(r)
	}
	if key == "" && grpc {
		key = r.URL.Path // the full method, /package.Service/Method
	}
	route := b.costs.Lookup(r, key)
	st.pick.w.SetClass(route)
	status := 0
	body := r.Body
	defer func() {
		p := recover()
		if failed != nil {
			failed.GRPC = grpc
		}
		switch {
		case p != nil && r.Context().Err() != nil:
			// The client left while its response streamed.
			status = 499
		case p != nil && st.x.BodyFailed():
			// The worker answered before it had the whole body, which
			// then could not be read: the client's fault.
			status = http.StatusBadRequest
		case p != nil:
			// The response broke while it streamed (http.ErrAbortHandler):
			// the client's connection is cut. Account for it, then go on
			// panicking so the server aborts the connection.
			status = http.StatusBadGateway
		case failed != nil:
			status = failed.Status
		}
		if grpc {
			st.result.GRPC = true
			st.result.GRPCStatus, st.result.GRPCByWorker = callStatus(w.Header(), status, failed, p != nil)
		}
		b.report(r, st, status)
		r.Body = body
		st.pick.Request, st.pick.b, st.pick.e, st.pick.cookie = nil, nil, nil, ""
		st.pick.w.SetDeadline(time.Time{})
		st.deadline, st.grpc = time.Time{}, false
		st.pick.w.SetClass(nil)
		st.x.Reset()
		st.attempt = Attempt{}
		clear(st.pick.triedBuf[:])
		states.Put(st)
		if p != nil {
			panic(p)
		}
	}()

	b.budget.Request(st.result.start)
	replayable := false
	if *b.cfg.Retries > 0 {
		var err error
		if replayable, err = retry.Prepare(r, b.cfg.RetryBodyLimit); err != nil {
			return b.clientBodyError(w, r, err)
		}
	}

	var lastErr error
	probeWaits := 0
	for {
		waited, handoff, err := b.queue.Acquire(r.Context(), &st.pick.w)
		st.result.QueueWait += waited
		if err != nil {
			return b.refuse(w, r, err, lastErr)
		}
		e := st.pick.e
		if handoff > 0 && e.adaptive != nil {
			e.adaptive.Handoff(handoff)
		}
		st.slot = slot{b: b, e: e, epoch: st.pick.epoch, w: &st.pick.w, route: route}
		done, err := e.breaker.Allow()
		if err != nil {
			st.slot.release(outcome{verdict: notSent})
			if errors.Is(err, gobreaker.ErrTooManyRequests) && probeWaits < maxProbeWaits {
				// Half-open with its probes out: wait for their verdict
				// (its capacity is the probes now), don't fail over.
				probeWaits++
				continue
			}
			st.pick.tried = append(st.pick.tried, e)
			continue
		}
		st.slot.done = done
		st.result.Attempts++
		st.result.Endpoint = e
		o := b.attempt(&st.slot, w, r, st, waited)
		switch {
		case o.err == nil || o.stream:
			// Answered; or a protocol switch or stream that started and
			// then failed, which nobody can retry or answer any more.
			status = o.status
			return nil
		case callDeadlinePassed(r):
			return &Error{Status: http.StatusGatewayTimeout, Detail: e.workerName() + " did not answer within the call's deadline", Err: errCallDeadline}
		case r.Context().Err() != nil:
			w.WriteHeader(499) // nothing was written; for the access log
			status = 499
			return nil
		case st.x.BodyFailed() || transport.KindOf(o.err) == transport.ClientBody:
			return b.clientBodyError(w, r, o.err)
		}
		lastErr = o.err
		if b.cfg.OnError != nil {
			b.cfg.OnError(e, r, o.err)
		}
		kind := transport.KindOf(o.err)
		if kind == transport.WrongProtocol {
			// Every worker of the pool speaks alike: a setting to change,
			// which another attempt would not.
			return &Error{Status: http.StatusBadGateway, Detail: failureDetail(e, o.err), Err: o.err}
		}
		if kind == transport.TimedOut {
			// The worker took the request and did not answer in time;
			// sending it elsewhere could run it twice.
			if b.cfg.OnHung != nil {
				b.cfg.OnHung(e)
			}
			return &Error{Status: http.StatusGatewayTimeout, Detail: e.workerName() + " did not answer within the request timeout", Err: o.err}
		}
		st.pick.tried = append(st.pick.tried, e)
		if st.result.Attempts > *b.cfg.Retries || !retry.Allowed(r, kind != transport.Unreached, replayable) || !b.budget.Allow(time.Now()) || retry.Rewind(r) != nil {
			return &Error{Status: http.StatusBadGateway, Detail: failureDetail(e, o.err), Err: o.err}
		}
	}
}

// failureDetail says, for the client and the log, how e failed.
func failureDetail(e *Endpoint, err error) string {
	switch transport.KindOf(err) {
	case transport.Unreached:
		return e.workerName() + " could not be reached"
	case transport.BadAnswer, transport.WrongProtocol:
		var te *transport.Error
		errors.As(err, &te)
		return e.workerName() + " answered with a response that cannot be passed on: " + te.Reason()
	}
	return e.workerName() + " did not answer"
}

// maxProbeWaits bounds how often one request goes back to wait for a
// half-open breaker's probes before it tries another endpoint.
const maxProbeWaits = 8

// clientBodyError answers a request whose body could not be read: the
// client's fault, never the worker's.
func (b *Balancer) clientBodyError(w http.ResponseWriter, r *http.Request, err error) *Error {
	if r.Context().Err() != nil {
		w.WriteHeader(499)
		return nil
	}
	return &Error{Status: http.StatusBadRequest, Detail: "the request body could not be read", Err: err}
}

// refuse answers a request that got no endpoint.
func (b *Balancer) refuse(w http.ResponseWriter, r *http.Request, err, lastErr error) *Error {
	switch {
	case callDeadlinePassed(r):
		return &Error{Status: http.StatusGatewayTimeout, Detail: "the call's deadline passed before a worker became free", Err: errCallDeadline}
	case r.Context().Err() != nil:
		// The client went away while waiting; nobody reads an answer. 499
		// is what Caddy and nginx log for that.
		w.WriteHeader(499)
		return nil
	case errors.Is(err, queue.ErrDeadline):
		return &Error{Status: http.StatusGatewayTimeout, Detail: err.Error(), Err: err}
	case lastErr != nil:
		// Every endpoint has been tried.
		return &Error{Status: http.StatusBadGateway, Detail: "no worker answered", Err: lastErr}
	default:
		retryAfter := 1
		if errors.Is(err, queue.ErrTimeout) || errors.Is(err, queue.ErrWaitTooLong) {
			retryAfter = max(1, int(math.Ceil(b.cfg.QueueTimeout.Seconds()/2)))
		}
		return &Error{Status: http.StatusServiceUnavailable, RetryAfter: retryAfter, Detail: err.Error(), Err: err}
	}
}

func (b *Balancer) report(r *http.Request, st *reqState, status int) {
	if b.cfg.OnResult != nil {
		st.result.Status = status
		st.result.Duration = time.Since(st.result.start)
		b.cfg.OnResult(r, &st.result)
	}
}
