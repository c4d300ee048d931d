package queue

import (
	"slices"
	"time"
)

// Ordering by cost (the balancer's schedule cost), in the family of shortest-expected-processing-time
// scheduling with aging:
//
// Ordering. Requests of one class (route) wait in order of arrival, in
// the class's lane. Among the lanes, the next free slot goes to the
// oldest request of the one whose
//
//	score = min(cost, costCap) − aging × waited
//
// is lowest, cost being the class's learned cost now and waited the time
// its oldest request has waited. One class alone, or classes of one cost,
// are therefore served first come, first served. A request can be passed
// only by requests that arrived less than (its cost − theirs) / aging
// after it: with costs capped at costCap = aging × timeout / 4, no
// request waits past queue_timeout because cheaper ones keep arriving
// after it.
//
// Reservation. A request whose class costs more than heavyRatio times
// the pool's average is expensive. Expensive requests may hold every
// endpoint but one only while that costs cheap requests little: an
// expensive request takes the last endpoint free of them when one of
// those in flight is expected to end within reserveStagger of its own
// cost (a cheap request that arrives then waits at most that long), or
// once it has waited reservePatience times its own cost. The first
// staggers expensive requests over the workers instead of letting them
// fill all at once; the second adapts the reservation to the expensive
// class's backlog, which would otherwise grow without bound when that
// class needs more than all workers but one (at 75% load, the 5% of
// 50 ms requests in a 1 ms mix need 1.09 of 2 workers). A request held
// back is no idle worker's business: the queue's timer hands it the
// endpoint when either comes true. With one endpoint nothing is held.
//
// A simulation of that mix (Poisson arrivals, 2 workers; see
// TestScheduleSimulation) puts these figures at: 75% load, fast p99
// 0.2× and slow p99 1.4× of first come, first served; cheapest first
// alone gives 0.35× and 1.2×.
const (
	aging           = 0.05
	heavyRatio      = 4.0
	reserveStagger  = 0.4
	reservePatience = 3.0
)

// lane is the waiters of one class, oldest first (ByCost).
type lane struct {
	class Class
	waitList
	work   float64 // its waiters' expected cost when they joined
	active int     // its index in the queue's lanes
	skip   uint64  // the dispatch pass that passed it over
}

// pushLaneLocked puts w at the end of its class's lane, which it opens
// if no waiter of the class waits. There are as many lanes as classes
// with waiters: finding one is a short scan, and lanes are reused.
func (q *Queue) pushLaneLocked(w *Waiter) {
	wq := &q.queue
	var ln *lane
	for _, l := range wq.lanes {
		if l.class == w.class {
			ln = l
			break
		}
	}
	if ln == nil {
		if n := len(wq.free); n > 0 {
			ln, wq.free[n-1] = wq.free[n-1], nil
			wq.free = wq.free[:n-1]
		} else {
			ln = &lane{}
		}
		ln.class, ln.active = w.class, len(wq.lanes)
		wq.lanes = append(wq.lanes, ln)
	}
	w.lane = ln
	ln.push(w, byLane)
	ln.work += w.cost
}

func (q *Queue) removeLaneLocked(w *Waiter) {
	wq := &q.queue
	ln := w.lane
	w.lane = nil
	ln.remove(w, byLane)
	ln.work -= w.cost
	if ln.head == nil {
		ls := wq.lanes
		last := ls[len(ls)-1]
		ls[ln.active], last.active = last, ln.active
		ls[len(ls)-1] = nil
		wq.lanes = ls[:len(ls)-1]
		*ln = lane{} // no rounding drift survives an empty lane
		wq.free = append(wq.free, ln)
	}
}

// costCap is the most a class's cost counts for in the order, in
// seconds.
func (q *Queue) costCap() float64 {
	return aging * q.cfg.Timeout.Seconds() / 4
}

