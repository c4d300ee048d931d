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
// A CPU-bound single-threaded worker's latency grows with every request
// it holds (n in flight ⇒ n× the latency), so its limit settles near
// 1–2; an I/O-bound worker's latency does not, so its limit grows until
// demand, not the limit, bounds it.
const (
	adaptiveInitial   = 1
	adaptiveMax       = 1000
	adaptiveTolerance = 1.25
	adaptiveMinWindow = 20
	// minRTT creeps up by this factor each window so it follows a worker
	// whose unloaded latency grows (heavier traffic, a slower release).
	adaptiveMinRTTDrift = 1.02
)

type adaptiveLimit struct {
	mu       sync.Mutex
	limit    float64
	minRTT   float64 // seconds; 0 until the first window
	sum      float64
	n        int
	peak     int64 // most requests in flight seen in this window
	setLimit func(int64)
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
	window := max(adaptiveMinWindow, int(2*a.limit))
	if a.n < window {
		return
	}
	avg := a.sum / float64(a.n)
	saturated := float64(a.peak) >= math.Floor(a.limit)
	a.sum, a.n, a.peak = 0, 0, 0
	if a.minRTT == 0 || avg < a.minRTT {
		a.minRTT = avg
	}
	gradient := min(max(adaptiveTolerance*a.minRTT/avg, 0.5), adaptiveTolerance)
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
