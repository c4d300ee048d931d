// Package cost learns what a request costs its worker, per route: the
// queue orders waiting requests by it (schedule cost), and admission
// estimates from it how long a new request would wait.
package cost

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

// A route is the method and a key the caller gives (the balancer's
// Config.CostKey), else the first
// segment of the path ("GET /orders"). Each route keeps a decaying
// average of the time its requests took at a worker; the table holds at
// most Config.CostKeys routes and drops the least recently used one to
// make room, so a key made of raw paths or client input costs bounded
// memory and at worst learns nothing.

// DefaultKeys is how many routes' costs are kept by default.
const DefaultKeys = 256

// costWeight is the weight of each new sample in a route's average: the
// estimate follows a route whose cost changes within a few dozen
// requests, and one outlier moves it by a tenth of the difference.
const costWeight = 0.1

type routeKey struct{ method, route string }

// Route is one route's cost estimate. It is safe for concurrent use.
type Route struct {
	key  routeKey
	cost atomic.Uint64 // float64 bits: seconds; valid once samples > 0
	n    atomic.Uint64 // samples
	used atomic.Uint64 // the table's clock at the last use, for LRU
	// holdMax: the route's requests may be held idle at a worker (long
	// polls), and a sample longer than this many nanoseconds says
	// nothing of what they cost; 0 until Hold.
	holdMax atomic.Int64
}

// Table is the table of routes. Every request looks its route up, so
// the map is copy-on-write: lookups take no lock and write nothing
// shared but a route's epoch when it changes. Writers (a new route,
// rare) hold mu.
type Table struct {
	mu  sync.Mutex
	m   atomic.Pointer[map[routeKey]*Route]
	max int
	// epoch advances with each new route; a route remembers the epoch
	// of its last use, which orders routes for eviction (routes used
	// between the same two new ones tie).
	epoch atomic.Uint64
	all   Route // every request, whatever its route: the pool's average
}

// New returns an empty table of at most max routes; max <= 0 means
// DefaultKeys.
func New(max int) *Table {
	if max <= 0 {
		max = DefaultKeys
	}
	t := &Table{max: max}
	t.m.Store(&map[routeKey]*Route{})
	return t
}

// Lookup returns the route of r, learned from the key (empty: the first
// path segment), making room for it if it is new.
func (t *Table) Lookup(r *http.Request, key string) *Route {
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

func (t *Table) insert(k routeKey) *Route {
	t.mu.Lock()
	defer t.mu.Unlock()
	cur := *t.m.Load()
	if rt := cur[k]; rt != nil {
		return rt
	}
	next := make(map[routeKey]*Route, len(cur)+1)
	for key, rt := range cur {
		next[key] = rt
	}
	if len(next) >= t.max {
		// The least recently used. Requests of it that wait keep their
		// Route, and go on learning into it.
		var old *Route
		for _, rt := range next {
			if old == nil || rt.used.Load() < old.used.Load() {
				old = rt
			}
		}
		delete(next, old.key)
	}
	// Keys that point into the request must not keep it alive.
	rt := &Route{key: routeKey{strings.Clone(k.method), strings.Clone(k.route)}}
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

// Observe folds the time a request of rt took at its worker into rt's
// estimate and the pool's.
func (t *Table) Observe(rt *Route, d time.Duration) {
	if h := rt.holdMax.Load(); h > 0 && int64(d) > h {
		return // a hold, not work
	}
	s := d.Seconds()
	rt.fold(s)
	t.all.fold(s)
}

func (rt *Route) fold(s float64) {
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

// Hold marks rt as a route whose requests may be held at a worker that
// computes nothing for them (long polls, which the balancer parked):
// from then on Observe ignores its samples longer than max, and an
// estimate above max, learnt from such holds before, is forgotten.
func (t *Table) Hold(rt *Route, max time.Duration) {
	if rt == &t.all || rt.holdMax.Swap(int64(max)) != 0 {
		return
	}
	if c, ok := rt.Cost(); ok && c > max.Seconds() {
		rt.n.Store(0)
	}
}

// Cost is rt's estimate in seconds; ok is false until it has a sample.
func (rt *Route) Cost() (float64, bool) {
	if rt.n.Load() == 0 {
		return 0, false
	}
	return math.Float64frombits(rt.cost.Load()), true
}

// Average is the pool's route: every request, whatever its own.
func (t *Table) Average() *Route { return &t.all }

// Entry is what the table has learned about one route.
type Entry struct {
	// Route is the method and the route, e.g. "GET /orders/{id}".
	Route string
	// Cost is the decaying average time its requests took at a worker.
	Cost time.Duration
	// Samples is the number of requests it learned from.
	Samples uint64
}

// Entries returns the routes whose cost is known now, in order of their
// names.
func (t *Table) Entries() []Entry {
	m := *t.m.Load()
	out := make([]Entry, 0, len(m))
	for _, rt := range m {
		if c, ok := rt.Cost(); ok {
			out = append(out, Entry{Route: rt.key.method + " " + rt.key.route, Cost: time.Duration(c * float64(time.Second)), Samples: rt.n.Load()})
		}
	}
	slices.SortFunc(out, func(a, b Entry) int { return cmp.Compare(a.Route, b.Route) })
	return out
}
