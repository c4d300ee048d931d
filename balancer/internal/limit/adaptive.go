// Package limit holds the algorithms that set an endpoint's limit of
// requests in flight. It owns no slots: the endpoint counts those, and an
// algorithm is fed samples of finished requests and sets the limit
// through the function it is given. A fixed limit needs no algorithm.
package limit

import (
	"math"
	"slices"
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
// remaining work; when their median latency is serialTolerance× the
// others', the limit drops to 1 and stays there for a hold that doubles
// each time the finding repeats (up to maxHold windows), so probing a
// second slot costs a vanishing share of requests.
//
// A worker held at 1 idles between two requests for a hand-off: its
// response travels to Go, the next request waits for its goroutine to
// run and travels to the worker. For short requests that idle time is a
// large share of the worker's (half of it for a tiny request, more on a
// host whose CPUs the proxy, the workers and the clients share), and a
// worker that holds several tiny requests also reads and answers them
// in one turn of its event loop. So while the requests are short, the
// limit has a floor of several slots ("short slots"): as many as keep
// the work a request can find ahead of it in the worker within
// shortQueue (one per request the hand-off lasts where that is more),
// up to shortSlots. Requests are short while the slowest of them (a
// peak of each request's service time that rises by an eighth towards
// a slower one and decays over about 256 requests) stays within the
// budget: shortQueue, or shortRatio hand-offs where that is longer. A
// request's service time is its time at the worker less what it spent
// waiting there behind the one before: from the later of its dispatch
// and the previous answer to its own answer, so it means the same at
// any number of slots. One request of more than twice the budget ends
// the short slots at once. A heterogeneous mix (1 ms and 50 ms) never
// qualifies, and keeps its tails; tiny requests, and uniform ones of a
// few milliseconds, do. The hand-off is measured: the time from
// dispatch handing the endpoint to a waiting request until that
// request's goroutine runs, plus, where the worker's CPU time is known,
// the part of a request's latency at a limit of 1 that the worker did
// not spend computing (the two legs over the socket).
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
	// serialKept latencies of each kind are kept per window (a window
	// near a limit of 1 has adaptiveMinWindow requests).
	serialKept = 32
	// adaptiveFlat: a window within this factor of minRTT doubles the
	// limit instead of growing it by adaptiveTolerance.
	adaptiveFlat     = 1.1
	serialMinSamples = 5
	minHold          = 32
	maxHold          = 4096
	// cpuBoundShare of a request's latency spent on the worker's CPU
	// makes it CPU-bound; cpuSpan is the wall time judged at once (the
	// busy time at a limit of 1, k times that at k), long against the
	// kernel's 10 ms accounting tick.
	cpuBoundShare = 0.3
	cpuSpan       = 250 * time.Millisecond
	// Requests are short while the slowest recent one took at most
	// shortQueue, or shortRatio hand-offs where that is longer; the short
	// slots are as many as keep the work ahead of a request in the
	// worker within shortQueue, up to shortSlots. Measured on 2 CPUs
	// with 64 clients: 8–16 slots serve tiny requests as fast as no
	// limit at all (2 slots: half as fast), 4–8 do for 1 ms ones.
	shortRatio = 16
	shortQueue = 4 * time.Millisecond
	shortSlots = 16
	// The slowest-request peak rises by peakRise of its distance to a
	// slower sample, so that one stall of a busy host moves it little
	// and a slow class (one request in 20 or 100) holds it near its
	// cost, and falls by peakDecay of its distance to a quicker one.
	peakRise  = 1.0 / 8
	peakDecay = 1.0 / 256
	// handoffWeight of each new hand-off in its average.
	handoffWeight = 1.0 / 16
)

