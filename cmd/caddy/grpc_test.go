package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// gRPC through the pool: examples/grpc is a grpc-js service written as
// grpc-js's examples write one (HTTP/2 only), and its client.js the
// ecosystem's own client, one channel per run; both with the packages
// from the npm registry.

// grpcExample returns examples/grpc's directory, its packages
// installed.
func grpcExample(t *testing.T) string {
	t.Helper()
	return npmInstalled(t, "../../examples/grpc")
}

// startGRPCPool runs our Caddy, taking h2c from clients, in front of a
// pool of count workers of command; it returns Caddy and the target a
// gRPC client dials.
func startGRPCPool(t *testing.T, count int, command, options string) (*caddyProc, string) {
	t.Helper()
	dir := t.TempDir()
	port := testworker.FreePort(t)
	caddyfile := h2cGlobals(0) + fmt.Sprintf(`
http://127.0.0.1:%d {
	worker_pool {
		command %s
		count %d
		stop_timeout 5s
		%s
	}
}
`, port, command, count, options)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c, target := runCaddy(t, dir, port, path, nil), fmt.Sprintf("127.0.0.1:%d", port)
	testworker.Eventually(t, 30*time.Second, "Caddy listening", func() bool {
		conn, err := net.Dial("tcp", target)
		if err == nil {
			conn.Close()
		}
		return err == nil
	})
	return c, target
}

// h2cGlobals is the global options of a Caddy that takes h2c from
// clients, its admin API on adminPort (0: off).
func h2cGlobals(adminPort int) string {
	admin := "off"
	if adminPort != 0 {
		admin = fmt.Sprintf("127.0.0.1:%d", adminPort)
	}
	return "{\n\tadmin " + admin + "\n\tauto_https off\n\tpersist_config off\n\tservers {\n\t\tprotocols h1 h2c\n\t}\n}\n"
}

// grpcCall runs client.js against target and returns its JSON lines.
func grpcCall(t *testing.T, dir, target string, args ...string) []map[string]any {
	t.Helper()
	cmd := exec.Command("node", append([]string{filepath.Join(dir, "client.js"), target}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("client.js %v: %v\n%s", args, err, stderr.Bytes())
	}
	var lines []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("client.js %v printed %q: %v", args, sc.Text(), err)
		}
		lines = append(lines, m)
	}
	return lines
}

// last is the last line a call printed: a load's result follows its
// progress line.
func last(lines []map[string]any) map[string]any {
	if len(lines) == 0 {
		return map[string]any{}
	}
	return lines[len(lines)-1]
}

func code(m map[string]any) int { return int(num(m["code"])) }

// awaitGRPC waits until a call through the pool succeeds.
func awaitGRPC(t *testing.T, dir, target string) {
	t.Helper()
	testworker.Eventually(t, 30*time.Second, "a gRPC call through the pool", func() bool {
		return code(grpcCall(t, dir, target, "unary", "1")[0]) == 0
	})
}

func TestGRPCThroughCaddy(t *testing.T) {
	dir := grpcExample(t)
	c, target := startGRPCPool(t, 2, "node "+filepath.Join(dir, "server.js"), "")
	testworker.Eventually(t, 30*time.Second, "both workers healthy", func() bool {
		return strings.Count(c.log.String(), `"msg":"worker healthy"`) == 2
	})
	awaitGRPC(t, dir, target)

	t.Run("every call is balanced", func(t *testing.T) {
		// One channel, one HTTP/2 connection, 16 calls in flight: Node's
		// cluster would put all of them on one worker.
		r := last(grpcCall(t, dir, target, "load", "200", "16", "2"))
		pids, _ := r["pids"].(map[string]any)
		if num(r["errors"]) != 0 || len(pids) != 2 {
			t.Fatalf("200 calls on one channel: %v; want no error and both workers", r)
		}
		for pid, n := range pids {
			if num(n) < 40 {
				t.Errorf("worker %s served %v of 200 calls", pid, n)
			}
		}
	})

	t.Run("streaming", func(t *testing.T) {
		count := grpcCall(t, dir, target, "count", "5", "20")
		if last := count[len(count)-1]; code(last) != 0 || num(last["messages"]) != 5 {
			t.Fatalf("server streaming: %v", count)
		}
		if s := grpcCall(t, dir, target, "sum", "10")[0]; code(s) != 0 || num(s["sum"]) != 55 {
			t.Fatalf("client streaming: %v", s)
		}
		// Each message goes out only after the previous echo came back:
		// this finishes only if both directions flow at once.
		if e := grpcCall(t, dir, target, "echo", "20")[0]; code(e) != 0 || num(e["echoes"]) != 20 {
			t.Fatalf("bidirectional: %v", e)
		}
	})

	t.Run("status and metadata pass", func(t *testing.T) {
		r := grpcCall(t, dir, target, "unary", "1", "0", "0", "5")[0] // NOT_FOUND
		md, _ := r["metadata"].(map[string]any)
		if code(r) != 5 || r["details"] != "failing with 5 on purpose" || md["x-worker"] == nil {
			t.Fatalf("a worker's NOT_FOUND with metadata came back as %v", r)
		}
	})

	t.Run("deadline", func(t *testing.T) {
		r := grpcCall(t, dir, target, "unary", "1", "2000", "200")[0]
		if code(r) != 4 || num(r["took"]) > 1500 {
			t.Fatalf("a 2 s call with a 200 ms deadline: %v; want DEADLINE_EXCEEDED near 200 ms", r)
		}
	})

	if strings.Contains(c.log.String(), "out of rotation") {
		t.Errorf("a worker left rotation:\n%s", c.log.String())
	}
}

