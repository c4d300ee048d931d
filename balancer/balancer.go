package balancer

import (
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// Balancer serves each request from one endpoint of its live set, chosen
// by its policy. The set is copy-on-write: the request path reads it
// without a lock.
type Balancer struct {
	policy Policy

	mu   sync.Mutex // serialises writers of live
	live atomic.Pointer[[]*Endpoint]
}

// New returns a balancer with an empty set.
func New(policy Policy) *Balancer {
	b := &Balancer{policy: policy}
	b.live.Store(&[]*Endpoint{})
	return b
}

// Add puts e in rotation; adding it twice is harmless.
func (b *Balancer) Add(e *Endpoint) {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := *b.live.Load()
	if slices.Contains(cur, e) {
		return
	}
	next := append(slices.Clip(cur), e)
	b.live.Store(&next)
}

// Remove takes e out of rotation; its requests in flight finish. It
// reports whether e was in rotation.
func (b *Balancer) Remove(e *Endpoint) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	cur := *b.live.Load()
	i := slices.Index(cur, e)
	if i < 0 {
		return false
	}
	next := slices.Delete(slices.Clone(cur), i, i+1)
	b.live.Store(&next)
	return true
}

// Endpoints returns the endpoints in rotation now. The slice must not be
// modified.
func (b *Balancer) Endpoints() []*Endpoint { return *b.live.Load() }

// ServeHTTP proxies r to an endpoint, or answers 503 with Retry-After at
// once when none is in rotation.
func (b *Balancer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	eps := *b.live.Load()
	if len(eps) == 0 {
		problem.Unavailable(w, 1, "no healthy worker is available")
		return
	}
	b.policy.Select(eps, r).ServeHTTP(w, r)
}
