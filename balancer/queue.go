package balancer

import (
	"context"
	"errors"
	"time"
)

// Queue defaults. The size is a memory guard, not the admission rule: a
// request is admitted while the work queued before it can be done within
// the queue timeout (see admitLocked). A waiting request costs the pool
// about a kilobyte, and Go's HTTP server a few more per connection (see
// README, queue_size).
const (
	DefaultQueueSize    = 50000
	DefaultQueueTimeout = 10 * time.Second
)

// Why a request got no endpoint.
var (
	errNoEndpoint   = errors.New("no healthy worker is available")
	errQueueFull    = errors.New("all workers are busy and the wait queue is full")
	errQueueTimeout = errors.New("no worker became free within the queue timeout")
	errWaitTooLong  = errors.New("all workers are busy, and the requests already waiting would keep this one waiting past the queue timeout")
)

// timedOut is what the deadline sweep hands a waiter whose queue timeout
// passed.
var timedOut = new(Endpoint)

// waiter is a request waiting for an endpoint. It lives in the request's
// pooled state; the queue links waiters intrusively, so queueing does
// not allocate.
type waiter struct {
	// Its places in the list of every waiter, and in its route's (with
	// schedule cost), both oldest first.
	links  [2]link
	queued bool
	ch     chan *Endpoint // capacity 1: an acquired endpoint, nil (none left) or timedOut
	pick   *Pick

	route  *route
	cost   float64   // expected seconds when it joined, for admission
	since  time.Time // when it joined
	handed time.Time // when dispatch handed it an adaptive endpoint
	// heavy: it holds a slot as an expensive request, expected to end
	// at ends, counted in Balancer.heavy until settle.
	heavy bool
	ends  time.Time
}

// The lists a waiter is in: every waiter's, and its route's.
const (
	byArrival = iota
	byRoute
)

// link is a waiter's place in one list.
type link struct{ prev, next *waiter }

// waitList is a list of waiters, linked through one of their links.
type waitList struct{ head, tail *waiter }

func (l *waitList) push(w *waiter, by int) {
	w.links[by] = link{prev: l.tail}
	if l.tail != nil {
		l.tail.links[by].next = w
	} else {
		l.head = w
	}
	l.tail = w
}

