package cost

import (
	"net/http/httptest"
	"testing"
	"time"
)

// The table keeps at most max routes and makes room by dropping the one
// used least recently.
func TestTableDropsTheLeastRecentlyUsedRoute(t *testing.T) {
	tab := New(2)
	get := func(path string) *Route { return tab.Lookup(httptest.NewRequest("GET", path, nil), "") }
	a := get("/a")
	get("/b")
	if get("/a") != a {
		t.Fatal("a known route was not found again")
	}
	get("/c") // /b was used least recently
	m := *tab.m.Load()
	if len(m) != 2 || m[routeKey{"GET", "/a"}] != a || m[routeKey{"GET", "/b"}] != nil {
		t.Fatalf("after /a, /b, /a, /c the table holds %v; want /a and /c", m)
	}
}

// A route learns a decaying average of its requests' time, and the pool's
// average learns from every route.
func TestTableLearns(t *testing.T) {
	tab := New(0)
	rt := tab.Lookup(httptest.NewRequest("GET", "/orders/42", nil), "")
	if _, ok := rt.Cost(); ok {
		t.Fatal("a new route has a cost")
	}
	if other := tab.Lookup(httptest.NewRequest("GET", "/orders/7", nil), ""); other != rt {
		t.Fatal("/orders/42 and /orders/7 are not one route by default")
	}
	tab.Observe(rt, 10*time.Millisecond)
	tab.Observe(rt, 20*time.Millisecond)
	if c, _ := rt.Cost(); c < 0.0109 || c > 0.0111 {
		t.Fatalf("cost %v after 10 and 20 ms, want 11 ms (weight %v)", c, costWeight)
	}
	if c, ok := tab.Average().Cost(); !ok || c < 0.0109 || c > 0.0111 {
		t.Fatalf("average %v, %v", c, ok)
	}
	if e := tab.Entries(); len(e) != 1 || e[0].Route != "GET /orders" || e[0].Samples != 2 {
		t.Fatalf("entries %+v", e)
	}
}
