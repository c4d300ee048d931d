package balancer

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// failurePenalty is the least latency a failed attempt counts as in the
// endpoint's average: a worker that fails fast must not look fast to
// p2c_ewma.
const failurePenalty = time.Second

// attempt proxies r to e once, e's slot already taken. It returns the
// transport error if the worker could not be reached or broke before
// answering (nothing has been written to w then), and whether that was
// the request timeout. A connection that breaks while the response
// streams makes ReverseProxy panic with http.ErrAbortHandler, which
// aborts the client's connection too, so a cut body is never taken as
// complete; attempt accounts for it and lets the panic go on.
//
// Whatever happens, even a panic in the OnAttempt hook, the attempt
// ends in its one deferred function: the slot (or the stream) is given
// back, the breaker hears the verdict once, and the endpoint's load and
// passive health learn from it.
func (b *Balancer) attempt(e *Endpoint, done func(error), w http.ResponseWriter, r *http.Request, st *reqState, waited time.Duration) (timedOut bool, err error) {
	aw := &st.aw
	aw.start(w, b, e, done)
	inflight := e.inflight.Load() // this request included: acquire counted it
	start := time.Now()
	client := r.Context() // not the attempt's, which a request timeout ends
	sent, completed := false, false
	var end func(status int, err error) // the tracer's, if any
	defer func() {
		now := time.Now()
		var verdict error
		switch {
		case !sent || client.Err() != nil:
			verdict = errClientGone
		case st.body.failed.Load():
			verdict = errClientBody
		case !completed:
			verdict = errAborted
		case aw.err != nil:
			verdict = aw.err
		default:
			verdict = b.statusVerdict(aw.status)
		}
		aw.answered() // stops the request timeout
		aw.finish(verdict)
		if sent {
			e.served.Add(1)
		}
		if aw.released {
			e.streams.Add(-1)
		} else {
			b.release(e)
		}
		b.learn(e, verdict, aw.released, now.Sub(start), inflight, now)
		if end != nil {
			switch {
			case !completed:
				end(http.StatusBadGateway, errAborted)
			case timedOut:
				end(http.StatusGatewayTimeout, err)
			case err != nil && aw.status == 0:
				end(0, err)
			default:
				end(aw.status, err)
			}
		}
	}()
	if b.cfg.OnAttempt != nil {
		st.attempt = Attempt{Endpoint: e, N: st.result.Attempts, QueueWait: waited}
		r, end = b.cfg.OnAttempt(r, &st.attempt)
	}
	var rt *requestTimer // only with a request timeout: no allocation otherwise
	if b.cfg.RequestTimeout > 0 {
		// Bounds the wait for the final response to start, not a stream
		// or a switched protocol that follows: answered stops the timer.
		rt = &requestTimer{}
		rt.timer = time.AfterFunc(b.cfg.RequestTimeout, rt.fire)
		aw.timeout = rt
	}
	sent = true
	b.forward(e, aw, r)
	completed = true
	timedOut = rt.fired() && aw.err != nil
	return timedOut, aw.err
}

// requestTimer is an attempt's request timeout. When it fires before the
// worker's answer starts, it ends what the attempt waits on at that
// moment: the lean forwarder's connection to the worker (its deadline
// goes into the past), or the context of ReverseProxy's request. The
// client's own context is left alone, so the attempt's error is the
// worker's (a timeout: passive health and the breaker count it), not a
// client that went away. The methods are safe on a nil timer: no
// request timeout.
type requestTimer struct {
	timer *time.Timer
	mu    sync.Mutex
	// expired: it fired; abort is what it ends, while something waits.
	expired bool
	abort   func()
}

func (t *requestTimer) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expired = true
	if t.abort != nil {
		t.abort()
	}
}

// watch makes abort what the timer ends from now on; it reports false,
// and keeps nothing, when the timer has fired already.
func (t *requestTimer) watch(abort func()) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expired {
		return false
	}
	t.abort = abort
	return true
}

// unwatch ends a watch and reports whether the timer fired during it
// (abort ran). Once it returns, the timer can no longer run abort.
func (t *requestTimer) unwatch() (fired bool) {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abort = nil
	return t.expired
}

// fired reports whether the timer fired.
func (t *requestTimer) fired() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.expired
}

// stop stops the timer: the answer has started.
func (t *requestTimer) stop() {
	if t != nil {
		t.timer.Stop()
	}
}

