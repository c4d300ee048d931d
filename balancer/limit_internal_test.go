package balancer

import (
	"testing"
	"time"
)

// feed gives a a window's worth of samples: n requests that found the
// worker idle taking idle, and n that found it busy taking busy.
func feed(a *adaptiveLimit, n int, idle, busy time.Duration) {
	for range n {
		a.sample(idle, 1)
		a.sample(busy, 2)
	}
}

// growTo2 feeds flat, saturated windows at a limit below 2 until the
// limit reaches 2, as an I/O-bound worker's would.
func growTo2(t *testing.T, a *adaptiveLimit) {
	t.Helper()
	for i := 0; a.current() < 2; i++ {
		if i > 1000 {
			t.Fatalf("limit stuck at %v", a.current())
		}
		a.sample(time.Millisecond, 1)
	}
}

// A worker once judged serial must be probed again sooner when a later
// probe finds busy and idle requests alike: the hold shrinks. (The
// counters it looked at used to be zeroed before it looked, so the hold
// only ever grew and an I/O-bound worker stayed at 1.)
func TestAdaptiveHoldShrinksWhenBusyLooksLikeIdle(t *testing.T) {
	a := newAdaptiveLimit(func(int64) {}, nil)
	growTo2(t, a)
	feed(a, serialMinSamples, time.Millisecond, 3*time.Millisecond)
	if a.current() != 1 || a.hold != minHold {
		t.Fatalf("after a serial finding: limit %v hold %d, want 1 and %d", a.current(), a.hold, minHold)
	}
	for a.hold > 0 {
		a.sample(time.Millisecond, 1)
	}
	growTo2(t, a)
	feed(a, serialMinSamples, time.Millisecond, time.Millisecond)
	if a.nextHold != minHold/2 {
		t.Fatalf("next hold %d after busy looked like idle, want %d", a.nextHold, minHold/2)
	}
	if a.current() < 2 {
		t.Fatalf("limit %v after busy looked like idle, want at least 2", a.current())
	}
}

// A worker that computes gets a second slot while its requests are
// short next to the hand-off (more where the hand-off outlasts them),
// loses it at once to a slow request, and never gets it for a mix of
// 1 ms and 50 ms. The worker's CPU clock is a
// fake that each request advances by the time it computed.
func TestAdaptiveSecondSlotForShortRequests(t *testing.T) {
	var cpu time.Duration
	a := newAdaptiveLimit(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	serve := func(n int, rtt, used time.Duration, inflight int64) {
		for range n {
			a.handoff(20 * time.Microsecond)
			cpu += used
			a.sample(rtt, inflight)
		}
	}
	// 200 µs at the worker, 150 of them computing: the hand-off is 20 µs
	// in Go and 50 µs on the socket.
	serve(2000, 200*time.Microsecond, 150*time.Microsecond, 1)
	if l := a.current(); l != 2 {
		t.Fatalf("limit %v for short requests of a worker that computes, want 2", l)
	}
	serve(1000, 400*time.Microsecond, 150*time.Microsecond, 2)
	if l := a.current(); l != 2 {
		t.Fatalf("limit %v at the second slot, want it kept at 2", l)
	}
	serve(1, 5*time.Millisecond, 5*time.Millisecond, 2)
	if l := a.current(); l != 1 {
		t.Fatalf("limit %v after a slow request, want 1 at once", l)
	}

	// A request of 100 µs whose hand-off takes 300 µs (50 in Go, 250 on
	// the socket): one slot per request the hand-off lasts, up to
	// shortSlots.
	tiny := newAdaptiveLimit(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	for range 4000 {
		tiny.handoff(50 * time.Microsecond)
		cpu += 100 * time.Microsecond
		tiny.sample(350*time.Microsecond, 1)
	}
	if l := tiny.current(); l != shortSlots {
		t.Fatalf("limit %v for requests a third of their hand-off, want %d", l, shortSlots)
	}

	mix := newAdaptiveLimit(func(int64) {}, func() (time.Duration, bool) { return cpu, true })
	for i := range 4000 {
		d := time.Millisecond
		if i%20 == 0 {
			d = 50 * time.Millisecond
		}
		mix.handoff(20 * time.Microsecond)
		cpu += d - 50*time.Microsecond
		mix.sample(d, 1)
		if l := mix.current(); l != 1 {
			t.Fatalf("limit %v after %d requests of a 1 ms/50 ms mix, want 1", l, i+1)
		}
	}
}
