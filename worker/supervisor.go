package worker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Hooks tell the composer of a pool about processes. Both are called from
// the slot's own goroutine, so calls for one slot never overlap; they
// must not block for long, and must not call Supervisor.Stop.
type Hooks struct {
	// Started is called once a process has been started, before anything
	// is known about whether it serves.
	Started func(*Instance)
	// Exited is called once a process has exited and its group is gone.
	Exited func(*Instance, error)
}

// Worker states reported by Status.
const (
	StateStarting = "starting" // a process is being started
	StateRunning  = "running"  // a process runs
	StateBackoff  = "backoff"  // waiting to restart after an exit
	StateFailed   = "failed"   // waiting to restart after MaxConsecutiveFailures exits in a row
	StateStopped  = "stopped"  // the supervisor has stopped
)

// Status describes one worker slot.
type Status struct {
	ID                  int       `json:"id"`
	PID                 int       `json:"pid,omitempty"`
	Address             string    `json:"address,omitempty"`
	State               string    `json:"state"`
	Since               time.Time `json:"since"`
	Restarts            int       `json:"restarts"`
	Recycles            int       `json:"recycles"`
	ConsecutiveFailures int       `json:"consecutive_failures"`
	// Failed: the worker exited MaxConsecutiveFailures times in a row; it
	// is still restarted, at the longest backoff.
	Failed   bool   `json:"failed"`
	LastExit string `json:"last_exit,omitempty"`
}

// Supervisor runs Count workers of one Spec. Each slot is a goroutine,
// started by Start and ended by Stop, that keeps one process running.
type Supervisor struct {
	spec  Spec
	path  string   // resolved command
	env   []string // spec.Env as KEY=VALUE
	hooks Hooks
	log   *zap.Logger

	sockDir    string
	ownSockDir bool
	launcher   *launcher // set by Start

	stop     chan struct{}
	stopCtx  context.Context // cancelled by Stop
	stopAll  context.CancelFunc
	stopOnce sync.Once
	wg       sync.WaitGroup
	spawned  atomic.Uint64 // processes started, for unique socket names

	mu    sync.Mutex
	slots []Status
	extra map[int]*extraSlot // slots added by AddSlot, by id; see scale.go
}

// New checks spec and prepares a supervisor; no process starts until
// Start. The error names the field at fault.
func New(spec Spec, hooks Hooks, log *zap.Logger) (*Supervisor, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	spec = spec.withDefaults()
	path, err := ResolveCommand(spec.Command, spec.Dir)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	s := &Supervisor{
		spec:  spec,
		path:  path,
		hooks: hooks,
		log:   log,
		stop:  make(chan struct{}),
		slots: make([]Status, spec.Count),
	}
	s.stopCtx, s.stopAll = context.WithCancel(context.Background())
	keys := make([]string, 0, len(spec.Env))
	for k := range spec.Env {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		s.env = append(s.env, k+"="+spec.Env[k])
	}
	if spec.Listen == ListenUnix {
		if spec.SocketDir == "" {
			removeStaleSocketDirs(log)
			// MkdirTemp creates the directory with mode 0700.
			dir, err := os.MkdirTemp("", ownedName())
			if err != nil {
				return nil, fmt.Errorf("socket directory: %w", err)
			}
			s.sockDir, s.ownSockDir = dir, true
		} else {
			if err := os.MkdirAll(spec.SocketDir, 0o700); err != nil {
				return nil, fmt.Errorf("socket directory: %w", err)
			}
			if err := os.Chmod(spec.SocketDir, 0o700); err != nil {
				return nil, fmt.Errorf("socket directory: %w", err)
			}
			s.sockDir = spec.SocketDir
		}
	}
	for i := range s.slots {
		s.slots[i] = Status{ID: i + 1, State: StateStarting, Since: time.Now()}
	}
	return s, nil
}

// Count is the number of worker slots.
func (s *Supervisor) Count() int { return s.spec.Count }

// Start starts every worker slot.
func (s *Supervisor) Start() {
	s.launcher = newLauncher(s.log)
	for id := 1; id <= s.spec.Count; id++ {
		s.wg.Add(1)
		go s.run(id)
	}
}