// Adaptive is "max_inflight auto" for one endpoint. It is safe for
// concurrent use.
type Adaptive struct {
	mu       sync.Mutex
	limit    float64
	minRTT   float64 // seconds; 0 until the first window
	sum      float64
	n        int
	peak     int64 // most requests in flight seen in this window
	setLimit func(int64)

	// Latencies of this window's requests that found the worker idle
	// (0) and busy (1), the first serialKept of each, and their counts.
	lat0, lat1 [serialKept]float64
	n0, n1     int
	hold       int // windows left at limit 1
	nextHold   int

	// Short requests: the decaying peak of service time and floor of
	// latency, the hand-off (its part in Go, and the legs over the socket
	// where CPU time tells them), all in seconds, and whether requests
	// are short enough for the short slots.
	slowest, fastest, gap, legs float64
	short                       bool
	slots                       float64   // the floor while short
	cpuPer                      float64   // CPU seconds per request, where known
	lastDone                    time.Time // when the latest answer came

	// CPU accounting at a limit of 1, when cpuTime is known.
	cpuTime   func() (time.Duration, bool)
	cpuN      int     // requests since cpuStart
	cpuBusy   float64 // seconds of latency since cpuStart
	cpuStart  time.Duration
	cpuKnown  bool // cpuStart is valid
	cpuJudged bool // cpuBound holds a verdict
	cpuBound  bool
}

// NewAdaptive starts at a limit of 1, which it sets at once and from then
// on through set. cpuTime, if not nil, reads the
// CPU time the worker process has used.
func NewAdaptive(set func(int64), cpuTime func() (time.Duration, bool)) *Adaptive {
	a := &Adaptive{limit: adaptiveInitial, setLimit: set, cpuTime: cpuTime}
	set(adaptiveInitial)
	return a
}

