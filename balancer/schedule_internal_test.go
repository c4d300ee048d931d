package balancer

import (
	"errors"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"testing"
	"time"
)

// The schedule's tests run the queue's own code (join, dispatch, the
// deadline sweep, the cost table) on a virtual clock: no processes and
// no sockets, because what they check is the order of decisions, which a
// real clock on a busy machine would blur. Endpoints are real but never
// sent a request; a "request" holds a slot for its service time.

// simQueue is a balancer whose queue runs on a virtual clock.
type simQueue struct {
	b   *Balancer
	now time.Time
	due time.Time // when the queue's timer fires; zero: not armed
	eps []*Endpoint
}

func newSimQueue(t testing.TB, cfg Config, workers int) *simQueue {
	t.Helper()
	cfg.MaxInflight = 1
	cfg.Policy.Name = First
	b, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s := &simQueue{b: b, now: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	b.now = func() time.Time { return s.now }
	b.arm = func(d time.Duration) { s.due = s.now.Add(d) }
	for i := range workers {
		e := b.NewEndpoint(i+1, 0, "tcp", "127.0.0.1:1")
		b.Add(e)
		s.eps = append(s.eps, e)
	}
	return s
}

// simReq is one request of a simulation.
type simReq struct {
	id      int
	route   string
	service time.Duration
	pick    *Pick

	arrive, start, end time.Time
	e                  *Endpoint
	refused            error
}

func (s *simQueue) request(id int, route string, service time.Duration) *simReq {
	p := &Pick{Request: httptest.NewRequest("GET", route, nil)}
	p.w.ch = make(chan *Endpoint, 1)
	p.w.pick = p
	p.w.route = s.b.costs.lookup(p.Request, "")
	return &simReq{id: id, route: route, service: service, pick: p}
}

// sim runs requests that arrive at given times through a simQueue.
type sim struct {
	*simQueue
	queued  []*simReq
	running []*simReq
	done    []*simReq
}

// arrive is what acquire does when r arrives now.
func (s *sim) arrive(r *simReq) {
	r.arrive = s.now
	var e *Endpoint
	if s.b.waiting.Load() == 0 {
		e = s.b.takeFree(&r.pick.w)
	}
	if e == nil {
		var err error
		if e, err = s.b.join(&r.pick.w, s.now); err != nil {
			r.refused, r.end = err, s.now
			s.done = append(s.done, r)
			return
		}
	}
	if e != nil {
		s.begin(r, e)
	} else {
		s.queued = append(s.queued, r)
	}
	s.collect()
}

func (s *sim) begin(r *simReq, e *Endpoint) {
	r.start, r.e, r.end = s.now, e, s.now.Add(r.service)
	s.running = append(s.running, r)
}

// collect starts the waiters that were handed an endpoint.
func (s *sim) collect() {
	s.queued = slices.DeleteFunc(s.queued, func(r *simReq) bool {
		select {
		case e := <-r.pick.w.ch:
			if e == nil || e == timedOut {
				r.refused, r.end = errQueueTimeout, s.now
				s.done = append(s.done, r)
			} else {
				s.begin(r, e)
			}
			return true
		default:
			return false
		}
	})
}

// until runs the simulation's events up to t.
func (s *sim) until(t time.Time) {
	for {
		var next *simReq
		for _, r := range s.running {
			if next == nil || r.end.Before(next.end) {
				next = r
			}
		}
		switch {
		case !s.due.IsZero() && !s.due.After(t) && (next == nil || s.due.Before(next.end)):
			s.now, s.due = s.due, time.Time{}
			s.b.sweep()
		case next != nil && !next.end.After(t):
			// What a request's end does: the attempt gives the slot back,
			// Serve settles the reservation and learns the cost.
			s.now = next.end
			s.running = slices.DeleteFunc(s.running, func(r *simReq) bool { return r == next })
			s.done = append(s.done, next)
			s.b.release(next.e)
			s.b.costs.observe(next.pick.w.route, next.service)
		default:
			s.now = t
			return
		}
		s.collect()
	}
}

// run offers reqs at Poisson arrivals of the given rate, and returns
// them once all are done.
func (s *sim) run(reqs []*simReq, rate float64, rng *rand.Rand) []*simReq {
	at := s.now
	for _, r := range reqs {
		at = at.Add(time.Duration(rng.ExpFloat64() / rate * float64(time.Second)))
		s.until(at)
		s.arrive(r)
	}
	s.until(s.now.Add(time.Hour))
	return s.done
}

// learn teaches the queue's cost table what the requests of each route
// take, with the pool's average near the cheapest.
func learn(s *simQueue, costs map[string]time.Duration, samples int) {
	for range samples {
		for route, d := range costs {
			if d <= costs["/fast"] {
				s.b.costs.observe(s.request(-1, route, d).pick.w.route, d)
			}
		}
	}
	for route, d := range costs {
		if d > costs["/fast"] {
			s.b.costs.observe(s.request(-1, route, d).pick.w.route, d)
		}
	}
	for range samples {
		s.b.costs.observe(s.request(-1, "/fast", costs["/fast"]).pick.w.route, costs["/fast"])
	}
}

// Admission is by deadline: a request is refused at once when the work
// queued before it would keep it past queue_timeout, at the learned
// cost per request and one request per slot.
func TestAdmissionByDeadline(t *testing.T) {
	q := newSimQueue(t, Config{QueueTimeout: 1050 * time.Millisecond}, 1)
	learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": 100 * time.Millisecond}, 20)
	s := &sim{simQueue: q}
	s.arrive(q.request(0, "/block", time.Hour))
	// 1.05 s holds 10 requests of 100 ms: the 11th waits behind
	// 1 s of them, the 12th would wait 1.1 s.
	var slow []*simReq
	for i := 1; i <= 12; i++ {
		r := q.request(i, "/slow", 100*time.Millisecond)
		s.arrive(r)
		slow = append(slow, r)
	}
	for i, r := range slow {
		if refused := r.refused != nil; refused != (i == 11) {
			t.Fatalf("request %d with %d before it: refused %v (%v)", i+1, i, refused, r.refused)
		}
	}
	if !errors.Is(slow[11].refused, errWaitTooLong) || slow[11].end != s.now {
		t.Fatalf("refused with %v after %v, want errWaitTooLong at once", slow[11].refused, slow[11].end.Sub(slow[11].arrive))
	}
}

// One timer serves the queue: each waiter times out at its own
// deadline.
func TestQueueTimeoutSweep(t *testing.T) {
	q := newSimQueue(t, Config{QueueTimeout: 100 * time.Millisecond}, 1)
	s := &sim{simQueue: q}
	s.arrive(q.request(0, "/block", time.Hour))
	var reqs []*simReq
	for i := 1; i <= 3; i++ {
		r := q.request(i, "/", time.Millisecond)
		s.arrive(r)
		reqs = append(reqs, r)
		s.until(s.now.Add(10 * time.Millisecond))
	}
	s.until(s.now.Add(time.Second))
	for _, r := range reqs {
		if !errors.Is(r.refused, errQueueTimeout) || r.end.Sub(r.arrive) != 100*time.Millisecond {
			t.Fatalf("request %d: %v after %v, want the queue timeout after 100ms", r.id, r.refused, r.end.Sub(r.arrive))
		}
	}
	if q.b.QueueLen() != 0 {
		t.Fatalf("%d still queued", q.b.QueueLen())
	}
}
