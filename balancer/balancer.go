// Package balancer owns the live set of endpoints a pool serves from,
// their load, the policy that picks one per request, the wait queue for
// requests that find every endpoint at its limit, per-endpoint circuit
// breakers, retries, and the proxying itself.
//
// It reads as three ideas kept apart: the set (Add, Remove: whoever
// discovers and health-checks endpoints calls them), the load (each
// Endpoint's in-flight count, limit and latency), and the selection (a
// Policy, a small function over the endpoints' load).
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

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// DefaultIdleConnTimeout closes idle upstream connections before Node's
// default keepAliveTimeout (5 s) would, so a request is never written to
// a socket the worker is closing at that moment — a classic source of
// stray 502s behind proxies.
const DefaultIdleConnTimeout = 4 * time.Second

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
	// QueueSize bounds the requests waiting for a free endpoint.
	QueueSize int
	// QueueTimeout bounds how long one request waits.
	QueueTimeout time.Duration
	// Retries is how many times a failed attempt may be sent to another
	// endpoint; -1 means none.
	Retries int
	// RetryBodyLimit is the largest request body kept for a retry.
	RetryBodyLimit int64
	// RequestTimeout bounds one attempt; 0 means none. A request that
	// exceeds it gets 504 and is not retried, and OnHung is told.
	RequestTimeout time.Duration
	// Breaker sets up each endpoint's circuit breaker.
	Breaker BreakerConfig
	// PassiveFails is how many transport failures in a row make
	// OnPassiveDown fire.
	PassiveFails int
	// IdleConnTimeout of upstream keep-alive connections.
	IdleConnTimeout time.Duration
	// MaxIdleConns per endpoint; zero means 256.
	MaxIdleConns int

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
	// OnBreakerChange is told when an endpoint's breaker changes state.
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
	switch {
	case c.Retries == 0:
		c.Retries = DefaultRetries
	case c.Retries < 0:
		c.Retries = 0
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
	if c.MaxIdleConns <= 0 {
		c.MaxIdleConns = 256
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
	case c.Retries > MaxRetries:
		return fmt.Errorf("retries %d: at most %d", c.Retries, MaxRetries)
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

	start time.Time
}

// Balancer serves each request from one endpoint of its live set, chosen
// by its policy. The set is copy-on-write: the request path reads it
// without a lock.
type Balancer struct {
	cfg    Config
	policy Policy
	budget retryBudget

	mu   sync.Mutex // serialises writers of live
	live atomic.Pointer[[]*Endpoint]

	qmu     sync.Mutex
	queue   waitQueue
	waiting atomic.Int64
}

// New returns a balancer with an empty set.
func New(cfg Config) (*Balancer, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	policy, _ := NewPolicy(cfg.Policy)
	b := &Balancer{cfg: cfg, policy: policy}
	b.live.Store(&[]*Endpoint{})
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
	next := append(slices.Clone(cur), e)
	slices.SortStableFunc(next, func(x, y *Endpoint) int {
		return cmp.Or(cmp.Compare(x.Worker, y.Worker), cmp.Compare(x.Address, y.Address))
	})
	b.live.Store(&next)
	b.mu.Unlock()
	b.dispatch()
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
	b.failHopeless()
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
	w        waiter
}

// Usable reports whether e may take this request now: it has room below
// its limit, its breaker lets requests through, and this request has not
// tried it yet.
func (p *Pick) Usable(e *Endpoint) bool {
	for _, t := range p.tried {
		if t == e {
			return false
		}
	}
	return e.available()
}

// anyCandidate reports whether some endpoint could take the request once
// it has room: not tried yet, breaker not open.
func (p *Pick) anyCandidate(eps []*Endpoint) bool {
	now := time.Now().UnixNano()
	for _, e := range eps {
		if !slices.Contains(p.tried, e) && !(e.open.Load() && now < e.openUntil.Load()) {
			return true
		}
	}
	return false
}

// reqState is the per-request scratch space, pooled so that balancing a
// request does not allocate.
type reqState struct {
	pick    Pick
	aw      attemptWriter
	result  Result
	attempt Attempt
}

var states = sync.Pool{New: func() any {
	st := &reqState{}
	st.pick.w.ch = make(chan *Endpoint, 1)
	st.pick.w.pick = &st.pick
	return st
}}

// ServeHTTP proxies r to an endpoint; see the package documentation for
// queueing, breakers and retries. Errors of its own are problem+json:
// 503 with Retry-After when no endpoint could take the request, 502 when
// the endpoint failed and no retry was possible.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := states.Get().(*reqState)
	st.pick.Request, st.pick.ClientIP = r, b.cfg.ClientIP
	st.pick.tried = st.pick.triedBuf[:0]
	st.result = Result{}
	body := r.Body
	defer func() {
		p := recover()
		if p != nil {
			// The response broke while it streamed (http.ErrAbortHandler):
			// the client's connection is cut. Account for it, then go on
			// panicking so the server aborts the connection.
			b.report(r, st, 502)
		}
		r.Body = body
		st.pick.Request = nil
		st.aw = attemptWriter{}
		st.attempt = Attempt{}
		clear(st.pick.triedBuf[:])
		states.Put(st)
		if p != nil {
			panic(p)
		}
	}()

	st.result.start = time.Now()
	b.budget.request(st.result.start)
	replayable := false
	if b.cfg.Retries > 0 {
		var err error
		if replayable, err = prepareBody(r, b.cfg.RetryBodyLimit); err != nil {
			problem.Write(w, problem.Details{Status: http.StatusBadRequest, Detail: err.Error()})
			b.report(r, st, http.StatusBadRequest)
			return
		}
	}

	var lastErr error
	for {
		e, waited, err := b.acquire(r.Context(), &st.pick)
		st.result.QueueWait += waited
		if err != nil {
			b.refuse(w, r, st, err, lastErr)
			return
		}
		done, err := e.breaker.Allow()
		if err != nil {
			// A half-open breaker has its probes already; try another.
			b.release(e)
			st.pick.tried = append(st.pick.tried, e)
			continue
		}
		st.result.Attempts++
		st.result.Endpoint = e
		var timedOut bool
		if b.cfg.OnAttempt == nil {
			timedOut, err = b.attempt(e, done, w, r, st)
		} else {
			timedOut, err = b.tracedAttempt(e, done, w, r, st, waited)
		}
		if err == nil || st.aw.released {
			// Answered; or a protocol switch or stream that started and
			// then failed, which nobody can retry or answer any more.
			b.report(r, st, st.aw.status)
			return
		}
		if r.Context().Err() != nil {
			w.WriteHeader(499) // nothing was written; for the access log
			b.report(r, st, 499)
			return
		}
		lastErr = err
		if b.cfg.OnError != nil {
			b.cfg.OnError(e, r, err)
		}
		if timedOut {
			// The worker took the request and did not answer in time;
			// sending it elsewhere could run it twice.
			if b.cfg.OnHung != nil {
				b.cfg.OnHung(e)
			}
			problem.Write(w, problem.Details{
				Status: http.StatusGatewayTimeout,
				Detail: e.workerName() + " did not answer within the request timeout",
			})
			b.report(r, st, http.StatusGatewayTimeout)
			return
		}
		st.pick.tried = append(st.pick.tried, e)
		if st.result.Attempts > b.cfg.Retries || !shouldRetry(r, err, replayable) || !b.budget.allow(time.Now()) {
			problem.Write(w, problem.Details{
				Status: http.StatusBadGateway,
				Detail: e.workerName() + " did not answer",
			})
			b.report(r, st, http.StatusBadGateway)
			return
		}
		if err := rewindBody(r); err != nil {
			problem.Write(w, problem.Details{Status: http.StatusBadGateway, Detail: e.workerName() + " did not answer"})
			b.report(r, st, http.StatusBadGateway)
			return
		}
	}
}

