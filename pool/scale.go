package pool

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
)

// Scale lets a pool that spawns its workers run more than Workers.Count
// of them while requests wait for a free one, and fewer again when they
// are not needed. Workers.Count is the floor: that many always run.
type Scale struct {
	// MaxCount is the ceiling; at or below Workers.Count the pool does
	// not scale.
	MaxCount int
	// Idle is how long the pool must have had a worker more than it
	// needed before a worker above the floor stops. Default 30s.
	Idle time.Duration
	// MaxTotalMemory in bytes: no worker is started while the resident
	// memory of the pool's workers, plus what one of them holds on
	// average, would pass it. 0: no limit.
	MaxTotalMemory int64
}

// DefaultScaleIdle is Scale.Idle's default.
const DefaultScaleIdle = 30 * time.Second

// How the decision is made; see scalePolicy.
const (
	// scaleTick is how often the load is read.
	scaleTick = 100 * time.Millisecond
	// scaleWindow is the short window over which requests must keep
	// waiting for a worker to start.
	scaleWindow = time.Second
	// scalePressure is the share of the window's readings that must
	// find requests queued and every worker at its limit: a burst that
	// the queue absorbs in a moment starts nothing.
	scalePressure = 0.8
	// The queue wait over the window must reach scaleWaitShare of the
	// time a request spends in a worker, and at least scaleMinWait.
	scaleWaitShare = 0.25
	scaleMinWait   = 2 * time.Millisecond
	// decisionsKept is how many recent decisions the status lists.
	decisionsKept = 20
)

// Directions and reasons of scaling decisions, as the status, the logs
// and the metrics name them.
const (
	ScaleUp   = "up"   // a worker started
	ScaleDown = "down" // workers above the floor drained and stopped
	ScaleHold = "hold" // a worker was needed but not started

	ReasonQueueWait = "queue_wait"       // up: requests kept waiting with every worker at its limit
	ReasonIdle      = "idle"             // down: the pool had workers more than it needed for scale_idle
	ReasonMaxCount  = "max_count"        // hold: at the ceiling
	ReasonCPUs      = "cpus"             // hold: as many workers as usable CPUs, and they compute
	ReasonMemory    = "max_total_memory" // hold: one more would pass max_total_memory
)

// enabled reports whether the pool scales: its ceiling is above its
// floor.
func (s Scale) enabled(floor int) bool { return s.MaxCount > floor }

// checkScale refuses a Scale that cannot work with the rest of cfg.
func (cfg Config) checkScale() error {
	s := cfg.Scale
	switch {
	case s.MaxCount < 0:
		return fmt.Errorf("max_count %d: give a number of workers at least count, or leave it out for no scaling", s.MaxCount)
	case s.Idle < 0:
		return fmt.Errorf("scale_idle %v: give a positive duration such as 30s", s.Idle)
	case s.MaxTotalMemory < 0:
		return fmt.Errorf("max_total_memory %d: give a size such as 2GiB", s.MaxTotalMemory)
	case s.MaxCount == 0:
		return nil
	case cfg.Workers.Count > 0 && s.MaxCount < cfg.Workers.Count:
		return fmt.Errorf("max_count %d is below count %d: the ceiling must be at least the floor; raise max_count or lower count", s.MaxCount, cfg.Workers.Count)
	case cfg.Source != nil && s.MaxCount > cfg.Workers.Count:
		return errors.New("max_count: only a pool that spawns its workers (command) can scale; remove max_count for discovered workers")
	case s.MaxCount > cfg.Workers.Count && !cfg.Balancer.AdaptiveLimit && cfg.Balancer.MaxInflight == 0:
		return errors.New("max_count: requests never wait for a worker without an in-flight limit, so the pool would never scale up; set max_inflight to auto or a number")
	}
	return nil
}

// scaleSample is one reading of the pool's load.
type scaleSample struct {
	at   time.Time
	load balancer.Load
	// slots is the number of worker slots (processes running, starting
	// or waiting to restart).
	slots int
	// cpus the process may use (GOMAXPROCS, which follows the
	// container's CPU limit).
	cpus int
	// settling: a worker that the pool started does not serve yet, or a
	// worker is being replaced (recycling, rolling restart). No decision
	// is made meanwhile, and the readings start afresh after.
	settling bool
}

