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

	// CPU accounting at a limit of 1, when cpuTime is known.
	cpuTime   func() (time.Duration, bool)
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
// latency of requests served one at a time.
func (a *adaptiveLimit) accountCPU(rtt float64) {
	if a.cpuTime == nil || a.limit >= 2 {
		a.cpuKnown = false
		return
	}
	if !a.cpuKnown {
		a.cpuStart, a.cpuKnown = a.cpuTimeOrZero()
		a.cpuBusy = 0
		return
	}
	a.cpuBusy += rtt
	if a.cpuBusy < cpuSpan.Seconds() {
		return
	}
	now, ok := a.cpuTimeOrZero()
	if ok {
		a.cpuBound = (now - a.cpuStart).Seconds() >= cpuBoundShare*a.cpuBusy
		a.cpuJudged = true
	}
	a.cpuStart, a.cpuKnown, a.cpuBusy = now, ok, 0
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
	switch {
	case a.cpuTime != nil && a.limit < 2 && (a.cpuBound || !a.cpuJudged):
		// The worker computes, or we cannot tell yet: a second request
		// would only wait in it.
		return
	case serial:
		a.nextHold = min(max(2*a.nextHold, minHold), maxHold)
		a.hold = a.nextHold
		a.limit = 1
		a.setLimit(1)
		return
	case a.hold > 0:
		a.hold--
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
	a.limit = min(max(a.limit*gradient, 1), adaptiveMax)
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
