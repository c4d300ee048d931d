// Package pool composes the parts of a worker pool: a worker.Supervisor
// that keeps processes running, a health.Checker per process that decides
// when it may serve, and a balancer.Balancer that spreads requests over
// the processes that may. It is what the Caddy module, the CLI and tests
// use; it never imports Caddy.
package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Defaults.
const (
	// DefaultStartupTimeout is how long a new worker may take to pass
	// its first health check before it is killed and restarted.
	DefaultStartupTimeout = 30 * time.Second
	// DefaultUnhealthyKillAfter is how long a worker may stay unhealthy.
	DefaultUnhealthyKillAfter = 10 * time.Second
)

// Config describes a pool.
type Config struct {
	// Name identifies the pool in logs and status.
	Name string
	// Workers says what to run and how many.
	Workers worker.Spec
	// Source, if set, finds endpoints that something else started,
	// instead of spawning Workers: each candidate it lists is probed
	// with Health and serves while the probe passes. Recycle and Watch
	// must be unset; only Workers.StopTimeout applies (the drain).
	Source Source
	// Health says how to probe each worker.
	Health health.Config
	// StartupTimeout bounds the time from start to first healthy probe.
	StartupTimeout time.Duration
	// UnhealthyKillAfter is how long a worker that was healthy may fail
	// its health check (a hung event loop, say) before it is killed and
	// restarted. Default 10s.
	UnhealthyKillAfter time.Duration
	// Recycle replaces workers after a number of requests, an amount of
	// memory or a lifetime.
	Recycle Recycle
	// Watch lists file globs (relative to Workers.Dir) whose change
	// triggers a rolling restart, after WatchDebounce of quiet.
	Watch         []string
	WatchDebounce time.Duration
	// Balancer sets up balancing, limits, the queue, breakers and
	// retries. The pool sets its OnPassiveDown, OnHung and
	// OnBreakerChange.
	Balancer balancer.Config
}

// Pool runs and serves from a set of workers.
type Pool struct {
	cfg Config
	log *zap.Logger
	sup *worker.Supervisor
	bal *balancer.Balancer

	mu      sync.Mutex
	members map[*worker.Instance]*member
	changed chan struct{} // closed and replaced when rotation changes

	restartMu sync.Mutex // one replacement at a time
	watch     *watcher   // nil without Config.Watch

	stopRecycler context.CancelFunc // nil without Config.Recycle
	recyclerDone chan struct{}

	disc *discovery // nil when the pool spawns its workers
}

// member is the pool's view of one running process.
type member struct {
	inst     *worker.Instance
	ep       *balancer.Endpoint
	checker  *health.Checker
	startup  *time.Timer
	hung     *time.Timer // runs while a ready worker is unhealthy
	plan     recyclePlan
	healthy  bool
	draining bool // leaving for good: never back in rotation
	ready    bool // has passed a health check at least once
}

