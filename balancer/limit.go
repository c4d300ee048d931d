package balancer

import (
	"math"
	"sync"
	"time"
)

// Adaptive concurrency limit ("max_inflight auto"), in the family of
// Envoy's adaptive-concurrency filter and Netflix's gradient limiters.
//
// Each window of samples compares the window's average latency with the
// lowest window average seen at a low limit (the worker's latency when
// it is not queueing). While latency stays within tolerance of that, the
// limit grows; when it rises, the limit is cut by the ratio:
//
//	limit' = limit × clamp(tolerance × minRTT / windowRTT, 0.5, tolerance)
//
// or twice the limit, from 4 up, when the window's latency is within 10%
// of minRTT.
//
// A CPU-bound single-threaded worker's latency grows with every request
// it holds (n in flight ⇒ n× the latency), so its limit settles near
// 1–2; an I/O-bound worker's latency does not, so its limit grows until
// demand, not the limit, bounds it.
//
// Window averages say little when request costs vary widely (1 ms and
// 50 ms requests mixed): a window without a slow request looks "fast"
// and lets the limit grow to 2, and a fast request then waits inside the
// worker behind a slow one. So each window also compares requests that
// found the worker idle with those that found it busy. A worker that
// serves one request at a time makes the latter wait for the former's
// remaining work; when they take serialTolerance× as long, the limit
// drops to 1 and stays there for a hold that doubles each time the
// finding repeats (up to maxHold windows), so probing a second slot
// costs a vanishing share of requests.
//
// A worker held at 1 idles between two requests for a hand-off: its
// response travels to Go, the next request waits for its goroutine to
// run and travels to the worker. For short requests that idle time is a
// large share of the worker's (half of it for a tiny request), so a
// second slot, which lets the next request wait in the worker's socket
// instead, is worth more than the head-of-line blocking it risks: it
// is given while the slowest recent requests (a peak that rises by an
// eighth towards a slower one and decays over about 256 requests) took
// at most shortRatio hand-offs, and taken back as soon as one request
// takes twice that at the second slot. Where the hand-off outlasts a
// request (tiny requests), one slot per request it lasts, up to
// shortSlots. The hand-off is measured: the
// time from dispatch handing the endpoint to a waiting request until
// that request's goroutine runs, plus, where the worker's CPU time is
// known, the part of a request's latency at a limit of 1 that the
// worker did not spend computing (the two legs over the socket). A
// heterogeneous mix (1 ms and 50 ms) never qualifies, and keeps its
// tails; tiny requests, and uniform ones of a few hand-offs, do.
//
// Where the worker's pid is known (workers we spawn, on Linux) no probe
// is needed at all: at a limit of 1 the requests do not overlap, so the
// CPU time the process used over their total latency says whether it
// computes (≥ cpuBoundShare: stay at 1) or waits (grow). The share is
// low enough that a worker stretched by a busy host (its requests take
// longer than its CPU time because it is descheduled) still counts as
// computing.
const (
	adaptiveInitial   = 1
	adaptiveMax       = 1000
	adaptiveTolerance = 1.25
	adaptiveMinWindow = 20
	// minRTT creeps up by this factor each window so it follows a worker
	// whose unloaded latency grows (heavier traffic, a slower release).
	adaptiveMinRTTDrift = 1.02
	serialTolerance     = 1.3
	// adaptiveFlat: a window within this factor of minRTT doubles the
	// limit instead of growing it by adaptiveTolerance.
	adaptiveFlat     = 1.1
	serialMinSamples = 5
	minHold          = 32
	maxHold          = 4096
	// cpuBoundShare of a request's latency spent on the worker's CPU
	// makes it CPU-bound; cpuSpan is the busy time judged at once, long
	// against the kernel's 10 ms accounting tick.
	cpuBoundShare = 0.3
	cpuSpan       = 250 * time.Millisecond
	// shortRatio: a second slot while the slowest recent request took at
	// most this many hand-offs; the hand-off is then at least 1/16 of
	// the worker's time, and a request in the second slot waits at most
	// that long behind the first. Where the hand-off outlasts a request
	// more slots hide it (one per request it lasts), up to shortSlots and
	// as long as the wait behind the others stays under shortRatio
	// hand-offs.
	shortRatio = 16
	shortSlots = 4
	// The slowest-request peak rises by peakRise of its distance to a
	// slower sample, so that one stall of a busy host moves it little
	// and a slow class (one request in 20 or 100) holds it near its
	// cost, and falls by peakDecay of its distance to a quicker one.
	peakRise  = 1.0 / 8
	peakDecay = 1.0 / 256
	// handoffWeight of each new hand-off in its average.
	handoffWeight = 1.0 / 16
)

