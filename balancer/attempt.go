package balancer

import (
	"errors"
	"net/http"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/cost"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/queue"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/retry"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/transport"
)

// failurePenalty is the least latency a failed attempt counts as in the
// endpoint's average: a worker that fails fast must not look fast to
// p2c_ewma.
const failurePenalty = time.Second

// verdict is what an attempt says about its worker.
type verdict uint8

const (
	// answered: the worker answered with a status that is no failure.
	answered verdict = iota
	// failedStatus: the worker answered with a failure status (5xx, or
	// the breaker's statuses).
	failedStatus
	// workerFailed: the worker could not be reached, did not answer,
	// answered garbage, took longer than the request timeout, or broke
	// off its answer.
	workerFailed
	// clientFault: the client went away or sent a body that could not be
	// read, or the worker was sent a protocol it does not speak (a
	// setting to change): nothing about the worker.
	clientFault
	// notSent: the request never went to the worker (its breaker
	// refused): nothing to learn.
	notSent
)

// Errors the breaker hears: gobreaker takes a verdict as an error.
var (
	errFailureStatus = errors.New("worker answered with a failure status")
	errWorkerFailed  = errors.New("worker failed")
	errClientFault   = errors.New("the client went away or its body could not be read")
)

// breakerErr is the verdict as the breaker's two-step done takes it.
func (v verdict) breakerErr() error {
	switch v {
	case answered:
		return nil
	case failedStatus:
		return errFailureStatus
	case workerFailed:
		return errWorkerFailed
	}
	return errClientFault // excluded: neither success nor failure
}

// outcome is how one attempt went, computed once when it ends and
// handed to each owner of what it changes: the breaker, passive health,
// the latency average, the limit and the cost table.
type outcome struct {
	verdict verdict
	// status written to the client, 0 if none.
	status int
	// stream: the answer was a stream, whose length says nothing of the
	// worker's speed.
	stream bool
	// parked: the request was parked (see Endpoint.park): its length
	// says nothing of the worker's speed either.
	parked bool
	// err is the transport's, if any.
	err error
	// rtt is the attempt's time at the worker; inflight the requests the
	// endpoint held when it began, itself included; at when it ended.
	rtt      time.Duration
	inflight int64
	at       time.Time
}

// slot is a request's hold on one endpoint's capacity, from the moment
// it is taken (see Pick.Take) until release. It is given back once:
// early by toStream when the answer turns out to be a stream, else by
// release, which also hands the attempt's outcome to every owner.
type slot struct {
	b     *Balancer
	e     *Endpoint
	epoch uint32 // the epoch the slot was taken in
	w     *queue.Waiter
	route *cost.Route
	// done is the breaker's verdict function for the attempt; nil when
	// the breaker was not asked or has been told.
	done func(error)
	// streaming: the slot went back early and the endpoint counts a
	// stream instead.
	streaming bool
}

// tell gives the breaker its verdict, once.
func (s *slot) tell(v verdict) {
	if s.done != nil {
		s.done(v.breakerErr())
		s.done = nil
	}
}

// toStream gives the slot back while the answer, a long-lived stream,
// goes on: the worker serves other requests meanwhile, but a drain waits
// for it. The breaker hears how the request went as far as the worker
// is concerned (it answered), so a long stream taken as a half-open
// probe does not hold the breaker.
func (s *slot) toStream(status int) {
	if s.streaming {
		return
	}
	s.streaming = true
	s.tell(s.b.statusVerdict(status))
	s.b.queue.Done(s.w)
	if s.e.unslot(s.epoch) {
		s.e.streams.Add(1)
	} else {
		s.e.parkedNow.Add(-1) // parked, and a stream already
	}
	s.b.queue.Dispatch()
}

// release ends the hold with the attempt's outcome.
func (s *slot) release(o outcome) {
	b, e := s.b, s.e
	s.tell(o.verdict)
	if s.streaming {
		e.streams.Add(-1)
	} else {
		b.queue.Done(s.w)
		if !e.unslot(s.epoch) {
			e.streams.Add(-1) // parked
			e.parkedNow.Add(-1)
			o.parked = true
		}
	}
	if o.verdict != notSent {
		e.served.Add(1)
	}
	b.learn(e, o, s.route)
	b.queue.Dispatch() // the slot, and perhaps a grown limit
	*s = slot{}
}

