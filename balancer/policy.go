package balancer

import (
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// Policy picks the endpoint for a request. It chooses among the
// endpoints for which pick.Usable is true (healthy, breaker closed or
// probing, below its in-flight limit, not yet tried by this request) and
// returns nil if there is none. It must be safe for concurrent use and
// should not allocate.
type Policy interface {
	Select(eps []*Endpoint, pick *Pick) *Endpoint
}

// Policy names accepted by NewPolicy.
const (
	LeastInflight = "least_inflight"
	P2CEWMA       = "p2c_ewma"
	RoundRobin    = "round_robin"
	Random        = "random"
	First         = "first"
	Hash          = "hash"
)

// Hash key sources.
const (
	HashHeader   = "header"
	HashCookie   = "cookie"
	HashClientIP = "client_ip"
)

// PolicyConfig names a policy and its parameters.
type PolicyConfig struct {
	// Name is one of the policy names; empty means least_inflight.
	Name string
	// HashOn is header, cookie or client_ip (for hash).
	HashOn string
	// HashKey is the header or cookie name (for hash).
	HashKey string
	// Decay is the time constant of p2c_ewma's latency average; zero
	// means 10s.
	Decay time.Duration
}

// DefaultDecay is p2c_ewma's default time constant.
const DefaultDecay = 10 * time.Second

// NewPolicy returns the policy cfg describes, or an error that names
// what to change.
func NewPolicy(cfg PolicyConfig) (Policy, error) {
	switch cfg.Name {
	case "", LeastInflight:
		return leastInflight{}, nil
	case P2CEWMA:
		return p2cEWMA{}, nil
	case RoundRobin:
		return &roundRobin{}, nil
	case Random:
		return random{}, nil
	case First:
		return first{}, nil
	case Hash:
		switch cfg.HashOn {
		case HashHeader, HashCookie:
			if cfg.HashKey == "" {
				return nil, fmt.Errorf("hash %s: give the %s name to hash, e.g. 'hash %s X-User-ID'", cfg.HashOn, cfg.HashOn, cfg.HashOn)
			}
		case HashClientIP:
		default:
			return nil, fmt.Errorf("hash %q: hash on header <name>, cookie <name> or client_ip", cfg.HashOn)
		}
		return &rendezvous{on: cfg.HashOn, key: cfg.HashKey}, nil
	}
	return nil, fmt.Errorf("unknown policy %q: use least_inflight, p2c_ewma, round_robin, random, first or hash", cfg.Name)
}

// leastInflight picks the usable endpoint serving the fewest requests.
// Ties are broken uniformly at random, so idle workers share light
// traffic rather than the first one taking all of it.
type leastInflight struct{}

func (leastInflight) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	var best *Endpoint
	var load int64
	ties := 0
	for _, e := range eps {
		if !pick.Usable(e) {
			continue
		}
		l := e.inflight.Load()
		switch {
		case best == nil || l < load:
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

// p2cEWMA draws two usable endpoints at random and takes the one whose
// peak-EWMA latency × (in flight + 1) is lower: the "power of two
// choices", which avoids herding onto one endpoint that looks best.
type p2cEWMA struct{}

func (p2cEWMA) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	if n > 1 {
		i := rand.N(n)
		j := rand.N(n - 1)
		if j >= i {
			j++
		}
		a, b := eps[i], eps[j]
		if pick.Usable(a) && pick.Usable(b) {
			if b.cost() < a.cost() {
				return b
			}
			return a
		}
	}
	// Few usable endpoints: take the cheapest of those.
	var best *Endpoint
	bestCost := math.Inf(1)
	for _, e := range eps {
		if pick.Usable(e) {
			if c := e.cost(); best == nil || c < bestCost {
				best, bestCost = e, c
			}
		}
	}
	return best
}

// roundRobin takes the usable endpoints in turn.
type roundRobin struct{ next atomic.Uint64 }

func (p *roundRobin) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := uint64(len(eps))
	start := p.next.Add(1) - 1
	for i := range n {
		if e := eps[(start+i)%n]; pick.Usable(e) {
			return e
		}
	}
	return nil
}

// random picks a usable endpoint uniformly at random.
type random struct{}

func (random) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	start := rand.N(n)
	for i := range n {
		if e := eps[(start+i)%n]; pick.Usable(e) {
			return e
		}
	}
	return nil
}

// first picks the first usable endpoint in worker order: traffic packs
// onto the lowest-numbered workers, which suits max_inflight limits.
type first struct{}

func (first) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	for _, e := range eps {
		if pick.Usable(e) {
			return e
		}
	}
	return nil
}

// rendezvous is highest-random-weight hashing on a request key: each
// endpoint scores hash(key, endpoint) and the best usable one wins. When
// an endpoint leaves, only its keys move; a key whose endpoint is down or
// full goes to the next in its own ranking. A request without the key is
// balanced by least_inflight.
type rendezvous struct {
	on, key string
}

func (p *rendezvous) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	k, ok := p.keyOf(pick)
	if !ok {
		return leastInflight{}.Select(eps, pick)
	}
	h := hashString(k)
	var best *Endpoint
	var bestScore uint64
	for _, e := range eps {
		if !pick.Usable(e) {
			continue
		}
		if s := mix64(h ^ e.seed); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	return best
}

func (p *rendezvous) keyOf(pick *Pick) (string, bool) {
	r := pick.Request
	switch p.on {
	case HashHeader:
		v := r.Header.Get(p.key)
		return v, v != ""
	case HashCookie:
		c, err := r.Cookie(p.key)
		if err != nil || c.Value == "" {
			return "", false
		}
		return c.Value, true
	default:
		if pick.ClientIP != nil {
			ip := pick.ClientIP(r)
			return ip, ip != ""
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		return host, host != ""
	}
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser: it spreads the bits of a combined
// key and endpoint hash so scores of different endpoints are independent.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// endpointSeed identifies an endpoint for hashing: the worker slot for
// spawned workers (stable across restarts), the address otherwise.
func endpointSeed(worker int, address string) uint64 {
	if worker > 0 {
		return mix64(uint64(worker) * 0x9e3779b97f4a7c15)
	}
	return hashString(strings.ToLower(address))
}