// New checks cfg and prepares a pool; nothing runs before Start.
func New(cfg Config, log *zap.Logger) (*Pool, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Health.Validate(); err != nil {
		return nil, err
	}
	cfg.Health = cfg.Health.WithDefaults()
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.UnhealthyKillAfter <= 0 {
		cfg.UnhealthyKillAfter = DefaultUnhealthyKillAfter
	}
	p := &Pool{
		cfg:     cfg,
		log:     log,
		members: map[*worker.Instance]*member{},
		changed: make(chan struct{}),
	}
	bcfg := cfg.Balancer
	bcfg.OnPassiveDown = p.passiveDown
	// A worker that did not answer within request_timeout is treated as
	// hung: out of rotation, killed unless its health check passes.
	bcfg.OnHung = p.passiveDown
	bcfg.OnBreakerChange = func(e *balancer.Endpoint, from, to string) {
		log.Warn("worker breaker "+to, zap.Int("worker", e.Worker), zap.Int("pid", e.PID), zap.String("from", from))
	}
	var err error
	if p.bal, err = balancer.New(bcfg); err != nil {
		return nil, err
	}
	if cfg.Source != nil {
		if cfg.Recycle.enabled() || len(cfg.Watch) > 0 {
			return nil, errors.New("recycling and watch restart processes; a pool with a Source spawns none")
		}
		p.disc = &discovery{src: cfg.Source, found: map[health.Target]*found{}}
		return p, nil
	}
	p.sup, err = worker.New(cfg.Workers, worker.Hooks{Started: p.started, Exited: p.exited}, log)
	if err != nil {
		return nil, err
	}
	if len(cfg.Watch) > 0 {
		if p.watch, err = newWatcher(cfg.Watch, cfg.Workers.Dir, cfg.WatchDebounce); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// Start starts the workers (and the file watch). Requests get 503 until
// one is healthy.
func (p *Pool) Start() {
	if p.disc != nil {
		p.startDiscovery()
		return
	}
	p.sup.Start()
	if p.watch != nil {
		p.watch.start(p)
	}
	if p.cfg.Recycle.enabled() {
		ctx, cancel := context.WithCancel(context.Background())
		p.stopRecycler, p.recyclerDone = cancel, make(chan struct{})
		go p.recycler(ctx, p.recyclerDone)
	}
}

// Stop lets the requests in flight and in the queue finish (bounded by
// the stop timeout), then stops every worker (gracefully, bounded by the
// stop timeout again), every health checker and the file watch, and
// returns when all are gone. Caddy cleans up an old config while its
// server still finishes requests, so the workers must outlive those.
func (p *Pool) Stop() {
	p.settle(p.stopTimeout())
	if p.disc != nil {
		p.stopDiscovery()
		return
	}
	if p.watch != nil {
		p.watch.stop()
	}
	if p.stopRecycler != nil {
		p.stopRecycler()
		<-p.recyclerDone
	}
	p.sup.Stop()
}

// ServeHTTP proxies r to a healthy worker.
func (p *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.bal.ServeHTTP(w, r) }

// Count is the number of worker slots; for a pool with a Source, the
// number of candidates it lists now.
func (p *Pool) Count() int {
	if p.disc != nil {
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.disc.found)
	}
	return p.sup.Count()
}

// Discovered reports whether the pool's endpoints come from a Source.
func (p *Pool) Discovered() bool { return p.disc != nil }

// WaitReady returns once the pool is ready to take over traffic, or with
// the context's error: every spawned worker healthy; for a pool with a
// Source, each candidate it lists probed once (or healthy).
func (p *Pool) WaitReady(ctx context.Context) error {
	if p.disc != nil {
		return p.waitSettled(ctx)
	}
	return p.WaitHealthy(ctx, p.Count())
}

// Healthy is the number of workers in rotation.
func (p *Pool) Healthy() int { return len(p.bal.Endpoints()) }

// Endpoints returns the endpoints in rotation now; the slice must not be
// modified.
func (p *Pool) Endpoints() []*balancer.Endpoint { return p.bal.Endpoints() }

// WaitHealthy returns once at least n workers are in rotation, or with
// the context's error.
func (p *Pool) WaitHealthy(ctx context.Context, n int) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if p.Healthy() >= n {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%d of %d workers healthy: %w", p.Healthy(), n, ctx.Err())
		}
	}
}

// started is the supervisor's hook for a new process: it gets an
// endpoint and a health checker, and a deadline to become healthy.
func (p *Pool) started(inst *worker.Instance) {
	m := &member{
		inst: inst,
		ep:   p.bal.NewEndpoint(inst.Worker, inst.PID, inst.Network, inst.Address),
	}
	m.checker = health.NewChecker(p.cfg.Health, health.Target{Network: inst.Network, Address: inst.Address},
		func(ok bool, err error) { p.healthChanged(m, ok, err) })
	m.startup = time.AfterFunc(p.cfg.StartupTimeout, func() { p.startupExpired(m) })
	m.plan = p.planRecycle(inst.Started)
	p.mu.Lock()
	p.members[inst] = m
	p.mu.Unlock()
	m.checker.Start()
}

