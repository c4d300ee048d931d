//go:build unix

package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/caddy-workerpool/caddy-workerpool/internal/consultest"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// gRPC streams through the pool's lifecycle: a rolling restart and a
// changed reload with server-streaming and bidirectional calls open,
// and a streaming call's slot.

// grpcAdminCaddyfile is a Caddy taking h2c, with its admin API, in
// front of count workers of examples/grpc, with extra pool options.
func grpcAdminCaddyfile(dir string, count int, extra string) func(port, adminPort int) string {
	return func(port, adminPort int) string {
		return h2cGlobals(adminPort) + fmt.Sprintf(`
http://127.0.0.1:%d {
	worker_pool {
		command node %s
		count %d
		health_grpc
		health_interval 100ms
		stop_timeout 10s
		%s
	}
}
`, port, filepath.Join(dir, "server.js"), count, extra)
	}
}

// startGRPCAdminPool runs that Caddy and waits until count workers are
// healthy.
func startGRPCAdminPool(t *testing.T, dir string, count int, extra string) (*faultPool, string) {
	t.Helper()
	port, adminPort := testworker.FreePort(t), testworker.FreePort(t)
	f := &faultPool{admin: fmt.Sprintf("http://127.0.0.1:%d", adminPort), caddyfile: grpcAdminCaddyfile(dir, count, extra)(port, adminPort)}
	f.path = filepath.Join(t.TempDir(), "Caddyfile")
	if err := os.WriteFile(f.path, []byte(f.caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	f.caddyProc = runCaddy(t, filepath.Dir(f.path), port, f.path, nil)
	testworker.Eventually(t, 30*time.Second, fmt.Sprintf("%d workers healthy", count), func() bool {
		resp, err := client.Get(f.admin + "/worker_pool/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var st []pool.Status
		return json.NewDecoder(resp.Body).Decode(&st) == nil && len(st) == 1 && st[0].Healthy == count
	})
	target := fmt.Sprintf("127.0.0.1:%d", port)
	awaitGRPC(t, dir, target)
	return f, target
}

// grpcClient is client.js running in the background: its JSON lines
// come on lines, which closes when it exits.
type grpcClient struct {
	what  string
	lines chan map[string]any
}

func startGRPCClient(t *testing.T, dir, target string, args ...string) *grpcClient {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "client.js"), target}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &grpcClient{what: strings.Join(args, " "), lines: make(chan map[string]any, 1024)}
	// Ends when the client exits: by itself, or killed at the test's end.
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var m map[string]any
			if json.Unmarshal(sc.Bytes(), &m) != nil {
				m = map[string]any{"unparsed": sc.Text()}
			}
			c.lines <- m
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		for range c.lines {
		}
	})
	return c
}

// await reads lines until one satisfies cond, and returns it.
func (c *grpcClient) await(t *testing.T, what string, cond func(map[string]any) bool) map[string]any {
	t.Helper()
	timeout := time.After(30 * time.Second)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				t.Fatalf("client.js %s ended before %s", c.what, what)
			}
			if cond(m) {
				return m
			}
		case <-timeout:
			t.Fatalf("client.js %s: no %s within 30s", c.what, what)
		}
	}
}

// result is the client's last line, once it has exited.
func (c *grpcClient) result(t *testing.T) map[string]any {
	t.Helper()
	var last map[string]any
	timeout := time.After(60 * time.Second)
	for {
		select {
		case m, ok := <-c.lines:
			if !ok {
				if last == nil {
					t.Fatalf("client.js %s printed nothing", c.what)
				}
				return last
			}
			last = m
		case <-timeout:
			t.Fatalf("client.js %s still running after 60s", c.what)
		}
	}
}

// sigterms are the "SIGTERM with N streaming calls open" lines that
// examples/grpc's workers print, by pid: how many streams each still had
// when the pool told it to stop.
func sigterms(log string) map[int]int {
	open := map[int]int{}
	for _, line := range strings.Split(log, "\n") {
		var m struct {
			Msg string `json:"msg"`
			PID int    `json:"pid"`
		}
		if json.Unmarshal([]byte(line), &m) != nil || !strings.HasPrefix(m.Msg, "SIGTERM with ") {
			continue
		}
		var n int
		if _, err := fmt.Sscanf(m.Msg, "SIGTERM with %d streaming calls open", &n); err == nil {
			open[m.PID] = n
		}
	}
	return open
}

// streamsAndCalls opens streams (server-streaming and bidirectional in
// turn, one every 150 ms for 8 s, each 25 messages 100 ms apart) and, in
// an open loop, unary calls; then it runs change while both go on, and
// checks that every stream ended OK with all its messages, and every
// unary call succeeded.
func streamsAndCalls(t *testing.T, dir, target string, change func()) (streams map[string]any) {
	t.Helper()
	s := startGRPCClient(t, dir, target, "streams", "8", "150", "25", "100")
	s.await(t, "four streams open", func(m map[string]any) bool { return m["progress"] != nil })
	calls := startGRPCClient(t, dir, target, "mixed", "6", "40", "1", "1", "0")
	change()
	streams = s.result(t)
	if num(streams["streams"]) < 40 || num(streams["whole"]) != num(streams["streams"]) {
		t.Errorf("streams: %v; want every one whole (OK, all 25 messages)", streams)
	}
	c := calls.result(t)
	if cheap, _ := c["cheap"].(map[string]any); num(cheap["calls"]) < 100 || num(cheap["errors"]) != 0 {
		t.Errorf("unary calls beside the streams: %v; want all answered OK", c)
	}
	return streams
}

