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

// A route marked as holding (its requests were parked as long polls)
// forgets an estimate learnt from holds and learns only from requests
// no longer than the mark's bound; the pool's average is not fed holds
// either.
func TestHoldingRouteLearnsOnlyItsWork(t *testing.T) {
	tab := New(0)
	rt := tab.Lookup(httptest.NewRequest("GET", "/socket.io/?EIO=4", nil), "")
	tab.Observe(rt, 25*time.Second) // a poll that nobody's wait parked
	if c, _ := rt.Cost(); c < 24 {
		t.Fatalf("cost %v after a 25 s sample", c)
	}
	tab.Hold(rt, 50*time.Millisecond)
	if _, ok := rt.Cost(); ok {
		t.Fatal("a holding route kept the cost it learnt from a hold")
	}
	before, _ := tab.Average().Cost()
	tab.Observe(rt, 20*time.Second)
	if _, ok := rt.Cost(); ok {
		t.Fatal("a holding route learnt from a hold")
	}
	if after, _ := tab.Average().Cost(); after != before {
		t.Fatalf("the pool's average moved from %v to %v on a hold", before, after)
	}
	tab.Observe(rt, 2*time.Millisecond) // a handshake
	if c, ok := rt.Cost(); !ok || c != 0.002 {
		t.Fatalf("cost %v %v after a 2 ms request, want 2 ms", c, ok)
	}
	// Marking it again changes nothing.
	tab.Hold(rt, time.Second)
	if c, _ := rt.Cost(); c != 0.002 {
		t.Fatalf("a second mark moved the cost to %v", c)
	}
}
