//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// The fault-injection suite: steady load through our Caddy to three
// workers of the example Node app, one fault per scenario, and a count
// of the requests that failed. With RELIABILITY_REPORT=<file> it writes
// the table to that file (docs/reliability.md is made this way, see the
// command there).

const (
	faultRate     = 100 // requests per second
	faultDuration = 3 * time.Second
	faultAt       = time.Second // when the fault is injected
	faultWorkers  = 3
)

// faultPool is a running Caddy with its admin endpoint.
type faultPool struct {
	*caddyProc
	admin     string
	caddyfile string
	path      string
}

func (f *faultPool) status(t *testing.T) pool.Status {
	t.Helper()
	resp, err := client.Get(f.admin + "/worker_pool/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st []pool.Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil || len(st) != 1 {
		t.Fatalf("admin status: %v %v", st, err)
	}
	return st[0]
}

func (f *faultPool) post(t *testing.T, path, contentType, body string) {
	t.Helper()
	resp, err := client.Post(f.admin+path, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST %s: %s %s", path, resp.Status, b)
	}
}

// poolCaddyfile is the Caddyfile of the suite, with extra pool options.
func poolCaddyfile(port, adminPort int, extra string) string {
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	%s
}
`, adminPort, port, faultPoolBlock(extra))
}

// faultPoolBlock is the suite's worker_pool, with extra options.
func faultPoolBlock(extra string) string {
	app, _ := filepath.Abs("../../examples/node/server.js")
	return fmt.Sprintf(`worker_pool {
		command node %s
		count %d
		health_uri /healthz
		health_interval 100ms
		health_timeout 200ms
		unhealthy_kill_after 300ms
		request_timeout 2s
		stop_timeout 5s
		%s
	}`, app, faultWorkers, extra)
}

func startFaultPool(t *testing.T, extra string, env ...string) *faultPool {
	t.Helper()
	return startFaultCaddy(t, func(port, adminPort int) string { return poolCaddyfile(port, adminPort, extra) }, env...)
}

// startFaultCaddy runs our Caddy with the Caddyfile that caddyfile gives
// for its site's port and its admin port, and waits until the pool's
// workers are healthy.
func startFaultCaddy(t *testing.T, caddyfile func(port, adminPort int) string, env ...string) *faultPool {
	t.Helper()
	port, adminPort := testworker.FreePort(t), testworker.FreePort(t)
	dir := t.TempDir()
	f := &faultPool{admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), caddyfile: caddyfile(port, adminPort)}
	f.path = filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(f.path, []byte(f.caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	f.caddyProc = runCaddy(t, dir, port, f.path, env)
	testworker.Eventually(t, 30*time.Second, "every worker healthy", func() bool {
		resp, err := client.Get(f.admin + "/worker_pool/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st []pool.Status
		return json.NewDecoder(resp.Body).Decode(&st) == nil && len(st) == 1 && st[0].Healthy == faultWorkers
	})
	return f
}

// recovery measures, in the background, the time from now until every
// worker is healthy and cond holds; wait returns it.
func (f *faultPool) recovery(t *testing.T, cond func(pool.Status) bool) (wait func() time.Duration) {
	start := time.Now()
	done := make(chan time.Duration, 1)
	go func() {
		deadline := start.Add(30 * time.Second)
		for time.Now().Before(deadline) {
			resp, err := client.Get(f.admin + "/worker_pool/")
			if err == nil {
				var st []pool.Status
				ok := json.NewDecoder(resp.Body).Decode(&st) == nil && len(st) == 1
				resp.Body.Close()
				if ok && st[0].Healthy == faultWorkers && cond(st[0]) {
					done <- time.Since(start)
					return
				}
			}
			time.Sleep(10 * time.Millisecond) // polling the admin API
		}
		done <- -1
	}()
	return func() time.Duration {
		d := <-done
		if d < 0 {
			t.Error("the pool did not recover within 30s")
		}
		return d
	}
}

// loadResult counts the outcome of the steady load.
type loadResult struct {
	sent, failed int
	// shortButComplete counts 200s whose body was shorter than promised
	// yet read without an error: a truncated body taken as whole. Must be 0.
	shortButComplete int
	kinds            map[string]int
	// resent counts GETs sent again after the server closed their idle
	// connection before reading them.
	resent int
	// firstErr is the first transport error's text, to say what it was.
	firstErr string
}

// steadyLoad sends faultRate requests per second for faultDuration and
// calls inject at faultAt.
func steadyLoad(url string, inject func()) loadResult {
	var mu sync.Mutex
	res := loadResult{kinds: map[string]int{}}
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / faultRate)
	defer tick.Stop()
	start := time.Now()
	injected := false
	for time.Since(start) < faultDuration {
		<-tick.C
		if !injected && time.Since(start) >= faultAt {
			injected = true
			wg.Go(inject)
		}
		wg.Go(func() {
			kind := ""
			resp, err := client.Get(url + "/work?ms=1")
			if errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) {
				// An idle keep-alive connection closed by the server as the
				// request went out (a reload shuts the old server down: EOF,
				// or a reset where the request's bytes met the closed
				// socket); the request reached no handler. Clients send a
				// GET again, as browsers do.
				mu.Lock()
				res.resent++
				mu.Unlock()
				resp, err = client.Get(url + "/work?ms=1")
			}
			if err != nil {
				kind = "transport error"
				mu.Lock()
				if res.firstErr == "" {
					res.firstErr = err.Error()
				}
				mu.Unlock()
			} else {
				body, rerr := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case rerr != nil:
					kind = "broken response"
				case resp.StatusCode != 200:
					kind = resp.Status
				case resp.ContentLength >= 0 && int64(len(body)) != resp.ContentLength:
					kind = "short body"
				}
			}
			mu.Lock()
			defer mu.Unlock()
			res.sent++
			if kind != "" {
				res.failed++
				res.kinds[kind]++
				if kind == "short body" {
					res.shortButComplete++
				}
			}
		})
	}
	wg.Wait()
	return res
}

// reliabilityRow is one line of docs/reliability.md.
type reliabilityRow struct {
	scenario        string
	sent, failed    int
	allowed, detail string
	recovery        time.Duration
}

var (
	reportMu sync.Mutex
	report   []reliabilityRow
)

func record(t *testing.T, row reliabilityRow) {
	t.Logf("%s: sent %d, failed %d (%s), recovery %v", row.scenario, row.sent, row.failed, row.detail, row.recovery)
	reportMu.Lock()
	report = append(report, row)
	reportMu.Unlock()
}

func kinds(r loadResult) string {
	var parts []string
	if r.resent > 0 {
		parts = append(parts, fmt.Sprintf("(%d re-sent after the old server closed an idle connection)", r.resent))
	}
	if r.failed == 0 && len(parts) == 0 {
		return "—"
	}
	for k, n := range r.kinds {
		if k == "transport error" && r.firstErr != "" {
			k += " (the first: " + r.firstErr + ")"
		}
		parts = append(parts, fmt.Sprintf("%d × %s", n, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

func pidsOf(st pool.Status) map[int]bool {
	m := map[int]bool{}
	for _, w := range st.Workers {
		m[w.PID] = true
	}
	return m
}

func TestFaultInjection(t *testing.T) {
	if testing.Short() {
		t.Skip("the fault-injection suite runs for about a minute")
	}
	t.Cleanup(func() { writeReliabilityReport(t) })

	t.Run("bad input", runBadInput)

	t.Run("SIGKILL a worker", func(t *testing.T) {
		f := startFaultPool(t, "")
		var victim pool.WorkerStatus
		var wait func() time.Duration
		res := steadyLoad(f.url, func() {
			victim = f.status(t).Workers[0]
			_ = syscall.Kill(victim.PID, syscall.SIGKILL)
			wait = f.recovery(t, func(st pool.Status) bool { return st.Workers[0].PID != victim.PID })
		})
		rec := wait()
		// Only the requests the killed worker held may fail: at most its
		// in-flight limit; requests not yet sent to it are retried.
		allowed := int(max(victim.Limit, 1))
		if res.failed > allowed {
			t.Errorf("%d failed (%s); the killed worker could hold at most %d", res.failed, kinds(res), allowed)
		}
		record(t, reliabilityRow{"SIGKILL one worker", res.sent, res.failed, fmt.Sprintf("≤ %d (its requests in flight)", allowed), kinds(res), rec})
	})

	t.Run("SIGSTOP a worker", func(t *testing.T) {
		f := startFaultPool(t, "")
		var victim pool.WorkerStatus
		var wait func() time.Duration
		res := steadyLoad(f.url, func() {
			victim = f.status(t).Workers[0]
			_ = syscall.Kill(victim.PID, syscall.SIGSTOP)
			wait = f.recovery(t, func(st pool.Status) bool { return st.Workers[0].PID != victim.PID })
		})
		rec := wait()
		if testworker.Alive(victim.PID) {
			_ = syscall.Kill(victim.PID, syscall.SIGKILL)
			t.Errorf("the stopped worker %d was not killed", victim.PID)
		}
		allowed := int(max(victim.Limit, 1))
		if res.failed > allowed {
			t.Errorf("%d failed (%s); the hung worker could hold at most %d", res.failed, kinds(res), allowed)
		}
		record(t, reliabilityRow{"SIGSTOP one worker (hung event loop)", res.sent, res.failed, fmt.Sprintf("≤ %d (its requests in flight, 504 after request_timeout)", allowed), kinds(res), rec})
	})

	t.Run("a worker answers garbage", func(t *testing.T) {
		f := startFaultPool(t, "", "FAULT_WORKER=2", "FAULT=garbage")
		start := time.Now()
		sawOpen := false
		res := steadyLoad(f.url, func() { sawOpen = breakerOpens(t, f, 1, start) })
		if !sawOpen {
			t.Error("the breaker of the worker that answers garbage never opened")
		}
		// Its answers are transport errors before any response byte: the
		// idempotent GETs are retried on the others.
		if res.failed > 0 {
			t.Errorf("%d failed (%s); garbage from one worker must be retried elsewhere", res.failed, kinds(res))
		}
		record(t, reliabilityRow{"one worker answers garbage bytes", res.sent, res.failed, "0 (retried elsewhere; its breaker opens)", kinds(res), 0})
	})

	t.Run("a worker closes mid-response", func(t *testing.T) {
		f := startFaultPool(t, "", "FAULT_WORKER=2", "FAULT=truncate")
		start := time.Now()
		sawOpen := false
		res := steadyLoad(f.url, func() { sawOpen = breakerOpens(t, f, 1, start) })
		if !sawOpen {
			t.Error("the breaker of the worker that cuts its responses never opened")
		}
		if res.shortButComplete > 0 {
			t.Errorf("%d truncated bodies were presented as complete", res.shortButComplete)
		}
		// A cut response aborts the client's connection too. Where the
		// client had not received a byte yet, its HTTP library retries
		// the GET by itself; the rest see a broken response. The breaker
		// (5 failures) and passive health (3) take the worker out.
		if res.failed > 10 {
			t.Errorf("%d failed (%s); the breaker should have taken the worker out after 5", res.failed, kinds(res))
		}
		record(t, reliabilityRow{"one worker closes the connection mid-response", res.sent, res.failed, "≤ 10, each a broken response, none a short body taken as whole; its breaker opens", kinds(res), 0})
	})

	for _, c := range []struct {
		name    string
		changed bool
	}{{"reload, unchanged config", false}, {"reload, changed config", true}} {
		t.Run(c.name, func(t *testing.T) {
			f := startFaultPool(t, "")
			before := pidsOf(f.status(t))
			cfg := f.caddyfile
			if c.changed {
				cfg = strings.Replace(cfg, "stop_timeout 5s", "stop_timeout 5s\n\t\tenv DEPLOY 2", 1)
			}
			var wait func() time.Duration
			res := steadyLoad(f.url, func() {
				wait = f.recovery(t, func(st pool.Status) bool {
					for pid := range pidsOf(st) {
						if before[pid] == c.changed {
							return false
						}
					}
					return true
				})
				f.post(t, "/load", "text/caddyfile", cfg)
			})
			rec := wait()
			if res.failed > 0 {
				t.Errorf("%d failed (%s) during the reload", res.failed, kinds(res))
			}
			note := "0 (same workers kept)"
			if c.changed {
				note = "0 (new workers healthy before the switch)"
			}
			record(t, reliabilityRow{"config reload, " + map[bool]string{false: "unchanged", true: "changed"}[c.changed] + " pool", res.sent, res.failed, note, kinds(res), rec})
		})
	}

	t.Run("rolling restart", func(t *testing.T) {
		f := startFaultPool(t, "")
		res, rec := f.rollingRestart(t)
		if res.failed > 0 {
			t.Errorf("%d failed (%s) during the rolling restart", res.failed, kinds(res))
		}
		record(t, reliabilityRow{"rolling restart (admin API)", res.sent, res.failed, "0", kinds(res), rec})
	})

	t.Run("rolling restart with open event streams", func(t *testing.T) {
		f := startFaultPool(t, "")
		const events = 25 // 100 ms apart: they outlast the start of the restart
		streams := make([]<-chan sseResult, 6)
		for i := range streams {
			streams[i] = readEvents(f.url + fmt.Sprintf("/events?n=%d&every=100", events))
		}
		testworker.Eventually(t, 5*time.Second, "streams open", func() bool {
			n := int64(0)
			for _, w := range f.status(t).Workers {
				n += w.Streams
			}
			return n == int64(len(streams))
		})
		res, rec := f.rollingRestart(t)
		cut := 0
		for i, ch := range streams {
			r := <-ch
			// The drain waits for open streams up to stop_timeout (5s),
			// longer than these last: each gets all its events, neither a
			// goodbye from a worker told to stop nor a cut.
			if r.err != nil || r.events != events || r.bye {
				cut++
				t.Errorf("stream %d: %d of %d events, goodbye %v, error %v", i, r.events, events, r.bye, r.err)
			}
		}
		if res.failed > 0 {
			t.Errorf("%d failed (%s) during the rolling restart", res.failed, kinds(res))
		}
		record(t, reliabilityRow{fmt.Sprintf("rolling restart with %d open event streams (%d cut)", len(streams), cut), res.sent, res.failed,
			"0; every stream gets all its events: the old worker stops only once its streams end (or stop_timeout passes)", kinds(res), rec})
	})

	t.Run("malformed request bodies under load", func(t *testing.T) {
		f := startFaultPool(t, "")
		const bad = 20
		codes := make(chan string, bad)
		res := steadyLoad(f.url, func() {
			for range bad {
				codes <- malformedChunkedPost(f.url)
			}
		})
		close(codes)
		for c := range codes {
			if c != "400" {
				t.Errorf("a malformed chunked body got %q, want 400", c)
			}
		}
		st := f.status(t)
		for _, w := range st.Workers {
			if !w.Healthy || w.Breaker != "closed" {
				t.Errorf("worker %d after clients' malformed bodies: healthy %v, breaker %s", w.ID, w.Healthy, w.Breaker)
			}
		}
		if res.failed > 0 {
			t.Errorf("%d good requests failed (%s) beside the malformed ones", res.failed, kinds(res))
		}
		record(t, reliabilityRow{fmt.Sprintf("%d malformed chunked request bodies amid the load", bad), res.sent, res.failed,
			"0; each malformed one gets 400, no worker is blamed (all healthy, breakers closed)", kinds(res), 0})
	})

	t.Run("Expect: 100-continue to a worker that does not answer", func(t *testing.T) {
		f := startFaultPool(t, "")
		var took time.Duration
		var status int
		res := steadyLoad(f.url, func() {
			start := time.Now()
			status = expectContinuePost(t, f.url+"/sleep?ms=8000")
			took = time.Since(start)
		})
		// request_timeout is 2s: the worker's 100 Continue is no answer.
		if status != 504 || took > 4*time.Second {
			t.Errorf("POST with Expect: 100-continue to a worker that answers after 8s: %d after %v, want 504 after request_timeout (2s)", status, took)
		}
		if res.failed > 0 {
			t.Errorf("%d failed (%s)", res.failed, kinds(res))
		}
		record(t, reliabilityRow{"Expect: 100-continue to a worker that then does not answer", res.sent, res.failed,
			fmt.Sprintf("0; that request gets %d after %v (request_timeout 2s)", status, took.Round(10*time.Millisecond)), kinds(res), 0})
	})

	for _, c := range []struct{ name, option, row string }{
		{"max_requests recycling", "max_requests 60 jitter 20", "max_requests recycling"},
		// Every Node process holds more than 8 MiB: each is replaced.
		{"max_memory recycling", "max_memory 8MiB", "max_memory above the worker's RSS"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := startFaultPool(t, c.option)
			res := steadyLoad(f.url, func() {})
			recycles := 0
			for _, w := range f.status(t).Workers {
				recycles += w.Recycles
			}
			if recycles == 0 {
				t.Error("no worker was replaced")
			}
			if res.failed > 0 {
				t.Errorf("%d failed (%s) while workers were replaced", res.failed, kinds(res))
			}
			record(t, reliabilityRow{fmt.Sprintf("%s (%d replacements)", c.row, recycles), res.sent, res.failed, "0", kinds(res), 0})
		})
	}
}

// rollingRestart asks the admin API for a rolling restart amid the
// steady load, and measures the time until every worker is a new one.
func (f *faultPool) rollingRestart(t *testing.T) (loadResult, time.Duration) {
	before := pidsOf(f.status(t))
	var wait func() time.Duration
	res := steadyLoad(f.url, func() {
		wait = f.recovery(t, func(st pool.Status) bool {
			for pid := range pidsOf(st) {
				if before[pid] {
					return false
				}
			}
			return true
		})
		f.post(t, "/worker_pool/default/restart", "", "")
	})
	return res, wait()
}

// breakerOpens polls (the admin API has no events) whether worker i's
// breaker opens before the load ends.
func breakerOpens(t *testing.T, f *faultPool, i int, start time.Time) bool {
	for time.Since(start) < faultDuration {
		if f.status(t).Workers[i].Breaker == "open" {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return false
}

// keepMarker starts the part of docs/reliability.md that the fault
// suite does not write.
const keepMarker = "<!-- written by hand below -->"

func writeReliabilityReport(t *testing.T) {
	path := os.Getenv("RELIABILITY_REPORT")
	if path == "" || t.Failed() {
		return
	}
	var b strings.Builder
	b.WriteString(`# Reliability under faults