// Stop stops every worker gracefully (SIGTERM to each of its processes,
// then SIGKILL after StopTimeout) and returns once all of them are gone.
// A process still being started is stopped too, and a slot that waits
// to restart its worker starts none.
func (s *Supervisor) Stop() {
	s.stopOnce.Do(func() {
		close(s.stop)
		s.stopAll()
	})
	s.wg.Wait()
	if s.launcher != nil {
		s.launcher.close()
	}
	if s.ownSockDir {
		_ = os.RemoveAll(s.sockDir)
	}
}

// Restart kills inst (its whole group, at once) if it still runs; its
// slot starts a new process after the usual backoff. Use it for a
// process that never became healthy or stopped answering.
func (s *Supervisor) Restart(inst *Instance, reason string) {
	select {
	case <-inst.exited:
		return
	default:
	}
	s.log.Warn("killing worker", zap.Int("worker", inst.Worker), zap.Int("pid", inst.PID), zap.String("reason", reason))
	inst.group.kill()
}

// replaceRequest asks a slot to replace its process.
type replaceRequest struct {
	ctx      context.Context
	reason   string
	handover func(context.Context, *Instance) error
	reply    chan error
}

// Replace starts a new process for inst's slot while inst keeps running
// and calls handover with it; handover should return once the new
// process serves and inst holds no more requests. Then inst is stopped
// gracefully (SIGTERM to its group, SIGKILL after StopTimeout) and the
// new process takes its place; the exit is no failure. If handover fails
// or the new process exits first, the new one is killed and inst stays.
// Replace returns when it is done, or at once if inst has exited.
func (s *Supervisor) Replace(ctx context.Context, inst *Instance, reason string, handover func(context.Context, *Instance) error) error {
	req := &replaceRequest{ctx: ctx, reason: reason, handover: handover, reply: make(chan error, 1)}
	select {
	case inst.replace <- req:
	case <-inst.exited:
		return fmt.Errorf("worker %d: pid %d exited", inst.Worker, inst.PID)
	case <-ctx.Done():
		return ctx.Err()
	case <-s.stop:
		return errors.New("stopping")
	}
	return <-req.reply
}

// surge runs a replaceRequest for inst in its slot's goroutine and
// returns the process that now runs the slot.
func (s *Supervisor) surge(id int, log *zap.Logger, inst *Instance, req *replaceRequest) (*Instance, error) {
	log.Info("replacing worker", zap.Int("pid", inst.PID), zap.String("reason", req.reason))
	next, err := s.spawn(id)
	if err != nil {
		return inst, err
	}
	log.Info("replacement started", zap.Int("pid", next.PID), zap.String("address", next.Address))
	if s.hooks.Started != nil {
		s.hooks.Started(next)
	}
	ctx, cancel := context.WithCancel(req.ctx)
	defer cancel()
	unhook := context.AfterFunc(s.stopCtx, cancel)
	defer unhook()
	err = req.handover(ctx, next)
	select {
	case <-next.exited:
		if err == nil {
			err = fmt.Errorf("replacement pid %d exited: %s", next.PID, exitString(next.err))
		}
	default:
	}
	if err != nil {
		next.group.kill()
		<-next.exited
		s.exited(next)
		log.Warn("replacement abandoned; the worker keeps running", zap.Int("pid", inst.PID), zap.Error(err))
		return inst, err
	}
	inst.terminate(s.spec.StopTimeout)
	s.exited(inst)
	log.Info("worker replaced", zap.Int("old_pid", inst.PID), zap.Int("pid", next.PID))
	s.update(id, func(st *Status) {
		st.Recycles++
		st.State, st.Since, st.PID, st.Address = StateRunning, next.Started, next.PID, next.Address
	})
	return next, nil
}

// exited kills what the process left behind, frees its cgroup or job,
// runs the Exited hook and removes the process's socket.
func (s *Supervisor) exited(inst *Instance) {
	discard(inst.group)
	if s.hooks.Exited != nil {
		s.hooks.Exited(inst, inst.err)
	}
	if inst.Network == ListenUnix {
		_ = os.Remove(inst.Address)
	}
}