type adaptiveLimit struct {
	mu       sync.Mutex
	limit    float64
	minRTT   float64 // seconds; 0 until the first window
	sum      float64
	n        int
	peak     int64 // most requests in flight seen in this window
	setLimit func(int64)

	// Latency sums of this window's requests that found the worker idle
	// (0) and busy (1).
	sum0, sum1 float64
	n0, n1     int
	hold       int // windows left at limit 1
	nextHold   int

	// Short requests: the decaying peak and floor of latency, the
	// hand-off (its part in Go, and the legs over the socket where CPU
	// time tells them), all in seconds, and whether a serial worker's
	// requests are short enough for a floor of 2.
	slowest, fastest, gap, legs float64
	short                       bool
	slots                       float64 // the floor while short
	cpuPer                      float64 // CPU seconds per request, where known

	// CPU accounting at a limit of 1, when cpuTime is known.
	cpuTime   func() (time.Duration, bool)
	cpuN      int     // requests since cpuStart
	cpuBusy   float64 // seconds of latency since cpuStart
	cpuStart  time.Duration
	cpuKnown  bool // cpuStart is valid
	cpuJudged bool // cpuBound holds a verdict
	cpuBound  bool
}

// newAdaptiveLimit starts at a limit of 1. cpuTime, if not nil, reads the
// CPU time the worker process has used.
func newAdaptiveLimit(set func(int64), cpuTime func() (time.Duration, bool)) *adaptiveLimit {
	a := &adaptiveLimit{limit: adaptiveInitial, setLimit: set, cpuTime: cpuTime}
	set(adaptiveInitial)
	return a
}

// accountCPU updates cpuBound from the CPU the worker used over the
// latency of requests served one (or two) at a time, and the legs of the
// hand-off from what of it the worker did not compute.
func (a *adaptiveLimit) accountCPU(rtt float64) {
	if a.cpuTime == nil || a.limit > shortSlots {
		a.cpuKnown = false
		return
	}
	if !a.cpuKnown {
		a.cpuStart, a.cpuKnown = a.cpuTimeOrZero()
		a.cpuBusy, a.cpuN = 0, 0
		return
	}
	a.cpuBusy += rtt
	a.cpuN++
	if a.cpuBusy < cpuSpan.Seconds() {
		return
	}
	now, ok := a.cpuTimeOrZero()
	if ok {
		used := (now - a.cpuStart).Seconds()
		a.cpuPer = used / float64(a.cpuN)
		// At a limit of k the latencies overlap and sum to up to k times
		// the time the worker had.
		a.cpuBound = used >= cpuBoundShare*a.cpuBusy/math.Floor(a.limit)
		a.cpuJudged = true
		if a.limit < 2 {
			// The requests did not overlap: what of their latency the
			// worker did not compute is the way there and back.
			legs := max(a.cpuBusy-used, 0) / float64(a.cpuN)
			if a.legs == 0 {
				a.legs = legs
			} else {
				a.legs = (a.legs + legs) / 2
			}
		}
	}
	a.cpuStart, a.cpuKnown, a.cpuBusy, a.cpuN = now, ok, 0, 0
}

// handoff records how long one hand-off of the endpoint to a waiting
// request took in Go.
func (a *adaptiveLimit) handoff(d time.Duration) {
	a.mu.Lock()
	if a.gap == 0 {
		a.gap = d.Seconds()
	} else {
		a.gap += (d.Seconds() - a.gap) * handoffWeight
	}
	a.mu.Unlock()
}

// shortEnough reports whether requests as slow as slowest are short
// next to the hand-off: a second slot hides the hand-off and costs
// little.
func (a *adaptiveLimit) shortEnough(slowest float64) bool {
	// The legs cannot take longer than the quickest request's round
	// trip: on a busy host the worker's CPU time falls behind its
	// latency for reasons that are no hand-off.
	h := a.gap + min(a.legs, a.fastest)
	return h > 0 && slowest <= shortRatio*h
}

// serial reports whether the worker is known to serve one request at a
// time: its CPU time says it computes, or (pid unknown) a probe of a
// second slot found it.
func (a *adaptiveLimit) serial() bool {
	if a.cpuTime != nil {
		return a.cpuJudged && a.cpuBound
	}
	return a.nextHold > 0
}

// floor is the least limit of the moment: the short slots while a
// serial worker's requests are short, else 1.
func (a *adaptiveLimit) floor() float64 {
	if a.short {
		return a.slots
	}
	return 1
}

// shortFloor is how many slots hide the hand-off for requests as slow as
// slowest: one per request the hand-off lasts (a request's own time is
// its CPU time where known, else the quickest latency), while waiting
// behind the others stays within shortRatio hand-offs.
func (a *adaptiveLimit) shortFloor(slowest float64) float64 {
	h := a.gap + min(a.legs, a.fastest)
	own := a.fastest
	if a.cpuPer > 0 {
		own = a.cpuPer
	}
	k := 1 + math.Ceil(h/max(own, 1e-6))
	k = min(k, 1+math.Floor(shortRatio*h/slowest), shortSlots)
	return max(k, 2)
}

