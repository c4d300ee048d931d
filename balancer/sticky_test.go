package balancer_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// stickyReply is one answer of a sticky test: who served it, and the
// affinity cookie it set, if any.
type stickyReply struct {
	status    int
	pid       int
	setCookie []string
}

// stickyGet sends GET path with header set in the background.
func stickyGet(c *http.Client, url string, header http.Header) <-chan stickyReply {
	ch := make(chan stickyReply, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := c.Do(req)
		if err != nil {
			ch <- stickyReply{}
			return
		}
		defer resp.Body.Close()
		var r blockReply
		_ = json.NewDecoder(resp.Body).Decode(&r)
		ch <- stickyReply{status: resp.StatusCode, pid: r.PID, setCookie: resp.Header.Values("Set-Cookie")}
	}()
	return ch
}

func recvSticky(t *testing.T, ch <-chan stickyReply) stickyReply {
	t.Helper()
	r := <-ch
	if r.status == 0 {
		t.Fatal("request failed")
	}
	return r
}

// holdOn blocks one request on whichever of procs serves the sticky
// header h, and returns that worker.
func holdOn(t *testing.T, c *http.Client, url string, h http.Header, procs ...*testworker.Proc) *testworker.Proc {
	t.Helper()
	pid := recvSticky(t, stickyGet(c, url+"/", h)).pid
	var home *testworker.Proc
	for _, p := range procs {
		if p.PID == pid {
			home = p
		}
	}
	if home == nil {
		t.Fatalf("pid %d is none of the workers", pid)
	}
	held := stickyGet(c, url+"/block", h)
	await(t, "its worker busy", func() bool { return home.Blocked() == 1 })
	t.Cleanup(func() {
		_, _ = home.Do(http.MethodPost, "/release")
		<-held
	})
	return home
}

// TestHashWaitsForItsBusyWorker: without spill, a key whose worker is at
// its limit waits for that worker, though another is free.
func TestHashWaitsForItsBusyWorker(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 1,
		ParkIdle:    -1, // a worker held by /block stays busy
		Policy:      balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashHeader, HashKey: "X-User"},
	})
	join(t, bal, a, b)
	srv := front(t, bal)
	alice := http.Header{"X-User": {"alice"}}
	alicePID := recvSticky(t, stickyGet(srv.Client(), srv.URL+"/", alice)).pid
	// A key that another worker serves.
	var bob http.Header
	for i := 0; bob == nil; i++ {
		h := http.Header{"X-User": {"user" + strconv.Itoa(i)}}
		if recvSticky(t, stickyGet(srv.Client(), srv.URL+"/", h)).pid != alicePID {
			bob = h
		}
	}
	home := holdOn(t, srv.Client(), srv.URL, alice, a, b)

	waiting := stickyGet(srv.Client(), srv.URL+"/", alice)
	await(t, "alice's request waits", func() bool { return bal.QueueLen() == 1 })
	// Another key is served meanwhile by the free worker.
	if r := recvSticky(t, stickyGet(srv.Client(), srv.URL+"/", bob)); r.pid == home.PID || r.status != http.StatusOK {
		t.Fatalf("bob's request: %d from %d", r.status, r.pid)
	}
	if bal.QueueLen() != 1 {
		t.Fatal("alice's request left the queue while her worker was busy")
	}
	// ...and alice's goes to her worker once it is free.
	_, _ = home.Do(http.MethodPost, "/release")
	if r := recvSticky(t, waiting); r.pid != home.PID {
		t.Fatalf("alice's request went to %d, her worker is %d", r.pid, home.PID)
	}
}

// TestHashMovesWhenItsWorkerLeaves: a key whose worker leaves rotation
// goes to the next in its ranking, waiting requests included.
func TestHashMovesWhenItsWorkerLeaves(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 1,
		ParkIdle:    -1,
		Policy:      balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashQuery, HashKey: "room"},
	})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()
	home := recvSticky(t, stickyGet(c, srv.URL+"/?x=1&room=blue%20sky", nil)).pid
	for range 5 {
		if pid := recvSticky(t, stickyGet(c, srv.URL+"/?room=blue+sky", nil)).pid; pid != home {
			t.Fatalf("room 'blue sky' went to %d, then %d", home, pid)
		}
	}
	homeProc, homeEp := a, eps[0]
	if b.PID == home {
		homeProc, homeEp = b, eps[1]
	}
	held := stickyGet(c, srv.URL+"/block?room=blue+sky", nil)
	await(t, "its worker busy", func() bool { return homeProc.Blocked() == 1 })
	waiting := stickyGet(c, srv.URL+"/?room=blue+sky", nil)
	await(t, "the room's request waits", func() bool { return bal.QueueLen() == 1 })
	bal.Remove(homeEp)
	other := map[bool]*testworker.Proc{true: b, false: a}[homeProc == a]
	if r := recvSticky(t, waiting); r.status != http.StatusOK || r.pid != other.PID {
		t.Fatalf("the room's request, its worker out of rotation: %d from %d", r.status, r.pid)
	}
	_, _ = homeProc.Do(http.MethodPost, "/release")
	<-held
}

