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
