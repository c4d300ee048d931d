package main

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// A Node worker written as the guides write it, listen(process.env.PORT)
// with no host, listens on every interface: through a real Caddy the
// bind check reports it in the admin JSON and in an error that names
// the fix, and bind_check refuse keeps it out of rotation; the same app
// given HOST is not reported. The socket's address is judged with ss;
// nothing connects to an address other than 127.0.0.1.
func TestBindCheckThroughCaddy(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bind check reads /proc")
	}
	for _, tc := range []struct {
		name, listen, option string
		exposed, serves      bool
	}{
		{"every interface, default", "process.env.PORT", "", true, true},
		{"every interface, refuse", "process.env.PORT", "bind_check refuse", true, false},
		{"loopback, refuse", "process.env.PORT, process.env.HOST", "bind_check refuse", false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			app := filepath.Join(dir, "app.js")
			js := fmt.Sprintf(`const http = require('http');
http.createServer((req, res) => res.end(JSON.stringify({ pid: process.pid }))).listen(%s);
process.on('SIGTERM', () => process.exit(0));
`, tc.listen)
			if err := os.WriteFile(app, []byte(js), 0o600); err != nil {
				t.Fatal(err)
			}
			port, adminPort := testworker.FreePort(t), testworker.FreePort(t)
			admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
			caddyfile := filepath.Join(dir, "Caddyfile")
			if err := os.WriteFile(caddyfile, []byte(fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	worker_pool {
		name bind
		command node %s
		count 1
		health_uri /healthz
		health_interval 100ms
		stop_timeout 5s
		%s
	}
}
`, adminPort, port, app, tc.option)), 0o600); err != nil {
				t.Fatal(err)
			}
			c := runCaddy(t, dir, port, caddyfile, nil)

			var w pool.WorkerStatus
			testworker.Eventually(t, 30*time.Second, "the worker ready", func() bool {
				resp, err := client.Get(admin + "/worker_pool/")
				if err != nil {
					return false
				}
				defer resp.Body.Close()
				var st []pool.Status
				if json.NewDecoder(resp.Body).Decode(&st) != nil || len(st) != 1 || len(st[0].Workers) != 1 {
					return false
				}
				w = st[0].Workers[0]
				return w.Lifecycle == "serving"
			})

			_, workerPort, _ := net.SplitHostPort(w.Address)
			if _, err := exec.LookPath("ss"); err != nil {
				t.Fatal("ss (iproute2) is required to judge the worker's socket")
			}
			if got := testworker.SSListening(t, workerPort); testworker.EveryInterface(got) != tc.exposed {
				t.Fatalf("ss shows the worker on %s; the test wants it on every interface: %v", got, tc.exposed)
			}

			if got := len(w.ExposedOn) > 0; got != tc.exposed {
				t.Fatalf("admin JSON exposed_on %v, want exposed %v", w.ExposedOn, tc.exposed)
			}
			logged := strings.Contains(c.log.String(), "worker listens beyond loopback")
			if logged != tc.exposed {
				t.Fatalf("the error was logged: %v, want %v; log:\n%s", logged, tc.exposed, c.log.String())
			}
			if tc.exposed && !strings.Contains(c.log.String(), "listen(process.env.PORT, process.env.HOST)") {
				t.Fatalf("the error does not name the fix; log:\n%s", c.log.String())
			}
			if w.Healthy != tc.serves {
				t.Fatalf("in rotation %v, want %v: %+v", w.Healthy, tc.serves, w)
			}
			_, code, err := get(c.url + "/")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[bool]int{true: 200, false: 503}[tc.serves]; code != want {
				t.Fatalf("GET /: %d, want %d", code, want)
			}
			if !tc.serves && w.OutOfRotation != "listens beyond loopback" {
				t.Fatalf("out_of_rotation %q, want the reason", w.OutOfRotation)
			}
		})
	}
}