// attempt proxies r to e once. It returns the transport error if the
// worker could not be reached or broke before answering (nothing has
// been written to w then), and whether that was the request timeout. A connection that breaks while the response streams
// makes ReverseProxy panic with http.ErrAbortHandler, which aborts the
// client's connection too, so a cut body is never taken as complete;
// attempt accounts for it and lets the panic go on.
func (b *Balancer) attempt(e *Endpoint, done func(error), w http.ResponseWriter, r *http.Request, st *reqState) (timedOut bool, err error) {
	aw := &st.aw
	aw.start(w, b, e, done)
	inflight := e.inflight.Load() // this request included: acquire counted it
	start := time.Now()
	completed := false
	client := r.Context()    // not the attempt's, which a request timeout ends
	var expired *atomic.Bool // only with a request timeout: no allocation otherwise
	defer func() {
		now := time.Now()
		var verdict error
		switch {
		case client.Err() != nil:
			verdict = errClientGone
		case !completed:
			verdict = errAborted
		case aw.err != nil:
			verdict = aw.err
		default:
			verdict = b.statusVerdict(aw.status)
		}
		aw.answered() // stops the request timeout
		aw.finish(verdict)
		e.served.Add(1)
		stream := aw.released
		if !stream {
			b.release(e)
		}
		switch {
		case verdict == nil || errors.Is(verdict, errFailureStatus):
			e.passiveFails.Store(0)
			if stream {
				break // its length says nothing about the worker's speed
			}
			rtt := now.Sub(start)
			e.observe(rtt, now)
			if e.adaptive != nil && verdict == nil {
				e.adaptive.sample(rtt, inflight)
				b.dispatch() // the limit may have grown
			}
		case !errors.Is(verdict, errClientGone):
			// A failure costs the endpoint in p2c_ewma as if it took long.
			e.observe(max(now.Sub(start), time.Second), now)
			if int(e.passiveFails.Add(1)) == b.cfg.PassiveFails && b.cfg.OnPassiveDown != nil {
				b.cfg.OnPassiveDown(e)
			}
		}
	}()
	if b.cfg.RequestTimeout > 0 {
		// Bounds the wait for the response to start, not a stream or a
		// switched protocol that follows: answered stops the timer.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		flag := new(atomic.Bool)
		expired = flag
		aw.timeout = time.AfterFunc(b.cfg.RequestTimeout, func() {
			flag.Store(true)
			cancel()
		})
		r = r.WithContext(ctx)
	}
	e.proxy.ServeHTTP(aw, r)
	completed = true
	return expired != nil && expired.Load() && aw.err != nil, aw.err
}