// exited is the supervisor's hook for a process that is gone: it leaves
// rotation; requests it held have failed with it.
func (p *Pool) exited(inst *worker.Instance, _ error) {
	p.mu.Lock()
	m := p.members[inst]
	delete(p.members, inst)
	p.mu.Unlock()
	if m == nil {
		return
	}
	// Stop the checker first: after it returns, nothing puts the
	// endpoint back in rotation.
	m.checker.Stop()
	m.startup.Stop()
	p.mu.Lock()
	if m.hung != nil {
		m.hung.Stop()
	}
	if p.bal.Remove(m.ep) {
		p.notifyLocked()
	}
	p.mu.Unlock()
	m.ep.Close()
}

func (p *Pool) healthChanged(m *member, ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m.healthy = ok
	log := p.log.With(zap.Int("worker", m.inst.Worker), zap.Int("pid", m.inst.PID))
	if ok {
		if !m.ready {
			m.ready = true
			m.startup.Stop()
			log.Info("worker healthy", zap.Duration("startup", time.Since(m.inst.Started)))
		} else {
			log.Info("worker healthy again")
		}
		if m.hung != nil {
			m.hung.Stop()
			m.hung = nil
		}
		if !m.draining {
			p.bal.Add(m.ep)
		}
	} else {
		log.Warn("worker unhealthy; out of rotation", zap.Error(err),
			zap.Duration("killed_after", p.cfg.UnhealthyKillAfter))
		p.bal.Remove(m.ep)
		p.watchHung(m, err)
	}
	p.notifyLocked()
}

// watchHung kills a worker that stays unhealthy for UnhealthyKillAfter
// while its process lives: a hung event loop does not heal. p.mu is held.
func (p *Pool) watchHung(m *member, err error) {
	if m.hung != nil || !m.ready {
		return
	}
	m.hung = time.AfterFunc(p.cfg.UnhealthyKillAfter, func() {
		p.mu.Lock()
		still := !m.healthy
		p.mu.Unlock()
		if still {
			p.sup.Restart(m.inst, fmt.Sprintf("unhealthy for %v: %v", p.cfg.UnhealthyKillAfter, err))
		}
	})
}

// passiveDown takes a worker whose requests keep failing out of rotation
// until its health check passes again.
func (p *Pool) passiveDown(e *balancer.Endpoint) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.disc != nil {
		p.passiveDownFound(e)
		return
	}
	for _, m := range p.members {
		if m.ep == e {
			p.log.Warn("worker failing requests; out of rotation until its health check passes",
				zap.Int("worker", e.Worker), zap.Int("pid", e.PID))
			m.healthy = false
			m.checker.MarkDown(errors.New("requests failed"))
			p.watchHung(m, errors.New("requests to it failed"))
			if p.bal.Remove(e) {
				p.notifyLocked()
			}
			return
		}
	}
}

// RollingRestart replaces every worker, one at a time: a new process
// starts beside the old one, and once it is healthy the old one leaves
// rotation, finishes its requests and stops. Capacity never drops below
// Count() healthy workers. It returns how many workers it replaced.
func (p *Pool) RollingRestart(ctx context.Context) (int, error) {
	if p.disc != nil {
		return 0, ErrNotSpawned
	}
	replaced := 0
	for id := 1; id <= p.Count(); id++ {
		m := p.member(id)
		if m == nil {
			continue
		}
		if err := p.replace(ctx, m, "rolling restart"); err != nil {
			return replaced, fmt.Errorf("worker %d: %w", id, err)
		}
		replaced++
	}
	return replaced, nil
}

// member returns the newest process of worker slot id (a replacement
// runs beside the process it replaces for a moment).
func (p *Pool) member(id int) *member {
	p.mu.Lock()
	defer p.mu.Unlock()
	var newest *member
	for inst, m := range p.members {
		if inst.Worker == id && (newest == nil || inst.Started.After(newest.inst.Started)) {
			newest = m
		}
	}
	return newest
}

