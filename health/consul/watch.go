package consul

import (
	"cmp"
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/health"
)

// Defaults of a Watcher.
const (
	// DefaultWaitTime bounds one blocking query; Consul answers at once
	// when the service changes.
	DefaultWaitTime = 5 * time.Minute
	// DefaultMinInterval is the least time between two queries, so a
	// service that changes all the time costs Consul at most this rate.
	DefaultMinInterval = 250 * time.Millisecond
	// DefaultMaxBackoff caps the wait between queries that fail.
	DefaultMaxBackoff = 30 * time.Second
)

// Service says which instances a Watcher follows.
type Service struct {
	Agent
	// Name of the Consul service.
	Name string
	// Tags an instance must all have; none means any instance.
	Tags []string
	// WaitTime, MinInterval and MaxBackoff: see the defaults.
	WaitTime    time.Duration
	MinInterval time.Duration
	MaxBackoff  time.Duration
}

// Validate reports the first bad field.
func (s Service) Validate() error {
	if s.Name == "" {
		return errors.New("service: give the name of the Consul service whose passing instances serve")
	}
	return s.Agent.Validate()
}

// Watcher follows the passing instances of a Consul service with
// blocking queries. It is a pool's Source: Run reports the set of
// instances whenever it changes. While Consul cannot be reached the last
// set that it reported stays in force.
type Watcher struct {
	svc Service
	c   *client
	log *zap.Logger
}

// NewWatcher prepares a watcher; nothing runs before Run.
func NewWatcher(svc Service, log *zap.Logger) (*Watcher, error) {
	if err := svc.Validate(); err != nil {
		return nil, err
	}
	if svc.WaitTime <= 0 {
		svc.WaitTime = DefaultWaitTime
	}
	if svc.MinInterval <= 0 {
		svc.MinInterval = DefaultMinInterval
	}
	if svc.MaxBackoff <= 0 {
		svc.MaxBackoff = DefaultMaxBackoff
	}
	if log == nil {
		log = zap.NewNop()
	}
	c, err := svc.Agent.client()
	if err != nil {
		return nil, err
	}
	return &Watcher{svc: svc, c: c, log: log.With(zap.String("consul_service", svc.Name))}, nil
}

// Run queries Consul until ctx ends and calls update with the passing
// instances at first and after each change, from this goroutine.
func (w *Watcher) Run(ctx context.Context, update func([]health.Target)) {
	defer w.c.close()
	var (
		index    uint64
		last     []health.Target
		reported bool
		failing  bool
		backoff  time.Duration
	)
	for {
		start := time.Now()
		q := (&api.QueryOptions{WaitIndex: index, WaitTime: w.svc.WaitTime}).WithContext(ctx)
		entries, meta, err := w.c.api.Health().ServiceMultipleTags(w.svc.Name, w.svc.Tags, true, q)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			if !failing {
				failing = true
				w.log.Warn("consul unreachable; keeping the last known endpoints until it answers", zap.Int("endpoints", len(last)), zap.Error(err))
			}
			// The agent that answers next may be a new one whose index is
			// lower: a query with the old index would block until timeout.
			index = 0
			backoff = min(max(2*backoff, time.Second), w.svc.MaxBackoff)
			// Jitter, so that many Caddy instances do not return together.
			if !sleep(ctx, backoff/2+rand.N(backoff/2+1)) {
				return
			}
			continue
		}
		if failing {
			failing = false
			w.log.Info("consul reachable again")
		}
		backoff = 0
		// An index that goes backwards (a restarted or new leader, a
		// snapshot restore) is no basis for the next wait: start over.
		if meta.LastIndex < index {
			index = 0
		} else {
			index = meta.LastIndex
		}
		targets := targetsOf(entries)
		if !reported || !slices.Equal(targets, last) {
			reported, last = true, targets
			w.log.Info("consul endpoints", zap.Int("passing", len(targets)))
			update(targets)
		}
		if !sleep(ctx, w.svc.MinInterval-time.Since(start)) {
			return
		}
	}
}

// targetsOf returns the instances' addresses, sorted and without
// duplicates: an instance's own address, or its node's.
func targetsOf(entries []*api.ServiceEntry) []health.Target {
	out := make([]health.Target, 0, len(entries))
	for _, e := range entries {
		if e.Service == nil {
			continue
		}
		if e.Service.SocketPath != "" {
			out = append(out, health.Target{Network: "unix", Address: e.Service.SocketPath})
			continue
		}
		host := e.Service.Address
		if host == "" && e.Node != nil {
			host = e.Node.Address
		}
		if host == "" || e.Service.Port <= 0 {
			continue
		}
		out = append(out, health.Target{Network: "tcp", Address: net.JoinHostPort(host, strconv.Itoa(e.Service.Port))})
	}
	slices.SortFunc(out, func(a, b health.Target) int {
		return cmp.Or(strings.Compare(a.Network, b.Network), strings.Compare(a.Address, b.Address))
	})
	return slices.Compact(out)
}

// sleep waits d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