// learn updates e's load measures, limit and passive health, and the
// route's cost, from an attempt's outcome.
func (b *Balancer) learn(e *Endpoint, o outcome, route *cost.Route) {
	switch o.verdict {
	case clientFault, notSent:
		// The client's doing says nothing about the worker.
	case answered:
		e.passiveFails.Store(0)
		if o.parked {
			// Its route holds requests: its long samples are holds too.
			b.costs.Hold(route, b.cfg.ParkIdle)
		}
		if o.stream || o.parked {
			return // its length says nothing about the worker's speed
		}
		e.observe(o.rtt, o.at)
		b.costs.Observe(route, o.rtt)
		if e.adaptive != nil {
			e.adaptive.Sample(o.rtt, o.inflight, o.at)
		}
	case failedStatus:
		// The worker answered, so it is alive; but a failure costs it in
		// p2c_ewma as if it took long, or failing fast would attract
		// traffic.
		e.passiveFails.Store(0)
		e.observe(max(o.rtt, failurePenalty), o.at)
	case workerFailed:
		e.observe(max(o.rtt, failurePenalty), o.at)
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

// attempt proxies r once over the slot s holds, the breaker's verdict
// function in s already. It returns the attempt's outcome; when that
// carries an error nothing has been written to w. An answer that breaks
// off while it streams makes the transport panic with
// http.ErrAbortHandler, which aborts the client's connection too, so a
// cut body is never taken as complete; attempt accounts for it and lets
// the panic go on.
//
// Whatever happens, even a panic in the OnAttempt hook, the attempt
// ends in its one deferred function: the outcome is judged once and the
// slot released with it.
func (b *Balancer) attempt(s *slot, w http.ResponseWriter, r *http.Request, st *reqState, waited time.Duration) (o outcome) {
	e := s.e
	x := &st.x
	x.Reset()
	x.Timeout = b.cfg.RequestTimeout
	x.Idempotent = retry.Idempotent(r)
	if retry.InMemory(r) || r.GetBody != nil {
		x.Replay = retry.Rewind
	}
	x.OnStream = st.onStream
	o.inflight = e.Inflight() // this request included: its slot is counted
	start := time.Now()
	client := r.Context() // not the attempt's, which a request timeout ends
	sent, completed := false, false
	var end func(status int, err error) // the tracer's, if any
	defer func() {
		o.at = time.Now()
		o.rtt = o.at.Sub(start)
		o.status, o.stream = x.Status, x.Stream
		switch {
		case !sent:
			o.verdict = notSent
		case client.Err() != nil, x.BodyFailed():
			o.verdict = clientFault
		case !completed:
			o.verdict = workerFailed // broke off while it streamed
		case o.err != nil && transport.KindOf(o.err).Worker():
			o.verdict = workerFailed
		case o.err != nil:
			o.verdict = clientFault
		default:
			o.verdict = b.statusVerdict(x.Status)
			if o.verdict == answered && st.grpc && workerGRPCFailure(w.Header()) {
				o.verdict = workerFailed
			}
		}
		s.release(o)
		if end != nil {
			switch {
			case !completed:
				end(http.StatusBadGateway, errAborted)
			case x.TimedOut() && o.err != nil:
				end(http.StatusGatewayTimeout, o.err)
			case o.err != nil && x.Status == 0:
				end(0, o.err)
			default:
				end(x.Status, o.err)
			}
		}
	}()
	if b.cfg.OnAttempt != nil {
		st.attempt = Attempt{Endpoint: e, N: st.result.Attempts, QueueWait: waited}
		r, end = b.cfg.OnAttempt(r, &st.attempt)
	}
	if !st.deadline.IsZero() {
		// The worker learns the time the call has left, not the time it
		// had when it arrived.
		r.Header.Set("Grpc-Timeout", formatGRPCTimeout(time.Until(st.deadline)))
	}
	if c := b.cookie; c != nil && st.pick.cookie != e.token {
		// Pins the client to e, with e's answer only.
		x.SetCookie = c.header(e.token, r.TLS != nil)
	}
	sent = true
	o.err = e.transport.Forward(w, r, x)
	completed = true
	return o
}

// errAborted is what the tracer hears of an answer that broke off.
var errAborted = errors.New("response aborted")
