package balancer_test

import (
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/procfs"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// TestIdleWorkerParksItsLongPolls: a worker that holds long polls and
// computes nothing keeps serving short requests, at a fixed limit of 1
// and under max_inflight auto; the polls count as streams, which a drain
// waits for, until they end.
func TestIdleWorkerParksItsLongPolls(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  balancer.Config
	}{
		{"max_inflight 1", balancer.Config{MaxInflight: 1}},
		{"max_inflight auto", balancer.Config{AdaptiveLimit: true}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := testworker.Start(t, "serve")
			var mu sync.Mutex
			var waits []time.Duration
			cfg := c.cfg
			cfg.OnResult = func(r *http.Request, res *balancer.Result) {
				if r.URL.Path == "/" {
					mu.Lock()
					waits = append(waits, res.QueueWait)
					mu.Unlock()
				}
			}
			bal := newBalancer(t, cfg)
			eps := join(t, bal, p)
			srv := front(t, bal)
			cl := srv.Client()
			// Before the front server's cleanup, which waits for its
			// handlers: a failed test must not leave the polls held.
			t.Cleanup(func() { _, _ = p.Do(http.MethodPost, "/release") })

			const polls = 8
			var held []<-chan outcome
			for i := range polls {
				held = append(held, send(cl, "GET", srv.URL+"/block", nil))
				await(t, "the poll reaches the worker", func() bool { return p.Blocked() == i+1 })
			}
			for range 20 {
				if o := recv(t, send(cl, "GET", srv.URL+"/", nil)); o.status != http.StatusOK {
					t.Fatalf("short request beside %d long polls: %d", polls, o.status)
				}
			}
			if p.Blocked() != polls {
				t.Fatalf("%d polls held, want %d", p.Blocked(), polls)
			}
			if s, n := eps[0].Streams(), eps[0].Parked(); s != polls || n < polls {
				t.Fatalf("%d streams, %d parked; want the %d polls", s, n, polls)
			}
			if !eps[0].Busy() {
				t.Fatal("an endpoint holding parked polls is not busy: a drain would not wait for them")
			}
			mu.Lock()
			var worst time.Duration
			for _, w := range waits {
				worst = max(worst, w)
			}
			mu.Unlock()
			t.Logf("20 short requests beside %d parked polls: longest queue wait %v", polls, worst)

			if _, err := p.Do(http.MethodPost, "/release"); err != nil {
				t.Fatal(err)
			}
			for _, h := range held {
				if o := recv(t, h); o.status != http.StatusOK {
					t.Fatalf("long poll: %d", o.status)
				}
			}
			await(t, "the polls' streams end", func() bool { return eps[0].Streams() == 0 && eps[0].Inflight() == 0 })
		})
	}
}

// TestComputingWorkerKeepsItsLimit: a worker that computes is never
// parked: a request behind a long computation waits for it.
func TestComputingWorkerKeepsItsLimit(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1})
	eps := join(t, bal, p)
	srv := front(t, bal)
	cl := srv.Client()

	cpu := send(cl, "GET", srv.URL+"/cpu?ms=600", nil)
	// The slot is taken before the request reaches the worker; under
	// load that can be longer than ParkIdle, and a worker that has not
	// started computing is idle. Await its main thread computing: 20 ms
	// of CPU wanted since the request was sent, which an idle event loop
	// does not take.
	busy := procfs.Busy(p.PID)
	before, ok := busy()
	if !ok {
		t.Skip("no CPU accounting for the worker on this system")
	}
	await(t, "the worker computes", func() bool {
		now, _ := busy()
		return eps[0].Inflight() == 1 && now-before >= 20*time.Millisecond
	})
	short := send(cl, "GET", srv.URL+"/", nil)
	// Which answer the client reads first is the goroutines' race once
	// the slot passes on; whether the worker's slot was handed out while
	// it computed is the parked count.
	if o := recv(t, cpu); o.status != http.StatusOK {
		t.Fatalf("computing request: %d", o.status)
	}
	if o := recv(t, short); o.status != http.StatusOK {
		t.Fatalf("short request behind it: %d", o.status)
	}
	if n := eps[0].Parked(); n != 0 {
		t.Fatalf("%d requests of a computing worker parked", n)
	}
}

// TestHalfOpenProbesAreNotParked: a half-open breaker's capacity is its
// probes, whose verdict it awaits; parking an idle probe would only hand
// its slot to requests the breaker refuses. The requests behind it wait
// for the verdict instead, and are served.
func TestHalfOpenProbesAreNotParked(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 4, Retries: new(int),
		Breaker: balancer.BreakerConfig{Failures: 1, OpenFor: 200 * time.Millisecond},
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	cl := srv.Client()
	if _, err := p.Do(http.MethodPost, "/fail"); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, send(cl, "GET", srv.URL+"/", nil)); o.status != http.StatusInternalServerError {
		t.Fatalf("failing worker answered %d", o.status)
	}
	if _, err := p.Do(http.MethodPost, "/heal"); err != nil {
		t.Fatal(err)
	}
	await(t, "the breaker half-open", func() bool { return eps[0].BreakerState() == "half-open" })
	probe := send(cl, "GET", srv.URL+"/block", nil)
	// Before the front server's cleanup, which waits for its handlers.
	t.Cleanup(func() { _, _ = p.Do(http.MethodPost, "/release") })
	await(t, "the probe held", func() bool { return p.Blocked() == 1 })
	var waiting []<-chan outcome
	for range 5 {
		waiting = append(waiting, send(cl, "GET", srv.URL+"/", nil))
	}
	await(t, "5 requests behind the probe", func() bool { return bal.QueueLen() == 5 })
	// Six times park_idle: the time in which the watch would have parked
	// the idle probe.
	time.Sleep(6 * balancer.DefaultParkIdle)
	if n := eps[0].Parked(); n != 0 {
		t.Fatalf("%d half-open probes parked", n)
	}
	if _, err := p.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, probe); o.status != http.StatusOK {
		t.Fatalf("probe: %d", o.status)
	}
	for _, w := range waiting {
		if o := recv(t, w); o.status != http.StatusOK {
			t.Fatalf("a request behind the probe: %d", o.status)
		}
	}
}
