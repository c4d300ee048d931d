// Package pool composes the parts of a worker pool: a source of
// endpoints (worker processes it spawns and supervises, or endpoints
// that something else started and a Source lists), a health.Checker per
// endpoint, one lifecycle per endpoint that decides whether it serves,
// and a balancer.Balancer that spreads requests over those that do. It
// is what the Caddy module, the CLI and tests use; it never imports
// Caddy.
package pool

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
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
	// Scale lets a pool that spawns its workers run more than
	// Workers.Count of them while requests queue (see scale.go).
	Scale Scale
	// BindCheck says what to do with a spawned worker that listens
	// beyond loopback (see bindcheck.go). Default: BindWarn.
	BindCheck BindCheck
}

// Pool runs and serves from a set of endpoints.
type Pool struct {
	cfg Config
	log *zap.Logger
	bal *balancer.Balancer
	src source
	// grpc counts the gRPC calls by method and status, for Status.
	grpc grpcCalls

	mu      sync.Mutex
	members []*member
	changed chan struct{} // closed and replaced when rotation changes
	// While the pool boots — from Start until an endpoint first serves,
	// or startup_timeout passes — requests that find no endpoint wait
	// for one, rather than get 503 at once: booting counts endpoints the
	// source is about to report (workers being spawned, a first
	// discovery), and members that are starting count too. After boot a
	// pool with no endpoint answers 503 at once: a worker that crashes
	// or never gets healthy must not hold requests.
	warming  bool
	booting  int
	bootOver *time.Timer

	stopOnce sync.Once
}

// source is where a pool's endpoints come from: worker processes it
// spawns (spawner), or endpoints that something else started (finder).
// A source calls Pool.join for each endpoint that appears and Pool.leave
// once it is gone. The lifecycle is the same for both; what differs is
// here.
type source interface {
	start()
	// stop ends the source; every endpoint has left when it returns.
	stop()
	// arriving is how many endpoints the source will report soon after
	// start, which requests may wait for.
	arriving() int
	// slots is how many endpoints the pool should have: the worker
	// count, or the candidates the source lists now.
	slots() int
	// settled reports whether the pool may take over traffic: every
	// worker serves; or, for found endpoints, the source has reported
	// and each has had a first health check.
	settled() bool
	// kill ends an endpoint that will not heal. A spawned worker is
	// killed, and restarted; a found endpoint stays out of rotation
	// until its health check passes, since nobody here can restart it.
	kill(m *member, reason string)
	// slotStatus lists the endpoints the source knows of, in id order,
	// including worker slots that have no process now.
	slotStatus() []worker.Status
}

// member is one endpoint the pool serves from, spawned or found.
type member struct {
	id      int
	ep      *balancer.Endpoint
	target  health.Target
	proc    *worker.Instance // nil for an endpoint something else started
	checker *health.Checker
	since   time.Time
	plan    recyclePlan
	// bindChecked: the bind check has run (or is running).
	bindChecked atomic.Bool
	// serverFound: findServer has looked for the serving process.
	serverFound atomic.Bool

	// Guarded by Pool.mu.
	life    lifecycle
	probed  bool  // a first health check result is in
	lastErr error // of the last failed health check
	startup *time.Timer
	kill    *time.Timer
	reprobe *time.Timer // the breaker's open_for
	exposed []string    // what the bind check found beyond loopback
}

// errProbe stands for a failed health check in a lifecycle's streak.
var errProbe = errors.New("health check failed")

