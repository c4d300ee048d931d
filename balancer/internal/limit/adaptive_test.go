package limit

import (
	"math"
	"testing"
	"time"
)

// clock is the virtual time of the samples the tests feed.
var clock = time.Unix(1e9, 0)

// serve records a request of rtt that found inflight requests at the
// worker, answered now; the clock moves on by rtt, as when the worker's
// requests follow one another.
func serve(a *Adaptive, rtt time.Duration, inflight int64) {
	clock = clock.Add(rtt)
	a.Sample(rtt, inflight, clock)
}

// feed gives a a window's worth of samples: n requests that found the
// worker idle taking idle, and n that found it busy taking busy.
func feed(a *Adaptive, n int, idle, busy time.Duration) {
	for range n {
		serve(a, idle, 1)
		serve(a, busy, 2)
	}
}

// growTo2 feeds flat, saturated windows at a limit below 2 until the
// limit reaches 2, as an I/O-bound worker's would.
func growTo2(t *testing.T, a *Adaptive) {
	t.Helper()
	for i := 0; a.Current() < 2; i++ {
		if i > 1000 {
			t.Fatalf("limit stuck at %v", a.Current())
		}
		serve(a, 10*time.Millisecond, 1)
	}
}

// A busy request that waited for a CPU on a busy host does not make an
// I/O-bound worker look serial: the verdict compares medians. (With
// means, one request of 30 ms among five of 10 ms made the busy ones
// look 1.4× as slow, and held the limit at 1.) A worker that really
// serves one request at a time is still found out.
func TestAdaptiveSerialVerdictIgnoresOutliers(t *testing.T) {
	a := NewAdaptive(func(int64) {}, nil)
	growTo2(t, a)
	for i := range serialMinSamples {
		serve(a, 10*time.Millisecond, 1)
		busy := 10 * time.Millisecond
		if i == 2 {
			busy = 30 * time.Millisecond
		}
		serve(a, busy, 2)
	}
	if a.Current() < 2 || a.hold != 0 {
		t.Fatalf("after outliers among alike requests: limit %v hold %d, want at least 2 and no hold", a.Current(), a.hold)
	}
	feed(a, serialMinSamples, 10*time.Millisecond, 16*time.Millisecond)
	if a.Current() != 1 || a.hold == 0 {
		t.Fatalf("busy requests half again as slow: limit %v hold %d, want 1 and a hold", a.Current(), a.hold)
	}
}

// A worker once judged serial must be probed again sooner when a later
// probe finds busy and idle requests alike: the hold shrinks. (The
// counters it looked at used to be zeroed before it looked, so the hold
// only ever grew and an I/O-bound worker stayed at 1.)
func TestAdaptiveHoldShrinksWhenBusyLooksLikeIdle(t *testing.T) {
	a := NewAdaptive(func(int64) {}, nil)
	growTo2(t, a)
	feed(a, serialMinSamples, 10*time.Millisecond, 30*time.Millisecond)
	if a.Current() != 1 || a.hold != minHold {
		t.Fatalf("after a serial finding: limit %v hold %d, want 1 and %d", a.Current(), a.hold, minHold)
	}
	for a.hold > 0 {
		serve(a, 20*time.Millisecond, 1)
	}
	growTo2(t, a)
	feed(a, serialMinSamples, 10*time.Millisecond, 10*time.Millisecond)
	if a.nextHold != minHold/2 {
		t.Fatalf("next hold %d after busy looked like idle, want %d", a.nextHold, minHold/2)
	}
	if a.Current() < 2 {
		t.Fatalf("limit %v after busy looked like idle, want at least 2", a.Current())
	}
}

