package health

import (
	"context"
	"time"
)

// firstProbeInterval is the pause between probes of an endpoint that has
// never passed; it doubles up to Config.Interval. A worker that is up in
// 50 ms should serve in about 50 ms, not after a whole interval.
const firstProbeInterval = 10 * time.Millisecond

// Checker probes one target on a schedule and reports every result. It
// keeps no verdict of its own: whoever owns the endpoint's state counts
// the results against the thresholds (Streak), together with what else
// it learns about the endpoint, so that there is one state and not two
// that can disagree. Its goroutine is started by Start and ended by
// Stop.
type Checker struct {
	cfg     Config
	prober  *Prober
	onProbe func(started time.Time, err error)

	cancel context.CancelFunc
	done   chan struct{}
}

// NewChecker prepares a checker of target; onProbe is called from the
// checker's goroutine with each probe's start time and result (nil:
// passed), never concurrently with itself.
func NewChecker(cfg Config, target Target, onProbe func(started time.Time, err error)) *Checker {
	cfg = cfg.WithDefaults()
	return &Checker{cfg: cfg, prober: NewProber(cfg, target), onProbe: onProbe, done: make(chan struct{})}
}

// Start begins probing at once.
func (c *Checker) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(ctx)
}

// Stop ends probing and waits for the goroutine; no onProbe call happens
// after Stop returns.
func (c *Checker) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
}

func (c *Checker) run(ctx context.Context) {
	defer close(c.done)
	// Until a probe passes, probe soon and then less often: a worker that
	// is up in 50 ms serves in about 50 ms.
	everPassed := false
	wait := firstProbeInterval
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		started := time.Now()
		err := c.prober.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		c.onProbe(started, err)
		everPassed = everPassed || err == nil
		if everPassed {
			t.Reset(c.cfg.Interval)
		} else {
			t.Reset(min(wait, c.cfg.Interval))
			wait *= 2
		}
	}
}

// Streak counts consecutive probe results, for the rise and fall
// thresholds of Config.
type Streak struct {
	Passes, Fails int
}

// Add records one probe result.
func (s *Streak) Add(err error) {
	if err == nil {
		s.Passes, s.Fails = s.Passes+1, 0
	} else {
		s.Passes, s.Fails = 0, s.Fails+1
	}
}

// Rose reports whether the passes in a row reach c's Passes threshold.
func (c Config) Rose(s Streak) bool { return s.Passes >= max(c.Passes, 1) }

// Fell reports whether the failures in a row reach c's Fails threshold.
func (c Config) Fell(s Streak) bool { return s.Fails >= max(c.Fails, 1) }