// Status reports every slot, in id order.
func (s *Supervisor) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(s.slots), func(st Status) bool { return s.removedLocked(st.ID) })
}

func (s *Supervisor) update(id int, f func(*Status)) {
	s.mu.Lock()
	f(&s.slots[id-1])
	s.mu.Unlock()
}

// run keeps slot id's process running until Stop.
func (s *Supervisor) run(id int) {
	defer s.wg.Done()
	defer s.update(id, func(st *Status) {
		st.State, st.PID, st.Since = StateStopped, 0, time.Now()
	})
	log := s.log.With(zap.Int("worker", id))
	retire := s.retired(id) // nil, never ready, for the first Count slots
	failures := 0
	for {
		select {
		case <-s.stop:
			return
		case <-retire:
			return
		default:
		}
		s.update(id, func(st *Status) { st.State, st.Since = StateStarting, time.Now() })
		inst, err := s.spawn(id)
		if err != nil {
			select {
			case <-s.stop:
				return // the start was cut short by Stop
			default:
			}
			failures++
			log.Error("worker did not start", zap.Error(err), zap.Int("consecutive_failures", failures))
			s.update(id, func(st *Status) { st.LastExit = err.Error() })
			if !s.wait(log, id, failures) {
				return
			}
			continue
		}
		s.update(id, func(st *Status) {
			st.State, st.Since, st.PID, st.Address = StateRunning, inst.Started, inst.PID, inst.Address
		})
		log.Info("worker started", zap.Int("pid", inst.PID), zap.String("address", inst.Address))
		if s.hooks.Started != nil {
			s.hooks.Started(inst)
		}

		// A process that runs for StableAfter clears the failure count.
		stable := time.NewTimer(s.spec.Backoff.StableAfter)
		stopping := false
	wait:
		for {
			select {
			case req := <-inst.replace:
				next, err := s.surge(id, log, inst, req)
				if err == nil {
					inst = next
					stable.Reset(s.spec.Backoff.StableAfter)
				}
				req.reply <- err
			case <-inst.exited:
				break wait
			case <-s.stop:
				stopping = true
				inst.terminate(s.spec.StopTimeout)
				break wait
			case <-retire:
				stopping = true
				inst.terminate(s.spec.StopTimeout)
				break wait
			case <-stable.C:
				failures = 0
				s.update(id, func(st *Status) { st.ConsecutiveFailures, st.Failed = 0, false })
			}
		}
		stable.Stop()
		s.exited(inst)
		if stopping {
			log.Info("worker stopped", zap.Int("pid", inst.PID))
			return
		}

		ran := time.Since(inst.Started)
		failures++
		exit := exitString(inst.err)
		log.Warn("worker exited", zap.Int("pid", inst.PID), zap.String("exit", exit),
			zap.Duration("ran", ran), zap.Int("consecutive_failures", failures))
		s.update(id, func(st *Status) {
			st.Restarts++
			st.LastExit = exit
		})
		if !s.wait(log, id, failures) {
			return
		}
	}
}

// wait sleeps the backoff delay after the n-th consecutive failure; it
// returns false if Stop was called meanwhile.
func (s *Supervisor) wait(log *zap.Logger, id, failures int) bool {
	d := s.spec.Backoff.Delay(failures)
	failed := failures >= s.spec.MaxConsecutiveFailures
	state := StateBackoff
	if failed {
		state = StateFailed
		d = s.spec.Backoff.Max
	}
	s.update(id, func(st *Status) {
		st.State, st.Since, st.PID = state, time.Now(), 0
		st.ConsecutiveFailures, st.Failed = failures, failed
	})
	if failed {
		log.Error("worker failed: it keeps exiting; retrying at the longest backoff",
			zap.Int("consecutive_failures", failures), zap.Duration("next_restart_in", d))
	} else {
		log.Info("restarting worker", zap.Duration("in", d))
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.stop:
		return false
	case <-s.retired(id):
		return false
	}
}

func exitString(err error) string {
	if err == nil {
		return "exit status 0"
	}
	return err.Error()
}
