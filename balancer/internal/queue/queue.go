// Package queue holds the requests that wait for a slot: admission by
// deadline, their order (first come, first served, or the cheapest
// expected request first with aging and a reservation for cheap
// requests), one timer for every deadline, and the hand-off of a slot to
// a waiting request. It never sees endpoints: each request brings a
// function that tries to take a slot of its choosing (Request.Take),
// and the queue decides only when, and for whom, to call it.
package queue

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults. The size is a memory guard, not the admission rule: a
// request is admitted while the work queued before it can be done within
// the queue timeout (see admitLocked). A waiting request costs the pool
// about a kilobyte, and Go's HTTP server a few more per connection (see
// docs/configuration.md, queue_size).
const (
	DefaultQueueSize    = 50000
	DefaultQueueTimeout = 10 * time.Second
)

// Why a request got no slot.
var (
	ErrNoEndpoint  = errors.New("no healthy worker is available")
	ErrFull        = errors.New("all workers are busy and the wait queue is full")
	ErrTimeout     = errors.New("no worker became free within the queue timeout")
	ErrWaitTooLong = errors.New("all workers are busy, and the requests already waiting would keep this one waiting past the queue timeout")
	ErrDeadline    = errors.New("all workers are busy, and the requests already waiting would keep this call past its deadline")
)

// Request is a waiting request as the queue sees it.
type Request interface {
	// Take takes a slot for the request if one that it may use is free
	// now, and reports whether it did.
	Take() bool
	// Hopeless reports whether no slot could ever be free for it:
	// nothing it may use is in rotation, and nothing is expected to join.
	Hopeless() bool
	// Untake gives back the slot Take took, for a request that left
	// before it could use it.
	Untake()
}

// Class is a kind of request whose expected cost orders the queue (with
// ByCost) and estimates the waits: a route.
type Class interface {
	// Cost is the expected cost in seconds; ok is false until known.
	Cost() (seconds float64, ok bool)
}

// Config sets up a Queue.
type Config struct {
	// Size bounds the waiting requests; Timeout how long one waits.
	Size    int
	Timeout time.Duration
	// ByCost orders the waiting requests by their class's cost (schedule
	// cost); false serves them in their order of arrival.
	ByCost bool
	// Average is the pool's class: every request's cost.
	Average Class
	// Servers is the number of endpoints in rotation; AnyFree reports
	// whether some endpoint could take a request now.
	Servers func() int
	AnyFree func() bool
	// Waiting, if set, is told when a request starts to wait, under the
	// queue's lock: it must not call the queue.
	Waiting func()
}

// ending is what a wait ends with, in a Waiter's channel.
type ending uint8

const (
	handed   ending = iota // Take took a slot for it
	none                   // hopeless
	timedOut               // its deadline passed
)

// Waiter is a request's place in the queue. It lives in the request's
// pooled state: the queue links waiters intrusively, so queueing does
// not allocate. Init it once, then give it its class before each
// Acquire.
type Waiter struct {
	// Its places in the list of every waiter, and in its class's lane
	// (ByCost), both oldest first.
	links  [2]link
	queued bool
	ch     chan ending // capacity 1
	req    Request

	class    Class
	lane     *lane
	cost     float64   // expected seconds when it joined, for admission
	since    time.Time // when it joined
	deadline time.Time // its own, if it has one (a gRPC call's)
	handed   time.Time // when dispatch handed it a slot
	// heavy: it holds a slot as an expensive request, expected to end
	// at ends, counted in Queue.heavy until Done.
	heavy bool
	ends  time.Time
}

// Init makes w the place of req.
func (w *Waiter) Init(req Request) {
	w.req = req
	w.ch = make(chan ending, 1)
}

// SetClass names the class of w's next request; nil means an average
// one.
func (w *Waiter) SetClass(c Class) { w.class = c }

// SetDeadline gives w's next request a deadline of its own (zero: none).
// It is refused at once when the work ahead of it would keep it past
// that; its context must end by then, which ends its wait.
func (w *Waiter) SetDeadline(t time.Time) { w.deadline = t }

// The lists a waiter is in: every waiter's, and its class's lane.
const (
	byArrival = iota
	byLane
)

// link is a waiter's place in one list.
type link struct{ prev, next *Waiter }

// waitList is a list of waiters, linked through one of their links.
type waitList struct{ head, tail *Waiter }

