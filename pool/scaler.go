package pool

import (
	"cmp"
	"context"
	"runtime"
	"slices"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
)

// scaler carries out a spawner's scalePolicy: it reads the load every
// scaleTick, starts a worker slot or drains and removes some, and keeps
// what it decided for the status and the metrics. Its goroutine is
// started by spawner.start and ended by spawner.stop, before the
// workers stop.
type scaler struct {
	s      *spawner
	policy *scalePolicy
	meter  *balancer.LoadMeter // read only by the goroutine

	cancel context.CancelFunc
	done   chan struct{}

	// The slot the scaler started last and when, until it serves; read
	// only by the goroutine.
	pending      int
	pendingSince time.Time

	mu        sync.Mutex
	decisions []ScaleDecision     // the latest decisionsKept, oldest first
	totals    map[scaleKey]uint64 // every decision, by direction and reason
	workload  string              // what the adaptive limits say about the workers
	startup   time.Duration       // the last started worker's time to serve
}

type scaleKey struct{ direction, reason string }

// ScaleDecision is one scaling decision, for the status.
type ScaleDecision struct {
	At        time.Time `json:"at"`
	Direction string    `json:"direction"`
	Reason    string    `json:"reason"`
	// From and To are the worker slots before and after.
	From int `json:"from"`
	To   int `json:"to"`
	// QueueWaitMS is the mean time requests waited for a worker over the
	// window that led to a start or hold; ServiceMS the mean time one
	// spent in a worker.
	QueueWaitMS float64 `json:"queue_wait_ms,omitempty"`
	ServiceMS   float64 `json:"service_ms,omitempty"`
}

// ScaleCount is how many decisions of one direction and reason a pool
// has made.
type ScaleCount struct {
	Direction string `json:"direction"`
	Reason    string `json:"reason"`
	Count     uint64 `json:"count"`
}

// ScaleStatus is the scaling part of a pool's status.
type ScaleStatus struct {
	// Floor is the number of workers always running (count), Ceiling
	// the most the pool may run (max_count), Workers how many slots it
	// has now.
	Floor   int `json:"floor"`
	Ceiling int `json:"ceiling"`
	Workers int `json:"workers"`
	// CPUs is the number of CPUs the process may use: the most
	// workers that compute the pool runs.
	CPUs int `json:"cpus"`
	// Workload is what the workers' adaptive limits judged: "cpu-bound",
	// "io-bound" or "unknown".
	Workload string `json:"workload"`
	// IdleSeconds is scale_idle; StartupMS the time the last worker the
	// pool started took to serve.
	IdleSeconds float64 `json:"idle_seconds"`
	StartupMS   float64 `json:"startup_ms,omitempty"`
	// Decisions are the latest decisions, oldest first; Totals count
	// every decision since the pool started.
	Decisions []ScaleDecision `json:"decisions"`
	Totals    []ScaleCount    `json:"totals"`
}

func newScaler(s *spawner) *scaler {
	return &scaler{
		s:      s,
		policy: newScalePolicy(s.sup.Count(), s.p.cfg.Scale, time.Now()),
		meter:  s.p.bal.NewLoadMeter(),
		// The usual decisions count from 0, so that their rates exist
		// before the first one.
		totals: map[scaleKey]uint64{{ScaleUp, ReasonQueueWait}: 0, {ScaleDown, ReasonIdle}: 0},
	}
}

func (sc *scaler) start() {
	ctx, cancel := context.WithCancel(context.Background())
	sc.cancel, sc.done = cancel, make(chan struct{})
	go sc.run(ctx)
}

// stop ends the goroutine, after the drain or stop it may be carrying
// out (a drain ends at once; a stop is bounded by stop_timeout).
func (sc *scaler) stop() {
	sc.cancel()
	<-sc.done
}

func (sc *scaler) run(ctx context.Context) {
	defer close(sc.done)
	tick := time.NewTicker(scaleTick)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			sc.step(ctx, now)
		}
	}
}

