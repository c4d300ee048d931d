package balancer

import "time"

// Readings of the balancer's load for whoever sizes the pool: how many
// requests wait, how much of the endpoints' capacity is in use, and what
// the adaptive limits have learnt about the workers. They only read.

// Load is one reading of a balancer's load.
type Load struct {
	// Endpoints is the number in rotation; AtLimit of them hold as many
	// requests as their limit lets them (one without a limit never is).
	Endpoints, AtLimit int
	// Busy is the endpoints' worth of capacity in use: each endpoint in
	// rotation counts its requests in flight over its limit, at most 1;
	// one without a limit counts 1 while it holds a request.
	Busy float64
	// Inflight is the number of requests the endpoints in rotation hold.
	Inflight int64
	// Queued is the number of requests waiting for an endpoint.
	Queued int
	// Finished is the number of requests the endpoints in rotation
	// finished since the LoadMeter's previous reading.
	Finished uint64
	// CPUBound and IOBound count the endpoints in rotation whose adaptive
	// limit judged them to compute, or to wait; the others have a fixed
	// limit or were not judged yet (see Endpoint.CPUBound).
	CPUBound, IOBound int
}

// LoadMeter reads a balancer's load, one reading after another. It is
// not safe for concurrent use.
type LoadMeter struct {
	b *Balancer
	// served is what each endpoint had finished at the previous reading.
	served map[*Endpoint]uint64
}

// NewLoadMeter returns a meter whose first reading counts the requests
// finished since each endpoint joined.
func (b *Balancer) NewLoadMeter() *LoadMeter {
	return &LoadMeter{b: b, served: map[*Endpoint]uint64{}}
}

// Read returns the load now. Requests that endpoints which left rotation
// finished since the previous reading are not counted.
func (m *LoadMeter) Read() Load {
	eps := m.b.Endpoints()
	l := Load{Endpoints: len(eps), Queued: m.b.QueueLen()}
	served := make(map[*Endpoint]uint64, len(eps))
	for _, e := range eps {
		n, limit := e.Inflight(), e.capacity()
		l.Inflight += n
		switch {
		case limit > 0 && n >= limit:
			l.AtLimit++
			l.Busy++
		case limit > 0:
			l.Busy += float64(n) / float64(limit)
		case n > 0:
			l.Busy++
		}
		s := e.served.Load()
		l.Finished += s - m.served[e]
		served[e] = s
		switch cpu, known := e.CPUBound(); {
		case known && cpu:
			l.CPUBound++
		case known:
			l.IOBound++
		}
	}
	m.served = served
	return l
}

// CPUBound reports what the endpoint's adaptive limit has learnt about
// its worker (see limit.Adaptive.CPUBound); known is false with a fixed
// limit, and until the limit has judged.
func (e *Endpoint) CPUBound() (cpuBound, known bool) {
	if e.adaptive == nil {
		return false, false
	}
	return e.adaptive.CPUBound()
}

// RouteCost is what the balancer has learned about one route.
type RouteCost struct {
	// Route is the method and the route, e.g. "GET /orders/{id}".
	Route string `json:"route"`
	// CostMS is the decaying average time, in milliseconds, that its
	// requests took at a worker.
	CostMS float64 `json:"cost_ms"`
	// Samples is the number of requests it learned from.
	Samples uint64 `json:"samples"`
}

// Costs returns the routes whose cost the balancer knows now, in order
// of their names: at most Config.CostKeys, the most recently used.
func (b *Balancer) Costs() []RouteCost {
	entries := b.costs.Entries()
	out := make([]RouteCost, len(entries))
	for i, e := range entries {
		out[i] = RouteCost{Route: e.Route, CostMS: float64(e.Cost) / float64(time.Millisecond), Samples: e.Samples}
	}
	return out
}