func TestQueryKeyIsDecoded(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashQuery, HashKey: "sid"}})
	join(t, bal, a, b)
	srv := front(t, bal)
	seen := map[int]bool{}
	for i := range 32 {
		key := "k" + strings.Repeat("x", i)
		p1 := recvSticky(t, stickyGet(srv.Client(), srv.URL+"/?sid="+key, nil)).pid
		p2 := recvSticky(t, stickyGet(srv.Client(), srv.URL+"/?a=b&s%69d="+key+"&sid=other", nil)).pid
		if p1 != p2 {
			t.Fatalf("sid=%s went to %d, and encoded to %d", key, p1, p2)
		}
		seen[p1] = true
	}
	if len(seen) != 2 {
		t.Fatalf("32 keys all went to one worker")
	}
}

// cookieOf returns the affinity cookie's value in a Set-Cookie list.
func cookieOf(t *testing.T, setCookie []string) (value string, attrs string) {
	t.Helper()
	for _, s := range setCookie {
		if v, ok := strings.CutPrefix(s, balancer.DefaultCookieName+"="); ok {
			value, attrs, _ = strings.Cut(v, ";")
			return value, attrs
		}
	}
	return "", ""
}

func TestAffinityCookiePinsTheClient(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.Cookie}})
	join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()

	first := recvSticky(t, stickyGet(c, srv.URL+"/", nil))
	token, attrs := cookieOf(t, first.setCookie)
	if token == "" {
		t.Fatalf("first request set no affinity cookie: %q", first.setCookie)
	}
	for _, want := range []string{"Path=/", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(attrs, want) {
			t.Errorf("cookie %q lacks %s", attrs, want)
		}
	}
	if strings.Contains(attrs, "Secure") || strings.Contains(attrs, "Max-Age") {
		t.Errorf("plain-HTTP session cookie %q is Secure or has a Max-Age", attrs)
	}
	pinned := http.Header{"Cookie": {balancer.DefaultCookieName + "=" + token}}
	for range 10 {
		r := recvSticky(t, stickyGet(c, srv.URL+"/", pinned))
		if r.pid != first.pid {
			t.Fatalf("pinned client went to %d, its worker is %d", r.pid, first.pid)
		}
		if len(r.setCookie) != 0 {
			t.Fatalf("a pinned request set %q again", r.setCookie)
		}
	}
	// Without the cookie, clients spread by load.
	spread := map[int]bool{}
	for range 20 {
		spread[recvSticky(t, stickyGet(c, srv.URL+"/", nil)).pid] = true
	}
	if len(spread) != 2 {
		t.Fatal("new clients all went to one idle worker")
	}
}

// TestAffinityCookieWaitsForItsBusyWorker: a pinned request never leaves
// a worker in rotation; it waits for it.
func TestAffinityCookieWaitsForItsBusyWorker(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1, ParkIdle: -1, Policy: balancer.PolicyConfig{Name: balancer.Cookie}})
	join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()
	token, _ := cookieOf(t, recvSticky(t, stickyGet(c, srv.URL+"/", nil)).setCookie)
	pinned := http.Header{"Cookie": {balancer.DefaultCookieName + "=" + token}}
	home := holdOn(t, c, srv.URL, pinned, a, b)
	waiting := stickyGet(c, srv.URL+"/", pinned)
	await(t, "the pinned request waits", func() bool { return bal.QueueLen() == 1 })
	// A new client is served by the free worker meanwhile.
	if r := recvSticky(t, stickyGet(c, srv.URL+"/", nil)); r.pid == home.PID {
		t.Fatal("a new client went to the busy worker")
	}
	_, _ = home.Do(http.MethodPost, "/release")
	r := recvSticky(t, waiting)
	if r.pid != home.PID || len(r.setCookie) != 0 {
		t.Fatalf("the pinned request went to %d (its worker %d), setting %q", r.pid, home.PID, r.setCookie)
	}
}