func (a *adaptiveLimit) cpuTimeOrZero() (time.Duration, bool) {
	d, ok := a.cpuTime()
	if !ok {
		a.cpuTime = nil // not readable: fall back to probing
	}
	return d, ok
}

// sample records one successful request's latency and how many requests
// the endpoint held when it started.
func (a *adaptiveLimit) sample(rtt time.Duration, inflight int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := rtt.Seconds()
	if s > a.slowest {
		a.slowest += (s - a.slowest) * peakRise
	} else {
		a.slowest += (s - a.slowest) * peakDecay
	}
	if s < a.fastest || a.fastest == 0 {
		a.fastest = s
	} else {
		a.fastest += (s - a.fastest) * peakDecay / 16
	}
	if a.short && a.limit <= a.slots && !a.shortEnough(s/a.slots) {
		// A request took long for the short slots (where a request's
		// latency includes the rest of those before it, up to slots
		// times its own): back to one at once.
		a.short, a.limit, a.cpuKnown = false, 1, false
		a.setLimit(1)
	}
	a.accountCPU(rtt.Seconds())
	a.sum += rtt.Seconds()
	a.n++
	a.peak = max(a.peak, inflight)
	if inflight <= 1 {
		a.sum0 += rtt.Seconds()
		a.n0++
	} else {
		a.sum1 += rtt.Seconds()
		a.n1++
	}
	window := max(adaptiveMinWindow, int(2*a.limit))
	// A probe of a second slot ends as soon as it has enough evidence.
	early := a.limit < 3 && a.n0 >= serialMinSamples && a.n1 >= serialMinSamples
	if a.n < window && !early {
		return
	}
	avg := a.sum / float64(a.n)
	saturated := float64(a.peak) >= math.Floor(a.limit)
	// The comparison answers "one request at a time, or more?": it is
	// made only near a limit of 1–2. At high limits idle dispatches are
	// rare and busy ones slow for other reasons (a saturated host); the
	// gradient handles those.
	compared := a.n0 >= serialMinSamples && a.n1 >= serialMinSamples
	serial := a.limit < 3 && compared && a.sum1/float64(a.n1) > serialTolerance*a.sum0/float64(a.n0)
	a.sum, a.n, a.peak = 0, 0, 0
	a.sum0, a.sum1, a.n0, a.n1 = 0, 0, 0, 0
	// At a limit of 1 nothing queues inside the worker, so the window's
	// average is its unloaded latency for the traffic of the moment (a
	// stale minimum from cheaper requests would pin the limit at 1).
	if a.minRTT == 0 || avg < a.minRTT || a.limit < 2 {
		a.minRTT = avg
	}
	// At k short slots the peak may be k times a request's own latency.
	scale := 1.0
	if a.short && a.limit <= a.slots {
		scale = a.slots
	}
	short := (a.serial() || serial) && a.shortEnough(a.slowest/scale)
	if short {
		a.slots = a.shortFloor(a.slowest / scale)
	}
	a.short = short
	switch {
	case a.cpuTime != nil && a.limit <= shortSlots && (a.cpuBound || !a.cpuJudged):
		// The worker computes, or we cannot tell yet: a second request
		// would only wait in it, unless requests are short enough that
		// it hides the hand-off.
		a.limit = a.floor()
		a.setLimit(int64(a.limit))
		return
	case serial:
		a.nextHold = min(max(2*a.nextHold, minHold), maxHold)
		a.hold = a.nextHold
		a.limit = a.floor()
		a.setLimit(int64(a.limit))
		return
	case a.hold > 0:
		a.hold--
		a.limit = a.floor()
		a.setLimit(int64(a.limit))
		return
	case compared:
		// Busy and idle requests looked alike: probing may come sooner.
		a.nextHold /= 2
	}
	gradient := min(max(adaptiveTolerance*a.minRTT/avg, 0.5), adaptiveTolerance)
	if a.limit >= 4 && avg <= adaptiveFlat*a.minRTT {
		// Latency did not move at all with several requests in flight:
		// the worker is not the bottleneck, so find its limit quickly.
		gradient = 2
	}
	// Growing a limit that demand never reached would only let a later
	// burst overload the worker.
	if gradient > 1 && !saturated {
		gradient = 1
	}
	was := a.limit
	a.limit = min(max(a.limit*gradient, a.floor()), adaptiveMax)
	if was >= 2 && a.limit < 2 {
		// A second request made the worker slower: it serialises. Hold
		// at 1 as the busy/idle comparison would.
		a.nextHold = min(max(2*a.nextHold, minHold), maxHold)
		a.hold = a.nextHold
		a.limit = 1
	}
	a.minRTT *= adaptiveMinRTTDrift
	a.setLimit(int64(a.limit))
}

// current is the limit as a float, for status and tests.
func (a *adaptiveLimit) current() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}
