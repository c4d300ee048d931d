package pool

import (
	"context"
	"errors"
	"slices"
	"time"

	"go.uber.org/zap"

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

// finder is the source of a pool whose endpoints something else
// started: each candidate the Source lists joins the pool, is probed
// all the time, and serves while its probe passes; it keeps its
// endpoint (load, breaker, connections) for as long as it is listed.
type finder struct {
	p      *Pool
	src    Source
	cancel context.CancelFunc
	done   chan struct{}

	// Guarded by Pool.mu.
	found   map[health.Target]*member
	updated bool // the source has reported at least once
}

func newFinder(p *Pool, src Source) *finder {
	return &finder{p: p, src: src, found: map[health.Target]*member{}}
}

func (f *finder) start() {
	ctx, cancel := context.WithCancel(context.Background())
	f.cancel, f.done = cancel, make(chan struct{})
	go func() {
		defer close(f.done)
		f.src.Run(ctx, f.update)
	}()
}

// stop ends the source, then takes every endpoint out.
func (f *finder) stop() {
	if f.cancel == nil {
		return
	}
	f.cancel()
	<-f.done
	f.update(nil)
}

// update makes the probed set equal to targets: new candidates join;
// those no longer listed leave (their requests in flight finish).
// Endpoints that stay keep their state.
func (f *finder) update(targets []health.Target) {
	p := f.p
	want := make(map[health.Target]bool, len(targets))
	for _, t := range targets {
		want[t] = true
	}
	var added, gone []*member
	p.mu.Lock()
	for t, m := range f.found {
		if !want[t] {
			gone = append(gone, m)
			delete(f.found, t)
		}
	}
	for _, t := range targets {
		if f.found[t] != nil {
			continue
		}
		m := &member{id: f.freeIDLocked(), target: t, since: time.Now()}
		f.found[t] = m
		added = append(added, m)
	}
	first := !f.updated
	f.updated = true
	p.notifyLocked()
	p.mu.Unlock()
	if first {
		defer p.arrived(1)
	}

	for _, m := range gone {
		p.leave(m)
		if m.probed {
			p.log.Info("endpoint no longer listed; out of rotation", zap.String("address", m.target.Address))
		}
	}
	for _, m := range added {
		p.join(m)
	}
}

// freeIDLocked returns the lowest id no candidate has: ids label metrics
// and logs, so they are reused rather than grown without bound.
func (f *finder) freeIDLocked() int {
	used := make([]bool, len(f.found)+2)
	for _, m := range f.found {
		if m.id < len(used) {
			used[m.id] = true
		}
	}
	for id := 1; ; id++ {
		if !used[id] {
			return id
		}
	}
}

// arriving: the source's first report, which may list none.
func (f *finder) arriving() int { return 1 }

func (f *finder) slots() int {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	return len(f.found)
}

// settled: the source has reported, and each candidate it listed has
// had a first health check (or serves).
func (f *finder) settled() bool {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	if !f.updated {
		return false
	}
	for _, m := range f.found {
		if !m.probed {
			return false
		}
	}
	return true
}

// kill cannot restart what something else started: the endpoint stays
// out of rotation until its health check passes.
func (f *finder) kill(*member, string) {}

func (f *finder) slotStatus() []worker.Status {
	f.p.mu.Lock()
	defer f.p.mu.Unlock()
	out := make([]worker.Status, 0, len(f.found))
	for _, m := range f.found {
		state := "starting" // not passed a probe yet: nothing may listen there
		if m.life.state != starting {
			state = "running"
		}
		out = append(out, worker.Status{ID: m.id, Address: m.target.Address, State: state, Since: m.since})
	}
	slices.SortFunc(out, func(a, b worker.Status) int { return a.ID - b.ID })
	return out
}