// dispatchByCostLocked hands free slots to waiting requests in the order
// of their cost, at now.
func (q *Queue) dispatchByCostLocked(now time.Time) {
	wq := &q.queue
	wq.epoch++
	costCap := q.costCap()
	for wq.n > 0 && q.cfg.AnyFree() {
		var best *lane
		bestScore := 0.0
		for _, ln := range wq.lanes {
			if ln.skip == wq.epoch {
				continue
			}
			s := min(q.expected(ln.class), costCap) - aging*now.Sub(ln.head.since).Seconds()
			if best == nil || s < bestScore {
				best, bestScore = ln, s
			}
		}
		if best == nil {
			return
		}
		if q.reserving(best.head) {
			if held, until := q.reserved(best.head, now, true); held {
				best.skip = wq.epoch
				q.armLocked(until, now)
				continue
			}
		}
		// The lane's oldest request that can use a free slot: one that
		// tried it already (a retry) lets the next one have it.
		var w *Waiter
		for w = best.head; w != nil; w = w.links[byLane].next {
			if w.req.Take() {
				break
			}
		}
		if w == nil {
			best.skip = wq.epoch
			continue
		}
		q.took(w)
		q.handLocked(w, handed, now)
	}
}

// workAheadLocked is the work, in seconds, that ordering by cost serves
// before a new request of expected cost c: that of every class no
// dearer (its own included), ignoring what aging moves ahead of it.
func (q *Queue) workAheadLocked(c float64) float64 {
	ahead := 0.0
	for _, ln := range q.queue.lanes {
		if q.expected(ln.class) <= c {
			ahead += ln.work
		}
	}
	return ahead
}

// heavy reports whether requests of class c are expensive: they cost
// heavyRatio times the pool's average.
func (q *Queue) heavyClass(c Class) bool {
	v, ok := c.Cost()
	avg, _ := q.cfg.Average.Cost()
	return ok && v > heavyRatio*avg
}

// reserved reports whether the reservation keeps w from taking a slot
// at now, and until when.
func (q *Queue) reserved(w *Waiter, now time.Time, queued bool) (bool, time.Time) {
	c, ok := w.class.Cost()
	waited := time.Duration(0)
	if queued {
		waited = now.Sub(w.since)
	}
	patience := time.Duration(reservePatience * c * float64(time.Second))
	if !ok || waited >= patience {
		return false, time.Time{}
	}
	q.hmu.Lock()
	var first time.Time
	for _, h := range q.busyHeavy {
		if first.IsZero() || h.ends.Before(first) {
			first = h.ends
		}
	}
	q.hmu.Unlock()
	at := first.Add(-time.Duration(reserveStagger * c * float64(time.Second)))
	if first.IsZero() || !now.Before(at) {
		return false, time.Time{}
	}
	if queued && w.since.Add(patience).Before(at) {
		at = w.since.Add(patience)
	}
	return true, at
}

// reserving reports whether the reservation applies to w now: it is
// expensive, and expensive requests hold all endpoints but one.
func (q *Queue) reserving(w *Waiter) bool {
	if !q.cfg.ByCost || w.class == nil {
		return false
	}
	live := q.cfg.Servers()
	return live >= 2 && int(q.heavy.Load()) >= live-1 && q.heavyClass(w.class)
}

// holdsBack reports whether the reservation keeps w, which has not
// waited, from taking a slot now.
func (q *Queue) holdsBack(w *Waiter) bool {
	if !q.reserving(w) {
		return false
	}
	held, _ := q.reserved(w, q.now(), false)
	return held
}

// took counts w's new slot among the expensive ones if its class is.
func (q *Queue) took(w *Waiter) {
	if !q.cfg.ByCost || w.class == nil || !q.heavyClass(w.class) {
		return
	}
	c, _ := w.class.Cost()
	w.heavy = true
	w.ends = q.now().Add(time.Duration(c * float64(time.Second)))
	q.heavy.Add(1)
	q.hmu.Lock()
	q.busyHeavy = append(q.busyHeavy, w)
	q.hmu.Unlock()
}

// Done is told that w's slot went back, or is about to: an expensive
// request's reservation record ends. The caller dispatches after it.
func (q *Queue) Done(w *Waiter) {
	if w.heavy {
		w.heavy = false
		q.hmu.Lock()
		q.busyHeavy = slices.DeleteFunc(q.busyHeavy, func(h *Waiter) bool { return h == w })
		q.hmu.Unlock()
		q.heavy.Add(-1)
	}
}