// step reads the load and carries out what the policy decides. It runs
// while no worker is being replaced, and holds the replacements off
// while it runs: a recycle or rolling restart never meets a worker
// that is being added or removed.
func (sc *scaler) step(ctx context.Context, now time.Time) {
	s := sc.s
	replacing := !s.restartMu.TryLock()
	if !replacing {
		defer s.restartMu.Unlock()
	}
	sample := scaleSample{
		at: now, load: sc.meter.Read(), slots: s.sup.Slots(), cpus: runtime.GOMAXPROCS(0),
		settling: replacing || sc.starting(now),
	}
	d := sc.policy.decide(sample, sc.memory)
	sc.mu.Lock()
	sc.workload = workload(sample.load)
	sc.startup = sc.policy.startup
	sc.mu.Unlock()
	if d.Direction == "" {
		return
	}
	// Recorded and logged first, so that the log reads decision, then
	// what came of it.
	sc.record(now, d)
	switch d.Direction {
	case ScaleUp:
		id, err := s.sup.AddSlot()
		if err != nil {
			return // stopping
		}
		sc.pending, sc.pendingSince = id, now
	case ScaleDown:
		// Slots are 1..Slots(): the highest are the ones above the floor
		// (AddSlot takes the lowest free id), so removing from the top
		// keeps them contiguous, as RollingRestart and the recycler
		// expect.
		for id := d.From; id > d.To; id-- {
			if m := s.member(id); m != nil {
				s.p.drain(ctx, m)
			}
			if err := s.sup.RemoveSlot(id); err != nil {
				s.p.log.Error("scaling down", zap.Int("worker", id), zap.Error(err))
			}
		}
	}
}

// starting reports whether the slot the scaler started last does not
// serve yet, for at most startup_timeout (after which the slot is an
// ordinary one that its supervisor restarts).
func (sc *scaler) starting(now time.Time) bool {
	if sc.pending == 0 {
		return false
	}
	m := sc.s.member(sc.pending)
	serving := false
	if m != nil {
		sc.s.p.mu.Lock()
		serving = m.life.inRotation()
		sc.s.p.mu.Unlock()
	}
	if serving || now.Sub(sc.pendingSince) > sc.s.p.cfg.StartupTimeout {
		sc.pending = 0
		return false
	}
	return true
}

// memory is the resident memory of the pool's workers, and of one on
// average.
func (sc *scaler) memory() (total, each int64) {
	p := sc.s.p
	groups := map[int]int64{}
	p.mu.Lock()
	for _, m := range p.members {
		if m.proc != nil {
			groups[m.proc.PGID] = 0
		}
	}
	p.mu.Unlock()
	if len(groups) == 0 {
		return 0, 0
	}
	for _, rss := range groupsRSS(groups) {
		total += rss
	}
	return total, total / int64(len(groups))
}

// record keeps d for the status and logs it.
func (sc *scaler) record(now time.Time, d scaleDecision) {
	rec := ScaleDecision{
		At: now, Direction: d.Direction, Reason: d.Reason, From: d.From, To: d.To,
		QueueWaitMS: ms(d.QueueWait), ServiceMS: ms(d.Service),
	}
	sc.mu.Lock()
	sc.decisions = append(sc.decisions, rec)
	if len(sc.decisions) > decisionsKept {
		sc.decisions = sc.decisions[len(sc.decisions)-decisionsKept:]
	}
	sc.totals[scaleKey{d.Direction, d.Reason}]++
	sc.mu.Unlock()
	fields := []zap.Field{zap.String("reason", d.Reason), zap.Int("from", d.From), zap.Int("to", d.To)}
	if d.QueueWait > 0 {
		fields = append(fields, zap.Duration("queue_wait", d.QueueWait), zap.Duration("service", d.Service))
	}
	msg := map[string]string{
		ScaleUp:   "scaling up: requests keep waiting with every worker at its limit",
		ScaleDown: "scaling down: the pool had a worker more than it needed for scale_idle",
		ScaleHold: "not scaling up: " + holdWhy[d.Reason],
	}[d.Direction]
	sc.s.p.log.Info(msg, fields...)
}

var holdWhy = map[string]string{
	ReasonMaxCount: "at max_count",
	ReasonCPUs:     "as many workers as usable CPUs, and they compute (more would only contend)",
	ReasonMemory:   "one more worker would pass max_total_memory",
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func workload(l balancer.Load) string {
	switch {
	case l.CPUBound > 0:
		return "cpu-bound"
	case l.IOBound > 0:
		return "io-bound"
	}
	return "unknown"
}

// status reports the floor, the ceiling and the decisions.
func (sc *scaler) status() *ScaleStatus {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	st := &ScaleStatus{
		Floor: sc.policy.floor, Ceiling: sc.policy.ceiling, Workers: sc.s.sup.Slots(), CPUs: runtime.GOMAXPROCS(0),
		Workload: sc.workload, IdleSeconds: sc.policy.idle.Seconds(), StartupMS: ms(sc.startup),
		Decisions: append([]ScaleDecision{}, sc.decisions...), Totals: []ScaleCount{},
	}
	for k, n := range sc.totals {
		st.Totals = append(st.Totals, ScaleCount{Direction: k.direction, Reason: k.reason, Count: n})
	}
	slices.SortFunc(st.Totals, func(a, b ScaleCount) int {
		return cmp.Or(cmp.Compare(a.Direction, b.Direction), cmp.Compare(a.Reason, b.Reason))
	})
	return st
}
