package balancer

import (
	"net/http/httptest"
	"testing"
)

// The table keeps at most max routes and makes room by dropping the one
// used least recently, never one that requests wait on.
func TestCostTableDropsTheLeastRecentlyUsedRoute(t *testing.T) {
	tab := newCosts(2)
	get := func(path string) *route { return tab.lookup(httptest.NewRequest("GET", path, nil), "") }
	a, b := get("/a"), get("/b")
	if get("/a") != a {
		t.Fatal("a known route was not found again")
	}
	get("/c") // /b was used least recently
	m := *tab.m.Load()
	if len(m) != 2 || m[routeKey{"GET", "/a"}] != a || m[routeKey{"GET", "/b"}] != nil {
		t.Fatalf("after /a, /b, /a, /c the table holds %v; want /a and /c", m)
	}
	a.queued.Store(1) // /a has a waiter: /c goes instead
	get("/d")
	m = *tab.m.Load()
	if m[routeKey{"GET", "/a"}] != a || m[routeKey{"GET", "/c"}] != nil || m[routeKey{"GET", "/d"}] == nil {
		t.Fatalf("with a waiter on /a the table holds %v; want /a and /d", m)
	}
	_ = b
}
