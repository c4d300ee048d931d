package worker

import (
	"math/rand/v2"
	"time"
)

// Backoff paces the restarts of a worker that keeps exiting: the delay
// doubles from Initial up to Max with each consecutive failure, jittered
// so that workers which crashed together do not restart together, and
// the count resets once a process has run for StableAfter.
type Backoff struct {
	Initial     time.Duration
	Max         time.Duration
	StableAfter time.Duration
}

// Backoff defaults: 100 ms doubling to 10 s; a run of 10 s is stable.
const (
	DefaultBackoffInitial = 100 * time.Millisecond
	DefaultBackoffMax     = 10 * time.Second
	DefaultStableAfter    = 10 * time.Second
)

func (b Backoff) withDefaults() Backoff {
	if b.Initial <= 0 {
		b.Initial = DefaultBackoffInitial
	}
	if b.Max <= 0 {
		b.Max = DefaultBackoffMax
	}
	if b.Max < b.Initial {
		b.Max = b.Initial
	}
	if b.StableAfter <= 0 {
		b.StableAfter = DefaultStableAfter
	}
	return b
}

// Delay is the wait before the restart that follows the n-th consecutive
// failure (n ≥ 1): uniformly random in [d/2, d] where d = Initial·2^(n-1),
// capped at Max.
func (b Backoff) Delay(n int) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	d = min(d, b.Max)
	half := d / 2
	return half + rand.N(d-half+1)
}
