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
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// caddyEnv makes the test binary run as our Caddy (this package's main),
// so the end-to-end tests run the very build they test, race detector
// included, without a second build.
const caddyEnv = "WORKERPOOL_E2E_CADDY"

func TestMain(m *testing.M) {
	if os.Getenv(caddyEnv) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

type caddyProc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	url    string
	log    *lockedBuffer
}

// lockedBuffer collects Caddy's output for a failing test's log.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// startCaddy runs our Caddy with the example Node app in a pool of count.
func startCaddy(t *testing.T, count int) *caddyProc {
	return startCaddyWith(t, count, "node %s")
}

// startCaddyWith runs the command format (given the app's path).
func startCaddyWith(t *testing.T, count int, command string) *caddyProc {
	t.Helper()
	return startPool(t, count, command, "")
}

// startPool runs the command format (given the app's path) in a pool of
// count with more worker_pool options.
func startPool(t *testing.T, count int, command, options string) *caddyProc {
	t.Helper()
	return startPoolWith(t, "", count, command, options)
}

// startPoolWith is startPool with more global options.
func startPoolWith(t *testing.T, globals string, count int, command, options string) *caddyProc {
	t.Helper()
	app, err := filepath.Abs("../../examples/node/server.js")
	if err != nil {
		t.Fatal(err)
	}
	return startCommandPool(t, globals, count, fmt.Sprintf(command, app), options)
}