// accountCPU updates cpuBound from the CPU the worker used over the
// latency of requests served one (or two) at a time, and the legs of the
// hand-off from what of it the worker did not compute.
func (a *Adaptive) accountCPU(rtt float64) {
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
	// At a limit of k, latencies overlap and cpuSpan of them may pass in
	// cpuSpan/k of wall time: a few of /proc's 10 ms ticks, one of which
	// made a worker that waits look as if it computed.
	if a.cpuBusy < cpuSpan.Seconds()*max(1, math.Floor(a.limit)) {
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

// Handoff records how long one hand-off of the endpoint to a waiting
// request took in Go.
func (a *Adaptive) Handoff(d time.Duration) {
	a.mu.Lock()
	if a.gap == 0 {
		a.gap = d.Seconds()
	} else {
		a.gap += (d.Seconds() - a.gap) * handoffWeight
	}
	a.mu.Unlock()
}

// handoffTime is the hand-off's estimate in seconds. The legs cannot
// take longer than the quickest request's round trip: on a busy host
// the worker's CPU time falls behind its latency for reasons that are
// no hand-off.
func (a *Adaptive) handoffTime() float64 {
	return a.gap + min(a.legs, a.fastest)
}

// budget is the service time up to which requests are short, in
// seconds.
func (a *Adaptive) budget() float64 {
	return max(shortRatio*a.handoffTime(), shortQueue.Seconds())
}

// waits reports whether the worker's CPU time says it waits rather than
// computes.
func (a *Adaptive) waits() bool {
	return a.cpuTime != nil && a.cpuJudged && !a.cpuBound
}

// floor is the least limit of the moment: the short slots while a
// serial worker's requests are short, else 1.
func (a *Adaptive) floor() float64 {
	if a.short {
		return a.slots
	}
	return 1
}

// shortFloor is the number of short slots: as many as keep the work
// ahead of a request in the worker within shortQueue, or one per
// request the hand-off lasts where that is more (a request's own time is
// its CPU time where known, else the quickest latency), between 2 and
// shortSlots.
func (a *Adaptive) shortFloor() float64 {
	own := a.fastest
	if a.cpuPer > 0 {
		own = a.cpuPer
	}
	own = max(own, 1e-6)
	k := 1 + max(math.Ceil(a.handoffTime()/own), math.Floor(shortQueue.Seconds()/own))
	return min(max(k, 2), shortSlots)
}

func (a *Adaptive) cpuTimeOrZero() (time.Duration, bool) {
	d, ok := a.cpuTime()
	if !ok {
		a.cpuTime = nil // not readable: fall back to probing
	}
	return d, ok
}

// Sample records one successful request's latency, how many requests
// the endpoint held when it started, and when its answer came.
func (a *Adaptive) Sample(rtt time.Duration, inflight int64, done time.Time) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s := rtt.Seconds()
	// Its service time: from the later of its dispatch and the previous
	// answer, so that waiting behind others in the worker is not counted.
	service := s
	if start := done.Add(-rtt); start.Before(a.lastDone) {
		service = max(done.Sub(a.lastDone).Seconds(), 0)
	}
	if done.After(a.lastDone) {
		a.lastDone = done
	}
	if service > a.slowest {
		a.slowest += (service - a.slowest) * peakRise
	} else {
		a.slowest += (service - a.slowest) * peakDecay
	}
	if s < a.fastest || a.fastest == 0 {
		a.fastest = s
	} else {
		a.fastest += (s - a.fastest) * peakDecay / 16
	}
	if a.short && a.limit <= a.slots && service > 2*a.budget() {
		// A slow request: the others would wait behind it in the worker.
		// Back to one at once.
		a.short, a.limit, a.cpuKnown = false, 1, false
		a.setLimit(1)
	}
	a.accountCPU(rtt.Seconds())
	a.sum += rtt.Seconds()
	a.n++
	a.peak = max(a.peak, inflight)
	if inflight <= 1 {
		if a.n0 < serialKept {
			a.lat0[a.n0] = rtt.Seconds()
		}
		a.n0++
	} else {
		if a.n1 < serialKept {
			a.lat1[a.n1] = rtt.Seconds()
		}
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
	serial := a.limit < 3 && compared && median(a.lat1, a.n1) > serialTolerance*median(a.lat0, a.n0)
	a.sum, a.n, a.peak = 0, 0, 0
	a.n0, a.n1 = 0, 0
	// At a limit of 1 nothing queues inside the worker, so the window's
	// average is its unloaded latency for the traffic of the moment (a
	// stale minimum from cheaper requests would pin the limit at 1).
	if a.minRTT == 0 || avg < a.minRTT || a.limit < 2 {
		a.minRTT = avg
	}
	short := a.slowest > 0 && a.slowest <= a.budget()
	if short {
		a.slots = a.shortFloor()
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
	if (a.limit >= 4 || a.waits()) && avg <= adaptiveFlat*a.minRTT {
		// Latency did not move at all with several requests in flight,
		// or the worker's CPU time says it waits: the worker is not the
		// bottleneck, so find its limit quickly. (Growing by a quarter a
		// window from 1, where a window of 50 ms requests lasts a second,
		// took seconds to follow a step in load, with requests queueing
		// all the while.)
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

// median is the median of the first min(n, len(kept)) values of kept.
// Medians, not means: on a busy host a few requests that waited for a
// CPU made an I/O-bound worker's busy requests look half again as slow
// as its idle ones, and held its limit at 1.
func median(kept [serialKept]float64, n int) float64 {
	v := kept[:min(n, serialKept)]
	slices.Sort(v)
	if len(v) == 0 {
		return 0
	}
	if len(v)%2 == 1 {
		return v[len(v)/2]
	}
	return (v[len(v)/2-1] + v[len(v)/2]) / 2
}

// Current is the limit as a float, for status and tests.
func (a *Adaptive) Current() float64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.limit
}

// CPUBound reports what the limit has learnt about its worker: whether
// it computes (more requests at once only wait in it) or waits on I/O
// (it serves more at once); known is false until the limit has judged.
// Where the worker's CPU time can be read, that decides; elsewhere a
// limit that grew past 1 says the worker waits, and one held at 1
// because busy requests were slower says it computes.
func (a *Adaptive) CPUBound() (cpuBound, known bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.cpuTime != nil && a.cpuJudged:
		return a.cpuBound, true
	case a.cpuTime != nil:
		return false, false
	case a.limit >= 2:
		return false, true
	case a.hold > 0:
		return true, true
	}
	return false, false
}
