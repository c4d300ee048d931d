//go:build unix

package balancer_test

import (
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// Allocation guards of the request path, the balancer's own work only:
// Serve is called directly (no HTTP server, no client) with a writer and
// a request that are reused, in front of a real worker process. The
// figures are the allocations per request measured when the guards were
// written; a change that adds one fails here.
const (
	// directAllocs: a tiny GET answered by the lean forwarder. What is
	// left is the response head's strings (the values, their backing
	// array, the header map's buckets) that the writer keeps.
	directAllocs = 5
	// directTimeoutAllocs: the same with a request timeout (its timer).
	directTimeoutAllocs = 8
	// queuedExtraAllocs: what waiting in the queue adds to a request.
	queuedExtraAllocs = 0
)

// discard is a reusable ResponseWriter.
type discard struct{ h http.Header }

func (w *discard) Header() http.Header         { return w.h }
func (w *discard) WriteHeader(int)             {}
func (w *discard) Write(p []byte) (int, error) { return len(p), nil }

func (w *discard) reset() { clear(w.h) }

func TestRequestPathAllocations(t *testing.T) {
	p := testworker.Start(t, "serve")
	serve := func(bal *balancer.Balancer, w *discard, r *http.Request) {
		w.reset()
		if err := bal.Serve(w, r); err != nil {
			t.Errorf("%s: %v", r.URL, err)
		}
	}

	for _, c := range []struct {
		name    string
		timeout time.Duration
		want    float64
	}{{"direct", 0, directAllocs}, {"direct-timeout", time.Minute, directTimeoutAllocs}} {
		t.Run(c.name, func(t *testing.T) {
			bal := newBalancer(t, balancer.Config{RequestTimeout: c.timeout})
			join(t, bal, p)
			w, r := &discard{h: http.Header{}}, httptest.NewRequest(http.MethodGet, "/pid", nil)
			serve(bal, w, r) // a connection to pool
			n := testing.AllocsPerRun(200, func() { serve(bal, w, r) })
			if n > c.want {
				t.Errorf("%v allocations per request, want at most %v", n, c.want)
			}
			t.Logf("%v allocations per request", n)
		})
	}

	// Two requests a run: one holds the worker's only slot for a few
	// milliseconds, the other waits for it in the queue. Without a limit
	// neither waits: the difference is the queue's.
	// The idle watch (ParkIdle) is off: its timer, which runs while
	// requests wait, allocates nothing itself, but each tick starts a
	// goroutine, which the race detector's bookkeeping allocates for.
	pair := func(t *testing.T, limit int) (allocs float64, waited int) {
		bal := newBalancer(t, balancer.Config{MaxInflight: limit, ParkIdle: -1, OnResult: func(_ *http.Request, res *balancer.Result) {
			if res.QueueWait > 0 {
				waited++ // one request at a time waits: no race
			}
		}})
		eps := join(t, bal, p)
		hw, hr := &discard{h: http.Header{}}, httptest.NewRequest(http.MethodGet, "/sleep?ms=5", nil)
		w, r := &discard{h: http.Header{}}, httptest.NewRequest(http.MethodGet, "/pid", nil)
		run := func() {
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				serve(bal, hw, hr)
			}()
			for eps[0].Inflight() == 0 {
				time.Sleep(10 * time.Microsecond)
			}
			serve(bal, w, r)
			wg.Wait()
		}
		run()
		return testing.AllocsPerRun(50, run), waited
	}
	t.Run("queued", func(t *testing.T) {
		direct, _ := pair(t, 0)
		queued, waited := pair(t, 1)
		if waited < 40 {
			t.Fatalf("%d of 51 requests waited in the queue: the guard measures nothing", waited)
		}
		if queued > direct+queuedExtraAllocs {
			t.Errorf("a request that waits: %v allocations a pair, %v without waiting; want at most %d more", queued, direct, queuedExtraAllocs)
		}
		t.Logf("a pair: %v allocations, %v when one waits", direct, queued)
	})
}