// A pool whose workers are sent a protocol they do not speak answers
// each call UNAVAILABLE with a message naming the setting, keeps its
// workers in rotation, and logs what to set.
func TestGRPCProtocolMismatch(t *testing.T) {
	dir := grpcExample(t)
	c, target := startGRPCPool(t, 1, "node "+filepath.Join(dir, "server.js"), "upstream_protocol http1")
	testworker.Eventually(t, 30*time.Second, "the worker listening", func() bool {
		return strings.Contains(c.log.String(), "listening on")
	})
	for range 8 {
		r := grpcCall(t, dir, target, "unary", "1")[0]
		if code(r) != 14 || !strings.Contains(fmt.Sprint(r["details"]), "upstream_protocol h2c") {
			t.Fatalf("a gRPC call to an HTTP/2-only worker sent HTTP/1.1: %v; want UNAVAILABLE naming upstream_protocol h2c", r)
		}
	}
	log := c.log.String()
	if strings.Contains(log, "out of rotation") || strings.Contains(log, "breaker open") {
		t.Fatalf("a protocol mismatch took the worker out:\n%s", log)
	}
	if !strings.Contains(log, "set upstream_protocol h2c") {
		t.Fatalf("the log does not say what to set:\n%s", log)
	}
}

// A pool whose command cannot start answers calls UNAVAILABLE, in
// gRPC's terms, with a message that says why: never problem+json.
func TestGRPCBrokenCommand(t *testing.T) {
	dir := grpcExample(t)
	_, target := startGRPCPool(t, 1, "node "+filepath.Join(t.TempDir(), "missing.js"), "queue_timeout 1s")
	r := grpcCall(t, dir, target, "unary", "1")[0]
	if code(r) != 14 || !strings.Contains(fmt.Sprint(r["details"]), "worker") {
		t.Fatalf("a call to a pool without workers: %v; want UNAVAILABLE saying why", r)
	}
}

// health_grpc probes workers with grpc.health.v1.Health/Check: a worker
// that answers NOT_SERVING leaves rotation, and the calls go to the
// other one.
func TestGRPCHealthProtocol(t *testing.T) {
	dir := grpcExample(t)
	c, target := startGRPCPool(t, 2, "node "+filepath.Join(dir, "server.js"), "health_grpc\n\t\thealth_interval 100ms")
	testworker.Eventually(t, 30*time.Second, "both workers healthy by the gRPC health protocol", func() bool {
		return strings.Count(c.log.String(), `"msg":"worker healthy"`) == 2
	})
	sick := grpcCall(t, dir, target, "unary", "1", "0", "0", "-1")[0] // makes its worker NOT_SERVING
	if code(sick) != 0 {
		t.Fatalf("the call that makes a worker NOT_SERVING: %v", sick)
	}
	testworker.Eventually(t, 10*time.Second, "the NOT_SERVING worker out of rotation", func() bool {
		return strings.Contains(c.log.String(), "NOT_SERVING")
	})
	r := last(grpcCall(t, dir, target, "load", "40", "8", "0"))
	pids, _ := r["pids"].(map[string]any)
	if num(r["errors"]) != 0 || len(pids) != 1 || pids[fmt.Sprint(sick["pid"])] != nil {
		t.Fatalf("after worker %v answered NOT_SERVING: %v; want every call on the other worker", sick["pid"], r)
	}
}

// A worker SIGKILLed while one channel keeps 16 calls in flight costs at
// most the calls it held, and it comes back.
func TestGRPCWorkerKilledUnderLoad(t *testing.T) {
	dir := grpcExample(t)
	c, target := startGRPCPool(t, 2, "node "+filepath.Join(dir, "server.js"), "health_grpc\n\t\thealth_interval 100ms")
	testworker.Eventually(t, 30*time.Second, "both workers healthy", func() bool {
		return strings.Count(c.log.String(), `"msg":"worker healthy"`) == 2
	})
	first := grpcCall(t, dir, target, "unary", "1")[0]
	victim := int(num(first["pid"]))
	cmd := exec.Command("node", filepath.Join(dir, "client.js"), target, "load", "600", "16", "5")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(stdout)
	var r map[string]any
	for sc.Scan() {
		var line map[string]any
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			t.Fatal(err)
		}
		if line["progress"] != nil {
			// A quarter of the calls are done, the rest under way.
			if err := testworker.Kill(victim); err != nil {
				t.Fatal(err)
			}
			continue
		}
		r = line
	}
	_ = cmd.Wait()
	if r == nil {
		t.Fatal("the load's client printed nothing")
	}
	if pids, _ := r["pids"].(map[string]any); pids[fmt.Sprint(victim)] == nil || num(pids[fmt.Sprint(victim)]) >= 600 {
		t.Fatalf("the killed worker served none or all of the calls: %v", r)
	}
	if e := num(r["errors"]); e > 16 {
		t.Fatalf("killing a worker under load failed %v calls, more than the 16 it could hold: %v", e, r)
	}
	testworker.Eventually(t, 30*time.Second, "the killed worker back", func() bool {
		return strings.Count(c.log.String(), `"msg":"worker healthy"`) == 3
	})
	t.Logf("600 calls, a worker killed: %v", r)
}

// num is a JSON number, 0 where there is none: a missing field fails
// the test's comparison instead of panicking the whole package.
func num(v any) float64 {
	f, _ := v.(float64)
	return f
}
