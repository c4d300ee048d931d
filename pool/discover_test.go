package pool_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

func newDiscoveringPool(t *testing.T, src pool.Source) (*pool.Pool, *httptest.Server) {
	t.Helper()
	p, err := pool.New(pool.Config{
		Name:   "found",
		Source: src,
		Health: health.Config{URI: "/healthz", Interval: 50 * time.Millisecond},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	p.Start()
	srv := httptest.NewServer(p)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		p.Stop()
	})
	return p, srv
}

// servedBy waits until the pids answering through url are exactly want.
func servedBy(t *testing.T, url string, want ...int) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	testworker.Eventually(t, 10*time.Second, fmt.Sprintf("pids %v serving", want), func() bool {
		seen := map[int]bool{}
		for range 10 * len(want) {
			resp, err := c.Get(url)
			if err != nil {
				return false
			}
			var r testworker.Reply
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if resp.StatusCode != 200 || err != nil {
				return false
			}
			seen[r.PID] = true
		}
		for _, pid := range want {
			if !seen[pid] {
				return false
			}
		}
		return len(seen) == len(want)
	})
}

func TestDiscoverPortRange(t *testing.T) {
	first := testworker.FreePortRange(t, 3)
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(first+i)) }
	a := testworker.StartAt(t, "serve", "tcp", addr(0))
	src, err := health.ParseCandidates([]string{fmt.Sprintf("127.0.0.1:%d-%d", first, first+2)})
	if err != nil {
		t.Fatal(err)
	}
	p, srv := newDiscoveringPool(t, src)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
	// Ready means every candidate was probed: the live one is in.
	if p.Healthy() != 1 || p.Count() != 3 {
		t.Fatalf("after WaitReady: %d healthy of %d", p.Healthy(), p.Count())
	}
	servedBy(t, srv.URL, a.PID)

	c := testworker.StartAt(t, "serve", "tcp", addr(2))
	servedBy(t, srv.URL, a.PID, c.PID)

	a.Kill()
	servedBy(t, srv.URL, c.PID)
	// Retries hide the dead one from clients at once; it leaves rotation
	// after its failures (passive health) or its next health check.
	testworker.Eventually(t, 10*time.Second, "the killed one out of rotation", func() bool {
		st := p.Status()
		return st.Total == 3 && st.Healthy == 1
	})

	if _, err := p.RollingRestart(context.Background()); !errors.Is(err, pool.ErrNotSpawned) {
		t.Fatalf("rolling restart of discovered endpoints: %v, want ErrNotSpawned", err)
	}
}

func TestDiscoverUnixGlobFindsLateSockets(t *testing.T) {
	dir := t.TempDir()
	a := testworker.StartAt(t, "serve", "unix", filepath.Join(dir, "a.sock"))
	src, err := health.ParseCandidates([]string{"unix/" + dir + "/*.sock"})
	if err != nil {
		t.Fatal(err)
	}
	src.Rescan = 20 * time.Millisecond
	p, srv := newDiscoveringPool(t, src)
	servedBy(t, srv.URL, a.PID)

	b := testworker.StartAt(t, "serve", "unix", filepath.Join(dir, "b.sock"))
	servedBy(t, srv.URL, a.PID, b.PID)
	if n := p.Count(); n != 2 {
		t.Fatalf("%d candidates, want 2", n)
	}
}

// listSource is a Source that the test drives: each send is the new set.
type listSource chan []health.Target

func (s listSource) Run(ctx context.Context, update func([]health.Target)) {
	for {
		select {
		case <-ctx.Done():
			return
		case ts := <-s:
			update(ts)
		}
	}
}

func TestDiscoveredEndpointsKeepTheirStateAcrossUpdates(t *testing.T) {
	a := testworker.Start(t, "serve")
	b := testworker.Start(t, "serve")
	ta := health.Target{Network: "tcp", Address: a.Address}
	tb := health.Target{Network: "tcp", Address: b.Address}
	src := make(listSource)
	p, srv := newDiscoveringPool(t, src)
	src <- []health.Target{ta}
	servedBy(t, srv.URL, a.PID)
	served := p.Status().Workers[0].Served
	if served == 0 {
		t.Fatal("nothing served")
	}

	src <- []health.Target{tb, ta}
	servedBy(t, srv.URL, a.PID, b.PID)
	for _, w := range p.Status().Workers {
		if w.Address == a.Address && (w.ID != 1 || w.Served < served) {
			t.Fatalf("the endpoint that stayed lost its state: %+v (had served %d)", w, served)
		}
	}

	// A request in flight on an endpoint that leaves finishes.
	done := make(chan int, 1)
	c := &http.Client{}
	defer c.CloseIdleConnections()
	go func() {
		resp, err := c.Get(srv.URL + "/block")
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	testworker.Eventually(t, 5*time.Second, "a request held by a worker", func() bool { return a.Blocked()+b.Blocked() == 1 })
	held, other := a, b
	if b.Blocked() == 1 {
		held, other = b, a
	}
	src <- []health.Target{{Network: "tcp", Address: other.Address}}
	servedBy(t, srv.URL, other.PID)
	if _, err := held.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	if code := <-done; code != 200 {
		t.Fatalf("request in flight on the endpoint that left: %d", code)
	}
}
