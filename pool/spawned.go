package pool

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// spawner is the source of a pool that runs its own workers: a
// worker.Supervisor keeps Count processes running, each joins the pool
// when started and leaves when it exits; a file watch and a recycler
// replace them when asked.
type spawner struct {
	p   *Pool
	sup *worker.Supervisor

	restartMu sync.Mutex // one replacement at a time
	watch     *watcher   // nil without Config.Watch

	stopRecycler context.CancelFunc // nil without Config.Recycle
	recyclerDone chan struct{}

	scale *scaler // nil unless Config.Scale lets the pool scale

	// Guarded by Pool.mu.
	procs map[*worker.Instance]*member
}

func newSpawner(p *Pool) (*spawner, error) {
	s := &spawner{p: p, procs: map[*worker.Instance]*member{}}
	var err error
	s.sup, err = worker.New(p.cfg.Workers, worker.Hooks{Started: s.started, Exited: s.exited}, p.log)
	if err != nil {
		return nil, err
	}
	if len(p.cfg.Watch) > 0 {
		if s.watch, err = newWatcher(p.cfg.Watch, p.cfg.Workers.Dir, p.cfg.WatchDebounce); err != nil {
			return nil, err
		}
	}
	if p.cfg.Scale.enabled(s.sup.Count()) {
		s.scale = newScaler(s)
	}
	return s, nil
}

func (s *spawner) start() {
	s.sup.Start()
	if s.watch != nil {
		s.watch.start(s)
	}
	if s.p.cfg.Recycle.enabled() {
		ctx, cancel := context.WithCancel(context.Background())
		s.stopRecycler, s.recyclerDone = cancel, make(chan struct{})
		go s.recycler(ctx, s.recyclerDone)
	}
	if s.scale != nil {
		s.scale.start()
	}
}

func (s *spawner) stop() {
	if s.scale != nil {
		s.scale.stop()
	}
	if s.watch != nil {
		s.watch.stop()
	}
	if s.stopRecycler != nil {
		s.stopRecycler()
		<-s.recyclerDone
	}
	s.sup.Stop()
}

// slots counts the slots added while scaling too: their ids are
// Count()+1 up to slots().
func (s *spawner) slots() int { return s.sup.Slots() }

// arriving: every worker is being started.
func (s *spawner) arriving() int { return s.sup.Count() }

func (s *spawner) settled() bool { return s.p.Healthy() >= s.sup.Count() }

func (s *spawner) kill(m *member, reason string) { s.sup.Restart(m.proc, reason) }

func (s *spawner) slotStatus() []worker.Status { return s.sup.Status() }

// started is the supervisor's hook for a new process.
func (s *spawner) started(inst *worker.Instance) {
	m := &member{
		id:     inst.Worker,
		proc:   inst,
		target: health.Target{Network: inst.Network, Address: inst.Address},
		since:  inst.Started,
		plan:   s.p.planRecycle(inst.Started),
	}
	s.p.mu.Lock()
	s.procs[inst] = m
	s.p.mu.Unlock()
	s.p.join(m)
}

// exited is the supervisor's hook for a process that is gone.
func (s *spawner) exited(inst *worker.Instance, _ error) {
	s.p.mu.Lock()
	m := s.procs[inst]
	delete(s.procs, inst)
	s.p.mu.Unlock()
	if m != nil {
		s.p.leave(m)
	}
}

// member returns the newest process of worker slot id (a replacement
// runs beside the process it replaces for a moment).
func (s *spawner) member(id int) *member {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	var newest *member
	for inst, m := range s.procs {
		if inst.Worker == id && (newest == nil || inst.Started.After(newest.proc.Started)) {
			newest = m
		}
	}
	return newest
}

// RollingRestart replaces every worker, one at a time: a new process
// starts beside the old one, and once it is healthy the old one leaves
// rotation, finishes its requests and streams (bounded by the stop
// timeout) and stops. Capacity never drops below Count() healthy
// workers. It returns how many workers it replaced.
func (p *Pool) RollingRestart(ctx context.Context) (int, error) {
	s, ok := p.src.(*spawner)
	if !ok {
		return 0, ErrNotSpawned
	}
	replaced := 0
	for id := 1; id <= s.slots(); id++ {
		m := s.member(id)
		if m == nil {
			continue
		}
		if err := s.replace(ctx, m, "rolling restart"); err != nil {
			return replaced, fmt.Errorf("worker %d: %w", id, err)
		}
		replaced++
	}
	return replaced, nil
}

// replace starts a new process for m's slot; once it is healthy, m
// drains and stops. Capacity never drops below Count(). It waits first
// until every worker is healthy, and never overlaps another
// replacement.
func (s *spawner) replace(ctx context.Context, m *member, why string) error {
	s.restartMu.Lock()
	defer s.restartMu.Unlock()
	wctx, cancel := context.WithTimeout(ctx, s.p.cfg.StartupTimeout)
	defer cancel()
	if err := s.p.WaitHealthy(wctx, s.slots()); err != nil {
		return err
	}
	return s.sup.Replace(ctx, m.proc, why, func(ctx context.Context, next *worker.Instance) error {
		if err := s.waitServing(ctx, next); err != nil {
			return err
		}
		s.p.drain(ctx, m)
		return nil
	})
}

// waitServing waits until next is in rotation, at most StartupTimeout.
func (s *spawner) waitServing(ctx context.Context, next *worker.Instance) error {
	timer := time.NewTimer(s.p.cfg.StartupTimeout)
	defer timer.Stop()
	for {
		s.p.mu.Lock()
		nm := s.procs[next]
		ok := nm != nil && nm.life.inRotation()
		ch := s.p.changed
		s.p.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-next.Exited():
			return fmt.Errorf("replacement pid %d exited", next.PID)
		case <-timer.C:
			return fmt.Errorf("replacement pid %d not healthy within startup_timeout %v", next.PID, s.p.cfg.StartupTimeout)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// recycleEvery is how often the recycler looks at the workers.
const recycleEvery = 250 * time.Millisecond