// scaleDecision is what a reading led to; Direction "" is none.
type scaleDecision struct {
	Direction, Reason string
	// From and To are the worker slots before and after.
	From, To int
	// QueueWait is the mean time requests waited for a worker over the
	// window, and Service the mean time one spent in a worker.
	QueueWait, Service time.Duration
}

// scalePolicy decides when to start a worker and when to stop some. It
// is a value fed one reading at a time with the reading's own clock, so
// that tests drive it with a virtual one.
//
// Up: over the last scaleWindow, at least scalePressure of the readings
// found requests queued with every worker in rotation at its in-flight
// limit, and the mean queue wait (the queue's length integrated over
// the window, over the requests finished in it: Little's law) reached a
// quarter of the time a request spends in a worker, and the queue is
// not shrinking fast enough to be empty before a new worker would serve
// (a backlog that the workers are clearing needs no more). Then one worker
// starts, unless the pool is at max_count; or has as many workers as
// usable CPUs and they are not known to wait on I/O (the adaptive limit
// judges that); or one more would pass max_total_memory: those are
// "hold" decisions, recorded once per reason and scale_idle.
//
// Down: each reading counts the workers the pool could do without (its
// slots less the capacity in use, rounded up; none while requests
// queue). When that stayed at k ≥ 1 for scale_idle, min(k, slots −
// floor) workers above the floor drain and stop.
//
// After each decision the readings start afresh, and none is made while
// a started worker is not yet serving: at most one start per worker
// start-up time, each judged on the load that the workers before it
// left, and no stop sooner than scale_idle after a start.
type scalePolicy struct {
	floor, ceiling int
	idle           time.Duration
	maxMemory      int64

	since   time.Time     // of the last decision, or when settling ended
	window  []scaleSample // readings of the last scaleWindow since then
	spare   []spareAt     // readings of the last idle since then
	startup time.Duration // the last started worker's time to serve

	held   string // the last hold's reason, and when it was recorded
	heldAt time.Time

	settling bool // the previous reading was settling
	started  bool // the last decision started a worker
}

type spareAt struct {
	at    time.Time
	spare int
}

func newScalePolicy(floor int, s Scale, now time.Time) *scalePolicy {
	idle := s.Idle
	if idle <= 0 {
		idle = DefaultScaleIdle
	}
	return &scalePolicy{floor: floor, ceiling: max(s.MaxCount, floor), idle: idle, maxMemory: s.MaxTotalMemory, since: now}
}

// restart forgets the readings before at.
func (p *scalePolicy) restart(at time.Time) {
	p.since, p.window, p.spare = at, p.window[:0], p.spare[:0]
}

// decide takes a reading and returns what to do. memory, called only
// when a worker would start and MaxTotalMemory is set, returns the
// workers' resident memory and what one holds on average.
func (p *scalePolicy) decide(s scaleSample, memory func() (total, each int64)) scaleDecision {
	if s.settling {
		p.settling = true
		return scaleDecision{}
	}
	if p.settling {
		p.settling = false
		if p.started {
			p.startup = s.at.Sub(p.since)
		}
		p.started = false
		p.restart(s.at)
	}
	p.window = append(p.window, s)
	for len(p.window) > 0 && s.at.Sub(p.window[0].at) > scaleWindow {
		p.window = p.window[1:]
	}
	spare := 0
	if s.load.Queued == 0 {
		spare = s.slots - int(math.Ceil(s.load.Busy-1e-9))
	}
	p.spare = append(p.spare, spareAt{s.at, spare})
	for len(p.spare) > 0 && s.at.Sub(p.spare[0].at) > p.idle {
		p.spare = p.spare[1:]
	}
	if d := p.up(s, memory); d.Direction != "" {
		return d
	}
	return p.down(s)
}