// forward sends r to e and copies the response to aw: by the lean
// forwarder where it can (plain request and response), else by the
// ReverseProxy. Like ReverseProxy it leaves a transport error that came
// before the response in aw.err, and aborts the client's connection
// with http.ErrAbortHandler when a response that began breaks off, so
// that a cut body is never taken for a whole one.
func (b *Balancer) forward(e *Endpoint, aw *attemptWriter, r *http.Request) {
	if b.cfg.StandardProxy {
		b.proxy(e, aw, r)
		return
	}
	status, err := e.fwd.forward(aw, r)
	switch {
	case err == nil:
	case errors.Is(err, errNotForwarded):
		b.proxy(e, aw, r)
	case status != 0 || aw.status != 0:
		panic(http.ErrAbortHandler)
	default:
		aw.err = err
	}
}

// proxy sends r to e by ReverseProxy, with a context the request
// timeout can end.
func (b *Balancer) proxy(e *Endpoint, aw *attemptWriter, r *http.Request) {
	rt := aw.timeout
	if rt == nil {
		e.proxy.ServeHTTP(aw, r)
		return
	}
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	if !rt.watch(cancel) {
		cancel() // it fired already: the proxy fails at once
	}
	defer rt.unwatch()
	e.proxy.ServeHTTP(aw, r.WithContext(ctx))
}

// learn updates e's load measures and passive health from the verdict
// of an attempt that took rtt and found inflight requests on e.
func (b *Balancer) learn(e *Endpoint, verdict error, stream bool, rtt time.Duration, inflight int64, now time.Time) {
	switch {
	case errors.Is(verdict, errClientGone), errors.Is(verdict, errClientBody):
		// The client's doing says nothing about the worker.
	case verdict == nil:
		e.passiveFails.Store(0)
		if stream {
			return // its length says nothing about the worker's speed
		}
		e.observe(rtt, now)
		if e.adaptive != nil {
			e.adaptive.Sample(rtt, inflight, now)
			b.dispatch() // the limit may have grown
		}
	case errors.Is(verdict, errFailureStatus):
		// The worker answered, so it is alive; but a failure costs it in
		// p2c_ewma as if it took long, or failing fast would attract
		// traffic.
		e.passiveFails.Store(0)
		e.observe(max(rtt, failurePenalty), now)
	default:
		e.observe(max(rtt, failurePenalty), now)
		if int(e.passiveFails.Add(1)) >= b.cfg.PassiveFails {
			// Counting starts over: the endpoint that comes back into
			// rotation is judged afresh, and taken out again if it fails
			// again.
			e.passiveFails.Store(0)
			if b.cfg.OnPassiveDown != nil {
				b.cfg.OnPassiveDown(e)
			}
		}
	}
}

// clientBody is the client's request body as an attempt reads it: a
// failure to read it (a malformed chunked body, a client that stops
// sending) is the client's, not the worker's. The transport reads it
// from its own goroutine.
type clientBody struct {
	io.ReadCloser
	failed atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
		b.failed.Store(true)
	}
	return n, err
}

// attemptWriter is the response writer of one proxy attempt: it learns
// the status the worker answered with, and takes a transport error from
// ReverseProxy instead of an error response, so the balancer can decide
// between a retry and a 502.
//
// A long-lived response — a WebSocket (or other) upgrade, a stream of
// server-sent events — gives its in-flight slot back as soon as it
// starts and counts as a stream instead: it would otherwise hold the
// worker's only slot for as long as the client stays, though the worker
// serves other requests meanwhile; but a drain still waits for it.
type attemptWriter struct {
	http.ResponseWriter
	status int
	err    error

	bal      *Balancer
	ep       *Endpoint
	done     func(error)   // the breaker's, called once
	released bool          // the slot went back early: a stream
	timeout  *requestTimer // request_timeout, until the response starts
}

// start resets w for an attempt on e.
func (w *attemptWriter) start(rw http.ResponseWriter, b *Balancer, e *Endpoint, done func(error)) {
	*w = attemptWriter{ResponseWriter: rw, bal: b, ep: e, done: done}
}

// answered is called when the worker's final response starts: the
// request timeout bounds only the wait for it.
func (w *attemptWriter) answered() {
	if w.timeout != nil {
		w.timeout.stop()
		w.timeout = nil
	}
}

func (w *attemptWriter) WriteHeader(code int) {
	// An interim response (100 Continue, 103 Early Hints) is not the
	// answer: the worker may still hang after it.
	if code >= 200 {
		w.answered()
		w.status = code
		if isEventStream(w.Header().Get("Content-Type")) {
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

// releaseEarly gives the slot back and counts the response as a stream,
// and tells the breaker how the request went as far as the worker is
// concerned (it answered), so a long stream taken as a half-open probe
// does not hold the breaker.
func (w *attemptWriter) releaseEarly() {
	if w.released {
		return
	}
	w.released = true
	w.finish(w.bal.statusVerdict(w.status))
	w.ep.streams.Add(1)
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