func (l *waitList) remove(w *waiter, by int) {
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

// waitQueue holds the waiters, guarded by Balancer.qmu: in one list by
// arrival, which is also the order of their deadlines (they all have
// the same timeout), and with schedule cost in one list per route too.
type waitQueue struct {
	waitList
	n      int
	work   float64  // the waiters' expected cost, in seconds
	routes []*route // routes with waiters (schedule cost)
	// sweepAt is when the sweep timer will fire; zero when it is not
	// armed.
	sweepAt time.Time
	// epoch numbers dispatch passes, to mark the routes a pass skipped.
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

// QueueLen is the number of requests waiting for a worker.
func (b *Balancer) QueueLen() int { return int(b.waiting.Load()) }

// acquire returns an endpoint that has taken the request into its
// in-flight count: at once if one is usable, else after waiting in the
// queue. It fails when no endpoint could ever take the request, waiting
// would take longer than the queue timeout, the queue is full, the wait
// times out, or ctx ends.
func (b *Balancer) acquire(ctx context.Context, pick *Pick) (*Endpoint, time.Duration, error) {
	// Requests already waiting go first: only an empty queue allows the
	// fast path.
	if b.waiting.Load() == 0 {
		if e := b.takeFree(&pick.w); e != nil {
			return e, 0, nil
		}
	}
	if !b.hopeful(pick, b.Endpoints()) {
		return nil, 0, errNoEndpoint
	}
	return b.wait(ctx, pick)
}

// selectAcquire asks the policy for an endpoint and takes a slot on it;
// another request may take the slot between the two, so it asks again a
// few times.
func (b *Balancer) selectAcquire(pick *Pick) *Endpoint {
	eps := b.Endpoints()
	for range 3 {
		e := b.policy.Select(eps, pick)
		if e == nil {
			return nil
		}
		if e.tryAcquire() {
			return e
		}
	}
	return nil
}

// takeFree takes a slot for w if one is free and the reservation lets
// it.
func (b *Balancer) takeFree(w *waiter) *Endpoint {
	if b.holdsBack(w) {
		return nil
	}
	e := b.selectAcquire(w.pick)
	if e != nil {
		b.took(w)
	}
	return e
}

// wait queues the request until dispatch hands it an endpoint, the
// deadline sweep times it out, or ctx ends. A waiter costs no timer and
// no goroutine: one timer serves the whole queue.
func (b *Balancer) wait(ctx context.Context, pick *Pick) (*Endpoint, time.Duration, error) {
	w := &pick.w
	start := b.now()
	if e, err := b.join(w, start); e != nil || err != nil {
		return e, 0, err
	}
	select {
	case e := <-w.ch:
		return b.handed(e, w, start)
	case <-ctx.Done():
		if !b.dequeue(w) {
			if e := <-w.ch; e != nil && e != timedOut {
				b.settle(w)
				b.release(e)
			}
			w.handed = time.Time{}
		}
		return nil, b.now().Sub(start), ctx.Err()
	}
}

// join takes a free slot for w, or queues it at now (neither, with the
// reason, when it may not wait).
func (b *Balancer) join(w *waiter, now time.Time) (*Endpoint, error) {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	// Announce the waiter before looking again: a release that happens
	// after this sees waiting > 0 and dispatches under qmu, after we have
	// queued; one that happened before left a slot this look finds. The
	// look is only for an empty queue: others waiting go first.
	b.waiting.Add(1)
	if b.queue.n == 0 {
		if e := b.takeFree(w); e != nil {
			b.waiting.Add(-1)
			return e, nil
		}
	}
	if err := b.enqueueLocked(w, now); err != nil {
		b.waiting.Add(-1)
		return nil, err
	}
	return nil, nil
}

// enqueueLocked admits w to the queue at now and hands out what is free,
// or says why w may not wait. The caller has counted w in waiting.
func (b *Balancer) enqueueLocked(w *waiter, now time.Time) error {
	// The last candidate may have left since acquire looked; Remove
	// answers queued waiters, not this one yet.
	if !b.hopeful(w.pick, b.Endpoints()) {
		return errNoEndpoint
	}
	if b.queue.n >= b.cfg.QueueSize {
		return errQueueFull
	}
	if w.route == nil {
		w.route = &b.costs.all // a request Serve did not see: an average one
	}
	w.since, w.cost = now, b.costs.expected(w.route)
	if !b.admitLocked(w) {
		return errWaitTooLong
	}
	b.pushLocked(w)
	if b.queue.n == 1 {
		b.armLocked(now.Add(b.cfg.QueueTimeout), now)
	}
	// A slot may be free for an older waiter, or for this one.
	b.dispatchLocked(now)
	return nil
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
func (b *Balancer) admitLocked(w *waiter) bool {
	q := &b.queue
	if q.pace == 0 || q.n == 0 || w.since.Sub(q.since) < b.cfg.QueueTimeout/4 {
		return true
	}
	ahead := q.work
	if b.byCost {
		ahead = b.workAheadLocked(w.cost)
	}
	return ahead/q.pace <= b.cfg.QueueTimeout.Seconds()
}

func (b *Balancer) pushLocked(w *waiter) {
	q := &b.queue
	if q.n == 0 {
		q.since = w.since
	}
	q.push(w, byArrival)
	w.queued = true
	q.n++
	q.work += w.cost
	if b.byCost {
		b.pushRouteLocked(w)
	}
}

// removeLocked takes w out of the queue.
func (b *Balancer) removeLocked(w *waiter) {
	q := &b.queue
	q.remove(w, byArrival)
	w.queued = false
	q.n--
	q.work -= w.cost
	if q.n == 0 {
		q.work = 0 // no rounding drift survives an empty queue
		q.emptied = true
	}
	if b.byCost {
		b.removeRouteLocked(w)
	}
	b.waiting.Add(-1)
}

// hand gives w the endpoint e it has acquired, or nil, or timedOut.
func (b *Balancer) handLocked(w *waiter, e *Endpoint, now time.Time) {
	b.removeLocked(w)
	if e != nil && e != timedOut {
		b.queue.drained += w.cost
		if e.adaptive != nil {
			w.handed = now
		}
	}
	w.ch <- e
}

// handed is the outcome of a wait that dispatch, the sweep or
// failHopeless ended.
func (b *Balancer) handed(e *Endpoint, w *waiter, start time.Time) (*Endpoint, time.Duration, error) {
	now := b.now()
	switch {
	case e == nil:
		return nil, now.Sub(start), errNoEndpoint
	case e == timedOut:
		return nil, now.Sub(start), errQueueTimeout
	}
	if !w.handed.IsZero() && e.adaptive != nil {
		// How long the hand-off took, from dispatch to this goroutine
		// running: the worker's idle time between two requests at a
		// limit of 1, as far as it happens in Go.
		e.adaptive.Handoff(now.Sub(w.handed))
	}
	w.handed = time.Time{}
	return e, now.Sub(start), nil
}

// failHopeless answers "no endpoint" to every waiting request that no
// endpoint in rotation could ever take (all left, or all it has not yet
// tried did) while none is expected to join: nothing would wake them,
// and a pool without a worker must answer 503 promptly rather than at
// queue_timeout.
func (b *Balancer) failHopeless() {
	eps := b.Endpoints()
	b.qmu.Lock()
	defer b.qmu.Unlock()
	for w := b.queue.head; w != nil; {
		next := w.links[byArrival].next
		if !b.hopeful(w.pick, eps) {
			b.handLocked(w, nil, time.Time{})
		}
		w = next
	}
}

// dispatch hands free endpoints to waiting requests. It is called
// whenever capacity may have appeared: a request finished, an endpoint
// joined, a limit grew, a breaker may probe.
func (b *Balancer) dispatch() {
	if b.waiting.Load() == 0 {
		return
	}
	b.qmu.Lock()
	b.dispatchLocked(b.now())
	b.qmu.Unlock()
}

// dispatchLocked is dispatch with qmu held, at now.
func (b *Balancer) dispatchLocked(now time.Time) {
	b.measurePaceLocked(now)
	if b.byCost {
		b.dispatchByCostLocked(now)
		return
	}
	// Oldest first. A waiter that cannot use the free endpoint (it tried
	// it already, or its policy wants another) is passed over, not
	// allowed to hold up those behind it.
	for w := b.queue.head; w != nil; {
		next := w.links[byArrival].next
		if e := b.selectAcquire(w.pick); e != nil {
			b.handLocked(w, e, now)
		} else if !b.anyAvailable() {
			return
		}
		w = next
	}
}

// anyAvailable reports whether some endpoint could take a request now.
func (b *Balancer) anyAvailable() bool {
	for _, e := range b.Endpoints() {
		if e.available() {
			return true
		}
	}
	return false
}

// release gives back the slot a request held on e and lets the queue
// have it.
func (b *Balancer) release(e *Endpoint) {
	e.inflight.Add(-1)
	b.dispatch()
}

// measurePaceLocked closes the pace's window if it is long enough.
func (b *Balancer) measurePaceLocked(now time.Time) {
	q := &b.queue
	d := now.Sub(q.paceFrom)
	if d < paceWindow {
		return
	}
	done := q.drained
	if !q.paceFrom.IsZero() && q.n > 0 {
		switch r := (done - q.paceDone) / d.Seconds(); {
		case !q.emptied && q.pace > 0:
			q.pace = (q.pace + r) / 2
		case !q.emptied, r > q.pace:
			q.pace = r
		}
	}
	q.paceFrom, q.paceDone, q.emptied = now, done, q.n == 0
}

// dequeue takes w out of the queue; false means it was handed an
// endpoint (or nil, or timedOut) already, which is waiting in w.ch.
func (b *Balancer) dequeue(w *waiter) bool {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	if !w.queued {
		return false
	}
	b.removeLocked(w)
	return true
}

// armLocked makes the sweep run at the latest at t. One timer serves
// the queue: it runs at the oldest waiter's deadline (or earlier, when
// the reservation lets an expensive waiter go), and the sweep sets it
// again for the next.
func (b *Balancer) armLocked(t, now time.Time) {
	q := &b.queue
	if q.sweepAt.IsZero() || t.Before(q.sweepAt) {
		q.sweepAt = t
		b.arm(t.Sub(now))
	}
}

// sweep is the queue timer's function.
func (b *Balancer) sweep() {
	b.qmu.Lock()
	b.sweepLocked(b.now())
	b.qmu.Unlock()
}

// sweepLocked times out the waiters whose deadline passed by now, hands
// out what the reservation no longer holds back, and sets the timer for
// what comes next.
func (b *Balancer) sweepLocked(now time.Time) {
	q := &b.queue
	q.sweepAt = time.Time{}
	timeout := b.cfg.QueueTimeout
	for w := q.head; w != nil && !now.Before(w.since.Add(timeout)); w = q.head {
		b.handLocked(w, timedOut, now)
	}
	b.dispatchLocked(now)
	if q.head != nil {
		b.armLocked(q.head.since.Add(timeout), now)
	}
}
