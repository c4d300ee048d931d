package balancer

import "time"

// Parking. A limit of requests in flight is there to keep a worker from
// taking more work than it can compute at once; a request that holds a
// slot while its worker computes nothing (a long poll, a "wait for
// changes" call, a slow client's upload) keeps others waiting for no
// work at all. socket.io's polling transport holds one such request per
// client, and at a limit of 1 a few idle clients take a site down.
//
// While requests wait, the balancer watches every endpoint that is at
// its limit: when the endpoint's slots have not changed (no request
// came or went) for ParkIdle, counted from the first tick that found
// them still, its worker's main thread wanted a CPU for at most
// parkBusyShare of that time, and it sleeps now (neither on a CPU nor
// waiting for one), the requests it holds are
// parked: they move from its slots to its streams, as a WebSocket's
// request does once it is upgraded, and the queue hands out the slots.
// A worker that computes never looks idle, so it keeps its limit; a
// parked request that then computes costs at most that one extra
// request in the worker, once. A parked request's latency teaches the
// limit, the latency average and the cost table nothing.
//
// The epoch in Endpoint.slots tells each slot, when it goes back,
// whether it was parked meanwhile, without a lock or a list of
// requests.

// idleWatch is the watch of one endpoint: its slots at slots, with
// served requests finished, and, once they have held still for a tick,
// since when, and how much CPU its worker had wanted and used by then.
// The CPU is read from /proc (two files, a few syscalls each), so it is
// not read while requests come and go: under load they change every
// tick, and the watch then costs nothing but the look at two counters.
type idleWatch struct {
	watching bool
	measured bool // since, busy and cpu are set
	pid      int  // the serving process watched
	since    time.Time
	slots    uint64
	served   uint64
	busy     time.Duration // the main thread's
	cpu      time.Duration // the process's
}

// watchIdle starts the watch, if it is not running: a request has
// started to wait. It is the queue's Waiting hook.
func (b *Balancer) watchIdle() {
	if b.parkArmed.CompareAndSwap(false, true) {
		b.parkTimer.Reset(b.parkTick)
	}
}

// parkCheck is the watch's timer function: it looks at every endpoint
// in rotation, hands out the slots it parked, and looks again in a tick
// while requests still wait.
func (b *Balancer) parkCheck() {
	b.parkMu.Lock()
	now := time.Now()
	parked := false
	eps := b.Endpoints()
	for _, e := range eps {
		parked = b.checkIdle(e, now) || parked
	}
	waiting := b.queue.Len() > 0
	if !waiting {
		// A watch that resumes later starts afresh: what an endpoint did
		// while nobody waited says nothing about its requests then.
		for _, e := range eps {
			e.idle.watching = false
		}
	}
	b.parkMu.Unlock()
	if parked {
		b.queue.Dispatch()
		waiting = b.queue.Len() > 0
	}
	if waiting {
		b.parkTimer.Reset(b.parkTick)
		return
	}
	b.parkArmed.Store(false)
	// A request that started to wait just now found the watch armed.
	if b.queue.Len() > 0 {
		b.watchIdle()
	}
}

// checkIdle watches e once, at now, and parks its requests when its
// worker has been idle at its limit for ParkIdle. It reports whether it
// parked them.
func (b *Balancer) checkIdle(e *Endpoint, now time.Time) bool {
	w := &e.idle
	v := e.slots.Load()
	n, l := slotCount(v), e.capacity()
	server := e.server.Load()
	// A half-open breaker's capacity is its probes, whose verdict the
	// breaker awaits: parking them would only hand their slots to
	// requests it refuses.
	if server == nil || server.noPark || e.halfOpen.Load() || n == 0 || l == 0 || n < l {
		w.watching = false // nothing held keeps a request from it
		return false
	}
	served := e.served.Load()
	if !w.watching || w.slots != v || w.served != served || w.pid != server.pid {
		// Requests came or went: watch afresh, measuring from the next
		// tick that finds them still.
		*w = idleWatch{watching: true, pid: server.pid, slots: v, served: served}
		return false
	}
	busy, ok1 := server.busy()
	cpu, ok2 := server.cpu()
	if !ok1 || !ok2 {
		w.watching = false
		return false
	}
	d := now.Sub(w.since)
	most := time.Duration(parkBusyShare * float64(d))
	// Idle is both: the main thread (the event loop) wanted no CPU, and
	// no other thread of the process computed either (a threaded Python
	// server, Node's thread pool); the second is known in 10 ms ticks.
	if !w.measured || busy-w.busy > most || cpu-w.cpu > most {
		// Just still, or it computes: measure afresh from now.
		w.measured, w.since, w.busy, w.cpu = true, now, busy, cpu
		return false
	}
	if d < b.cfg.ParkIdle {
		return false
	}
	// The CPU read lags for a main thread that waits in a run queue (a
	// loaded host): its wait is counted once it runs. Its state does
	// not lag.
	if running, ok := server.running(); !ok || running {
		w.since, w.busy, w.cpu = now, busy, cpu
		return false
	}
	w.watching = false
	if !e.park(v) {
		return false
	}
	e.parked.Add(uint64(n))
	e.parkedNow.Add(n)
	return true
}
