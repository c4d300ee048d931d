package caddymodule_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-workerpool/caddy-workerpool/caddymodule"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// chromium finds a headless-capable Chromium. CI installs it (.ci/run);
// elsewhere a missing browser skips the test, saying how to get it.
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("chromium is required in CI: apt-get install chromium")
	}
	t.Skip("chromium not found: apt-get install chromium to run the status page test")
	return ""
}

// headless runs Chromium on url with the given extra flags and returns
// its standard output.
func headless(t *testing.T, browser, url string, flags ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	args := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--user-data-dir=" + t.TempDir(), "--virtual-time-budget=4000",
	}, flags...)
	var out, errs bytes.Buffer
	cmd := exec.CommandContext(ctx, browser, append(args, url)...)
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium %v: %v\n%s", flags, err, errs.String())
	}
	return out.String()
}

// The status page, opened in a real browser, shows the workers of a
// running pool: every pid, its state and the request it holds; and the
// pool's floor and ceiling.
func TestStatusPageInChromium(t *testing.T) {
	browser := chromium(t)
	port := testworker.FreePort(t)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	handle /status {
		worker_pool_status web
	}
	handle {
		worker_pool {
			name web
			command %s
			env %s serve
			env GORACE atexit_sleep_ms=0
			count 2
			max_count 3
			max_inflight 1
			health_uri /healthz
			health_interval 50ms
		}
	}
}
`, port, testworker.Command(), testworker.ModeEnv))
	defer stop(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitServing(t, base+"/", 2)

	// One request held by a worker, so the page has something in flight.
	blocked := make(chan error, 1)
	go func() {
		// Held while Chromium runs twice: longer than client's timeout.
		long := &http.Client{Timeout: 2 * time.Minute}
		resp, err := long.Get(base + "/block")
		if err == nil {
			resp.Body.Close()
		}
		blocked <- err
	}()
	var st []pool.Status
	testworker.Eventually(t, 5*time.Second, "a request in flight", func() bool {
		resp, err := client.Get(base + "/status?format=json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		st = nil
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st) != 1 {
			return false
		}
		return st[0].Workers[0].Inflight+st[0].Workers[1].Inflight == 1
	})

	dom := headless(t, browser, base+"/status", "--dump-dom")
	if !strings.Contains(dom, `data-pool="web"`) {
		t.Fatalf("the page shows no pool web; DOM:\n%s", dom)
	}
	for _, w := range st[0].Workers {
		want := fmt.Sprintf(`data-pid="%d" data-state="healthy"`, w.PID)
		if !strings.Contains(dom, want) {
			t.Errorf("the page does not show worker %d (%s); DOM:\n%s", w.ID, want, dom)
		}
	}
	if !strings.Contains(dom, `data-floor="2" data-ceiling="3"`) {
		t.Errorf("the page does not show the floor and the ceiling; DOM:\n%s", dom)
	}
	if !strings.Contains(dom, "1 / 1") {
		t.Errorf("the page shows no worker with 1 of 1 requests in flight; DOM:\n%s", dom)
	}
	if !strings.Contains(dom, `>streams</th>`) || !strings.Contains(dom, `class="num streams"`) {
		t.Errorf("the page has no streams column (WebSockets, gRPC streams, parked long polls); DOM:\n%s", dom)
	}
	if !strings.Contains(dom, `id="conn" class="conn">updated`) {
		t.Errorf("the page did not say it polled its JSON; DOM:\n%s", dom)
	}

	// A screenshot for people to look at.
	shot := os.Getenv("STATUS_SCREENSHOT")
	if shot == "" {
		shot = filepath.Join(t.TempDir(), "status.png")
	}
	shot, _ = filepath.Abs(shot)
	headless(t, browser, base+"/status", "--screenshot="+shot, "--window-size=1200,520", "--hide-scrollbars")
	png, err := os.ReadFile(shot)
	if err != nil || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("no screenshot at %s: %v", shot, err)
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))

	// Straight to the worker that holds it: through the pool, the
	// release would go to the other worker, the one with room.
	holder := st[0].Workers[0]
	if holder.Inflight == 0 {
		holder = st[0].Workers[1]
	}
	release, err := client.Post("http://"+holder.Address+"/release", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	release.Body.Close()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
}

// The status page, in a real browser, marks a worker that the bind
// check found listening beyond loopback, with the addresses; the other
// worker is not marked.
func TestStatusPageMarksExposedWorkers(t *testing.T) {
	browser := chromium(t)
	if runtime.GOOS != "linux" {
		t.Skip("the bind check reads /proc")
	}
	port := testworker.FreePort(t)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	handle /status {
		worker_pool_status
	}
	handle /exposed* {
		worker_pool {
			name exposed
			command %s
			env %s every-interface
			env GORACE atexit_sleep_ms=0
			count 1
			health_uri /healthz
			health_interval 50ms
		}
	}
	handle {
		worker_pool {
			name loopback
			command %s
			env %s serve
			env GORACE atexit_sleep_ms=0
			count 1
			health_uri /healthz
			health_interval 50ms
		}
	}
}
`, port, testworker.Command(), testworker.ModeEnv, testworker.Command(), testworker.ModeEnv))
	defer stop(t)
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	var exposed []string
	testworker.Eventually(t, 10*time.Second, "both pools serving", func() bool {
		resp, err := client.Get(base + "/status?format=json")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st []pool.Status
		if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st) != 2 || st[0].Healthy+st[1].Healthy != 2 {
			return false
		}
		for _, p := range st {
			if p.Name == "exposed" {
				exposed = p.Workers[0].ExposedOn
			} else if len(p.Workers[0].ExposedOn) > 0 {
				t.Fatalf("a loopback worker reported exposed: %+v", p.Workers[0])
			}
		}
		return len(exposed) > 0
	})
	dom := headless(t, browser, base+"/status", "--dump-dom")
	if n := strings.Count(dom, `class="state exposed"`); n != 1 {
		t.Fatalf("%d workers marked exposed, want 1; DOM:\n%s", n, dom)
	}
	if !strings.Contains(dom, `data-exposed="`+strings.Join(exposed, " ")+`"`) {
		t.Fatalf("the page does not show the addresses %v; DOM:\n%s", exposed, dom)
	}
}

