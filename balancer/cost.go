package balancer

import (
	"cmp"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// What a request costs, learned per route: the queue orders waiting
// requests by it (schedule cost), and admission estimates from it how
// long a new request would wait.
//
// A route is the method and what Config.CostKey returns, else the first
// segment of the path ("GET /orders"). Each route keeps a decaying
// average of the time its requests took at a worker; the table holds at
// most Config.CostKeys routes and drops the least recently used one to
// make room, so a key made of raw paths or client input costs bounded
// memory and at worst learns nothing.

// DefaultCostKeys is how many routes' costs are kept by default.
const DefaultCostKeys = 256

// costWeight is the weight of each new sample in a route's average: the
// estimate follows a route whose cost changes within a few dozen
// requests, and one outlier moves it by a tenth of the difference.
const costWeight = 0.1

type routeKey struct{ method, route string }

// route is one route's cost estimate, and its waiters when the queue
// orders by cost.
type route struct {
	key  routeKey
	cost atomic.Uint64 // float64 bits: seconds; valid once samples > 0
	n    atomic.Uint64 // samples
	used atomic.Uint64 // the table's clock at the last use, for LRU

	// Its waiting requests, oldest first, and its index in the queue's
	// list of routes with waiters (-1: none); guarded by Balancer.qmu.
	// queued mirrors their number for the table, which evicts only
	// routes without waiters.
	waitList
	work   float64 // its waiters' expected cost when they joined
	active int
	skip   uint64 // the dispatch pass that passed it over
	queued atomic.Int32
}

// costs is the table of routes. Every request looks its route up, so
// the map is copy-on-write: lookups take no lock and write nothing
// shared but a route's epoch when it changes. Writers (a new route,
// rare) hold mu.
type costs struct {
	mu  sync.Mutex
	m   atomic.Pointer[map[routeKey]*route]
	max int
	// epoch advances with each new route; a route remembers the epoch
	// of its last use, which orders routes for eviction (routes used
	// between the same two new ones tie).
	epoch atomic.Uint64
	all   route // every request, whatever its route: the pool's average
}

func newCosts(max int) *costs {
	t := &costs{max: max}
	t.m.Store(&map[routeKey]*route{})
	return t
}

// lookup returns the route of r, learned from the key (empty: the first
// path segment), making room for it if it is new.
func (t *costs) lookup(r *http.Request, key string) *route {
	k := routeKey{r.Method, key}
	if key == "" {
		k.route = firstSegment(r.URL.Path)
	}
	rt := (*t.m.Load())[k]
	if rt == nil {
		return t.insert(k)
	}
	if e := t.epoch.Load(); rt.used.Load() != e {
		rt.used.Store(e)
	}
	return rt
}

func (t *costs) insert(k routeKey) *route {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.m.Load()
	if rt := cur[k]; rt != nil {
		return rt
	}
	next := make(map[routeKey]*route, len(cur)+1)
	for key, rt := range cur {
		next[key] = rt
	}
	if len(next) >= t.max {
		// Least recently used, among routes nobody waits on: their
		// waiters must find their route again.
		var old *route
		for _, rt := range next {
			if rt.queued.Load() == 0 && (old == nil || rt.used.Load() < old.used.Load()) {
				old = rt
			}
		}
		if old == nil {
			// Every route has waiters: this request is costed as an
			// average one, and not remembered.
			return &route{key: k, active: -1}
		}
		delete(next, old.key)
	}
	// Keys that point into the request must not keep it alive.
	rt := &route{key: routeKey{strings.Clone(k.method), strings.Clone(k.route)}, active: -1}
	// It was used in the epoch it ends: a route used after it joined
	// counts as more recent.
	rt.used.Store(t.epoch.Add(1) - 1)
	next[rt.key] = rt
	t.m.Store(&next)
	return rt
}

// firstSegment is "/orders" of "/orders/42", "/" of "/".
func firstSegment(path string) string {
	if i := strings.IndexByte(path[min(1, len(path)):], '/'); i >= 0 {
		return path[:i+1]
	}
	return path
}

// observe folds the time a request of rt took into its estimate and the
// pool's.
func (t *costs) observe(rt *route, d time.Duration) {
	s := d.Seconds()
	rt.fold(s)
	t.all.fold(s)
}

func (rt *route) fold(s float64) {
	for {
		old := rt.cost.Load()
		next := s
		if rt.n.Load() > 0 {
			next = math.Float64frombits(old)*(1-costWeight) + s*costWeight
		}
		if rt.cost.CompareAndSwap(old, math.Float64bits(next)) {
			rt.n.Add(1)
			return
		}
	}
}

// estimate is rt's cost in seconds; ok is false until it has a sample.
func (rt *route) estimate() (float64, bool) {
	if rt.n.Load() == 0 {
		return 0, false
	}
	return math.Float64frombits(rt.cost.Load()), true
}

// expected is what a request of rt is expected to cost: its route's
// estimate, else the pool's average, else 0.
func (t *costs) expected(rt *route) float64 {
	if c, ok := rt.estimate(); ok {
		return c
	}
	c, _ := t.all.estimate()
	return c
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
	m := *b.costs.m.Load()
	out := make([]RouteCost, 0, len(m))
	for _, rt := range m {
		if c, ok := rt.estimate(); ok {
			out = append(out, RouteCost{Route: rt.key.method + " " + rt.key.route, CostMS: c * 1000, Samples: rt.n.Load()})
		}
	}
	slices.SortFunc(out, func(a, b RouteCost) int { return cmp.Compare(a.Route, b.Route) })
	return out
}
