package balancer

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync/atomic"
)

// Policy picks the endpoint for a request from a non-empty list. It must
// be safe for concurrent use and should not allocate.
type Policy interface {
	Select(eps []*Endpoint, r *http.Request) *Endpoint
}

// Policy names accepted by NewPolicy.
const (
	LeastInflight = "least_inflight"
	RoundRobin    = "round_robin"
)

// NewPolicy returns the policy called name; empty means least_inflight.
func NewPolicy(name string) (Policy, error) {
	switch name {
	case "", LeastInflight:
		return leastInflight{}, nil
	case RoundRobin:
		return &roundRobin{}, nil
	}
	return nil, fmt.Errorf("unknown policy %q: use %s or %s", name, LeastInflight, RoundRobin)
}

// leastInflight picks the endpoint serving the fewest requests now. Ties
// are broken uniformly at random, so idle workers share light traffic
// rather than the first one taking all of it.
type leastInflight struct{}

func (leastInflight) Select(eps []*Endpoint, _ *http.Request) *Endpoint {
	best := eps[0]
	load := best.inflight.Load()
	ties := 1
	for _, e := range eps[1:] {
		l := e.inflight.Load()
		switch {
		case l < load:
			best, load, ties = e, l, 1
		case l == load:
			// Reservoir sampling: the k-th tie replaces with chance 1/k.
			ties++
			if rand.N(ties) == 0 {
				best = e
			}
		}
	}
	return best
}

// roundRobin takes the endpoints in turn.
type roundRobin struct{ next atomic.Uint64 }

func (p *roundRobin) Select(eps []*Endpoint, _ *http.Request) *Endpoint {
	return eps[(p.next.Add(1)-1)%uint64(len(eps))]
}