func (l *waitList) push(w *Waiter, by int) {
	w.links[by] = link{prev: l.tail}
	if l.tail != nil {
		l.tail.links[by].next = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (l *waitList) remove(w *Waiter, by int) {
	k := w.links[by]
	if k.prev != nil {
		k.prev.links[by].next = k.next
	} else {
		l.head = k.next
	}
	if k.next != nil {
		k.next.links[by].prev = k.prev
	} else {
		l.tail = k.prev
	}
	w.links[by] = link{}
}

// waitQueue holds the waiters, guarded by Queue.mu: in one list by
// arrival, which is also the order of their deadlines (they all have
// the same timeout), and with ByCost in one lane per class too.
type waitQueue struct {
	waitList
	n     int
	work  float64 // the waiters' expected cost, in seconds
	lanes []*lane // lanes with waiters (ByCost)
	free  []*lane // lanes without, to reuse
	// sweepAt is when the sweep timer will fire; zero when it is not
	// armed.
	sweepAt time.Time
	// epoch numbers dispatch passes, to mark the lanes a pass skipped.
	epoch uint64

	// The queue's pace: the expected cost of the waiters it handed an
	// endpoint, per second, measured over windows of at least
	// paceWindow; a window in which it emptied only ever raises it (the
	// workers were not all busy then).
	drained  float64
	pace     float64
	since    time.Time // when the queue last stopped being empty
	paceFrom time.Time
	paceDone float64
	emptied  bool
}

// paceWindow is the shortest time over which the pace is measured.
const paceWindow = 200 * time.Millisecond

// Queue is the wait queue of one balancer. It is safe for concurrent
// use.
type Queue struct {
	cfg     Config
	mu      sync.Mutex
	queue   waitQueue
	waiting atomic.Int64
	sweeper *time.Timer
	// The queue's clock, and what sets its timer to run the sweep after
	// d: tests of the schedule replace them with a virtual clock.
	now func() time.Time
	arm func(d time.Duration)

	// Expensive requests holding a slot (ByCost): their number, read
	// without a lock, and themselves, under hmu.
	heavy     atomic.Int64
	hmu       sync.Mutex
	busyHeavy []*Waiter
}

// New returns an empty queue.
func New(cfg Config) *Queue {
	q := &Queue{cfg: cfg, now: time.Now}
	// The timer exists from the start, stopped: arming it never
	// allocates, and it starts no goroutine until it fires.
	q.sweeper = time.AfterFunc(time.Hour, q.sweep)
	q.sweeper.Stop()
	q.arm = func(d time.Duration) { q.sweeper.Reset(d) }
	return q
}

// Len is the number of requests waiting.
func (q *Queue) Len() int { return int(q.waiting.Load()) }

// Acquire gets w's request a slot (its Take took one): at once if one is
// free and nobody waits, else after waiting its turn. It fails when the
// request is hopeless, waiting would take longer than the timeout, the
// queue is full, the wait times out, or ctx ends. waited is the time it
// waited; handoff, for a request handed a slot after a wait, how long
// the hand-off took from dispatch until this goroutine ran.
func (q *Queue) Acquire(ctx context.Context, w *Waiter) (waited, handoff time.Duration, err error) {
	// Requests already waiting go first: only an empty queue allows the
	// fast path.
	if q.waiting.Load() == 0 && q.takeFree(w) {
		return 0, 0, nil
	}
	if w.req.Hopeless() {
		return 0, 0, ErrNoEndpoint
	}
	return q.wait(ctx, w)
}

// takeFree takes a slot for w if one is free and the reservation lets
// it.
func (q *Queue) takeFree(w *Waiter) bool {
	if q.holdsBack(w) || !w.req.Take() {
		return false
	}
	q.took(w)
	return true
}

// wait queues the request until dispatch hands it a slot, the deadline
// sweep times it out, or ctx ends. A waiter costs no timer and no
// goroutine: one timer serves the whole queue.
func (q *Queue) wait(ctx context.Context, w *Waiter) (waited, handoff time.Duration, err error) {
	start := q.now()
	if took, err := q.join(w, start); took || err != nil {
		return 0, 0, err
	}
	select {
	case h := <-w.ch:
		return q.handedOff(h, w, start)
	case <-ctx.Done():
		if !q.dequeue(w) {
			if h := <-w.ch; h == handed {
				q.Done(w)
				w.req.Untake()
			}
			w.handed = time.Time{}
		}
		return q.now().Sub(start), 0, ctx.Err()
	}
}

// join takes a free slot for w, or queues it at now (neither, with the
// reason, when it may not wait).
func (q *Queue) join(w *Waiter, now time.Time) (took bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	// Announce the waiter before looking again: a release that happens
	// after this sees waiting > 0 and dispatches under mu, after we have
	// queued; one that happened before left a slot this look finds.
	// Others waiting go first.
	q.waiting.Add(1)
	if q.queue.n > 0 && q.cfg.AnyFree() {
		// A slot is free while others wait: they get what they can use
		// first; what is still free then none of them can (they wait
		// for a worker of their own, a sticky session's), and this
		// request takes it rather than wait, or be refused, behind them.
		q.dispatchLocked(now)
	}
	if (q.queue.n == 0 || q.cfg.AnyFree()) && q.takeFree(w) {
		q.waiting.Add(-1)
		return true, nil
	}
	if err := q.enqueueLocked(w, now); err != nil {
		q.waiting.Add(-1)
		return false, err
	}
	return false, nil
}

// enqueueLocked admits w to the queue at now and hands out what is free,
// or says why w may not wait. The caller has counted w in waiting.
func (q *Queue) enqueueLocked(w *Waiter, now time.Time) error {
	// The last candidate may have left since Acquire looked; FailHopeless
	// answers queued waiters, not this one yet.
	if w.req.Hopeless() {
		return ErrNoEndpoint
	}
	if q.queue.n >= q.cfg.Size {
		return ErrFull
	}
	if w.class == nil {
		w.class = q.cfg.Average
	}
	w.since, w.cost = now, q.expected(w.class)
	if !q.admitLocked(w) {
		return ErrWaitTooLong
	}
	if q.missesDeadlineLocked(w) {
		return ErrDeadline
	}
	q.pushLocked(w)
	if q.cfg.Waiting != nil {
		q.cfg.Waiting()
	}
	if q.queue.n == 1 {
		q.armLocked(now.Add(q.cfg.Timeout), now)
	}
	// A slot may be free for an older waiter, or for this one.
	q.dispatchLocked(now)
	return nil
}

// expected is what a request of class c is expected to cost: its
// class's estimate, else the pool's average, else 0.
func (q *Queue) expected(c Class) float64 {
	if v, ok := c.Cost(); ok {
		return v
	}
	v, _ := q.cfg.Average.Cost()
	return v
}

// admitLocked reports whether w can be served within the queue timeout:
// whether the work that will go before it (every waiter's with schedule
// fifo; with schedule cost, that of routes no dearer than its own)
// leaves the queue by then at the queue's pace. Both count each waiter
// at the cost its route was expected to have when it joined: costs are
// latencies, which a saturated host stretches (and a lagging average
// keeps stretched for a while), alike for the waiters ahead and those
// that left, so only their ratio counts. Until the pace is known, or
// where no cost is, it is admitted; and so it is until the queue has
// stood for a quarter of the timeout, so that a burst, or a host that
// stalls for a moment (a thousand connections opening at once), waits
// its turn rather than being turned away to come straight back.
func (q *Queue) admitLocked(w *Waiter) bool {
	wq := &q.queue
	if wq.pace == 0 || wq.n == 0 || w.since.Sub(wq.since) < q.cfg.Timeout/4 {
		return true
	}
	ahead := wq.work
	if q.cfg.ByCost {
		ahead = q.workAheadLocked(w.cost)
	}
	return ahead/wq.pace <= q.cfg.Timeout.Seconds()
}

// missesDeadlineLocked reports whether w, which has a deadline of its
// own, cannot be served by then: it has passed, or the work ahead of it
// leaves the queue later at the queue's pace. Unlike the queue timeout,
// a deadline the client set is the client's last word: no grace for a
// queue that has just formed.
func (q *Queue) missesDeadlineLocked(w *Waiter) bool {
	if w.deadline.IsZero() {
		return false
	}
	left := w.deadline.Sub(w.since)
	wq := &q.queue
	if left <= 0 || wq.pace == 0 || wq.n == 0 {
		return left <= 0
	}
	ahead := wq.work
	if q.cfg.ByCost {
		ahead = q.workAheadLocked(w.cost)
	}
	return ahead/wq.pace > left.Seconds()
}

func (q *Queue) pushLocked(w *Waiter) {
	wq := &q.queue
	if wq.n == 0 {
		wq.since = w.since
	}
	wq.push(w, byArrival)
	w.queued = true
	wq.n++
	wq.work += w.cost
	if q.cfg.ByCost {
		q.pushLaneLocked(w)
	}
}

// removeLocked takes w out of the queue.
func (q *Queue) removeLocked(w *Waiter) {
	wq := &q.queue
	wq.remove(w, byArrival)
	w.queued = false
	wq.n--
	wq.work -= w.cost
	if wq.n == 0 {
		wq.work = 0 // no rounding drift survives an empty queue
		wq.emptied = true
	}
	if q.cfg.ByCost {
		q.removeLaneLocked(w)
	}
	q.waiting.Add(-1)
}

// handLocked ends w's wait with h.
func (q *Queue) handLocked(w *Waiter, h ending, now time.Time) {
	q.removeLocked(w)
	if h == handed {
		q.queue.drained += w.cost
		w.handed = now
	}
	w.ch <- h
}

// handedOff is the result of a wait that dispatch, the sweep or
// FailHopeless ended.
func (q *Queue) handedOff(h ending, w *Waiter, start time.Time) (waited, handoff time.Duration, err error) {
	now := q.now()
	switch h {
	case none:
		return now.Sub(start), 0, ErrNoEndpoint
	case timedOut:
		return now.Sub(start), 0, ErrTimeout
	}
	// How long the hand-off took, from dispatch to this goroutine
	// running: the worker's idle time between two requests at a limit of
	// 1, as far as it happens in Go.
	handoff = now.Sub(w.handed)
	w.handed = time.Time{}
	return now.Sub(start), handoff, nil
}

// FailHopeless answers "no endpoint" to every waiting request that is
// hopeless now (see Request.Hopeless): nothing would wake them, and a
// pool without a worker must answer 503 promptly rather than at the
// queue timeout. Call it when endpoints leave, or stop being expected.
func (q *Queue) FailHopeless() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for w := q.queue.head; w != nil; {
		next := w.links[byArrival].next
		if w.req.Hopeless() {
			q.handLocked(w, none, time.Time{})
		}
		w = next
	}
}

// Dispatch hands free slots to waiting requests. Call it whenever
// capacity may have appeared: a request finished, an endpoint joined, a
// limit grew, a breaker may probe.
func (q *Queue) Dispatch() {
	if q.waiting.Load() == 0 {
		return
	}
	q.mu.Lock()
	q.dispatchLocked(q.now())
	q.mu.Unlock()
}

// dispatchLocked is Dispatch with mu held, at now.
func (q *Queue) dispatchLocked(now time.Time) {
	q.measurePaceLocked(now)
	if q.cfg.ByCost {
		q.dispatchByCostLocked(now)
		return
	}
	// Oldest first. A waiter that cannot use the free slot (it tried
	// that endpoint already, or its policy wants another) is passed
	// over, not allowed to hold up those behind it.
	for w := q.queue.head; w != nil; {
		next := w.links[byArrival].next
		if w.req.Take() {
			q.handLocked(w, handed, now)
		} else if !q.cfg.AnyFree() {
			return
		}
		w = next
	}
}

// measurePaceLocked closes the pace's window if it is long enough.
func (q *Queue) measurePaceLocked(now time.Time) {
	wq := &q.queue
	d := now.Sub(wq.paceFrom)
	if d < paceWindow {
		return
	}
	done := wq.drained
	if !wq.paceFrom.IsZero() && wq.n > 0 {
		switch r := (done - wq.paceDone) / d.Seconds(); {
		case !wq.emptied && wq.pace > 0:
			wq.pace = (wq.pace + r) / 2
		case !wq.emptied, r > wq.pace:
			wq.pace = r
		}
	}
	wq.paceFrom, wq.paceDone, wq.emptied = now, done, wq.n == 0
}

// dequeue takes w out of the queue; false means its wait was ended
// already, with what is waiting in w.ch.
func (q *Queue) dequeue(w *Waiter) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !w.queued {
		return false
	}
	q.removeLocked(w)
	return true
}

// armLocked makes the sweep run at the latest at t. One timer serves
// the queue: it runs at the oldest waiter's deadline (or earlier, when
// the reservation lets an expensive waiter go), and the sweep sets it
// again for the next.
func (q *Queue) armLocked(t, now time.Time) {
	wq := &q.queue
	if wq.sweepAt.IsZero() || t.Before(wq.sweepAt) {
		wq.sweepAt = t
		q.arm(t.Sub(now))
	}
}

// sweep is the queue timer's function.
func (q *Queue) sweep() {
	q.mu.Lock()
	q.sweepLocked(q.now())
	q.mu.Unlock()
}

// sweepLocked times out the waiters whose deadline passed by now, hands
// out what the reservation no longer holds back, and sets the timer for
// what comes next.
func (q *Queue) sweepLocked(now time.Time) {
	wq := &q.queue
	wq.sweepAt = time.Time{}
	timeout := q.cfg.Timeout
	for w := wq.head; w != nil && !now.Before(w.since.Add(timeout)); w = wq.head {
		q.handLocked(w, timedOut, now)
	}
	q.dispatchLocked(now)
	if wq.head != nil {
		q.armLocked(wq.head.since.Add(timeout), now)
	}
}