// New checks cfg and prepares a pool; nothing runs before Start.
func New(cfg Config, log *zap.Logger) (*Pool, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if err := cfg.Health.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.checkScale(); err != nil {
		return nil, err
	}
	if err := cfg.BindCheck.Validate(); err != nil {
		return nil, err
	}
	cfg.Health = cfg.Health.WithDefaults()
	if cfg.StartupTimeout <= 0 {
		cfg.StartupTimeout = DefaultStartupTimeout
	}
	if cfg.UnhealthyKillAfter <= 0 {
		cfg.UnhealthyKillAfter = DefaultUnhealthyKillAfter
	}
	p := &Pool{cfg: cfg, log: log, changed: make(chan struct{})}
	bcfg := cfg.Balancer
	bcfg.OnPassiveDown = func(e *balancer.Endpoint) { p.event(e, event{kind: evPassive, at: time.Now()}) }
	// A worker that did not answer within request_timeout is treated as
	// hung: out of rotation, killed unless its health check passes.
	bcfg.OnHung = func(e *balancer.Endpoint) { p.event(e, event{kind: evHung, at: time.Now()}) }
	bcfg.OnBreakerChange = func(e *balancer.Endpoint, from, to string) {
		log.Warn("worker breaker "+to, zap.Int("worker", e.Worker), zap.Int("pid", e.PID), zap.String("from", from))
		switch to {
		case "open":
			p.event(e, event{kind: evBreakerOpen})
		case "closed":
			p.event(e, event{kind: evBreakerClosed})
		}
	}
	onResult := bcfg.OnResult
	bcfg.OnResult = func(r *http.Request, res *balancer.Result) {
		p.grpc.observe(r, res)
		if onResult != nil {
			onResult(r, res)
		}
	}
	var err error
	if p.bal, err = balancer.New(bcfg); err != nil {
		return nil, err
	}
	if cfg.Source != nil {
		if cfg.Recycle.enabled() || len(cfg.Watch) > 0 {
			return nil, errors.New("recycling and watch restart processes; a pool with a Source spawns none")
		}
		p.src = newFinder(p, cfg.Source)
		return p, nil
	}
	if p.src, err = newSpawner(p); err != nil {
		return nil, err
	}
	return p, nil
}

// Start starts the source: the workers (with the file watch and the
// recycler), or the discovery. Requests wait in the queue for the first
// endpoint that serves, up to the queue timeout.
func (p *Pool) Start() {
	p.mu.Lock()
	p.warming, p.booting = true, p.src.arriving()
	p.bootOver = time.AfterFunc(p.cfg.StartupTimeout, p.booted)
	p.expectLocked()
	p.mu.Unlock()
	p.src.start()
}

// booted ends the pool's boot.
func (p *Pool) booted() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.warming = false
	p.expectLocked()
}

// arrived is a source's report that n endpoints it announced have
// joined, or will not.
func (p *Pool) arrived(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.booting = max(p.booting-n, 0)
	p.expectLocked()
}

// expectLocked tells the balancer how many endpoints may join soon
// while the pool boots: those starting and those about to be reported.
// p.mu is held.
func (p *Pool) expectLocked() {
	n := 0
	if p.warming {
		n = p.booting
		for _, m := range p.members {
			if m.life.state == starting {
				n++
			}
		}
	}
	p.bal.Expect(n)
}

// Stop lets the requests in flight and in the queue finish, and open
// streams end (bounded by the stop timeout), then stops the source —
// every worker gracefully, bounded by the stop timeout again — and
// every health checker, and returns when all are gone. Caddy cleans up
// an old config while its server still finishes requests, so the
// workers must outlive those.
func (p *Pool) Stop() {
	p.settle(p.stopTimeout(), true)
	p.close()
}

// Close stops the pool without waiting for open streams: requests that
// wait for a worker to start get 503 at once, requests in flight finish
// (bounded by the stop timeout), and the workers are stopped — SIGTERM,
// so that they can end their streams themselves, then SIGKILL after the
// stop timeout. It is how the pool stops when the process exits. Stop
// or Close again does nothing more.
func (p *Pool) Close() {
	p.mu.Lock()
	p.warming = false
	p.expectLocked()
	p.mu.Unlock()
	p.settle(p.stopTimeout(), false)
	p.close()
}

func (p *Pool) close() {
	p.stopOnce.Do(func() {
		p.mu.Lock()
		if p.bootOver != nil {
			p.bootOver.Stop()
		}
		p.mu.Unlock()
		p.src.stop()
	})
}

// ServeHTTP proxies r to a healthy worker, answering problem+json when
// none can serve it.
func (p *Pool) ServeHTTP(w http.ResponseWriter, r *http.Request) { p.bal.ServeHTTP(w, r) }

// Serve proxies r to a healthy worker; see balancer.Balancer.Serve.
func (p *Pool) Serve(w http.ResponseWriter, r *http.Request) *balancer.Error {
	return p.bal.Serve(w, r)
}

// Count is the number of worker slots; for a pool with a Source, the
// number of candidates it lists now.
func (p *Pool) Count() int { return p.src.slots() }

// Discovered reports whether the pool's endpoints come from a Source.
func (p *Pool) Discovered() bool {
	_, ok := p.src.(*finder)
	return ok
}

