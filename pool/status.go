package pool

import (
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// WorkerStatus is one worker slot as the pool sees it.
type WorkerStatus struct {
	worker.Status
	// Healthy: in rotation now.
	Healthy bool `json:"healthy"`
	// Lifecycle is the endpoint's state: starting, serving, draining.
	Lifecycle string `json:"lifecycle,omitempty"`
	// OutOfRotation says why a serving endpoint is held out of rotation.
	OutOfRotation string `json:"out_of_rotation,omitempty"`
	// ExposedOn lists the addresses beyond loopback (a wildcard such as
	// 0.0.0.0 or ::, or a network address) that the worker listens on,
	// as the bind check found them when it became ready: it can be
	// reached there past the pool.
	ExposedOn []string `json:"exposed_on,omitempty"`
	Inflight  int64    `json:"inflight"`
	// Streams is the number of open WebSockets, event streams,
	// streaming gRPC calls past their first message, and parked
	// requests (long polls, see park_idle).
	Streams int64 `json:"streams"`
	// Parked is how many requests have been parked so far: held while
	// the worker was idle at its limit, they stopped counting toward it.
	Parked uint64 `json:"parked"`
	// ServerPID is the process that listens, where it is not the worker
	// process itself (a launcher's child): its CPU is what the limit
	// reads.
	ServerPID int    `json:"server_pid,omitempty"`
	Limit     int64  `json:"max_inflight"`
	Served    uint64 `json:"served"`
	Breaker   string `json:"breaker,omitempty"`
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
	// Costs are the routes' learned costs.
	Costs []balancer.RouteCost `json:"costs,omitempty"`
	// Scaling shows the floor, the ceiling and the decisions of a pool
	// that scales; absent otherwise.
	Scaling *ScaleStatus `json:"scaling,omitempty"`
	// GRPC counts the gRPC calls by method and status (at most
	// MaxGRPCMethods methods by name); absent before the first.
	GRPC []GRPCCalls `json:"grpc,omitempty"`
}

// Status reports every worker slot, or every endpoint found.
func (p *Pool) Status() Status {
	slots := p.src.slotStatus()
	st := Status{Name: p.cfg.Name, Total: len(slots), Queued: p.bal.QueueLen(), Workers: make([]WorkerStatus, len(slots)), Costs: p.bal.Costs(), GRPC: p.grpc.snapshot()}
	// Copy what the lock guards; the breaker and /proc are read after,
	// outside it (a breaker tells the pool of its changes under its own
	// lock).
	type seen struct {
		m       *member
		life    lifecycle
		exposed []string
	}
	p.mu.Lock()
	byAddr := make(map[string]seen, len(p.members))
	rss := make(map[int]int64, len(p.members))
	for _, m := range p.members {
		byAddr[m.target.Address] = seen{m, m.life, m.exposed}
		if m.proc != nil {
			rss[m.proc.PGID] = 0
		}
	}
	p.mu.Unlock()
	groupsRSS(rss)
	now := time.Now()
	for i, s := range slots {
		ws := WorkerStatus{Status: s}
		if x, ok := byAddr[s.Address]; ok && s.Address != "" {
			m := x.m
			ws.Healthy = x.life.inRotation()
			ws.Lifecycle = x.life.state.String()
			ws.OutOfRotation = x.life.held.String()
			ws.ExposedOn = x.exposed
			ws.Inflight = m.ep.Inflight()
			ws.Streams = m.ep.Streams()
			ws.Parked = m.ep.Parked()
			if sp := m.ep.ServerPID(); sp != m.pid() {
				ws.ServerPID = sp
			}
			ws.Served = m.ep.Served()
			ws.Limit = m.ep.Limit()
			ws.Breaker = m.ep.BreakerState()
			ws.LatencyMS = float64(m.ep.Latency().Microseconds()) / 1000
			if m.proc != nil {
				ws.UptimeSeconds = now.Sub(m.proc.Started).Seconds()
				ws.RSSBytes = rss[m.proc.PGID]
			}
		}
		if ws.Healthy {
			st.Healthy++
		}
		st.Workers[i] = ws
	}
	if s, ok := p.src.(*spawner); ok && s.scale != nil {
		st.Scaling = s.scale.status()
	}
	return st
}
