package deploy

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// localPod runs a pod's containers as local processes that share this
// machine's loopback, as the containers of a pod share theirs. Paths of
// the images are mapped to this checkout and the built binary.
type localPod struct {
	t     *testing.T
	paths map[string]string // image path prefix → local path
}

func (lp *localPod) local(s string) string {
	for from, to := range lp.paths {
		if s == from || strings.HasPrefix(s, from+"/") {
			return to + strings.TrimPrefix(s, from)
		}
	}
	return s
}

type proc struct {
	cmd    *exec.Cmd
	exited chan struct{}
	log    *strings.Builder // read only after exited
	name   string
}

// start runs container c's command and arguments with its literal
// environment (mapped), in a process group of its own.
func (lp *localPod) start(c corev1.Container, env map[string]string) *proc {
	lp.t.Helper()
	argv := append(append([]string{}, c.Command...), c.Args...)
	for i := range argv {
		argv[i] = lp.local(argv[i])
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Dir = lp.local(c.WorkingDir)
	cmd.Env = os.Environ()
	for _, e := range c.Env {
		if e.ValueFrom == nil {
			cmd.Env = append(cmd.Env, e.Name+"="+lp.local(e.Value))
		}
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	p := &proc{cmd: cmd, exited: make(chan struct{}), log: &strings.Builder{}, name: c.Name}
	// One writer for both: exec then writes from one goroutine at a
	// time, and Wait returns after the last write.
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		lp.t.Fatalf("container %s: %v", c.Name, err)
	}
	go func() { _ = cmd.Wait(); close(p.exited) }()
	lp.t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-p.exited
		if lp.t.Failed() {
			lp.t.Logf("container %s:\n%s", c.Name, p.log.String())
		}
	})
	return p
}

// stop sends SIGTERM, as the kubelet does after preStop, and waits for
// the exit.
func (p *proc) stop(t *testing.T, within time.Duration) int {
	t.Helper()
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(within):
		t.Fatalf("container %s still runs %v after SIGTERM", p.name, within)
		return 0
	}
}

var client = &http.Client{Timeout: 5 * time.Second}

type healthBody struct {
	Healthy int `json:"healthy"`
	Total   int `json:"total"`
}

func health(url string) (int, healthBody) {
	var h healthBody
	resp, err := client.Get(url)
	if err != nil {
		return 0, h
	}
	defer resp.Body.Close()
	_ = json.NewDecoder(resp.Body).Decode(&h)
	return resp.StatusCode, h
}

type answer struct {
	PID    int `json:"pid"`
	Worker int `json:"worker"`
}

func getAnswer(url string) (answer, error) {
	var a answer
	resp, err := client.Get(url)
	if err != nil {
		return a, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return a, fmt.Errorf("status %d", resp.StatusCode)
	}
	return a, json.NewDecoder(resp.Body).Decode(&a)
}

// TestSidecarPodOnOneMachine runs the sidecar overlay's pod: Caddy from
// deploy/build.sh with the ConfigMap's Caddyfile (ports moved to free
// ones), then the app container's launcher with node. The readiness
// probe's path turns 200 once the workers are up, requests are served by
// every worker, a killed worker comes back, and the pod stops as the
// kubelet stops it.
func TestSidecarPodOnOneMachine(t *testing.T) {
	if _, err := exec.LookPath("node"); err != nil {
		t.Fatal("node is required (Node.js 20 is on every machine of this project)")
	}
	o := kustomize(t, "sidecar")
	p := inspect(t, o)
	checkSidecar(t, p)
	bin := ourCaddy(t)

	// Move the pod's ports to free loopback ports.
	httpPort, healthPort := testworker.FreePort(t), testworker.FreePort(t)
	workers, _ := env(*p.app, "WORKERS")
	n, _ := strconv.Atoi(workers)
	base := testworker.FreePortRange(t, n)
	pools := p.config.pools(t)
	caddyfile := p.caddyfile
	for _, r := range []struct{ from, to string }{
		{":8080 {", fmt.Sprintf(":%d {", httpPort)},
		{":8081 {", fmt.Sprintf(":%d {", healthPort)},
		{"discover " + pools[0].Discover[0], fmt.Sprintf("discover 127.0.0.1:%d-%d", base, base+n-1)},
	} {
		if !strings.Contains(caddyfile, r.from) {
			t.Fatalf("the ConfigMap's Caddyfile has no %q to move", r.from)
		}
		caddyfile = strings.Replace(caddyfile, r.from, r.to, 1)
	}
	dir := t.TempDir()
	for _, d := range []string{"etc", "data", "config"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "etc", "Caddyfile"), []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	app, err := filepath.Abs("../examples/node")
	if err != nil {
		t.Fatal(err)
	}
	lp := &localPod{t: t, paths: map[string]string{
		"/usr/bin/caddy": bin,
		"/etc/caddy":     filepath.Join(dir, "etc"),
		"/data":          filepath.Join(dir, "data"),
		"/config":        filepath.Join(dir, "config"),
		"/app":           app,
	}}
	ready := fmt.Sprintf("http://127.0.0.1:%d%s", healthPort, p.caddy.ReadinessProbe.HTTPGet.Path)
	site := fmt.Sprintf("http://127.0.0.1:%d/", httpPort)

	// The sidecar starts first: up, but not ready without workers.
	caddy := lp.start(p.caddy, nil)
	var code int
	testworker.Eventually(t, 30*time.Second, "Caddy answering its readiness path", func() bool {
		code, _ = health(ready)
		return code != 0
	})
	if code != http.StatusServiceUnavailable {
		t.Fatalf("readiness answers %d before the app started, want 503", code)
	}

	// The app starts its workers; the pod turns ready.
	appProc := lp.start(*p.app, map[string]string{"PORT_BASE": strconv.Itoa(base)})
	testworker.Eventually(t, 30*time.Second, "readiness 200 with every worker healthy", func() bool {
		code, h := health(ready)
		return code == 200 && h.Healthy == n && h.Total == n
	})

	// Requests are served through the workers, by every one of them.
	seen := map[int]int{} // worker id → pid
	testworker.Eventually(t, 30*time.Second, fmt.Sprintf("all %d workers serving through Caddy", n), func() bool {
		a, err := getAnswer(site)
		if err != nil {
			t.Fatalf("GET %s: %v", site, err)
		}
		seen[a.Worker] = a.PID
		return len(seen) == n
	})
	for id := 1; id <= n; id++ {
		if seen[id] == 0 {
			t.Errorf("worker %d never answered; answers came from %v", id, seen)
		}
	}

	// A worker that dies is started again by the launcher and found
	// again by Caddy.
	if err := syscall.Kill(seen[1], syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testworker.Eventually(t, 30*time.Second, "worker 1 back with a new pid, serving", func() bool {
		a, err := getAnswer(site)
		return err == nil && a.Worker == 1 && a.PID != seen[1]
	})

	// The kubelet stops the app first: its workers drain and it exits 0;
	// Caddy turns not ready; then Caddy stops.
	if code := appProc.stop(t, 15*time.Second); code != 0 {
		t.Errorf("the app container exited with %d after SIGTERM, want 0", code)
	}
	testworker.Eventually(t, 10*time.Second, "readiness 503 once the workers are gone", func() bool {
		code, _ := health(ready)
		return code == http.StatusServiceUnavailable
	})
	if code := caddy.stop(t, 30*time.Second); code != 0 {
		t.Errorf("Caddy exited with %d after SIGTERM, want 0", code)
	}
}
