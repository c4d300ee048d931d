package pool

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Source finds endpoints that something else started: a sidecar's
// address list (health.Candidates) or a service catalogue
// (health/consul). Run reports the whole set of candidates at once and
// on every change, from one goroutine, until ctx ends; it may return
// earlier when the set can no longer change.
type Source interface {
	Run(ctx context.Context, update func([]health.Target))
}

// ErrNotSpawned is returned by operations on processes (a rolling
// restart) when the pool serves endpoints that it found, not spawned.
var ErrNotSpawned = errors.New("the pool's workers are discovered, not spawned by it: restart them where they are started")

// discovery is the state of a pool whose endpoints come from a Source.
// Its fields are guarded by Pool.mu.
type discovery struct {
	src    Source
	cancel context.CancelFunc
	done   chan struct{}

	found   map[health.Target]*found
	updated bool // the source has reported at least once
}

// found is one candidate endpoint: probed all the time, in rotation while
// its probe passes. It keeps its Endpoint (load, breaker, connections)
// for as long as the source lists it.
type found struct {
	target  health.Target
	ep      *balancer.Endpoint
	checker *health.Checker
	since   time.Time
	healthy bool
	ready   bool // has passed a probe at least once
}

func (p *Pool) startDiscovery() {
	ctx, cancel := context.WithCancel(context.Background())
	d := p.disc
	d.cancel, d.done = cancel, make(chan struct{})
	go func() {
		defer close(d.done)
		d.src.Run(ctx, p.updateCandidates)
	}()
}

// stopDiscovery ends the source, then every checker, and takes every
// endpoint out of rotation.
func (p *Pool) stopDiscovery() {
	d := p.disc
	if d.cancel == nil {
		return
	}
	d.cancel()
	<-d.done
	p.updateCandidates(nil)
}

// updateCandidates makes the probed set equal to targets: new candidates
// get an endpoint and a checker; those no longer listed leave rotation
// (their requests in flight finish) and are no longer probed. Endpoints
// that stay keep their load and breaker.
func (p *Pool) updateCandidates(targets []health.Target) {
	d := p.disc
	want := make(map[health.Target]bool, len(targets))
	for _, t := range targets {
		want[t] = true
	}
	var added, gone []*found
	p.mu.Lock()
	for t, f := range d.found {
		if !want[t] {
			gone = append(gone, f)
			delete(d.found, t)
		}
	}
	for _, t := range targets {
		if d.found[t] != nil {
			continue
		}
		f := &found{target: t, since: time.Now()}
		f.ep = p.bal.NewEndpoint(p.freeIDLocked(), 0, t.Network, t.Address)
		f.checker = health.NewChecker(p.cfg.Health, t, func(ok bool, err error) { p.foundHealthChanged(f, ok, err) })
		d.found[t] = f
		added = append(added, f)
	}
	d.updated = true
	p.notifyLocked()
	p.mu.Unlock()

	for _, f := range gone {
		// After Stop returns the checker puts nothing back in rotation.
		f.checker.Stop()
		p.mu.Lock()
		if p.bal.Remove(f.ep) {
			p.notifyLocked()
		}
		p.mu.Unlock()
		f.ep.Close()
		if f.ready {
			p.log.Info("endpoint no longer listed; out of rotation", zap.String("address", f.target.Address))
		}
	}
	for _, f := range added {
		f.checker.Start()
	}
}

// freeIDLocked returns the lowest id no candidate has: ids label metrics
// and logs, so they are reused rather than grown without bound.
func (p *Pool) freeIDLocked() int {
	used := make([]bool, len(p.disc.found)+2)
	for _, f := range p.disc.found {
		if f.ep.Worker < len(used) {
			used[f.ep.Worker] = true
		}
	}
	for id := 1; ; id++ {
		if !used[id] {
			return id
		}
	}
}

func (p *Pool) foundHealthChanged(f *found, ok bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	f.healthy = ok
	log := p.log.With(zap.Int("worker", f.ep.Worker), zap.String("address", f.target.Address))
	if ok {
		f.ready = true
		log.Info("endpoint healthy; in rotation")
		p.bal.Add(f.ep)
	} else {
		log.Warn("endpoint unhealthy; out of rotation", zap.Error(err))
		p.bal.Remove(f.ep)
	}
	p.notifyLocked()
}

// passiveDownFound is passiveDown for a discovered endpoint: out of
// rotation until its probe passes again. p.mu is held.
func (p *Pool) passiveDownFound(e *balancer.Endpoint) bool {
	for _, f := range p.disc.found {
		if f.ep == e {
			p.log.Warn("endpoint failing requests; out of rotation until its health check passes",
				zap.Int("worker", e.Worker), zap.String("address", e.Address))
			f.healthy = false
			f.checker.MarkDown(errors.New("requests failed"))
			if p.bal.Remove(e) {
				p.notifyLocked()
			}
			return true
		}
	}
	return false
}

// waitSettled returns once the source has reported and each candidate it
// listed has a first verdict, or with the context's error.
func (p *Pool) waitSettled(ctx context.Context) error {
	for {
		p.mu.Lock()
		ch, updated := p.changed, p.disc.updated
		var pending []<-chan struct{}
		for _, f := range p.disc.found {
			pending = append(pending, f.checker.Settled())
		}
		p.mu.Unlock()
		if !updated {
			select {
			case <-ch:
				continue
			case <-ctx.Done():
				return errors.New("no endpoints reported yet: " + ctx.Err().Error())
			}
		}
		for _, s := range pending {
			select {
			case <-s:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}
}

// discoveredStatus lists the candidates, by id.
func (p *Pool) discoveredStatus() []WorkerStatus {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]WorkerStatus, 0, len(p.disc.found))
	for _, f := range p.disc.found {
		state := "starting" // not passed a probe yet: nothing may listen there
		if f.ready {
			state = "running"
		}
		out = append(out, WorkerStatus{
			Status:    worker.Status{ID: f.ep.Worker, Address: f.target.Address, State: state, Since: f.since},
			Healthy:   f.healthy,
			Inflight:  f.ep.Inflight(),
			Limit:     f.ep.Limit(),
			Served:    f.ep.Served(),
			Breaker:   f.ep.BreakerState(),
			LatencyMS: float64(f.ep.Latency().Microseconds()) / 1000,
		})
	}
	slices.SortFunc(out, func(a, b WorkerStatus) int { return a.ID - b.ID })
	return out
}
