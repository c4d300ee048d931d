package balancer_test

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// A reading says how many requests wait, which endpoints are at their
// limits, how much capacity is in use and how many requests finished
// since the reading before.
func TestLoadMeterReadsQueueAndLimits(t *testing.T) {
	b := newBalancer(t, balancer.Config{MaxInflight: 1})
	a, c := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	join(t, b, a, c)
	srv := front(t, b)
	m := b.NewLoadMeter()
	if l := m.Read(); l != (balancer.Load{Endpoints: 2}) {
		t.Fatalf("idle: %+v", l)
	}
	var wg sync.WaitGroup
	for i := range 3 {
		wg.Go(func() {
			resp, err := srv.Client().Get(fmt.Sprintf("%s/block?id=%d", srv.URL, i))
			if err != nil {
				t.Error(err)
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		})
	}
	testworker.Eventually(t, 5*time.Second, "two requests held and one queued", func() bool {
		return b.QueueLen() == 1 && a.Blocked()+c.Blocked() == 2
	})
	l := m.Read()
	if l.Endpoints != 2 || l.AtLimit != 2 || l.Busy != 2 || l.Inflight != 2 || l.Queued != 1 || l.Finished != 0 {
		t.Fatalf("busy: %+v", l)
	}
	testworker.Eventually(t, 5*time.Second, "every request answered", func() bool {
		for _, p := range []*testworker.Proc{a, c} {
			_, _ = p.Do(http.MethodPost, "/release")
		}
		return b.QueueLen() == 0 && b.Endpoints()[0].Inflight()+b.Endpoints()[1].Inflight() == 0
	})
	wg.Wait()
	if l := m.Read(); l.Finished != 3 || l.Busy != 0 || l.AtLimit != 0 {
		t.Fatalf("after the answers: %+v", l)
	}
	if l := m.Read(); l.Finished != 0 {
		t.Fatalf("a second reading counted %d finished requests again", l.Finished)
	}
}

// The adaptive limit tells a worker that computes from one that waits;
// a fixed limit tells nothing.
func TestEndpointCPUBound(t *testing.T) {
	for _, c := range []struct {
		path     string
		adaptive bool
		cpu      bool
		known    bool
	}{
		{"/cpu?ms=40", true, true, true},
		{"/sleep?ms=40", true, false, true},
		{"/sleep?ms=40", false, false, false},
	} {
		t.Run(fmt.Sprintf("%s adaptive=%v", c.path, c.adaptive), func(t *testing.T) {
			b := newBalancer(t, balancer.Config{AdaptiveLimit: c.adaptive, MaxInflight: 1})
			e := join(t, b, testworker.Start(t, "serve"))[0]
			srv := front(t, b)
			if _, known := e.CPUBound(); known {
				t.Fatal("judged before any request")
			}
			// One request at a time: 250 ms of them are judged at once.
			for range 20 {
				resp, err := srv.Client().Get(srv.URL + c.path)
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			if cpu, known := e.CPUBound(); cpu != c.cpu || known != c.known {
				t.Fatalf("CPUBound = %v, %v; want %v, %v", cpu, known, c.cpu, c.known)
			}
			l := b.NewLoadMeter().Read()
			if want := map[bool]int{true: 1}; l.CPUBound != want[c.known && c.cpu] || l.IOBound != want[c.known && !c.cpu] {
				t.Fatalf("reading %+v", l)
			}
		})
	}
}
