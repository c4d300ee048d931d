package queue

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/cost"
)

// The schedule's tests run the queue's own code (join, dispatch, the
// deadline sweep) on a virtual clock, with the real cost table: no
// processes, no sockets and no endpoints, because what they check is the
// order of decisions, which a real clock on a busy machine would blur.
// A fake stands in for the endpoints: workers of one slot each, taken
// first-free as the balancer's "first" policy takes them; a "request"
// holds its slot for its service time.

// The balancer's schedules.
const (
	ScheduleFIFO = "fifo"
	ScheduleCost = "cost"
)

// simQueue is a queue on a virtual clock, in front of simulated workers.
type simQueue struct {
	q     *Queue
	costs *cost.Table
	now   time.Time
	due   time.Time // when the queue's timer fires; zero: not armed
	busy  []bool    // each worker's one slot
}

func newSimQueue(t testing.TB, schedule string, timeout time.Duration, workers int) *simQueue {
	t.Helper()
	if timeout == 0 {
		timeout = DefaultQueueTimeout
	}
	s := &simQueue{costs: cost.New(0), now: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC), busy: make([]bool, workers)}
	s.q = New(Config{
		Size: DefaultQueueSize, Timeout: timeout, ByCost: schedule == ScheduleCost,
		Average: s.costs.Average(),
		Servers: func() int { return len(s.busy) },
		AnyFree: func() bool { return slices.Contains(s.busy, false) },
	})
	s.q.now = func() time.Time { return s.now }
	s.q.arm = func(d time.Duration) { s.due = s.now.Add(d) }
	return s
}

// simReq is one request of a simulation.
type simReq struct {
	id      int
	route   string
	service time.Duration
	class   *cost.Route
	w       Waiter
	s       *simQueue

	arrive, start, end time.Time
	worker             int // the slot it took
	refused            error
}

func (r *simReq) Take() bool {
	for i, b := range r.s.busy {
		if !b {
			r.s.busy[i], r.worker = true, i
			return true
		}
	}
	return false
}

func (r *simReq) Hopeless() bool { return false }

func (r *simReq) Untake() { r.s.busy[r.worker] = false }

func (s *simQueue) request(id int, route string, service time.Duration) *simReq {
	r := &simReq{id: id, route: route, service: service, s: s}
	r.class = s.costs.Lookup(httptest.NewRequest("GET", route, nil), "")
	r.w.Init(r)
	r.w.SetClass(r.class)
	return r
}

// sim runs requests that arrive at given times through a simQueue.
type sim struct {
	*simQueue
	queued  []*simReq
	running []*simReq
	done    []*simReq
}

// arrive is what Acquire does when r arrives now.
func (s *sim) arrive(r *simReq) {
	r.arrive = s.now
	took := s.q.waiting.Load() == 0 && s.q.takeFree(&r.w)
	if !took {
		var err error
		if took, err = s.q.join(&r.w, s.now); err != nil {
			r.refused, r.end = err, s.now
			s.done = append(s.done, r)
			return
		}
	}
	if took {
		s.begin(r)
	} else {
		s.queued = append(s.queued, r)
	}
	s.collect()
}

func (s *sim) begin(r *simReq) {
	r.start, r.end = s.now, s.now.Add(r.service)
	s.running = append(s.running, r)
}