// WaitReady returns once the pool is ready to take over traffic, or with
// the context's error: every spawned worker healthy; for a pool with a
// Source, each candidate it lists probed once.
func (p *Pool) WaitReady(ctx context.Context) error {
	return p.waitFor(ctx, p.src.settled, func() error {
		return fmt.Errorf("%d of %d workers healthy", p.Healthy(), p.Count())
	})
}

// Healthy is the number of workers in rotation.
func (p *Pool) Healthy() int { return len(p.bal.Endpoints()) }

// Endpoints returns the endpoints in rotation now; the slice must not be
// modified.
func (p *Pool) Endpoints() []*balancer.Endpoint { return p.bal.Endpoints() }

// WaitHealthy returns once at least n workers are in rotation, or with
// the context's error.
func (p *Pool) WaitHealthy(ctx context.Context, n int) error {
	return p.waitFor(ctx, func() bool { return p.Healthy() >= n }, func() error {
		return fmt.Errorf("%d of %d workers healthy", p.Healthy(), n)
	})
}

// waitFor returns once cond holds, checking it whenever a member's
// state changes, or with ctx's error wrapped in what says why.
func (p *Pool) waitFor(ctx context.Context, cond func() bool, why func() error) error {
	for {
		p.mu.Lock()
		ch := p.changed
		p.mu.Unlock()
		if cond() {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", why(), ctx.Err())
		}
	}
}

// join is a source's report of a new endpoint: it gets a health checker
// and a startup deadline, and serves once its check passes.
func (p *Pool) join(m *member) {
	m.ep = p.bal.NewEndpoint(m.id, m.pid(), m.target.Network, m.target.Address)
	m.checker = health.NewChecker(p.cfg.Health, m.target, func(started time.Time, err error) {
		p.probed(m, started, err)
	})
	p.mu.Lock()
	p.members = append(p.members, m)
	m.startup = time.AfterFunc(p.cfg.StartupTimeout, func() { p.apply(m, event{kind: evStartupExpired}) })
	p.booting = max(p.booting-1, 0)
	p.expectLocked()
	p.notifyLocked()
	p.mu.Unlock()
	m.checker.Start()
}

// leave is a source's report that an endpoint is gone (its process
// exited, or it is no longer listed): it leaves rotation; requests it
// held have failed with it, or finish if it still answers.
func (p *Pool) leave(m *member) {
	// Stop the checker first, outside the lock its reports take: after
	// it returns, nothing reports on m.
	m.checker.Stop()
	p.mu.Lock()
	p.applyLocked(m, event{kind: evGone})
	if i := slices.Index(p.members, m); i >= 0 {
		p.members = slices.Delete(p.members, i, i+1)
	}
	p.expectLocked()
	p.notifyLocked()
	p.mu.Unlock()
	m.ep.Close()
}

// probed is a health checker's report.
func (p *Pool) probed(m *member, started time.Time, err error) {
	kind := evProbePass
	if err != nil {
		kind = evProbeFail
	} else {
		p.checkBind(m)
		p.findServer(m)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	// The last check's error, or none once one passed: a worker that
	// leaves rotation later for another reason is not said to fail a
	// probe it passed since (a refused connection from its start-up).
	m.lastErr = err
	if !m.probed {
		m.probed = true
		p.notifyLocked()
	}
	p.applyLocked(m, event{kind: kind, at: started})
}

// event is the balancer's report about endpoint e.
func (p *Pool) event(e *balancer.Endpoint, ev event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range p.members {
		if m.ep == e {
			p.applyLocked(m, ev)
			return
		}
	}
}

func (p *Pool) apply(m *member, ev event) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.applyLocked(m, ev)
}

