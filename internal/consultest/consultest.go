// Package consultest runs a real Consul agent for tests: Consul v1.14.1
// (the last line under the MPL-2.0; never use 1.16.4 or later), built
// from the Go tool module internal/tools/consul into the user's cache
// directory once per machine, and started in -dev mode on free loopback
// ports.
//
// When the CI environment variable is set, a Consul that cannot be built
// or started fails the test; elsewhere the test is skipped with the
// reason.
package consultest

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Version of Consul that tests run.
const Version = "v1.14.1"

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// unavailable fails the test under CI and skips it elsewhere.
func unavailable(t testing.TB, format string, a ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, a...)
	if os.Getenv("CI") != "" {
		t.Fatal("consul: " + msg)
	}
	t.Skip("consul: " + msg + " (the test needs Consul " + Version + "; .ci/run builds it, and under CI this fails)")
}

// Dir is where the binary is cached: <user cache dir>/caddy-workerpool/consul-v1.14.1.
func Dir() (string, error) {
	cache, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(cache, "caddy-workerpool", "consul-"+Version), nil
}

// Binary returns the path of the Consul binary, building it first if the
// cache has none. Builds of concurrent test processes are serialised by
// a file lock.
func Binary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() { binary, buildErr = build() })
	if buildErr != nil {
		unavailable(t, "%v", buildErr)
	}
	return binary
}

func build() (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "consul")
	lock, err := os.OpenFile(filepath.Join(dir, "build.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	unlock, err := lockFile(lock)
	if err != nil {
		return "", err
	}
	defer unlock()
	if out, err := exec.Command(bin, "version").Output(); err == nil && strings.Contains(string(out), "Consul "+Version) {
		return bin, nil
	}
	_, file, _, _ := runtime.Caller(0)
	tools := filepath.Join(filepath.Dir(file), "..", "tools", "consul")
	// Built to a temporary name and renamed, so nobody runs half a file.
	cmd := exec.Command("go", "build", "-o", bin+".tmp", "github.com/hashicorp/consul")
	cmd.Dir = tools
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build in %s: %v\n%s", tools, err, out)
	}
	return bin, os.Rename(bin+".tmp", bin)
}

// Agent is a Consul agent in -dev mode (a server, in memory) on loopback.
type Agent struct {
	// Addr is the HTTP API's host:port.
	Addr string

	t    testing.TB
	args []string
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
	log  bytes.Buffer
}

// Start runs an agent and waits until it has elected itself leader. The
// test's end stops it.
func Start(t testing.TB) *Agent {
	t.Helper()
	bin := Binary(t)
	ports := freePorts(t, 4)
	a := &Agent{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])), t: t}
	a.args = []string{bin, "agent", "-dev", "-node", "test",
		"-client", "127.0.0.1", "-bind", "127.0.0.1",
		"-http-port", strconv.Itoa(ports[0]), "-serf-lan-port", strconv.Itoa(ports[1]),
		"-serf-wan-port", strconv.Itoa(ports[2]), "-server-port", strconv.Itoa(ports[3]),
		"-dns-port", "-1", "-grpc-port", "-1", "-grpc-tls-port", "-1", "-https-port", "-1",
		"-log-level", "warn"}
	t.Cleanup(func() {
		a.Stop()
		if t.Failed() {
			t.Logf("consul log:\n%s", a.logString())
		}
	})
	a.Restart()
	return a
}

// Stop kills the agent and waits until it is gone; a stopped agent
// forgets everything (-dev keeps its state in memory).
func (a *Agent) Stop() {
	a.mu.Lock()
	cmd, done := a.cmd, a.done
	a.cmd = nil
	a.mu.Unlock()
	if cmd == nil {
		return
	}
	_ = cmd.Process.Kill()
	<-done
}

// Restart starts the agent (again, on the same ports) and waits until it
// answers as leader.
func (a *Agent) Restart() {
	a.t.Helper()
	a.Stop()
	cmd := exec.Command(a.args[0], a.args[1:]...)
	cmd.Stdout, cmd.Stderr = (*lockedWriter)(a), (*lockedWriter)(a)
	if err := cmd.Start(); err != nil {
		unavailable(a.t, "start: %v", err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	a.mu.Lock()
	a.cmd, a.done = cmd, done
	a.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for !a.leader(ctx) {
		select {
		case <-done:
			unavailable(a.t, "the agent exited at start:\n%s", a.logString())
		case <-ctx.Done():
			unavailable(a.t, "no leader within 60s:\n%s", a.logString())
		case <-time.After(50 * time.Millisecond):
			// The agent has no way to tell us it is ready: poll.
		}
	}
}

func (a *Agent) leader(ctx context.Context) bool {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+a.Addr+"/v1/status/leader", nil)
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	return resp.StatusCode == 200 && strings.Trim(strings.TrimSpace(b.String()), `"`) != ""
}

// probeClient keeps no connection open after a probe (tests check that
// no goroutine outlives them).
var probeClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

type lockedWriter Agent

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.log.Write(p)
}

func (a *Agent) logString() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.log.String()
}

// freePorts returns n distinct loopback ports that nobody listens on
// now, TCP and UDP (Serf uses both).
func freePorts(t testing.TB, n int) []int {
	t.Helper()
	var ports []int
	var held []net.Listener
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for len(ports) < n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		p := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			continue
		}
		u.Close()
		ports = append(ports, p)
	}
	return ports
}