// drain takes m out of rotation for good and waits until it holds no
// request, at most the stop timeout.
func (p *Pool) drain(ctx context.Context, m *member) {
	p.mu.Lock()
	m.draining = true
	if p.bal.Remove(m.ep) {
		p.notifyLocked()
	}
	p.mu.Unlock()
	deadline := time.NewTimer(p.stopTimeout())
	defer deadline.Stop()
	// Nothing announces the last response of an endpoint; poll its count.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for m.ep.Inflight() > 0 {
		select {
		case <-tick.C:
		case <-deadline.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

func (p *Pool) stopTimeout() time.Duration {
	if p.cfg.Workers.StopTimeout > 0 {
		return p.cfg.Workers.StopTimeout
	}
	return worker.DefaultStopTimeout
}

// settle waits until no request is in flight or queued, at most d.
func (p *Pool) settle(d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		busy := p.bal.QueueLen() > 0
		for _, e := range p.bal.Endpoints() {
			busy = busy || e.Inflight() > 0
		}
		if !busy {
			return
		}
		// Nothing announces the last response; poll.
		time.Sleep(10 * time.Millisecond)
	}
	p.log.Warn("stopping workers with requests still in flight", zap.Duration("waited", d))
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.cfg.Name }

// QueueLen is the number of requests waiting for a free worker.
func (p *Pool) QueueLen() int { return p.bal.QueueLen() }

func (p *Pool) startupExpired(m *member) {
	p.mu.Lock()
	ready := m.ready
	p.mu.Unlock()
	if !ready {
		_, err := m.checker.Healthy()
		if err == nil {
			err = errors.New("no probe passed")
		}
		p.sup.Restart(m.inst, fmt.Sprintf("not healthy within startup_timeout %v: %v", p.cfg.StartupTimeout, err))
	}
}

func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// WorkerStatus is one worker slot as the pool sees it.
type WorkerStatus struct {
	worker.Status
	Healthy  bool   `json:"healthy"`
	Inflight int64  `json:"inflight"`
	Limit    int64  `json:"max_inflight"`
	Served   uint64 `json:"served"`
	Breaker  string `json:"breaker,omitempty"`
	// LatencyMS is the peak-EWMA latency in milliseconds.
	LatencyMS float64 `json:"latency_ms"`
	// UptimeSeconds is how long the process has run.
	UptimeSeconds float64 `json:"uptime_seconds"`
	// RSSBytes is the resident memory of the worker's process group
	// (the worker and its children), where /proc can tell.
	RSSBytes int64 `json:"rss_bytes,omitempty"`
}

// Status is a snapshot of the pool.
type Status struct {
	Name    string         `json:"name"`
	Healthy int            `json:"healthy"`
	Total   int            `json:"total"`
	Queued  int            `json:"queued"`
	Workers []WorkerStatus `json:"workers"`
}

// Status reports every worker slot.
func (p *Pool) Status() Status {
	if p.disc != nil {
		ws := p.discoveredStatus()
		st := Status{Name: p.cfg.Name, Total: len(ws), Queued: p.bal.QueueLen(), Workers: ws}
		for _, w := range ws {
			if w.Healthy {
				st.Healthy++
			}
		}
		return st
	}
	slots := p.sup.Status()
	st := Status{Name: p.cfg.Name, Total: len(slots), Queued: p.bal.QueueLen(), Workers: make([]WorkerStatus, len(slots))}
	// Memory is read from /proc outside the lock.
	p.mu.Lock()
	rss := make(map[int]int64, len(p.members))
	for _, m := range p.members {
		rss[m.inst.PGID] = 0
	}
	p.mu.Unlock()
	groupsRSS(rss)
	now := time.Now()
	p.mu.Lock()
	defer p.mu.Unlock()
	byPID := make(map[int]*member, len(p.members))
	for _, m := range p.members {
		byPID[m.inst.PID] = m
	}
	for i, s := range slots {
		ws := WorkerStatus{Status: s}
		if m := byPID[s.PID]; m != nil && s.PID != 0 {
			ws.Healthy = m.healthy
			ws.Inflight = m.ep.Inflight()
			ws.Served = m.ep.Served()
			ws.Limit = m.ep.Limit()
			ws.Breaker = m.ep.BreakerState()
			ws.LatencyMS = float64(m.ep.Latency().Microseconds()) / 1000
			ws.UptimeSeconds = now.Sub(m.inst.Started).Seconds()
			ws.RSSBytes = rss[m.inst.PGID]
		}
		if ws.Healthy {
			st.Healthy++
		}
		st.Workers[i] = ws
	}
	return st
}
