package pool_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/coder/websocket"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	goleak.VerifyTestMain(m)
}

func newPool(t *testing.T, cfg pool.Config, log *zap.Logger) (*pool.Pool, *httptest.Server) {
	t.Helper()
	if cfg.Workers.Command == "" {
		cfg.Workers.Command = testworker.Command()
	}
	if cfg.Health.Interval == 0 {
		cfg.Health.Interval = 50 * time.Millisecond
	}
	p, err := pool.New(cfg, log)
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

func pidOf(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	var r testworker.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r.PID
}

func waitHealthy(t *testing.T, p *pool.Pool, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitHealthy(ctx, n); err != nil {
		t.Fatal(err)
	}
}

func TestPoolServesFromEveryWorkerAndHeals(t *testing.T) {
	for _, listen := range []string{worker.ListenTCP, worker.ListenUnix} {
		t.Run(listen, func(t *testing.T) {
			p, srv := newPool(t, pool.Config{
				Workers: worker.Spec{Env: testworker.Env("serve"), Count: 3, Listen: listen},
				Health:  health.Config{URI: "/healthz"},
			}, nil)
			waitHealthy(t, p, 3)
			seen := map[int]bool{}
			for range 60 {
				seen[pidOf(t, srv.Client(), srv.URL+"/")] = true
			}
			if len(seen) != 3 {
				t.Fatalf("requests reached %d distinct workers, want 3", len(seen))
			}
			st := p.Status()
			victim := st.Workers[0].PID
			if !seen[victim] {
				t.Fatalf("status pid %d never served", victim)
			}
			if err := testworker.Kill(victim); err != nil {
				t.Fatal(err)
			}
			testworker.Eventually(t, 10*time.Second, "killed worker replaced and healthy", func() bool {
				s := p.Status()
				return s.Healthy == 3 && s.Workers[0].PID != victim && s.Workers[0].Restarts == 1
			})
			for range 60 {
				if pid := pidOf(t, srv.Client(), srv.URL+"/"); pid == victim {
					t.Fatal("request served by the killed pid")
				}
			}
		})
	}
}

func TestUnhealthyWorkerLeavesRotation(t *testing.T) {
	p, srv := newPool(t, pool.Config{
		Workers: worker.Spec{Env: testworker.Env("serve"), Count: 2},
		Health:  health.Config{URI: "/healthz", Fails: 2},
	}, nil)
	waitHealthy(t, p, 2)
	sick := p.Status().Workers[1]
	req, _ := http.NewRequest(http.MethodPost, "http://"+sick.Address+"/sick", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testworker.Eventually(t, 5*time.Second, "sick worker out of rotation", func() bool { return p.Healthy() == 1 })
	for range 20 {
		if pid := pidOf(t, srv.Client(), srv.URL+"/"); pid == sick.PID {
			t.Fatal("request served by a worker whose health check fails")
		}
	}
	if st := p.Status().Workers[1]; st.Healthy || st.PID != sick.PID {
		t.Fatalf("status of sick worker: %+v", st)
	}
}

func TestNeverHealthyWorkerIsRestartedAndPoolAnswers503(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	p, srv := newPool(t, pool.Config{
		Workers: worker.Spec{Env: testworker.Env("no-health"), Count: 1},
		Health:  health.Config{URI: "/healthz"},
		// Long enough for the worker to listen on a busy host, so that the
		// reason is its 503, not a refused connection before it listened.
		StartupTimeout: 2 * time.Second,
	}, zap.New(core))
	testworker.Eventually(t, 20*time.Second, "restart after startup_timeout", func() bool {
		return p.Status().Workers[0].Restarts >= 1
	})
	if logs.FilterMessage("killing worker").FilterFieldKey("reason").Len() == 0 {
		t.Fatalf("no log line says why the worker was killed: %v", logs.All())
	}
	reason := logs.FilterMessage("killing worker").All()[0].ContextMap()["reason"].(string)
	if !strings.Contains(reason, "startup_timeout") || !strings.Contains(reason, "503") {
		t.Fatalf("reason %q", reason)
	}
	began := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || time.Since(began) > time.Second {
		t.Fatalf("got %s after %v, want a prompt 503", resp.Status, time.Since(began))
	}
}

func TestBadConfig(t *testing.T) {
	cases := []struct {
		cfg  pool.Config
		want string
	}{
		{pool.Config{Workers: worker.Spec{Command: "no-such-cmd-xyz"}}, `"no-such-cmd-xyz"`},
		{pool.Config{Workers: worker.Spec{Command: "/bin/sh"}, Balancer: balancer.Config{Policy: balancer.PolicyConfig{Name: "nope"}}}, "balance"},
		{pool.Config{Workers: worker.Spec{Command: "/bin/sh"}, Health: health.Config{URI: "x"}}, "health_uri"},
		{pool.Config{Workers: worker.Spec{Command: "/bin/sh", Listen: "udp"}}, "listen"},
	}
	for _, c := range cases {
		if _, err := pool.New(c.cfg, nil); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
}

func TestHungWorkerIsKilledAndReplaced(t *testing.T) {
	p, srv := newPool(t, pool.Config{
		Workers:            worker.Spec{Env: testworker.Env("serve"), Count: 2},
		Health:             health.Config{URI: "/healthz", Fails: 1},
		UnhealthyKillAfter: 200 * time.Millisecond,
	}, nil)
	waitHealthy(t, p, 2)
	hung := p.Status().Workers[0]
	// Its health check fails from now on while the process lives.
	req, _ := http.NewRequest(http.MethodPost, "http://"+hung.Address+"/sick", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	testworker.Eventually(t, 10*time.Second, "the unhealthy worker replaced by a healthy one", func() bool {
		st := p.Status()
		return st.Workers[0].PID != hung.PID && st.Workers[0].Healthy && st.Healthy == 2
	})
	if testworker.Alive(hung.PID) {
		t.Fatal("the unhealthy worker still runs")
	}
	if got := pidOf(t, srv.Client(), srv.URL+"/"); got == hung.PID {
		t.Fatal("request served by the replaced worker")
	}
}

func TestRollingRestartReplacesEveryWorkerWithoutFailures(t *testing.T) {
	p, srv := newPool(t, pool.Config{
		Workers: worker.Spec{Env: testworker.Env("serve"), Count: 3},
		Health:  health.Config{URI: "/healthz"},
	}, nil)
	waitHealthy(t, p, 3)
	before := map[int]bool{}
	for _, w := range p.Status().Workers {
		before[w.PID] = true
	}
	stop := make(chan struct{})
	failed := make(chan string, 100)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := srv.Client().Get(srv.URL + "/")
				if err != nil {
					failed <- err.Error()
					continue
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					failed <- resp.Status
				}
			}
		})
	}
	// Capacity never drops: each replacement is healthy before the
	// worker it replaces leaves rotation. Sampled, so it can only catch
	// a dip, not prove there is none.
	lowest := make(chan int, 1)
	go func() {
		low := 3
		for {
			select {
			case <-stop:
				lowest <- low
				return
			default:
			}
			low = min(low, p.Healthy())
			time.Sleep(100 * time.Microsecond)
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := p.RollingRestart(ctx)
	close(stop)
	wg.Wait()
	if low := <-lowest; low < 3 {
		t.Errorf("only %d workers in rotation at some point of the rolling restart", low)
	}
	close(failed)
	if err != nil || n != 3 {
		t.Fatalf("RollingRestart = %d, %v", n, err)
	}
	for f := range failed {
		t.Errorf("request failed during the rolling restart: %s", f)
	}
	st := p.Status()
	for _, w := range st.Workers {
		if before[w.PID] || !w.Healthy || w.Recycles != 1 || w.Restarts != 0 {
			t.Fatalf("after the rolling restart: %+v", w)
		}
	}
}

func TestWatchRestartsWorkersWhenFilesChange(t *testing.T) {
	dir := t.TempDir()
	app := dir + "/app.js"
	if err := os.WriteFile(app, []byte("v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	p, _ := newPool(t, pool.Config{
		Workers:       worker.Spec{Env: testworker.Env("serve"), Count: 2},
		Health:        health.Config{URI: "/healthz"},
		Watch:         []string{dir + "/*.js"},
		WatchDebounce: 50 * time.Millisecond,
	}, nil)
	waitHealthy(t, p, 2)
	// A file the globs do not match changes nothing.
	if err := os.WriteFile(dir+"/notes.txt", []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(app, []byte("v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	testworker.Eventually(t, 15*time.Second, "both workers recycled once and healthy", func() bool {
		st := p.Status()
		return st.Healthy == 2 && st.Workers[0].Recycles == 1 && st.Workers[1].Recycles == 1
	})
}

func TestWatchRefusesBadGlob(t *testing.T) {
	_, err := pool.New(pool.Config{
		Workers: worker.Spec{Command: "/bin/sh"},
		Watch:   []string{"/no/such/dir/*.js"},
	}, nil)
	if err == nil || !strings.Contains(err.Error(), "watch") {
		t.Fatalf("New with a glob in a missing directory: %v", err)
	}
}

func TestRecycling(t *testing.T) {
	cases := []struct {
		name   string
		cfg    pool.Recycle
		reason string
	}{
		{"max_requests", pool.Recycle{MaxRequests: 10, Jitter: 5}, "max_requests"},
		{"max_lifetime", pool.Recycle{MaxLifetime: 300 * time.Millisecond}, "max_lifetime"},
		// Any real process is larger than 4 KiB.
		{"max_memory", pool.Recycle{MaxMemory: 4 << 10}, "max_memory"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			p, srv := newPool(t, pool.Config{
				Workers: worker.Spec{Env: testworker.Env("serve"), Count: 2},
				Health:  health.Config{URI: "/healthz"},
				Recycle: c.cfg,
			}, zap.New(core))
			waitHealthy(t, p, 2)
			first := p.Status()
			failed := 0
			var last pool.Status
			testworker.Eventually(t, 15*time.Second, "both workers recycled", func() bool {
				// Steady traffic meanwhile: none of it may fail.
				resp, err := srv.Client().Get(srv.URL + "/")
				if err != nil || resp.StatusCode != 200 {
					failed++
				}
				if err == nil {
					resp.Body.Close()
				}
				last = p.Status()
				return last.Healthy == 2 && last.Workers[0].Recycles >= 1 && last.Workers[1].Recycles >= 1
			})
			if failed > 0 {
				t.Fatalf("%d requests failed while workers were recycled", failed)
			}
			for i, w := range last.Workers {
				if w.PID == first.Workers[i].PID || w.Restarts != 0 || w.PID == 0 {
					t.Fatalf("worker %d after recycling: %+v (before: %+v)", i+1, w, first.Workers[i])
				}
			}
			if logs.FilterMessage("replacing worker").Filter(func(e observer.LoggedEntry) bool {
				return strings.Contains(e.ContextMap()["reason"].(string), c.reason)
			}).Len() == 0 {
				t.Fatalf("no recycling logged with reason %q", c.reason)
			}
		})
	}
}

// On its first start a pool serves at once: a request that arrives
// before any worker is healthy waits for the first one rather than get
// 503. Once the pool has booted, a pool without a worker answers 503 at
// once (TestNeverHealthyWorkerIsRestartedAndPoolAnswers503).
func TestRequestsWaitForTheFirstWorkerWhileThePoolBoots(t *testing.T) {
	p, srv := newPool(t, pool.Config{
		Workers: worker.Spec{Env: testworker.Env("slow-start"), Count: 2},
		Health:  health.Config{URI: "/healthz"},
	}, nil)
	if p.Healthy() != 0 {
		t.Fatal("a slow-starting worker is healthy at once")
	}
	if pid := pidOf(t, srv.Client(), srv.URL+"/"); pid == 0 {
		t.Fatal("no pid")
	}
}

// A WebSocket still open when a drain reaches stop_timeout gets a close
// frame with status 1001 (going away) from the pool, not a dropped
// connection (1006): its client reconnects as after a clean close.
func TestDrainTimeoutClosesWebSocketsGoingAway(t *testing.T) {
	p, srv := newPool(t, pool.Config{
		Workers: worker.Spec{Env: testworker.Env("serve"), Count: 1, StopTimeout: 300 * time.Millisecond},
		Health:  health.Config{URI: "/healthz"},
	}, nil)
	waitHealthy(t, p, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c := testworker.EchoSocket(ctx, t, srv.URL)
	read := make(chan error, 1)
	go func() {
		_, _, err := c.Read(ctx)
		read <- err
	}()
	if n, err := p.RollingRestart(ctx); err != nil || n != 1 {
		t.Fatalf("RollingRestart = %d, %v", n, err)
	}
	err := <-read
	if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
		t.Fatalf("the open socket ended with %v (status %d), want a close frame with status 1001", err, s)
	}
}

// A worker taken out for failed requests is logged with that reason
// alone, not with a probe failure from its start-up (a refused
// connection) as if it were current.
func TestOutOfRotationNamesWhatFailed(t *testing.T) {
	core, logs := observer.New(zap.WarnLevel)
	p, srv := newPool(t, pool.Config{
		Workers:  worker.Spec{Env: testworker.Env("serve"), Count: 1},
		Health:   health.Config{URI: "/healthz", Interval: 20 * time.Millisecond},
		Balancer: balancer.Config{Retries: new(0), PassiveFails: 2},
	}, zap.New(core))
	waitHealthy(t, p, 1)
	for range 2 {
		resp, err := srv.Client().Get(srv.URL + "/die")
		if err == nil {
			resp.Body.Close()
		}
	}
	testworker.Eventually(t, 10*time.Second, "the worker out of rotation", func() bool {
		return logs.FilterMessage("worker out of rotation").Len() > 0
	})
	for _, e := range logs.FilterMessage("worker out of rotation").All() {
		f := e.ContextMap()
		if f["why"] != "requests failed" || f["last_check"] != nil {
			t.Fatalf("out of rotation for failed requests, logged as %v", f)
		}
	}
}