// pressure reports whether requests kept waiting over the window, and
// the mean queue wait and service time.
func (p *scalePolicy) pressure(s scaleSample) (bool, time.Duration, time.Duration) {
	if s.at.Sub(p.since) < scaleWindow || len(p.window) < 2 || s.load.Queued == 0 {
		return false, 0, 0 // too soon to tell, or nobody waits now
	}
	queued := 0
	var waited, held float64 // request-seconds queued, and in workers
	var finished uint64
	for i, r := range p.window {
		if r.load.Queued > 0 && r.load.Endpoints > 0 && r.load.AtLimit == r.load.Endpoints {
			queued++
		}
		if i == 0 {
			continue // its span began before the window
		}
		span := r.at.Sub(p.window[i-1].at).Seconds()
		waited += float64(r.load.Queued) * span
		held += float64(r.load.Inflight) * span
		finished += r.load.Finished
	}
	if float64(queued) < scalePressure*float64(len(p.window)) || p.draining() {
		return false, 0, 0
	}
	if finished == 0 {
		// Nothing finished while requests waited: they wait for ever.
		return waited > 0, time.Duration(waited * float64(time.Second)), 0
	}
	wait := time.Duration(waited / float64(finished) * float64(time.Second))
	service := time.Duration(held / float64(finished) * float64(time.Second))
	return wait >= max(scaleMinWait, time.Duration(scaleWaitShare*float64(service))), wait, service
}

// draining reports whether the queue shrinks fast enough to be empty
// before a worker started now would serve: a backlog that the workers
// are clearing needs no more of them. The trend is the least-squares
// slope of the queue's length over the readings since it last became
// non-empty.
func (p *scalePolicy) draining() bool {
	if p.startup == 0 {
		return false
	}
	run := p.window
	for i := len(run) - 1; i >= 0; i-- {
		if run[i].load.Queued == 0 {
			run = run[i+1:]
			break
		}
	}
	if len(run) < 3 {
		return false
	}
	var tm, qm float64
	for _, r := range run {
		tm += r.at.Sub(run[0].at).Seconds()
		qm += float64(r.load.Queued)
	}
	tm /= float64(len(run))
	qm /= float64(len(run))
	var cov, v float64
	for _, r := range run {
		dt := r.at.Sub(run[0].at).Seconds() - tm
		cov += dt * (float64(r.load.Queued) - qm)
		v += dt * dt
	}
	slope := cov / v // requests per second; negative while it shrinks
	if slope >= 0 {
		return false
	}
	return float64(run[len(run)-1].load.Queued)/-slope < p.startup.Seconds()
}

func (p *scalePolicy) up(s scaleSample, memory func() (int64, int64)) scaleDecision {
	ok, wait, service := p.pressure(s)
	if !ok {
		return scaleDecision{}
	}
	d := scaleDecision{Direction: ScaleHold, From: s.slots, To: s.slots, QueueWait: wait, Service: service}
	ioBound := s.load.IOBound > 0 && s.load.CPUBound == 0
	switch {
	case s.slots >= p.ceiling:
		d.Reason = ReasonMaxCount
	case !ioBound && s.slots >= max(p.floor, s.cpus):
		d.Reason = ReasonCPUs
	case p.maxMemory > 0 && memory != nil:
		if total, each := memory(); total+each > p.maxMemory {
			d.Reason = ReasonMemory
		}
	}
	if d.Reason != "" {
		if d.Reason == p.held && s.at.Sub(p.heldAt) < p.idle {
			return scaleDecision{}
		}
		p.held, p.heldAt = d.Reason, s.at
		return d
	}
	p.held = ""
	p.started = true
	p.restart(s.at)
	d.Direction, d.Reason, d.To = ScaleUp, ReasonQueueWait, s.slots+1
	return d
}

func (p *scalePolicy) down(s scaleSample) scaleDecision {
	if s.slots <= p.floor || s.at.Sub(p.since) < max(p.idle, p.startup) {
		return scaleDecision{}
	}
	least := s.slots
	for _, r := range p.spare {
		least = min(least, r.spare)
	}
	n := min(least, s.slots-p.floor)
	if n < 1 {
		return scaleDecision{}
	}
	p.restart(s.at)
	return scaleDecision{Direction: ScaleDown, Reason: ReasonIdle, From: s.slots, To: s.slots - n}
}
