//go:build linux

package npm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// verdaccioVersion is the npm registry the test publishes to: a real
// one, run on loopback. 6.8.0 is the last that runs on Node 20.
const verdaccioVersion = "6.8.0"

// TestNPM publishes the linux-x64 package set to a local registry and
// installs it as a Node user would, into a project and globally: the
// command runs a script in a pool of node workers on $PORT, Ctrl-C stops
// all of it, and a missing platform package says what to do.
func TestNPM(t *testing.T) {
	need(t, "node", "the npm packages run on Node.js")
	npmPath := need(t, "npm", "the npm packages install with npm")
	r := release(t)
	if _, ok := r.Binaries[hostPlatform]; !ok {
		t.Skipf("%s narrows the build to platforms without %s", platformsEnv, hostPlatform)
	}
	registry := startVerdaccio(t)
	work := t.TempDir()
	npmrc := filepath.Join(work, "npmrc")
	host := strings.TrimPrefix(registry.url, "http:")
	if err := os.WriteFile(npmrc, []byte("registry="+registry.url+"\n"+host+":_authToken="+registry.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := []string{
		"npm_config_userconfig=" + npmrc,
		"npm_config_registry=" + registry.url,
		"npm_config_cache=" + filepath.Join(work, "npm-cache"),
		"npm_config_update_notifier=false",
		"npm_config_fund=false",
		"npm_config_audit=false",
		"npm_config_yes=true",
	}
	// Only this platform's package is published: npm skips the optional
	// dependencies it cannot find, as it skips those for other platforms.
	for _, pkg := range []string{hostPlatform.Package(), "caddy-workerpool"} {
		run(t, work, env, npmPath, "publish", filepath.Join(r.Out, r.NPM[pkg]))
	}

	server, err := filepath.Abs("../examples/node/server.js")
	if err != nil {
		t.Fatal(err)
	}

	t.Run("project", func(t *testing.T) {
		project := filepath.Join(work, "project")
		if err := os.MkdirAll(project, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(project, "package.json"), []byte(`{"name":"app","version":"1.0.0","private":true}`+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		run(t, project, env, npmPath, "install", "caddy-workerpool")
		npx := filepath.Join(filepath.Dir(npmPath), "npx")
		servePool(t, project, env, npx, "caddy-workerpool", server)

		out := run(t, project, env, npx, "caddy-workerpool", "version")
		if !strings.HasPrefix(out, "caddy-workerpool v"+testVersion) {
			t.Errorf("npx caddy-workerpool version: %q", out)
		}
		checkExitCode(t, project, env, filepath.Join(project, "node_modules", ".bin", "caddy-workerpool"))

		// As if node_modules had been installed on a Mac and copied here.
		if err := os.RemoveAll(filepath.Join(project, "node_modules", "@caddy-workerpool")); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(npx, "caddy-workerpool", "version")
		cmd.Dir = project
		cmd.Env = append(os.Environ(), env...)
		msg, err := cmd.CombinedOutput()
		if cmd.ProcessState == nil || cmd.ProcessState.ExitCode() != 1 {
			t.Errorf("without the platform package: %v, want exit code 1", err)
		}
		for _, want := range []string{"the package @caddy-workerpool/linux-x64", "is not installed", "copied into a Linux container", "rm -rf node_modules && npm install", "CADDY_WORKERPOOL_BINARY"} {
			if !strings.Contains(string(msg), want) {
				t.Errorf("without the platform package the error does not say %q:\n%s", want, msg)
			}
		}
		t.Logf("without the platform package:\n%s", msg)

		// CADDY_WORKERPOOL_BINARY runs another binary instead.
		out = run(t, project, append(env, "CADDY_WORKERPOOL_BINARY="+hostBinary(t)), npx, "caddy-workerpool", "version")
		if !strings.HasPrefix(out, "caddy-workerpool v"+testVersion) {
			t.Errorf("with CADDY_WORKERPOOL_BINARY: %q", out)
		}
	})

	t.Run("global", func(t *testing.T) {
		prefix := filepath.Join(work, "global")
		run(t, work, env, npmPath, "install", "-g", "--prefix", prefix, "caddy-workerpool")
		bin := filepath.Join(prefix, "bin", "caddy-workerpool")
		servePool(t, work, env, bin, server)
		checkExitCode(t, work, env, bin)
	})
}

// servePool runs name with args and the script as a terminal would run
// `name args... script` with PORT set: its own process group, which gets
// the SIGINT of a Ctrl-C. It checks that requests on PORT are answered
// by two distinct workers, then that SIGINT stops the command, the
// binary and every worker.
func servePool(t *testing.T, dir string, env []string, name string, args ...string) {
	t.Helper()
	port, admin := freePort(t), freePort(t)
	script := args[len(args)-1]
	// Two workers, whatever the CPUs, and an admin port of its own beside
	// other Caddy instances on this machine.
	options := []string{"--workers", "2", "--admin", "127.0.0.1:" + strconv.Itoa(admin), script}
	cmd := exec.Command(name, append(slices.Clone(args[:len(args)-1]), options...)...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append(env, "PORT="+strconv.Itoa(port))...)
	var output syncBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stopped := false
	defer func() {
		if !stopped {
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-exited
			t.Logf("output:\n%s", output.String())
		}
	}()

	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "/")
		if err == nil && resp.StatusCode == 200 {
			resp.Body.Close()
			break
		}
		if err == nil {
			resp.Body.Close()
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s serves nothing on $PORT %d after 60s: %v", name, port, err)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Requests that wait a little, sent together, spread over the workers.
	pids := map[int]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			resp, err := http.Get(url + "/sleep?ms=200")
			if err != nil {
				t.Error(err)
				return
			}
			defer resp.Body.Close()
			var answer struct{ PID, Worker int }
			if err := json.NewDecoder(resp.Body).Decode(&answer); err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			pids[answer.PID] = true
			mu.Unlock()
		})
	}
	wg.Wait()
	if len(pids) < 2 {
		t.Errorf("16 requests were answered by worker pids %v, want 2 distinct ones", pids)
	}
	group := processesUnder(t, dir, pids)
	t.Logf("%s: front on $PORT %d, workers %v, processes %v", filepath.Base(name), port, keys(pids), group)

	stopped = true
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		t.Logf("after SIGINT: %v", err)
	case <-time.After(30 * time.Second):
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-exited
		t.Fatalf("still running 30s after SIGINT:\n%s", output.String())
	}
	// The workers and the binary are in process groups of their own, so
	// they are looked for by pid and by what they run.
	deadline = time.Now().Add(10 * time.Second)
	for {
		left := processesUnder(t, dir, pids)
		if len(left) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes left 10s after the command ended: %v\n%s", left, output.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// checkExitCode runs the shim with CADDY_WORKERPOOL_BINARY set to a
// program that exits 7 and prints what it got: the arguments and the
// node to use reach it, and its exit code comes back.
func checkExitCode(t *testing.T, dir string, env []string, shim string) {
	t.Helper()
	fake := filepath.Join(t.TempDir(), "fake")
	if err := os.WriteFile(fake, []byte("#!/bin/sh\necho \"args=$* node=$CADDY_WORKERPOOL_NODE\"\nexit 7\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(shim, "a b", "c")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), append(env, "CADDY_WORKERPOOL_BINARY="+fake)...)
	out, _ := cmd.Output()
	if code := cmd.ProcessState.ExitCode(); code != 7 {
		t.Errorf("the shim exited %d, the binary 7", code)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		t.Fatal(err)
	}
	node, _ = filepath.EvalSymlinks(node)
	if got, want := strings.TrimSpace(string(out)), "args=a b c node="+node; got != want {
		t.Errorf("the binary got %q, want %q", got, want)
	}
}

// processesUnder lists the live processes that are one of pids or whose
// command line or executable lies under dir.
func processesUnder(t *testing.T, dir string, pids map[int]bool) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var found []string
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		stat, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if i := bytes.LastIndexByte(stat, ')'); i > 0 && i+2 < len(stat) && stat[i+2] == 'Z' {
			continue // ended, waiting for its parent to reap it
		}
		exe, _ := os.Readlink(filepath.Join("/proc", e.Name(), "exe"))
		line := strings.ReplaceAll(string(bytes.TrimRight(cmdline, "\x00")), "\x00", " ")
		if pids[pid] || strings.Contains(line, dir) || strings.HasPrefix(exe, dir) {
			found = append(found, fmt.Sprintf("%d %s", pid, line))
		}
	}
	return found
}

type verdaccio struct {
	url, token string
}

// startVerdaccio starts Verdaccio on a loopback port with a throwaway
// config and storage, without uplinks (it serves what the test publishes
// and nothing else), and registers a user to publish with. Verdaccio is
// installed from the npm registry into a cache folder on first use.
func startVerdaccio(t *testing.T) verdaccio {
	t.Helper()
	cache, err := os.UserCacheDir()
	if err != nil {
		t.Fatal(err)
	}
	home := filepath.Join(cache, "caddy-workerpool", "verdaccio-"+verdaccioVersion)
	main := filepath.Join(home, "node_modules", "verdaccio", "bin", "verdaccio")
	if _, err := os.Stat(main); err != nil {
		if err := os.MkdirAll(home, 0o755); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		run(t, home, nil, "npm", "install", "--no-audit", "--no-fund", "--prefix", home, "verdaccio@"+verdaccioVersion)
		t.Logf("installed Verdaccio %s in %s", verdaccioVersion, time.Since(start).Round(time.Second))
	}
	dir := t.TempDir()
	port := freePort(t)
	config := fmt.Sprintf(`storage: %s/storage
auth:
  htpasswd:
    file: %s/htpasswd
uplinks: {}
packages:
  '@*/*':
    access: $all
    publish: $authenticated
  '**':
    access: $all
    publish: $authenticated
max_body_size: 500mb
web:
  enable: false
log: {type: stdout, format: pretty, level: warn}
`, dir, dir)
	if err := os.WriteFile(filepath.Join(dir, "config.yaml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, "node", main, "--config", filepath.Join(dir, "config.yaml"), "--listen", addr)
	var output syncBuffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		cmd.Wait()
		if t.Failed() {
			t.Logf("verdaccio:\n%s", output.String())
		}
	})
	url := "http://" + addr + "/"
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(url + "-/ping")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("verdaccio does not answer on %s after 60s: %v\n%s", addr, err, output.String())
		}
		time.Sleep(200 * time.Millisecond)
	}

	body := `{"name":"ci","password":"ci-password","type":"user","roles":[]}`
	req, err := http.NewRequest(http.MethodPut, url+"-/user/org.couchdb.user:ci", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	answer, _ := io.ReadAll(resp.Body)
	var user struct{ Token string }
	if err := json.Unmarshal(answer, &user); err != nil || user.Token == "" {
		t.Fatalf("verdaccio: adding a user: %s %s", resp.Status, answer)
	}
	return verdaccio{url: url, token: user.Token}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func keys(m map[int]bool) []int {
	var ks []int
	for k := range m {
		ks = append(ks, k)
	}
	return ks
}

// syncBuffer is an output buffer that a process's stdout and stderr and
// the test may use at once.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