// checkDrained checks that each of the old workers served streams, and
// had none open when it was told to stop: the pool waited for them.
func checkDrained(t *testing.T, log string, old map[int]bool, streams map[string]any) {
	t.Helper()
	served, _ := streams["pids"].(map[string]any)
	stopped := sigterms(log)
	for pid := range old {
		if num(served[fmt.Sprint(pid)]) == 0 {
			t.Errorf("old worker %d served no stream: %v", pid, served)
		}
		n, ok := stopped[pid]
		if !ok {
			t.Errorf("old worker %d was not stopped (no SIGTERM line)", pid)
		} else if n != 0 {
			t.Errorf("old worker %d was told to stop with %d streams open", pid, n)
		}
	}
	if strings.Contains(log, "drain timed out") || strings.Contains(log, "still open") {
		t.Errorf("a drain gave up on open streams:\n%s", log)
	}
}

// A rolling restart through the admin API while streams are open: no
// stream is cut, each old worker stops only once its streams have ended,
// and unary calls go on succeeding.
func TestGRPCRollingRestartWithOpenStreams(t *testing.T) {
	dir := grpcExample(t)
	f, target := startGRPCAdminPool(t, dir, 2, "")
	old := pidsOf(f.status(t))
	var took time.Duration
	streams := streamsAndCalls(t, dir, target, func() {
		start := time.Now()
		f.post(t, "/worker_pool/default/restart", "", "")
		took = time.Since(start)
	})
	for pid := range pidsOf(f.status(t)) {
		if old[pid] {
			t.Errorf("worker %d still runs after the rolling restart", pid)
		}
	}
	checkDrained(t, f.log.String(), old, streams)
	t.Logf("rolling restart took %v; streams %v", took.Round(time.Millisecond), streams)
}

// A reload with a changed pool while streams are open: the new workers
// take the new calls, the old ones finish their streams (the old server
// and pool drain in the background) and only then stop.
func TestGRPCChangedReloadWithOpenStreams(t *testing.T) {
	dir := grpcExample(t)
	f, target := startGRPCAdminPool(t, dir, 2, "")
	old := pidsOf(f.status(t))
	streams := streamsAndCalls(t, dir, target, func() {
		f.post(t, "/load", "text/caddyfile", strings.Replace(f.caddyfile, "stop_timeout 10s", "stop_timeout 10s\n\t\tenv DEPLOY 2", 1))
		for pid := range pidsOf(f.status(t)) {
			if old[pid] {
				t.Errorf("the changed pool serves with old worker %d", pid)
			}
		}
	})
	testworker.Eventually(t, 20*time.Second, "both old workers stopped", func() bool {
		stopped := sigterms(f.log.String())
		for pid := range old {
			if _, ok := stopped[pid]; !ok {
				return false
			}
		}
		return true
	})
	checkDrained(t, f.log.String(), old, streams)
}

// A streaming call holds its worker's slot until its answer's second
// message (a unary answer has one, so until then it could be one), then
// gives it back and counts as an open stream: with max_inflight 1 a
// unary call is served beside an open stream at once.
func TestGRPCStreamGivesItsSlotBack(t *testing.T) {
	dir := grpcExample(t)
	f, target := startGRPCAdminPool(t, dir, 1, "max_inflight 1\n\t\tqueue_timeout 1s")
	s := startGRPCClient(t, dir, target, "count", "3", "1500")
	message := func(m map[string]any) bool { return m["message"] != nil }
	s.await(t, "the first message", message)
	if w := f.status(t).Workers[0]; w.Inflight != 1 || w.Streams != 0 {
		t.Fatalf("a stream before its second message: %d in flight, %d streams; want its slot held (1, 0)", w.Inflight, w.Streams)
	}
	s.await(t, "the second message", message)
	if w := f.status(t).Workers[0]; w.Inflight != 0 || w.Streams != 1 {
		t.Fatalf("a stream after its second message: %d in flight, %d streams; want its slot back (0, 1)", w.Inflight, w.Streams)
	}
	// The third message is 1.5 s away; the slot is free meanwhile.
	if r := grpcCall(t, dir, target, "unary", "1")[0]; code(r) != 0 || num(r["took"]) > 1000 {
		t.Fatalf("a unary call beside an open stream, max_inflight 1: %v; want OK at once", r)
	}
	if r := s.result(t); code(r) != 0 || num(r["messages"]) != 3 {
		t.Fatalf("the stream: %v; want OK with 3 messages", r)
	}
	testworker.Eventually(t, 5*time.Second, "the stream no longer counted", func() bool {
		return f.status(t).Workers[0].Streams == 0
	})
}