// collect starts the waiters that were handed a slot.
func (s *sim) collect() {
	s.queued = slices.DeleteFunc(s.queued, func(r *simReq) bool {
		select {
		case h := <-r.w.ch:
			if h != handed {
				r.refused, r.end = ErrTimeout, s.now
				s.done = append(s.done, r)
			} else {
				s.begin(r)
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
			s.q.sweep()
		case next != nil && !next.end.After(t):
			// What a request's end does in the balancer: its slot ends the
			// reservation record, goes back, its cost is learned, and the
			// queue is dispatched.
			s.now = next.end
			s.running = slices.DeleteFunc(s.running, func(r *simReq) bool { return r == next })
			s.done = append(s.done, next)
			s.q.Done(&next.w)
			s.busy[next.worker] = false
			s.costs.Observe(next.class, next.service)
			s.q.Dispatch()
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

// latencies of the done requests of a route, sorted.
func latencies(done []*simReq, route string) []time.Duration {
	var l []time.Duration
	for _, r := range done {
		if r.route == route && r.refused == nil {
			l = append(l, r.end.Sub(r.arrive))
		}
	}
	slices.Sort(l)
	return l
}

func quantile(l []time.Duration, q float64) time.Duration {
	if len(l) == 0 {
		return 0
	}
	return l[min(len(l)-1, int(q*float64(len(l))))]
}

// mixed makes n requests, each slow with probability slowShare.
func mixed(s *simQueue, n int, rng *rand.Rand, fast, slow time.Duration, slowShare float64) []*simReq {
	reqs := make([]*simReq, n)
	for i := range reqs {
		if rng.Float64() < slowShare {
			reqs[i] = s.request(i, "/slow", slow)
		} else {
			reqs[i] = s.request(i, "/fast", fast)
		}
	}
	return reqs
}

type simFigures struct {
	fastP50, fastP99, fastP999, slowP50, slowP99, slowMax time.Duration
	refused                                               int
}

func (f simFigures) String() string {
	return fmt.Sprintf("fast p50 %v p99 %v p99.9 %v, slow p50 %v p99 %v max %v, refused %d",
		f.fastP50, f.fastP99, f.fastP999, f.slowP50, f.slowP99, f.slowMax, f.refused)
}

func simulateMix(t *testing.T, schedule string, load float64, n int, seed uint64) simFigures {
	const (
		fast, slow = time.Millisecond, 50 * time.Millisecond
		slowShare  = 0.05
		workers    = 2
	)
	q := newSimQueue(t, schedule, 0, workers)
	rng := rand.New(rand.NewPCG(seed, 1))
	reqs := mixed(q, n, rng, fast, slow, slowShare)
	mean := (1-slowShare)*fast.Seconds() + slowShare*slow.Seconds()
	done := (&sim{simQueue: q}).run(reqs, load*workers/mean, rng)
	f := simFigures{}
	for _, r := range done {
		if r.refused != nil {
			f.refused++
		}
	}
	fl, sl := latencies(done, "/fast"), latencies(done, "/slow")
	f.fastP50, f.fastP99, f.fastP999 = quantile(fl, 0.5), quantile(fl, 0.99), quantile(fl, 0.999)
	f.slowP50, f.slowP99, f.slowMax = quantile(sl, 0.5), quantile(sl, 0.99), sl[len(sl)-1]
	return f
}

// A discrete-event simulation of the queue with Poisson arrivals at two
// workers, 95% of requests taking 1 ms and 5% taking 50 ms (the mix of
// the scheduling benchmark): against first come, first served, schedule
// cost must cut the fast requests' tail by far, keep the slow ones'
// within a bounded factor, refuse nothing, and let no request wait past
// queue_timeout.
func TestScheduleSimulation(t *testing.T) {
	n := 30000
	if testing.Short() {
		n = 10000
	}
	for _, c := range []struct {
		load             float64
		fastMax, slowMax float64 // of FIFO's p99
	}{
		{0.5, 0.5, 1.4},
		{0.75, 0.35, 1.5},
	} {
		fifo := simulateMix(t, ScheduleFIFO, c.load, n, 7)
		cost := simulateMix(t, ScheduleCost, c.load, n, 7)
		t.Logf("load %.2f\n\tfifo: %v\n\tcost: %v", c.load, fifo, cost)
		if cost.refused+fifo.refused > 0 {
			t.Fatalf("load %.2f: %d and %d requests refused", c.load, fifo.refused, cost.refused)
		}
		if f := float64(cost.fastP99) / float64(fifo.fastP99); f > c.fastMax {
			t.Errorf("load %.2f: fast p99 %.2f× FIFO's, want at most %.2f×", c.load, f, c.fastMax)
		}
		if f := float64(cost.slowP99) / float64(fifo.slowP99); f > c.slowMax {
			t.Errorf("load %.2f: slow p99 %.2f× FIFO's, want at most %.2f×", c.load, f, c.slowMax)
		}
		if cost.slowMax > DefaultQueueTimeout {
			t.Errorf("load %.2f: a slow request waited %v", c.load, cost.slowMax)
		}
	}
}

// With one cost class schedule cost is first come, first served: every
// request starts when it would in FIFO order, whatever its service time.
func TestScheduleSingleClassIsFIFO(t *testing.T) {
	start := map[string][]time.Time{}
	for _, schedule := range []string{ScheduleFIFO, ScheduleCost} {
		q := newSimQueue(t, schedule, 0, 2)
		rng := rand.New(rand.NewPCG(3, 1))
		reqs := make([]*simReq, 5000)
		for i := range reqs {
			reqs[i] = q.request(i, "/work", time.Duration(rng.ExpFloat64()*float64(2*time.Millisecond)))
		}
		(&sim{simQueue: q}).run(reqs, 0.9*2/0.002, rng)
		for _, r := range reqs {
			if r.refused != nil {
				t.Fatalf("%s: request %d refused: %v", schedule, r.id, r.refused)
			}
			start[schedule] = append(start[schedule], r.start)
		}
	}
	for i, at := range start[ScheduleFIFO] {
		if !start[ScheduleCost][i].Equal(at) {
			t.Fatalf("request %d started at %v with schedule cost, %v with fifo", i, start[ScheduleCost][i].Sub(start[ScheduleFIFO][0]), at.Sub(start[ScheduleFIFO][0]))
		}
	}
}

// learn teaches the queue's cost table what the requests of each route
// take, with the pool's average near the cheapest.
func learn(s *simQueue, costs map[string]time.Duration, samples int) {
	for range samples {
		for route, d := range costs {
			if d <= costs["/fast"] {
				s.costs.Observe(s.request(-1, route, d).class, d)
			}
		}
	}
	for route, d := range costs {
		if d > costs["/fast"] {
			s.costs.Observe(s.request(-1, route, d).class, d)
		}
	}
	for range samples {
		s.costs.Observe(s.request(-1, "/fast", costs["/fast"]).class, costs["/fast"])
	}
}

// startOrder is the ids of reqs by the time they started.
func startOrder(reqs []*simReq) []int {
	rs := slices.Clone(reqs)
	slices.SortStableFunc(rs, func(a, b *simReq) int { return a.start.Compare(b.start) })
	ids := make([]int, len(rs))
	for i, r := range rs {
		ids[i] = r.id
	}
	return ids
}

// Requests that wait go cheapest first, each route's in arrival order.
func TestScheduleCheapestFirst(t *testing.T) {
	q := newSimQueue(t, ScheduleCost, 0, 1)
	learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": 50 * time.Millisecond}, 20)
	s := &sim{simQueue: q}
	reqs := []*simReq{
		q.request(0, "/slow", 50*time.Millisecond), // takes the worker
		q.request(1, "/slow", 50*time.Millisecond),
		q.request(2, "/fast", time.Millisecond),
		q.request(3, "/slow", 50*time.Millisecond),
		q.request(4, "/fast", time.Millisecond),
	}
	for _, r := range reqs {
		s.arrive(r)
	}
	s.until(s.now.Add(time.Second))
	if got, want := startOrder(reqs), []int{0, 2, 4, 1, 3}; !slices.Equal(got, want) {
		t.Fatalf("start order %v, want %v", got, want)
	}
}

// A request is passed only by cheaper ones that arrived less than (its
// cost − theirs) / aging after it, and a cost counts for at most
// aging × queue_timeout / 4: none waits past queue_timeout because
// cheaper ones keep coming.
func TestScheduleAgingBound(t *testing.T) {
	for _, c := range []struct {
		route string
		cost  time.Duration
	}{
		{"/slow", 50 * time.Millisecond},
		{"/huge", time.Hour}, // counts as aging × 10 s / 4 = 125 ms
	} {
		t.Run(c.route, func(t *testing.T) {
			q := newSimQueue(t, ScheduleCost, 0, 1)
			learn(q, map[string]time.Duration{"/fast": time.Millisecond, c.route: c.cost}, 20)
			s := &sim{simQueue: q}
			// The worker is busy for 3 s; the expensive request waits from
			// t0, and a fast one arrives every 100 ms after it.
			t0 := s.now
			busy := q.request(-1, "/block", 3*time.Second)
			s.arrive(busy)
			old := q.request(0, c.route, time.Millisecond)
			s.arrive(old)
			var fast []*simReq
			for i := 1; i <= 25; i++ {
				s.until(t0.Add(time.Duration(i) * 100 * time.Millisecond))
				r := q.request(i, "/fast", time.Millisecond)
				s.arrive(r)
				fast = append(fast, r)
			}
			s.until(t0.Add(10 * time.Second))
			counted := min(c.cost.Seconds(), aging*DefaultQueueTimeout.Seconds()/4)
			window := time.Duration((counted - 0.001) / aging * float64(time.Second))
			if window > DefaultQueueTimeout/4 {
				t.Fatalf("window %v: the cap does not bound it", window)
			}
			for _, r := range fast {
				passed := r.start.Before(old.start)
				if arrivedIn := r.arrive.Sub(old.arrive) < window; passed != arrivedIn {
					t.Errorf("fast request %v after the expensive one: passed it %v, want %v (window %v)", r.arrive.Sub(old.arrive), passed, arrivedIn, window)
				}
			}
		})
	}
}

// An expensive request may not take the last worker free of expensive
// ones while a cheap request could soon need it: it waits until one in
// flight is within reserveStagger of its end, or reservePatience times
// its cost; a cheap one that arrives meanwhile takes that worker at once.
func TestScheduleReservation(t *testing.T) {
	const slow = 50 * time.Millisecond
	q := newSimQueue(t, ScheduleCost, 0, 2)
	learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": slow}, 20)
	s := &sim{simQueue: q}
	t0 := s.now
	a, b := q.request(0, "/slow", slow), q.request(1, "/slow", slow)
	s.arrive(a)
	s.arrive(b)
	if a.start != t0 || !b.start.IsZero() {
		t.Fatalf("first expensive request started at %v, second at %v; want the first at once and the second held", a.start.Sub(t0), b.start.Sub(t0))
	}
	s.until(t0.Add(10 * time.Millisecond))
	c := q.request(2, "/fast", time.Millisecond)
	s.arrive(c)
	if c.start != s.now {
		t.Fatalf("a cheap request waited %v with a worker kept for it", c.start.Sub(s.now))
	}
	s.until(t0.Add(time.Second))
	stagger := time.Duration((1 - reserveStagger) * float64(slow))
	if got := b.start.Sub(t0); got != stagger {
		t.Fatalf("held expensive request started after %v, want %v, when the first was within %.0f%% of its end", got, stagger, 100*reserveStagger)
	}

	// The worker kept free is not kept from an expensive request forever:
	// one whose predecessor overruns its estimate goes after
	// reservePatience times its cost.
	q = newSimQueue(t, ScheduleCost, 0, 2)
	learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": slow}, 20)
	s = &sim{simQueue: q}
	t0 = s.now
	a, b = q.request(0, "/slow", time.Hour), q.request(1, "/slow", slow)
	s.arrive(a)
	s.until(t0.Add(slow))
	s.arrive(b)
	s.until(t0.Add(time.Second))
	if got, want := b.start.Sub(t0), slow; got != want {
		t.Fatalf("expensive request behind an overrunning one started after %v, want %v (its predecessor's estimate ran out)", got, want)
	}

	// With one worker nothing is held: the queue stays work-conserving.
	q = newSimQueue(t, ScheduleCost, 0, 1)
	learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": slow}, 20)
	s = &sim{simQueue: q}
	a = q.request(0, "/slow", slow)
	s.arrive(a)
	if a.start != s.now {
		t.Fatal("an expensive request was held with one worker")
	}
}

// Admission is by deadline: once the queue has stood for a quarter of
// queue_timeout, a request is refused at once when the work queued
// before it would keep it past queue_timeout at the pace the queue has
// kept; cheaper requests, which schedule cost serves first, still get
// in.
func TestAdmissionByDeadline(t *testing.T) {
	for _, schedule := range []string{ScheduleFIFO, ScheduleCost} {
		t.Run(schedule, func(t *testing.T) {
			const slow = 100 * time.Millisecond
			q := newSimQueue(t, schedule, 1050*time.Millisecond, 1)
			learn(q, map[string]time.Duration{"/fast": time.Millisecond, "/slow": slow}, 20)
			s := &sim{simQueue: q}
			// A second of one worker busy with requests always waiting:
			// the pace is 100 ms of work done every 100 ms, and the queue
			// has stood for more than a quarter of the timeout.
			s.arrive(q.request(-1, "/slow", slow))
			s.arrive(q.request(0, "/slow", slow))
			for i := 1; i <= 10; i++ {
				s.arrive(q.request(i, "/slow", slow))
				s.until(s.now.Add(slow))
			}
			if p := q.q.queue.pace; p < 0.9 || p > 1.1 {
				t.Fatalf("pace %v, want 1 s of work per second", p)
			}
			// Then a burst: 1.05 s holds ten requests of 100 ms before a
			// new one.
			for i := 11; i <= 25; i++ {
				before := q.q.queue.n
				r := q.request(i, "/slow", slow)
				s.arrive(r)
				if refused := r.refused != nil; refused != (before > 10) {
					t.Fatalf("request with %d waiting before it: refused %v (%v)", before, refused, r.refused)
				}
				if r.refused != nil && (!errors.Is(r.refused, ErrWaitTooLong) || r.end != s.now) {
					t.Fatalf("refused with %v after %v, want ErrWaitTooLong at once", r.refused, r.end.Sub(r.arrive))
				}
			}
			fast := q.request(26, "/fast", time.Millisecond)
			s.arrive(fast)
			if refused := fast.refused != nil; refused != (schedule == ScheduleFIFO) {
				t.Fatalf("a cheap request: refused %v, want %v", refused, schedule == ScheduleFIFO)
			}
		})
	}
}

// One timer serves the queue: each waiter times out at its own
// deadline.
func TestQueueTimeoutSweep(t *testing.T) {
	q := newSimQueue(t, ScheduleCost, 100*time.Millisecond, 1)
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
		if !errors.Is(r.refused, ErrTimeout) || r.end.Sub(r.arrive) != 100*time.Millisecond {
			t.Fatalf("request %d: %v after %v, want the queue timeout after 100ms", r.id, r.refused, r.end.Sub(r.arrive))
		}
	}
	if q.q.Len() != 0 {
		t.Fatalf("%d still queued", q.q.Len())
	}
}