// startCommandPool runs our Caddy with a pool of count workers running
// the command line, with more global and worker_pool options.
func startCommandPool(t *testing.T, globals string, count int, command, options string) *caddyProc {
	t.Helper()
	dir := t.TempDir()
	port := testworker.FreePort(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
	%s
}

http://127.0.0.1:%d {
	worker_pool {
		command %s
		count %d
		health_uri /healthz
		health_interval 100ms
		stop_timeout 5s
		%s
	}
}
`, globals, port, command, count, options)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	return runCaddy(t, dir, port, path, nil)
}

// runCaddy runs our Caddy (this test binary as main) with the Caddyfile
// at path, serving on port; extra environment goes to it and its
// workers. The test's end kills it.
func runCaddy(t *testing.T, dir string, port int, path string, env []string) *caddyProc {
	t.Helper()
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is required for the end-to-end tests (Node.js 20 is on every machine of this project)")
	}
	return runCommand(t, dir, port, env, "run", "--config", path, "--adapter", "caddyfile")
}

// runCommand runs our Caddy (this test binary as main) with args, its
// data and config in dir, serving on port; extra environment goes to it
// and its workers. The test's end kills it.
func runCommand(t *testing.T, dir string, port int, env []string, args ...string) *caddyProc {
	t.Helper()
	self, _ := os.Executable()
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), caddyEnv+"=1", "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir, "GORACE=atexit_sleep_ms=0")
	cmd.Env = append(cmd.Env, env...)
	logs := &lockedBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &caddyProc{cmd: cmd, exited: make(chan struct{}), url: fmt.Sprintf("http://127.0.0.1:%d", port), log: logs}
	go func() { _ = cmd.Wait(); close(c.exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-c.exited
		if t.Failed() {
			t.Logf("caddy log:\n%s", c.log.String())
		}
	})
	return c
}

var client = &http.Client{Timeout: 10 * time.Second}

type reply struct {
	PID    int `json:"pid"`
	Worker int `json:"worker"`
}

func get(url string) (reply, int, error) {
	resp, err := client.Get(url)
	if err != nil {
		return reply{}, 0, err
	}
	defer resp.Body.Close()
	var r reply
	if resp.StatusCode == 200 {
		err = json.NewDecoder(resp.Body).Decode(&r)
	}
	return r, resp.StatusCode, err
}

// servingPIDs sends n requests and returns which pids answered; nil if
// any request failed.
func servingPIDs(url string, n int) map[int]bool {
	seen := map[int]bool{}
	for range n {
		r, code, err := get(url)
		if err != nil || code != 200 {
			return nil
		}
		seen[r.PID] = true
	}
	return seen
}

func waitPIDs(t *testing.T, c *caddyProc, count int) map[int]bool {
	t.Helper()
	var seen map[int]bool
	testworker.Eventually(t, 30*time.Second, fmt.Sprintf("%d Node workers serving through Caddy", count), func() bool {
		seen = servingPIDs(c.url+"/", 20*count)
		return len(seen) == count
	})
	return seen
}

func TestExampleAppThroughCaddy(t *testing.T) {
	c := startCaddy(t, 3)
	pids := waitPIDs(t, c, 3)

	// The CPU-heavy and echo routes work through the pool.
	if r, code, err := get(c.url + "/work?ms=5"); err != nil || code != 200 || !pids[r.PID] {
		t.Fatalf("/work: %+v %d %v", r, code, err)
	}
	resp, err := client.Post(c.url+"/echo", "text/plain", strings.NewReader("ping"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "ping" {
		t.Fatalf("/echo answered %q", body)
	}

	// Kill one worker: the pool heals, the dead pid never answers again.
	var victim int
	for pid := range pids {
		victim = pid
		break
	}
	if err := testworker.Kill(victim); err != nil {
		t.Fatal(err)
	}
	healed := waitPIDs(t, c, 3)
	if healed[victim] {
		t.Fatalf("killed pid %d still answers", victim)
	}

	// Stopping Caddy stops every worker.
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("caddy did not exit on SIGTERM")
	}
	for pid := range healed {
		if testworker.Alive(pid) {
			t.Fatalf("worker %d outlived caddy", pid)
		}
	}
}

func TestWorkersAndTheirChildrenDieWithKilledCaddy(t *testing.T) {
	// Each worker starts a child of its own (a grandchild of Caddy).
	c := startCaddyWith(t, 2, `sh -c "sleep 600 & exec node %s"`)
	pids := waitPIDs(t, c, 2)
	groups := map[int]bool{}
	for pid := range pids {
		g := testworker.PGID(pid)
		if n := len(testworker.GroupMembers(g)); g == 0 || n < 2 {
			t.Fatalf("worker %d: group %d has %d processes, want the worker and its child", pid, g, n)
		}
		groups[g] = true
	}
	if err := c.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-c.exited
	for g := range groups {
		testworker.Eventually(t, 5*time.Second, fmt.Sprintf("group %d empty after caddy was killed", g), func() bool {
			return len(testworker.GroupMembers(g)) == 0
		})
	}
}

func TestWorkerPoolCommand(t *testing.T) {
	app, _ := filepath.Abs("../../examples/node/server.js")
	port := testworker.FreePort(t)
	c := runCommand(t, t.TempDir(), port, nil, "worker-pool", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2",
		"--health-uri", "/healthz", "--admin", "off", "--", "node", app)
	cmd, out := c.cmd, c.log
	pids := waitPIDs(t, c, 2)
	if !strings.Contains(out.String(), fmt.Sprintf("worker pool serving on 127.0.0.1:%d: node %s", port, app)) {
		t.Fatalf("it does not say where it listens:\n%s", out.String())
	}
	refusesAmbiguousFraming(t, c.url)
	groups := map[int]int{}
	for pid := range pids {
		groups[pid] = testworker.PGID(pid)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		t.Fatal("worker-pool did not exit on SIGINT")
	}
	for pid, g := range groups {
		if testworker.Alive(pid) || len(testworker.GroupMembers(g)) > 0 {
			t.Fatalf("worker %d (group %d) outlived the command", pid, g)
		}
	}
}

// TestCaddyfileExample runs the README's main command's config,
// Caddyfile.example, on a free port: the example app answers through
// the pool, and a bad order gets a 400 from Caddy.
func TestCaddyfileExample(t *testing.T) {
	root, _ := filepath.Abs("../..")
	example, err := os.ReadFile(filepath.Join(root, "Caddyfile.example"))
	if err != nil {
		t.Fatal(err)
	}
	port := testworker.FreePort(t)
	cfg := strings.Replace(string(example), ":8080 {", fmt.Sprintf("http://127.0.0.1:%d {", port), 1)
	cfg = strings.ReplaceAll(cfg, " examples/node/", " "+root+"/examples/node/")
	cfg = strings.Replace(cfg, "auto_https off", "auto_https off\n\tadmin off", 1)
	if cfg == string(example) {
		t.Fatal("Caddyfile.example changed shape; update this test")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	c := runCaddy(t, dir, port, path, nil)
	testworker.Eventually(t, 30*time.Second, "the example app through Caddy", func() bool {
		r, code, err := get(c.url + "/")
		return err == nil && code == 200 && r.PID > 0
	})
	resp, err := client.Post(c.url+"/orders", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || !strings.Contains(string(body), `"pointer":"/body/items"`) {
		t.Fatalf("bad order: %s %s", resp.Status, body)
	}

	// Slow clients and ambiguous requests: a short time for headers
	// (Caddy's default is a minute), and the framing wrapper.
	adapted, _, err := caddyconfig.GetAdapter("caddyfile").Adapt(example, map[string]any{"filename": "Caddyfile.example"})
	if err != nil {
		t.Fatal(err)
	}
	var servers struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					ReadHeaderTimeout time.Duration     `json:"read_header_timeout"`
					ListenerWrappers  []json.RawMessage `json:"listener_wrappers"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(adapted, &servers); err != nil {
		t.Fatal(err)
	}
	for name, s := range servers.Apps.HTTP.Servers {
		if s.ReadHeaderTimeout <= 0 || s.ReadHeaderTimeout > 30*time.Second || len(s.ListenerWrappers) == 0 ||
			!strings.Contains(string(s.ListenerWrappers[len(s.ListenerWrappers)-1]), `"worker_pool_framing"`) {
			t.Errorf("server %s: read_header_timeout %v, listener wrappers %s; want at most 30s and worker_pool_framing", name, s.ReadHeaderTimeout, s.ListenerWrappers)
		}
	}
	refusesAmbiguousFraming(t, c.url)
}
