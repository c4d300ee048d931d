package pool

import (
	"context"
	"fmt"
	"math/rand/v2"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/internal/procfs"
)

// Recycle says when a worker is replaced though nothing is wrong with it:
// a leak it has (memory, handles) cannot grow without bound. Zero fields
// are off.
type Recycle struct {
	// MaxRequests: after this many requests, plus a random share of
	// Jitter so that workers started together do not recycle together.
	MaxRequests uint64
	Jitter      uint64
	// MaxMemory in bytes: the resident memory of the worker's process
	// group (it and its children), read from /proc.
	MaxMemory int64
	// MaxLifetime, plus up to a tenth of it at random.
	MaxLifetime time.Duration
}

func (r Recycle) enabled() bool { return r.MaxRequests > 0 || r.MaxMemory > 0 || r.MaxLifetime > 0 }

// recyclePlan is one process's own thresholds, jittered once at start.
type recyclePlan struct {
	requests uint64
	deadline time.Time
}

func (p *Pool) planRecycle(started time.Time) recyclePlan {
	r := p.cfg.Recycle
	var plan recyclePlan
	if r.MaxRequests > 0 {
		plan.requests = r.MaxRequests
		if r.Jitter > 0 {
			plan.requests += rand.Uint64N(r.Jitter + 1)
		}
	}
	if r.MaxLifetime > 0 {
		plan.deadline = started.Add(r.MaxLifetime + rand.N(r.MaxLifetime/10+1))
	}
	return plan
}

// reason says why m is due for recycling, or "" if it is not.
func (p *Pool) reason(m *member, now time.Time) string {
	r := p.cfg.Recycle
	switch {
	case m.plan.requests > 0 && m.ep.Served() >= m.plan.requests:
		return fmt.Sprintf("served %d requests (max_requests)", m.ep.Served())
	case !m.plan.deadline.IsZero() && now.After(m.plan.deadline):
		return fmt.Sprintf("ran %v (max_lifetime)", now.Sub(m.since).Round(time.Second))
	case r.MaxMemory > 0:
		if rss := groupRSS(m.proc.PGID); rss > r.MaxMemory {
			return fmt.Sprintf("resident memory %d MiB (max_memory %d MiB)", rss>>20, r.MaxMemory>>20)
		}
	}
	return ""
}

// recycler replaces workers that are due, one at a time, each only once
// the others are healthy. Started by spawner.start when Recycle is
// enabled, ended by spawner.stop.
func (s *spawner) recycler(ctx context.Context, done chan<- struct{}) {
	defer close(done)
	tick := time.NewTicker(recycleEvery)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		now := time.Now()
		for id := 1; id <= s.slots(); id++ {
			m := s.member(id)
			if m == nil {
				continue
			}
			s.p.mu.Lock()
			due := m.life.inRotation()
			s.p.mu.Unlock()
			if !due {
				continue
			}
			if why := s.p.reason(m, now); why != "" {
				if err := s.replace(ctx, m, why); err != nil && ctx.Err() == nil {
					s.p.log.Warn("recycling postponed", zap.Int("worker", id), zap.Error(err))
				}
			}
		}
	}
}

// groupRSS is the resident memory in bytes of the processes in group
// pgid, from /proc; 0 if it cannot be read.
func groupRSS(pgid int) int64 {
	return groupsRSS(map[int]int64{pgid: 0})[pgid]
}

// groupsRSS fills in the resident memory in bytes of each process group
// that groups holds, in one pass over /proc.
func groupsRSS(groups map[int]int64) map[int]int64 {
	for _, p := range procfs.All() {
		if _, ok := groups[p.PGID]; ok {
			groups[p.PGID] += p.RSS
		}
	}
	return groups
}