// TestAffinityCookieRepins: a cookie that names no worker in rotation
// (tampered with, or its worker gone) is placed by load and answered
// with a cookie for the worker that served it; so is one whose worker
// failed it.
func TestAffinityCookieRepins(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.Cookie}})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()
	first := recvSticky(t, stickyGet(c, srv.URL+"/", nil))
	token, _ := cookieOf(t, first.setCookie)
	// A worker's cookie, as the pool would write it for the other one:
	// learnt by asking until the other serves a new client.
	var otherToken string
	for otherToken == "" {
		r := recvSticky(t, stickyGet(c, srv.URL+"/", nil))
		if r.pid != first.pid {
			otherToken, _ = cookieOf(t, r.setCookie)
		}
	}

	for _, bad := range []string{token[:len(token)-1] + map[bool]string{true: "A", false: "B"}[token[len(token)-1] != 'A'], "", "worker1", strings.Repeat("A", len(token))} {
		r := recvSticky(t, stickyGet(c, srv.URL+"/", http.Header{"Cookie": {balancer.DefaultCookieName + "=" + bad}}))
		got, _ := cookieOf(t, r.setCookie)
		if want := map[bool]string{true: token, false: otherToken}[r.pid == first.pid]; got != want {
			t.Fatalf("tampered cookie %q: served by %d with cookie %q, want %q", bad, r.pid, got, want)
		}
	}

	// Its worker leaves rotation: the client is re-pinned.
	home, homeEp, other := a, eps[0], b
	if b.PID == first.pid {
		home, homeEp, other = b, eps[1], a
	}
	pinned := http.Header{"Cookie": {balancer.DefaultCookieName + "=" + token}}
	bal.Remove(homeEp)
	r := recvSticky(t, stickyGet(c, srv.URL+"/", pinned))
	if got, _ := cookieOf(t, r.setCookie); r.pid != other.PID || got != otherToken {
		t.Fatalf("worker gone: served by %d with cookie %q; want %d with %q", r.pid, got, other.PID, otherToken)
	}
	bal.Add(homeEp)

	// Its worker fails the request before answering: the retry on the
	// other worker answers, with one cookie, for that worker.
	if _, err := home.Do(http.MethodPost, "/close-listener"); err != nil {
		t.Fatal(err)
	}
	homeEp.Close() // no kept-alive connection to it either
	r = recvSticky(t, stickyGet(c, srv.URL+"/", pinned))
	if r.pid != other.PID || len(r.setCookie) != 1 {
		t.Fatalf("worker failed: served by %d, setting %q", r.pid, r.setCookie)
	}
	if got, _ := cookieOf(t, r.setCookie); got != otherToken {
		t.Fatalf("worker failed: cookie %q, want the other worker's %q", got, otherToken)
	}
}

// TestAffinityCookieSurvivesInterimResponses: a 103 Early Hints from the
// worker, or the 100 Continue it sends a client that expects one, is not
// the answer: the cookie goes out with the final head, once.
func TestAffinityCookieSurvivesInterimResponses(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.Cookie}})
	join(t, bal, p)
	srv := front(t, bal)
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	t.Cleanup(c.CloseIdleConnections)
	for _, req := range []func() *http.Request{
		func() *http.Request { r, _ := http.NewRequest(http.MethodGet, srv.URL+"/hints", nil); return r },
		func() *http.Request {
			r, _ := http.NewRequest(http.MethodPost, srv.URL+"/echo", strings.NewReader(strings.Repeat("x", 1<<16)))
			r.Header.Set("Expect", "100-continue")
			return r
		},
	} {
		r := req()
		resp, err := c.Do(r)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Values("Set-Cookie"); resp.StatusCode != http.StatusOK || len(got) != 1 || !strings.HasPrefix(got[0], balancer.DefaultCookieName+"=") {
			t.Fatalf("%s %s: %d with Set-Cookie %q, want 200 with the affinity cookie once", r.Method, r.URL.Path, resp.StatusCode, got)
		}
	}
}

func TestAffinityCookieOverTLSIsSecure(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.Cookie, CookieName: "app_node", CookieMaxAge: 90 * 60e9}})
	join(t, bal, p)
	srv := httptest.NewTLSServer(bal)
	t.Cleanup(srv.Close)
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	got := resp.Header.Get("Set-Cookie")
	for _, want := range []string{"app_node=", "Secure", "Max-Age=5400", "HttpOnly", "SameSite=Lax"} {
		if !strings.Contains(got, want) {
			t.Errorf("cookie over TLS %q lacks %s", got, want)
		}
	}
}

func TestBadStickyConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  balancer.PolicyConfig
		want string
	}{
		{balancer.PolicyConfig{Name: balancer.Cookie, Fallback: balancer.Hash}, "fallback"},
		{balancer.PolicyConfig{Name: balancer.Cookie, Fallback: "nearest"}, "fallback"},
		{balancer.PolicyConfig{Name: balancer.Cookie, CookieName: "my cookie"}, "cookie name"},
		{balancer.PolicyConfig{Name: balancer.Cookie, CookieMaxAge: -1}, "max_age"},
		{balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashQuery}, "query name"},
	} {
		_, err := balancer.New(balancer.Config{Policy: c.cfg})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want an error about %s", c.cfg, err, c.want)
		}
	}
}
