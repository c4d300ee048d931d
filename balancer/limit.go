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
}

func newAdaptiveLimit(set func(int64)) *adaptiveLimit {
	a := &adaptiveLimit{limit: adaptiveInitial, setLimit: set}
	set(adaptiveInitial)
	return a
}

// sample records one successful request's latency and how many requests
// the endpoint held when it started.
func (a *adaptiveLimit) sample(rtt time.Duration, inflight int64) {
	a.mu.Lock()
	defer a.mu.Unlock()
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
	serial := a.limit < 3 && a.n0 >= serialMinSamples && a.n1 >= serialMinSamples &&
		a.sum1/float64(a.n1) > serialTolerance*a.sum0/float64(a.n0)
	a.sum, a.n, a.peak = 0, 0, 0
	a.sum0, a.sum1, a.n0, a.n1 = 0, 0, 0, 0
	if a.minRTT == 0 || avg < a.minRTT {
		a.minRTT = avg
	}
	switch {
	case serial:
		a.nextHold = min(max(2*a.nextHold, minHold), maxHold)
		a.hold = a.nextHold
		a.limit = 1
		a.setLimit(1)
		return
	case a.hold > 0:
		a.hold--
		return
	case a.n0 >= serialMinSamples && a.n1 >= serialMinSamples:
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
	a.limit = min(max(a.limit*gradient, 1), adaptiveMax)
	a.minRTT *= adaptiveMinRTTDrift
	a.setLimit(int64(a.limit))
}

// current is the limit as a float, for status and tests.
func (a *adaptiveLimit) current() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}