Made by the fault-injection suite (` + "`cmd/caddy/fault_test.go`" + `):

` + "```sh\nRELIABILITY_REPORT=$PWD/docs/reliability.md go test -count=1 -run TestFaultInjection ./cmd/caddy\n```" + `

Each scenario runs our Caddy (this repository's build, with the race
detector when run from ` + "`go test -race`" + `) in front of 3 workers of
` + "`examples/node/server.js`" + ` and sends ` + fmt.Sprint(faultRate) + ` requests/s of ` + "`GET /work?ms=1`" + ` for
` + faultDuration.String() + `, injecting the fault at ` + faultAt.String() + `. Options: default balancing
(` + "`least_inflight`, `max_inflight auto`" + `), ` + "`health_interval 100ms`, `health_timeout 200ms`, `unhealthy_kill_after 300ms`, `request_timeout 2s`" + `.
Recovery is the time from the fault until every worker is healthy again
(with new processes where the fault replaces them).

| scenario | requests sent | failed | allowed | failures | recovery |
|---|---|---|---|---|---|
`)
	for _, r := range report {
		rec := "—"
		if r.recovery > 0 {
			rec = r.recovery.Round(10 * time.Millisecond).String()
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %s | %s | %s |\n", r.scenario, r.sent, r.failed, r.allowed, r.detail, rec)
	}
	writeBadInputReport(&b)
	// What follows the marker is written by hand (figures of other
	// tests) and kept.
	if old, err := os.ReadFile(path); err == nil {
		if i := strings.Index(string(old), keepMarker); i >= 0 {
			b.WriteString("\n" + string(old[i:]))
		}
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}

// sseResult is how one event stream went.
type sseResult struct {
	events int
	bye    bool
	err    error
}

// readEvents reads the server-sent events at url until the stream ends.
func readEvents(url string) <-chan sseResult {
	ch := make(chan sseResult, 1)
	go func() {
		var r sseResult
		defer func() { ch <- r }()
		resp, err := (&http.Client{}).Get(url)
		if err != nil {
			r.err = err
			return
		}
		defer resp.Body.Close()
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			switch line := sc.Text(); {
			case strings.HasPrefix(line, "id: "):
				r.events++
			case line == "event: bye":
				r.bye = true
			}
		}
		r.err = sc.Err()
	}()
	return ch
}

// malformedChunkedPost sends, on a raw socket, a POST whose chunked body
// lies about its chunk size to a route that reads the whole body before
// it answers, and returns the response's status code.
func malformedChunkedPost(url string) string {
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		return err.Error()
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(conn, "POST /orders HTTP/1.1\r\nHost: "+conn.RemoteAddr().String()+"\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n")
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err.Error()
	}
	if f := strings.Fields(line); len(f) >= 2 {
		return f[1]
	}
	return line
}

// expectContinuePost posts 4 KiB with Expect: 100-continue, waiting for
// the 100 before sending the body, as curl does, and returns the status.
func expectContinuePost(t *testing.T, url string) int {
	c := &http.Client{Transport: &http.Transport{ExpectContinueTimeout: 5 * time.Second}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(strings.Repeat("x", 4096)))
	req.Header.Set("Expect", "100-continue")
	resp, err := c.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}