// tracedAttempt is attempt with OnAttempt told about it.
func (b *Balancer) tracedAttempt(e *Endpoint, done func(error), w http.ResponseWriter, r *http.Request, st *reqState, waited time.Duration) (timedOut bool, err error) {
	st.attempt = Attempt{Endpoint: e, N: st.result.Attempts, QueueWait: waited}
	out, end := b.cfg.OnAttempt(r, &st.attempt)
	if end == nil {
		return b.attempt(e, done, w, out, st)
	}
	defer func() {
		if p := recover(); p != nil {
			end(502, errAborted)
			panic(p)
		}
		switch {
		case timedOut:
			end(http.StatusGatewayTimeout, err)
		case err != nil && st.aw.status == 0:
			end(0, err)
		default:
			end(st.aw.status, err)
		}
	}()
	return b.attempt(e, done, w, out, st)
}

// refuse answers a request that got no endpoint.
func (b *Balancer) refuse(w http.ResponseWriter, r *http.Request, st *reqState, err, lastErr error) {
	switch {
	case r.Context().Err() != nil:
		// The client went away while waiting; nobody reads an answer. 499
		// is what Caddy and nginx log for that.
		w.WriteHeader(499)
		b.report(r, st, 499)
	case lastErr != nil:
		// Every endpoint has been tried.
		problem.Write(w, problem.Details{Status: http.StatusBadGateway, Detail: "no worker answered"})
		b.report(r, st, http.StatusBadGateway)
	default:
		retryAfter := 1
		if errors.Is(err, errQueueTimeout) {
			retryAfter = max(1, int(math.Ceil(b.cfg.QueueTimeout.Seconds()/2)))
		}
		problem.Unavailable(w, retryAfter, err.Error())
		b.report(r, st, http.StatusServiceUnavailable)
	}
}

func (b *Balancer) report(r *http.Request, st *reqState, status int) {
	if b.cfg.OnResult != nil {
		st.result.Status = status
		st.result.Duration = time.Since(st.result.start)
		b.cfg.OnResult(r, &st.result)
	}
}