// startGRPCWorker runs a worker of examples/grpc that the pool did not
// start, on 127.0.0.1:port, as an app container beside a sidecar would,
// and returns its pid once it listens. The test's end kills it.
func startGRPCWorker(t *testing.T, dir string, port, id int) int {
	t.Helper()
	cmd := exec.Command("node", filepath.Join(dir, "server.js"))
	cmd.Env = append(os.Environ(), "HOST=127.0.0.1", fmt.Sprintf("PORT=%d", port), fmt.Sprintf("WORKER_ID=%d", id))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.Contains(line, "listening on") {
		t.Fatalf("grpc worker on port %d: %q %v", port, line, err)
	}
	// Its further output is not read: the pipe's buffer holds what
	// little it prints.
	return cmd.Process.Pid
}

// startGRPCSite runs our Caddy, taking h2c, with block as the site's
// handler, and returns it and the target a gRPC client dials.
func startGRPCSite(t *testing.T, block string) (*caddyProc, string) {
	t.Helper()
	port := testworker.FreePort(t)
	path := filepath.Join(t.TempDir(), "Caddyfile")
	caddyfile := h2cGlobals(0) + fmt.Sprintf("\nhttp://127.0.0.1:%d {\n\t%s\n}\n", port, block)
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	return runCaddy(t, filepath.Dir(path), port, path, nil), fmt.Sprintf("127.0.0.1:%d", port)
}

// Workers the pool finds rather than starts — on loopback ports beside
// a sidecar, or registered in a real Consul agent — serve gRPC as
// spawned ones do: every call balanced, the streaming kinds, and the
// gRPC health protocol taking a NOT_SERVING worker out.
func TestGRPCDiscoveredWorkers(t *testing.T) {
	dir := grpcExample(t)
	for _, mode := range []string{"sidecar", "consul"} {
		t.Run(mode, func(t *testing.T) {
			first := testworker.FreePortRange(t, 2)
			pids := []int{startGRPCWorker(t, dir, first, 1), startGRPCWorker(t, dir, first+1, 2)}
			source := fmt.Sprintf("discover 127.0.0.1:%d-%d", first, first+1)
			if mode == "consul" {
				agent := consultest.Start(t)
				cfg := api.DefaultConfig()
				cfg.Address = agent.Addr
				t.Cleanup(cfg.Transport.CloseIdleConnections)
				c, err := api.NewClient(cfg)
				if err != nil {
					t.Fatal(err)
				}
				for i := range pids {
					err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
						ID: fmt.Sprintf("grpc-%d", i), Name: "grpc", Address: "127.0.0.1", Port: first + i,
						Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
					})
					if err != nil {
						t.Fatal(err)
					}
				}
				source = fmt.Sprintf("consul grpc {\n\t\t\taddress %s\n\t\t}", agent.Addr)
			}
			c, target := startGRPCSite(t, "worker_pool {\n\t\t"+source+"\n\t\thealth_grpc\n\t\thealth_interval 100ms\n\t}")
			testworker.Eventually(t, 30*time.Second, "both found workers in rotation", func() bool {
				r := last(grpcCall(t, dir, target, "load", "20", "4", "0"))
				served, _ := r["pids"].(map[string]any)
				return num(r["errors"]) == 0 && len(served) == 2
			})

			r := last(grpcCall(t, dir, target, "load", "200", "16", "1"))
			served, _ := r["pids"].(map[string]any)
			for _, pid := range pids {
				if num(served[fmt.Sprint(pid)]) < 40 {
					t.Errorf("found worker %d served %v of 200 calls on one channel: %v", pid, served[fmt.Sprint(pid)], r)
				}
			}
			if num(r["errors"]) != 0 {
				t.Errorf("200 calls to found workers: %v", r)
			}
			if count := last(grpcCall(t, dir, target, "count", "5", "20")); code(count) != 0 || num(count["messages"]) != 5 {
				t.Errorf("server streaming: %v", count)
			}
			if s := grpcCall(t, dir, target, "sum", "10")[0]; code(s) != 0 || num(s["sum"]) != 55 {
				t.Errorf("client streaming: %v", s)
			}
			if e := grpcCall(t, dir, target, "echo", "20")[0]; code(e) != 0 || num(e["echoes"]) != 20 {
				t.Errorf("bidirectional: %v", e)
			}

			sick := grpcCall(t, dir, target, "unary", "1", "0", "0", "-1")[0] // makes its worker NOT_SERVING
			if code(sick) != 0 {
				t.Fatalf("the call that makes a worker NOT_SERVING: %v", sick)
			}
			testworker.Eventually(t, 10*time.Second, "the NOT_SERVING worker out of rotation", func() bool {
				return strings.Contains(c.log.String(), "NOT_SERVING")
			})
			r = last(grpcCall(t, dir, target, "load", "40", "8", "0"))
			served, _ = r["pids"].(map[string]any)
			if num(r["errors"]) != 0 || len(served) != 1 || served[fmt.Sprint(sick["pid"])] != nil {
				t.Fatalf("after found worker %v answered NOT_SERVING: %v; want every call on the other one", sick["pid"], r)
			}
		})
	}
}
