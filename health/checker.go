package health

import (
	"context"
	"sync"
	"time"
)

// firstProbeInterval is the pause between probes of an endpoint that has
// never passed; it doubles up to Config.Interval. A worker that is up in
// 50 ms should serve in about 50 ms, not after a whole interval.
const firstProbeInterval = 10 * time.Millisecond

// Checker probes one target on a schedule and reports each change of its
// state. It starts unhealthy. Its goroutine is started by Start and ended
// by Stop.
type Checker struct {
	cfg      Config
	prober   *Prober
	onChange func(healthy bool, err error)

	cancel  context.CancelFunc
	done    chan struct{}
	settled chan struct{} // closed once a first verdict is in

	mu      sync.Mutex
	healthy bool
	lastErr error
	passes  int
	fails   int
}

// NewChecker prepares a checker of target; onChange is called from the
// checker's goroutine whenever the state flips, with the last probe error
// when it becomes unhealthy.
func NewChecker(cfg Config, target Target, onChange func(healthy bool, err error)) *Checker {
	cfg = cfg.WithDefaults()
	return &Checker{cfg: cfg, prober: NewProber(cfg, target), onChange: onChange,
		done: make(chan struct{}), settled: make(chan struct{})}
}

// Settled is closed once the checker has a first verdict: the endpoint
// became healthy (onChange has returned), or a probe failed before it
// did. Whoever waits for a set of endpoints to be known waits on it.
func (c *Checker) Settled() <-chan struct{} { return c.settled }

// Start begins probing at once.
func (c *Checker) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.run(ctx)
}

// Stop ends probing and waits for the goroutine; no onChange call happens
// after Stop returns.
func (c *Checker) Stop() {
	if c.cancel == nil {
		return
	}
	c.cancel()
	<-c.done
}

// Healthy reports the current state and the last probe error.
func (c *Checker) Healthy() (bool, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.healthy, c.lastErr
}

// MarkDown records that the endpoint failed in use (passive health): it
// counts as unhealthy until the probe passes again, which fires
// onChange(true). onChange is not called for this change.
func (c *Checker) MarkDown(err error) {
	c.mu.Lock()
	c.healthy, c.lastErr, c.passes = false, err, 0
	c.mu.Unlock()
}

func (c *Checker) run(ctx context.Context) {
	defer close(c.done)
	everHealthy, settled := false, false
	wait := firstProbeInterval
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := c.prober.Probe(ctx)
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.lastErr = err
		was := c.healthy
		if err == nil {
			c.passes, c.fails = c.passes+1, 0
			if c.passes >= c.cfg.Passes {
				c.healthy = true
			}
		} else {
			c.passes, c.fails = 0, c.fails+1
			if c.fails >= c.cfg.Fails {
				c.healthy = false
			}
		}
		now := c.healthy
		c.mu.Unlock()
		if now != was {
			c.onChange(now, err)
		}
		if !settled && (now || err != nil) {
			settled = true
			close(c.settled)
		}
		if now {
			everHealthy = true
		}
		if everHealthy {
			t.Reset(c.cfg.Interval)
		} else {
			t.Reset(min(wait, c.cfg.Interval))
			wait *= 2
		}
	}
}
