package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// neverListens is a worker that starts and never listens: the pool
// waits for it until startup_timeout. marker tells its processes apart.
func neverListens(marker string) string {
	return fmt.Sprintf(`node -e "setInterval(()=>{},1000)" %s`, marker)
}

// Ctrl-C (SIGINT) while the workers start ends Caddy within a second
// or so, stops the starting workers, and answers the request that
// waited for them; for both `caddy run` and `caddy worker-pool`.
func TestSignalWhileWorkersStartExitsPromptly(t *testing.T) {
	for _, how := range []string{"run", "worker-pool"} {
		t.Run(how, func(t *testing.T) {
			marker := fmt.Sprintf("workerpool-never-listens-%d-%s", os.Getpid(), how)
			port, adminPort := testworker.FreePort(t), testworker.FreePort(t)
			admin := fmt.Sprintf("127.0.0.1:%d", adminPort)
			dir := t.TempDir()
			var c *caddyProc
			if how == "run" {
				path := writeCaddyfile(t, dir, admin, fmt.Sprintf(`
http://127.0.0.1:%d {
	worker_pool {
		command %s
		count 2
	}
}
`, port, neverListens(marker)))
				c = runCaddy(t, dir, port, path, nil)
			} else {
				c = runCommand(t, dir, port, nil, "worker-pool", "--listen", fmt.Sprintf("127.0.0.1:%d", port), "--workers", "2",
					"--admin", admin, "--", "node", "-e", "setInterval(()=>{},1000)", marker)
			}
			// Each worker (and, on Linux, the reaper in front of it) has the
			// marker among its arguments.
			testworker.Eventually(t, 30*time.Second, "both workers started", func() bool { return len(testworker.WithArg(marker)) >= 2 })
			waiting := make(chan int, 1)
			go func() {
				resp, err := http.Get(c.url + "/")
				if err != nil {
					waiting <- 0
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				waiting <- resp.StatusCode
			}()
			testworker.Eventually(t, 10*time.Second, "the request in the pool's queue", func() bool {
				resp, err := http.Get("http://" + admin + "/worker_pool/")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				var st []pool.Status
				return json.NewDecoder(resp.Body).Decode(&st) == nil && len(st) == 1 && st[0].Queued == 1
			})
			began := time.Now()
			if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
				t.Fatal(err)
			}
			select {
			case <-c.exited:
			case <-time.After(10 * time.Second):
				t.Fatal("no exit within 10s of SIGINT")
			}
			took := time.Since(began)
			t.Logf("exited %v after SIGINT", took)
			if took > 2*time.Second {
				t.Errorf("exited %v after SIGINT, want under 2s", took)
			}
			if code := <-waiting; code != http.StatusServiceUnavailable && code != 0 {
				t.Errorf("the waiting request got %d, want 503 (or a closed connection)", code)
			}
			if left := testworker.WithArg(marker); len(left) > 0 {
				t.Errorf("workers %v outlived Caddy", left)
			}
		})
	}
}

// On the first start Caddy listens at once: a static site beside a pool
// whose app takes 3 s to start answers at once, and a request to the
// pool waits for the first healthy worker and then succeeds.
func TestStaticSiteServesWhileThePoolStarts(t *testing.T) {
	app, _ := filepath.Abs("../../examples/node/server.js")
	static, port := testworker.FreePort(t), testworker.FreePort(t)
	dir := t.TempDir()
	path := writeCaddyfile(t, dir, "off", fmt.Sprintf(`
http://127.0.0.1:%d {
	respond "static"
}
http://127.0.0.1:%d {
	worker_pool {
		command sh -c "sleep 3; exec node %s"
		count 2
		health_uri /healthz
		health_interval 100ms
	}
}
`, static, port, app))
	began := time.Now()
	c := runCaddy(t, dir, port, path, nil)
	var staticAt time.Duration
	testworker.Eventually(t, 10*time.Second, "the static site answers", func() bool {
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/", static))
		if err != nil {
			return false
		}
		resp.Body.Close()
		staticAt = time.Since(began)
		return resp.StatusCode == 200
	})
	// Caddy itself takes a few hundred ms to start (more with the race
	// detector on a busy machine); the pool's app takes 3s more.
	if staticAt > 2*time.Second {
		t.Errorf("the static site answered %v after start, want at once (the pool's app takes 3s)", staticAt)
	}
	t.Logf("the static site answered %v after start", staticAt)
	r, code, err := get(c.url + "/")
	if err != nil || code != 200 || r.PID == 0 {
		t.Fatalf("a request that waited for the pool's first worker: %d %v", code, err)
	}
	t.Logf("the pool answered %v after start", time.Since(began))
	if took := time.Since(began); took < 3*time.Second {
		t.Fatalf("the pool answered %v after start, before its app could have started", took)
	}
}

// writeCaddyfile writes a Caddyfile of sites in dir, with Caddy's admin
// endpoint at admin (or off), and automatic HTTPS and config
// persistence off.
func writeCaddyfile(t *testing.T, dir, admin, sites string) string {
	t.Helper()
	path := filepath.Join(dir, "Caddyfile")
	cfg := "{\n\tadmin " + admin + "\n\tauto_https off\n\tpersist_config off\n}\n" + sites
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