// A worker that computes gets short slots while its requests are short
// (as many as keep the work ahead of a request within shortQueue, up to
// shortSlots), loses them at once to a slow request, and never gets them
// for a mix of 1 ms and 50 ms. The worker's CPU clock is a fake that
// each request advances by the time it computed.
func TestAdaptiveShortSlotsForShortRequests(t *testing.T) {
	var cpu time.Duration
	a := NewAdaptive(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	run := func(a *Adaptive, n int, rtt, used time.Duration, inflight int64) {
		for range n {
			a.Handoff(20 * time.Microsecond)
			cpu += used
			serve(a, rtt, inflight)
		}
	}
	// 1.2 ms at the worker, 1 ms of it computing: 4 ms of work ahead of a
	// request is 4 requests, so 5 slots.
	run(a, 2000, 1200*time.Microsecond, time.Millisecond, 1)
	if l := a.Current(); l != 5 {
		t.Fatalf("limit %v for 1 ms requests of a worker that computes, want 5", l)
	}
	// Held at the short slots while the requests queue in the worker: a
	// request's latency is then several services, its service time is
	// the time since the previous answer.
	for range 1000 {
		cpu += time.Millisecond
		clock = clock.Add(time.Millisecond)
		a.Sample(4*time.Millisecond, 5, clock)
	}
	if l := a.Current(); l != 5 {
		t.Fatalf("limit %v with the short slots full, want it kept at 5", l)
	}
	run(a, 1, 20*time.Millisecond, 20*time.Millisecond, 2)
	if l := a.Current(); l != 1 {
		t.Fatalf("limit %v after a 20 ms request, want 1 at once", l)
	}

	// Tiny requests (100 µs of CPU, 350 µs at the worker): shortSlots,
	// once the worker's CPU time per request is known (until then the
	// quickest latency stands for it).
	tiny := NewAdaptive(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	run(tiny, 12000, 350*time.Microsecond, 100*time.Microsecond, 1)
	if l := tiny.Current(); l != shortSlots {
		t.Fatalf("limit %v for tiny requests, want %d", l, shortSlots)
	}

	mix := NewAdaptive(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	for i := range 4000 {
		d := time.Millisecond
		if i%20 == 0 {
			d = 50 * time.Millisecond
		}
		run(mix, 1, d, d-50*time.Microsecond, 1)
		if l := mix.Current(); l != 1 {
			t.Fatalf("limit %v after %d requests of a 1 ms/50 ms mix, want 1", l, i+1)
		}
	}
}

// A worker that waits (50 ms requests, 0.3 ms of CPU each) read through
// a CPU clock that moves in 10 ms ticks, as /proc's does: at a limit of
// 9 a quarter second of summed latency is under 30 ms of wall time, in
// which one tick made it look CPU-bound, and its limit fell from 9 to 1
// with the requests of a load step queueing behind it (seen in the
// autoscale benchmark: a 3.2 s p99 and 94 errors). The verdict needs a
// quarter second of wall time at any limit; and the limit, once the CPU
// says the worker waits, doubles each flat window, so it reaches 16 in
// a few.
func TestAdaptiveLimitOfAWaitingWorkerWithTickedCPU(t *testing.T) {
	var used time.Duration
	ticked := func() (time.Duration, bool) { return used.Truncate(10 * time.Millisecond), true }
	a := NewAdaptive(func(int64) {}, ticked)
	// A few quick requests first (a readiness check through the pool):
	// the quickest latency is then far below the worker's 50 ms, and its
	// requests are not short.
	for range 20 {
		used += 100 * time.Microsecond
		serve(a, 300*time.Microsecond, 1)
	}
	top := 0.0 // the highest limit since the first 100 of 50 ms
	for i := range 4000 {
		used += 300 * time.Microsecond
		l := a.Current()
		// l requests in flight, each 50 ms: one ends every 50/l ms.
		clock = clock.Add(time.Duration(float64(50*time.Millisecond) / math.Floor(l)))
		a.Sample(50*time.Millisecond, int64(l), clock)
		if i < 100 {
			continue // the cut from the quick requests' latency to 50 ms
		}
		top = max(top, a.Current())
		if top >= 8 && a.Current() < 4 {
			t.Fatalf("after %d requests the limit fell from %v to %v", i+1, top, a.Current())
		}
		if i == 400 && top < 16 {
			t.Fatalf("limit %v after 400 requests of a worker that waits, want 16 or more", top)
		}
	}
}
