package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// socket.io through the pool: examples/socketio is a socket.io 4 server
// as socket.io's guides write one (sessions in the worker's memory,
// default transports: long-polling, then WebSocket), and client.js runs
// socket.io-client as an app's users would, keeping cookies as a
// browser does; both with the packages from the npm registry.

// socketIOExample returns examples/socketio's directory, its packages
// installed.
func socketIOExample(t *testing.T) string {
	t.Helper()
	return npmInstalled(t, "../../examples/socketio")
}

// sioPool is our Caddy in front of a pool of socket.io workers, with
// its admin API on a port of its own.
type sioPool struct {
	*caddyProc
	admin     string
	caddyfile string
}

// startSocketIOPool runs Caddy with count workers of the example's
// server.js and the given options.
func startSocketIOPool(t *testing.T, dir string, count int, options string) *sioPool {
	t.Helper()
	cfgDir := t.TempDir()
	port, adminPort := testworker.FreePort(t), testworker.FreePort(t)
	caddyfile := fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	worker_pool {
		name sio
		command node %s
		count %d
		health_uri /healthz
		health_interval 100ms
		%s
	}
}
`, adminPort, port, filepath.Join(dir, "server.js"), count, options)
	path := filepath.Join(cfgDir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &sioPool{caddyProc: runCaddy(t, cfgDir, port, path, nil), admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), caddyfile: caddyfile}
	testworker.Eventually(t, 30*time.Second, "every worker serving", func() bool {
		ws := p.workers()
		serving := 0
		for _, w := range ws {
			if w.Lifecycle == "serving" {
				serving++
			}
		}
		return serving == count
	})
	return p
}

// workers is the pool's workers as the admin API shows them.
func (p *sioPool) workers() []pool.WorkerStatus {
	resp, err := client.Get(p.admin + "/worker_pool/")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	var st []pool.Status
	if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st) != 1 {
		return nil
	}
	return st[0].Workers
}

// pids are the workers' pids now.
func (p *sioPool) pids() []int {
	var pids []int
	for _, w := range p.workers() {
		pids = append(pids, w.PID)
	}
	return pids
}

// awaitSessions waits until n sessions are open on WebSockets: streams
// of the workers.
func (p *sioPool) awaitSessions(t *testing.T, n int64) {
	t.Helper()
	testworker.Eventually(t, 20*time.Second, fmt.Sprintf("%d sessions on WebSockets", n), func() bool {
		var streams int64
		for _, w := range p.workers() {
			streams += w.Streams
		}
		return streams >= n
	})
}

// adminDo sends req to the admin API, which must answer 200.
func (p *sioPool) adminDo(t *testing.T, req *http.Request) {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", req.Method, req.URL.Path, resp.Status, body)
	}
}

// checkFirstTry asserts that every client of a run connected at its
// first attempt.
func checkFirstTry(t *testing.T, r sioRun) {
	t.Helper()
	if r.ConnectedFirstTry != r.Clients || r.ConnectErrors != 0 {
		t.Fatalf("%d of %d clients connected at the first attempt, %d connect errors: %q", r.ConnectedFirstTry, r.Clients, r.ConnectErrors, r.Errors)
	}
}

// held is how many requests and streams the workers hold now.
func (p *sioPool) held() int64 {
	var n int64
	for _, w := range p.workers() {
		n += w.Inflight + w.Streams
	}
	return n
}

// sioRun is what client.js prints.
type sioRun struct {
	Clients           int      `json:"clients"`
	ConnectedFirstTry int      `json:"connectedFirstTry"`
	ConnectErrors     int      `json:"connectErrors"`
	Errors            []string `json:"errors"`
	Sent              int      `json:"sent"`
	Acked             int      `json:"acked"`
	Lost              int      `json:"lost"`
	Upgraded          int      `json:"upgraded"`
	PerClient         []struct {
		PIDs        []int `json:"pids"`
		Connects    int   `json:"connects"`
		Disconnects []struct {
			PID    int    `json:"pid"`
			Reason string `json:"reason"`
		} `json:"disconnects"`
	} `json:"perClient"`
}

// startClients runs client.js against url in the background; wait
// returns what it printed.
func startClients(t *testing.T, dir, url string, args ...string) (wait func() sioRun) {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "client.js"), url}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
	})
	return func() sioRun {
		t.Helper()
		if err := <-done; err != nil {
			t.Fatalf("client.js %v: %v\n%s", args, err, stderr.Bytes())
		}
		done <- nil // for the cleanup
		var r sioRun
		if err := json.Unmarshal(bytes.TrimSpace(stdout.Bytes()), &r); err != nil {
			t.Fatalf("client.js printed %q: %v", stdout.Bytes(), err)
		}
		return r
	}
}

// checkSteady asserts a run in which nothing went wrong: every client
// connected at the first attempt and stayed, every acknowledgement
// arrived, every client upgraded to WebSocket.
func checkSteady(t *testing.T, r sioRun) {
	t.Helper()
	if r.ConnectedFirstTry != r.Clients || r.ConnectErrors != 0 || r.Lost != 0 || r.Acked != r.Sent || r.Upgraded != r.Clients {
		t.Fatalf("%d of %d clients connected at the first attempt, %d connect errors, %d of %d acknowledgements (%d lost), %d upgraded; errors: %q",
			r.ConnectedFirstTry, r.Clients, r.ConnectErrors, r.Acked, r.Sent, r.Lost, r.Upgraded, r.Errors)
	}
	pids := map[int]bool{}
	for i, c := range r.PerClient {
		if c.Connects != 1 || len(c.Disconnects) != 0 || len(c.PIDs) != 1 {
			t.Fatalf("client %d: %d connects, disconnects %+v, workers %v: want one session on one worker", i, c.Connects, c.Disconnects, c.PIDs)
		}
		pids[c.PIDs[0]] = true
	}
	if len(pids) < 2 {
		t.Fatalf("every client's session is on one worker: %v", pids)
	}
}

// TestSocketIOThroughCaddy: socket.io's default transports through a
// pool of 2 workers with balance cookie, under max_inflight auto and a
// fixed limit of 1: 8 clients for 20 s each connect at the first
// attempt, keep one session on one worker, and get every
// acknowledgement. Without parking, half the clients never connect
// (their worker's slot is held by another session's long poll); without
// the affinity cookie, polls reach a worker that does not know the
// session ("Session ID unknown").
func TestSocketIOThroughCaddy(t *testing.T) {
	dir := socketIOExample(t)
	for _, limit := range []string{"auto", "1"} {
		t.Run("max_inflight "+limit, func(t *testing.T) {
			p := startSocketIOPool(t, dir, 2, "balance cookie\n\t\tmax_inflight "+limit)
			r := startClients(t, dir, p.url, "8", "20", "200")()
			checkSteady(t, r)
			if r.Sent < 8*20*5/2 {
				t.Fatalf("%d events in 20 s from 8 clients sending 5 a second", r.Sent)
			}
			t.Logf("8 clients, 20 s: %d events acknowledged", r.Acked)
		})
	}
}

// TestSocketIORollingRestart: a rolling restart with 8 sessions open.
// A worker that leaves takes its sessions with it: their clients get a
// close frame when its drain ends, reconnect once, and are re-pinned to
// a worker in rotation with no error from the pool. No client loses its
// session on a worker that stays.
func TestSocketIORollingRestart(t *testing.T) {
	dir := socketIOExample(t)
	p := startSocketIOPool(t, dir, 2, "balance cookie\n\t\tstop_timeout 1s")
	old := p.pids()
	wait := startClients(t, dir, p.url, "8", "15", "200")
	p.awaitSessions(t, 8)
	req, _ := http.NewRequest(http.MethodPost, p.admin+"/worker_pool/sio/restart", nil)
	p.adminDo(t, req)
	r := wait()
	checkFirstTry(t, r)
	disconnects := 0
	for i, c := range r.PerClient {
		for _, d := range c.Disconnects {
			if !slices.Contains(old, d.PID) {
				t.Fatalf("client %d lost its session on worker pid %d, which was not restarted (old: %v): %+v", i, d.PID, old, c)
			}
		}
		if len(c.Disconnects) == 0 || c.Connects != 1+len(c.Disconnects) {
			t.Fatalf("client %d: %d connects, disconnects %+v: want one reconnection per restarted worker it was on", i, c.Connects, c.Disconnects)
		}
		if last := c.PIDs[len(c.PIDs)-1]; slices.Contains(old, last) {
			t.Fatalf("client %d ended on pid %d, a worker that was restarted", i, last)
		}
		disconnects += len(c.Disconnects)
	}
	// An event sent as its worker's drain ended may go unanswered;
	// nothing else may.
	if r.Lost > disconnects {
		t.Fatalf("%d acknowledgements lost over %d reconnections: %q", r.Lost, disconnects, r.Errors)
	}
	t.Logf("rolling restart: %d reconnections of 8 clients, %d of %d acknowledgements", disconnects, r.Acked, r.Sent)
}

// TestSocketIOReload: a reload that leaves the pool's config as it was
// keeps every session (the same workers, the same affinity cookies); a
// changed one replaces the workers, and their clients reconnect once,
// to the new ones.
func TestSocketIOReload(t *testing.T) {
	dir := socketIOExample(t)
	for _, changed := range []bool{false, true} {
		t.Run(map[bool]string{false: "unchanged pool", true: "changed pool"}[changed], func(t *testing.T) {
			p := startSocketIOPool(t, dir, 2, "balance cookie\n\t\tstop_timeout 1s")
			old := p.pids()
			wait := startClients(t, dir, p.url, "8", "10", "200")
			p.awaitSessions(t, 8)
			cfg := p.caddyfile
			if changed {
				cfg = strings.Replace(cfg, "stop_timeout 1s", "stop_timeout 1s\n\t\tenv DEPLOY 2", 1)
			}
			req, _ := http.NewRequest(http.MethodPost, p.admin+"/load", strings.NewReader(cfg))
			req.Header.Set("Content-Type", "text/caddyfile")
			req.Header.Set("Cache-Control", "must-revalidate") // reload even if the config is the same
			p.adminDo(t, req)
			r := wait()
			checkFirstTry(t, r)
			if !changed {
				checkSteady(t, r)
				for _, c := range r.PerClient {
					if !slices.Contains(old, c.PIDs[0]) {
						t.Fatalf("a session moved to pid %d, not one of the kept workers %v", c.PIDs[0], old)
					}
				}
				return
			}
			for i, c := range r.PerClient {
				if len(c.Disconnects) != 1 || c.Connects != 2 || slices.Contains(old, c.PIDs[len(c.PIDs)-1]) || !slices.Contains(old, c.Disconnects[0].PID) {
					t.Fatalf("client %d after a changed reload: %d connects, disconnects %+v, workers %v (old %v): want one reconnection, to a new worker", i, c.Connects, c.Disconnects, c.PIDs, old)
				}
			}
			if r.Lost > len(r.PerClient) {
				t.Fatalf("%d acknowledgements lost over %d reconnections: %q", r.Lost, len(r.PerClient), r.Errors)
			}
		})
	}
}

// TestLongPollsDoNotBlockTheSite: one worker holding 8 idle long polls
// (a plain route, and socket.io polling sessions) still serves short
// requests, under max_inflight auto, long before any poll returns; and
// a new socket.io client connects at the first attempt beside them.
// Before parking, the first short request waited for the first poll to
// end, and with socket.io's 25 s polls got 503 at the queue timeout.
func TestLongPollsDoNotBlockTheSite(t *testing.T) {
	dir := socketIOExample(t)
	t.Run("plain long polls", func(t *testing.T) {
		p := startSocketIOPool(t, dir, 1, "")
		const polls = 8
		answered := make(chan time.Time, polls)
		for range polls {
			go func() {
				resp, err := (&http.Client{Timeout: 30 * time.Second}).Get(p.url + "/wait?ms=8000")
				if err == nil {
					resp.Body.Close()
				}
				answered <- time.Now()
			}()
		}
		testworker.Eventually(t, 10*time.Second, "8 polls held", func() bool { return p.held() == polls })
		lat := shortRequests(t, p.url+"/hello", 20)
		select {
		case <-answered:
			t.Fatal("a long poll ended before the short requests beside it were served")
		default:
		}
		if h := p.held(); h != polls {
			t.Fatalf("%d requests held after the short ones, want the %d polls", h, polls)
		}
		text := scrapeText(t, p.admin+"/metrics")
		if s, n := metricValue(text, "caddy_worker_pool_worker_streams", `pool="sio"`), metricValue(text, "caddy_worker_pool_worker_parked_total", `pool="sio"`); s != polls || n < polls {
			t.Fatalf("metrics: worker_streams %v, worker_parked_total %v; want the %d parked polls", s, n, polls)
		}
		t.Logf("20 short requests beside %d parked polls: p50 %v, max %v", polls, lat[len(lat)/2], lat[len(lat)-1])
	})
	t.Run("socket.io polling sessions", func(t *testing.T) {
		p := startSocketIOPool(t, dir, 2, "balance cookie")
		// 8 clients that poll and never upgrade, sending nothing: each
		// holds a long poll on its worker.
		idle := startClients(t, dir, p.url, "8", "12", "600000", "polling")
		testworker.Eventually(t, 20*time.Second, "8 idle polls held", func() bool { return p.held() >= 8 })
		lat := shortRequests(t, p.url+"/hello", 20)
		// A new client beside them connects at once, and upgrades.
		fresh := startClients(t, dir, p.url, "1", "3", "200")()
		if fresh.ConnectedFirstTry != 1 || fresh.ConnectErrors != 0 || fresh.Acked == 0 || fresh.Lost != 0 {
			t.Fatalf("a new client beside 8 idle polling sessions: %+v", fresh)
		}
		r := idle()
		if r.ConnectedFirstTry != 8 || r.ConnectErrors != 0 {
			t.Fatalf("idle polling clients: %d of 8 connected at the first attempt: %q", r.ConnectedFirstTry, r.Errors)
		}
		for i, c := range r.PerClient {
			if len(c.Disconnects) != 0 {
				t.Fatalf("idle polling client %d lost its session: %+v", i, c.Disconnects)
			}
		}
		t.Logf("20 short requests beside 8 idle socket.io polling sessions: p50 %v, max %v", lat[len(lat)/2], lat[len(lat)-1])
	})
}

// shortRequests sends n GETs of url one after another, each of which
// must succeed, and returns their latencies, sorted.
func shortRequests(t *testing.T, url string, n int) []time.Duration {
	t.Helper()
	var lat []time.Duration
	for range n {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"pid"`) {
			t.Fatalf("short request beside long polls: %s %s", resp.Status, b)
		}
		lat = append(lat, time.Since(start))
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	return lat
}
