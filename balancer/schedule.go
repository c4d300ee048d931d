package balancer

import (
	"slices"
	"time"
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

// Schedule cost, in the family of shortest-expected-processing-time
// scheduling with aging:
//
// Ordering. Requests of one route wait in order of arrival. Among the
// routes, the next free slot goes to the oldest request of the route
// whose
//
//	score = min(cost, costCap) − aging × waited
//
// is lowest, cost being the route's learned cost now and waited the time
// its oldest request has waited. One route alone, or routes of one cost,
// are therefore served first come, first served. A request can be passed
// only by requests that arrived less than (its cost − theirs) / aging
// after it: with costs capped at costCap = aging × queue_timeout / 4, no
// request waits past queue_timeout because cheaper ones keep arriving
// after it.
//
// Reservation. A request whose route costs more than heavyRatio times
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

func (b *Balancer) pushRouteLocked(w *waiter) {
	rt := w.route
	if rt.head == nil {
		rt.active = len(b.queue.routes)
		b.queue.routes = append(b.queue.routes, rt)
	}
	rt.push(w, byRoute)
	rt.work += w.cost
	rt.queued.Add(1)
}

func (b *Balancer) removeRouteLocked(w *waiter) {
	rt := w.route
	rt.remove(w, byRoute)
	rt.work -= w.cost
	rt.queued.Add(-1)
	if rt.head == nil {
		rt.work = 0 // no rounding drift survives an empty route
		rs := b.queue.routes
		last := rs[len(rs)-1]
		rs[rt.active], last.active = last, rt.active
		rs[len(rs)-1] = nil
		b.queue.routes = rs[:len(rs)-1]
		rt.active = -1
	}
}

// costCap is the most a route's cost counts for in the order, in seconds.
func (b *Balancer) costCap() float64 {
	return aging * b.cfg.QueueTimeout.Seconds() / 4
}

// dispatchByCostLocked hands free endpoints to waiting requests in the
// order of schedule cost, at now.
func (b *Balancer) dispatchByCostLocked(now time.Time) {
	q := &b.queue
	q.epoch++
	costCap := b.costCap()
	for q.n > 0 && b.anyAvailable() {
		var best *route
		bestScore := 0.0
		for _, rt := range q.routes {
			if rt.skip == q.epoch {
				continue
			}
			s := min(b.costs.expected(rt), costCap) - aging*now.Sub(rt.head.since).Seconds()
			if best == nil || s < bestScore {
				best, bestScore = rt, s
			}
		}
		if best == nil {
			return
		}
		if b.reserving(best.head) {
			if held, until := b.reserved(best.head, now, true); held {
				best.skip = q.epoch
				b.armLocked(until, now)
				continue
			}
		}
		// The route's oldest request that can use a free endpoint: one
		// that tried it already (a retry) lets the next one have it.
		var w *waiter
		var e *Endpoint
		for w = best.head; w != nil; w = w.links[byRoute].next {
			if e = b.selectAcquire(w.pick); e != nil {
				break
			}
		}
		if w == nil {
			best.skip = q.epoch
			continue
		}
		b.took(w)
		b.handLocked(w, e, now)
	}
}

// workAheadLocked is the work, in seconds, that schedule cost serves
// before a new request of expected cost c: that of every route no dearer
// (its own included), ignoring what aging moves ahead of it.
func (b *Balancer) workAheadLocked(c float64) float64 {
	ahead := 0.0
	for _, rt := range b.queue.routes {
		if b.costs.expected(rt) <= c {
			ahead += rt.work
		}
	}
	return ahead
}

// heavyRoute reports whether rt's requests are expensive: they cost
// heavyRatio times the pool's average.
func (b *Balancer) heavyRoute(rt *route) bool {
	c, ok := rt.estimate()
	avg, _ := b.costs.all.estimate()
	return ok && c > heavyRatio*avg
}

// reserved reports whether the reservation keeps w from taking a slot
// at now, and until when.
func (b *Balancer) reserved(w *waiter, now time.Time, queued bool) (bool, time.Time) {
	c, ok := w.route.estimate()
	waited := time.Duration(0)
	if queued {
		waited = now.Sub(w.since)
	}
	patience := time.Duration(reservePatience * c * float64(time.Second))
	if !ok || waited >= patience {
		return false, time.Time{}
	}
	b.hmu.Lock()
	var first time.Time
	for _, h := range b.busyHeavy {
		if first.IsZero() || h.ends.Before(first) {
			first = h.ends
		}
	}
	b.hmu.Unlock()
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
func (b *Balancer) reserving(w *waiter) bool {
	if !b.byCost || w.route == nil {
		return false
	}
	live := len(b.Endpoints())
	return live >= 2 && int(b.heavy.Load()) >= live-1 && b.heavyRoute(w.route)
}

// holdsBack reports whether the reservation keeps w, which has not
// waited, from taking a slot now.
func (b *Balancer) holdsBack(w *waiter) bool {
	if !b.reserving(w) {
		return false
	}
	held, _ := b.reserved(w, b.now(), false)
	return held
}

// took counts w's new slot among the expensive ones if its route is.
func (b *Balancer) took(w *waiter) {
	if !b.byCost || w.route == nil || !b.heavyRoute(w.route) {
		return
	}
	c, _ := w.route.estimate()
	w.heavy = true
	w.ends = b.now().Add(time.Duration(c * float64(time.Second)))
	b.heavy.Add(1)
	b.hmu.Lock()
	b.busyHeavy = append(b.busyHeavy, w)
	b.hmu.Unlock()
}

// settle is told that w's slot went back (or is about to): an expensive
// request's reservation count drops, which may let another one go.
func (b *Balancer) settle(w *waiter) {
	if w.heavy {
		w.heavy = false
		b.hmu.Lock()
		b.busyHeavy = slices.DeleteFunc(b.busyHeavy, func(h *waiter) bool { return h == w })
		b.hmu.Unlock()
		b.heavy.Add(-1)
		b.dispatch()
	}
}