// applyLocked moves m's lifecycle by ev and carries out what the change
// calls for. It is the only place a member's state changes. p.mu is
// held; nothing done here calls back into the pool.
func (p *Pool) applyLocked(m *member, ev event) {
	was := m.life
	next, act := m.life.on(ev, p.cfg.Health)
	m.life = next
	if act == 0 && next == was {
		return
	}

	log := p.log.With(zap.Int("worker", m.id), zap.Int("pid", m.pid()), zap.String("address", m.target.Address))
	if act&actReady != 0 {
		m.startup.Stop()
		log.Info("worker healthy", zap.Duration("startup", time.Since(m.since)))
	}
	if act&actAdd != 0 {
		p.bal.Add(m.ep)
		if was.state == serving {
			log.Info("worker back in rotation")
		}
	}
	if act&actRemove != 0 {
		p.bal.Remove(m.ep)
		if next.state == serving {
			fields := []zap.Field{zap.String("why", next.held.String())}
			if next.held&heldProbe != 0 && m.lastErr != nil {
				fields = append(fields, zap.NamedError("last_check", m.lastErr))
			}
			log.Warn("worker out of rotation", fields...)
		}
	}
	if act&actArmKill != 0 {
		m.kill = time.AfterFunc(p.cfg.UnhealthyKillAfter, func() { p.apply(m, event{kind: evKillDue}) })
	}
	if act&(actDisarmKill|actStop) != 0 && m.kill != nil {
		m.kill.Stop()
		m.kill = nil
	}
	if act&actArmBreaker != 0 {
		if m.reprobe != nil {
			m.reprobe.Stop()
		}
		m.reprobe = time.AfterFunc(p.breakerOpenFor(), func() { p.apply(m, event{kind: evBreakerProbe}) })
	}
	if act&actStop != 0 {
		m.startup.Stop()
		if m.reprobe != nil {
			m.reprobe.Stop()
		}
	}
	if act&actKill != 0 {
		var why string
		switch ev.kind {
		case evStartupExpired:
			why = fmt.Sprintf("not healthy within startup_timeout %v", p.cfg.StartupTimeout)
		default:
			why = fmt.Sprintf("out of rotation for %v (%s)", p.cfg.UnhealthyKillAfter, next.held)
		}
		if m.lastErr != nil {
			why += ": " + m.lastErr.Error()
		}
		p.src.kill(m, why)
	}
	if was.state == starting && next.state != starting {
		// After the endpoint joined rotation, if it did: waiters must
		// not be failed for want of it.
		p.warming = p.warming && next.state != serving
		p.expectLocked()
	}
	p.notifyLocked()
}

func (p *Pool) breakerOpenFor() time.Duration {
	if d := p.cfg.Balancer.Breaker.OpenFor; d > 0 {
		return d
	}
	return balancer.DefaultBreakerOpenFor
}

// drain takes m out of rotation for good and waits until it holds no
// request and no stream, at most the stop timeout.
func (p *Pool) drain(ctx context.Context, m *member) {
	p.apply(m, event{kind: evDrain})
	deadline := time.NewTimer(p.stopTimeout())
	defer deadline.Stop()
	// Nothing announces an endpoint's last response; poll.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for m.ep.Busy() {
		select {
		case <-tick.C:
		case <-deadline.C:
			p.log.Warn("drain timed out", zap.Int("worker", m.id), zap.Int("pid", m.pid()),
				zap.Int64("inflight", m.ep.Inflight()), zap.Int64("streams", m.ep.Streams()),
				// Its clients get a close frame (1001, going away), not a drop.
				zap.Int("websockets_closed", m.ep.CloseSockets()))
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

// settle waits until no request is in flight or queued, and, with
// streams, no stream is open; at most d.
func (p *Pool) settle(d time.Duration, streams bool) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		busy := p.bal.QueueLen() > 0
		p.mu.Lock()
		for _, m := range p.members {
			// A parked request is one in flight that stopped counting
			// toward its worker's limit: waited for like one.
			busy = busy || m.ep.Inflight() > 0 || m.ep.ParkedNow() > 0 || (streams && m.ep.Streams() > 0)
		}
		p.mu.Unlock()
		if !busy {
			return
		}
		// Nothing announces the last response; poll.
		time.Sleep(10 * time.Millisecond)
	}
	closed := 0
	if streams {
		// Their clients get a close frame (1001, going away), not a drop.
		p.mu.Lock()
		for _, m := range p.members {
			closed += m.ep.CloseSockets()
		}
		p.mu.Unlock()
	}
	p.log.Warn("stopping workers with requests or streams still open", zap.Duration("waited", d), zap.Int("websockets_closed", closed))
}

// Name is the pool's name.
func (p *Pool) Name() string { return p.cfg.Name }

// QueueLen is the number of requests waiting for a free worker.
func (p *Pool) QueueLen() int { return p.bal.QueueLen() }

func (p *Pool) notifyLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

func (m *member) pid() int {
	if m.proc != nil {
		return m.proc.PID
	}
	return 0
}