func TestStatusPageGuards(t *testing.T) {
	s := &caddymodule.StatusPage{}
	serve := func(method, remote, target string) *http.Response {
		r := httptest.NewRequest(method, target, nil)
		r.RemoteAddr = remote
		w := httptest.NewRecorder()
		if err := s.ServeHTTP(w, r, nil); err != nil {
			t.Fatal(err)
		}
		return w.Result()
	}
	resp := serve(http.MethodGet, "203.0.113.7:5000", "/status")
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusForbidden || !strings.Contains(string(body), "allow_remote") ||
		resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Errorf("remote client: %s %s %s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	if resp := serve(http.MethodPost, "127.0.0.1:5000", "/status"); resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Errorf("POST: %s, Allow %q", resp.Status, resp.Header.Get("Allow"))
	}
	resp = serve(http.MethodGet, "[::1]:5000", "/status")
	page, _ := io.ReadAll(resp.Body)
	csp := resp.Header.Get("Content-Security-Policy")
	if resp.StatusCode != 200 || !strings.Contains(string(page), "<title>Worker pools</title>") ||
		!strings.Contains(csp, "default-src 'none'") || !strings.Contains(csp, "script-src 'sha256-") ||
		strings.Contains(string(page), "/*SCRIPT*/") {
		t.Errorf("page: %s, CSP %q", resp.Status, csp)
	}
	if strings.Contains(string(page), "src=\"http") || strings.Contains(string(page), "href=\"http") {
		t.Error("the page loads external assets")
	}
	resp = serve(http.MethodGet, "127.0.0.1:5000", "/status?format=json")
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "application/json" {
		t.Errorf("JSON: %s %s", resp.Status, ct)
	}
	s.AllowRemote = true
	if resp := serve(http.MethodGet, "203.0.113.7:5000", "/status"); resp.StatusCode != 200 {
		t.Errorf("remote client with allow_remote: %s", resp.Status)
	}
}

func TestStatusPageCaddyfile(t *testing.T) {
	var s caddymodule.StatusPage
	if err := s.UnmarshalCaddyfile(caddyfile.NewTestDispenser("worker_pool_status web api {\n allow_remote\n}")); err != nil {
		t.Fatal(err)
	}
	if len(s.Pools) != 2 || s.Pools[1] != "api" || !s.AllowRemote {
		t.Fatalf("%+v", s)
	}
	err := (&caddymodule.StatusPage{}).UnmarshalCaddyfile(caddyfile.NewTestDispenser("worker_pool_status {\n public\n}"))
	if err == nil || !strings.Contains(err.Error(), `unrecognized worker_pool_status option "public"`) {
		t.Fatalf("error %v", err)
	}
}

// Without allow_remote the page answers only clients on this machine,
// judged by the connection's peer: a remote client that a trusted proxy
// forwards cannot claim 127.0.0.1 in X-Forwarded-For, and a remote client
// forwarded by a trusted proxy on loopback is still remote.
func TestStatusPageJudgesTheTCPPeer(t *testing.T) {
	ip := testworker.NonLoopbackIPv4()
	if ip == "" {
		t.Skip("this machine has no IPv4 address but loopback: no client can look remote")
	}
	port := testworker.FreePort(t)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	servers {
		trusted_proxies static %s/32 127.0.0.1/32
	}
}

http://:%d {
	worker_pool_status
}
`, ip, port))
	defer stop(t)
	for _, c := range []struct {
		from, forwardedFor string
		status             int
	}{
		{ip, "127.0.0.1", http.StatusForbidden},
		{ip, "::1", http.StatusForbidden},
		{ip, "", http.StatusForbidden},
		{"127.0.0.1", "203.0.113.7", http.StatusForbidden},
		{"127.0.0.1", "", http.StatusOK},
		{"127.0.0.1", "127.0.0.1", http.StatusOK},
	} {
		req, err := http.NewRequest("GET", fmt.Sprintf("http://%s/?format=json", net.JoinHostPort(c.from, strconv.Itoa(port))), nil)
		if err != nil {
			t.Fatal(err)
		}
		if c.forwardedFor != "" {
			req.Header.Set("X-Forwarded-For", c.forwardedFor)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("from %s, X-Forwarded-For %q: %s %s; want %d", c.from, c.forwardedFor, resp.Status, body, c.status)
		}
	}
}
