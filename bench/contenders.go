package main

import (
	"context"
	"encoding/json"
	"errors"
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
	"syscall"
	"time"
)

// contender is one way of serving the example app with a pool of workers.
type contender struct {
	name string
	// workers is how many app processes it runs.
	workers int
	// skip, when set, says why it cannot run here and how to fix that
	// ("skipped: install with …"); start is then nil.
	skip string
	// start runs it on port.
	start func(port int) (*running, error)
}

// running is a started contender.
type running struct {
	url string
	// roots are the processes it started; they and their descendants
	// are the contender.
	roots []int
	stops []func()
}

// stop stops what start started, last first.
func (r *running) stop() {
	for i := len(r.stops) - 1; i >= 0; i-- {
		r.stops[i]()
	}
}

// pids are the contender's live processes.
func (r *running) pids() []int {
	var out []int
	for _, root := range r.roots {
		for _, pid := range descendants(root) {
			if !slices.Contains(out, pid) {
				out = append(out, pid)
			}
		}
	}
	return out
}

// split returns the proxy's processes (everything that is not the app:
// nginx, HAProxy, Caddy and its reapers, a cluster primary, a PM2
// daemon) and the app's workers.
func (r *running) split() (proxy, workers []int) {
	return splitWorkers(r.pids(), appPath())
}

// The programs and files the contenders run; flags of the harness.
var (
	nodeBin  = "node"
	appFile  = ""
	peersDir = ""
)

// repoRoot is the repository, one level above this module.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

func appPath() string {
	if appFile != "" {
		return appFile
	}
	return filepath.Join(repoRoot(), "examples", "node", "server.js")
}

func clusterScript() string {
	if peersDir != "" {
		return filepath.Join(peersDir, "node-cluster.js")
	}
	return filepath.Join(repoRoot(), "bench", "peers", "node-cluster.js")
}

// startProcess runs cmd in its own process group and returns a stop that
// sends SIGTERM to the group, then SIGKILL after 10 s.
func startProcess(cmd *exec.Cmd, logFile string) (func(), error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, err
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done); f.Close() }()
	return func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	}, nil
}

// add starts cmd as one more root of r.
func (r *running) add(cmd *exec.Cmd, logFile string) error {
	stop, err := startProcess(cmd, logFile)
	if err != nil {
		return fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	r.roots = append(r.roots, cmd.Process.Pid)
	r.stops = append(r.stops, stop)
	return nil
}

// appCmd is one process of the example app on port.
func appCmd(port, id, count int) *exec.Cmd {
	cmd := exec.Command(nodeBin, appPath())
	cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1",
		"WORKER_ID="+strconv.Itoa(id), "WORKER_COUNT="+strconv.Itoa(count))
	return cmd
}

// nodeSingle is one Node process alone, no proxy.
func nodeSingle(logDir string) contender {
	return contender{name: "node-single", workers: 1, start: func(port int) (*running, error) {
		r := &running{}
		return r, r.add(appCmd(port, 1, 1), filepath.Join(logDir, "node-single.log"))
	}}
}

// nodeCluster is Node's cluster module with the same app and worker count.
func nodeCluster(workers int, logDir string) contender {
	return contender{name: "node-cluster", workers: workers, start: func(port int) (*running, error) {
		cmd := exec.Command(nodeBin, clusterScript())
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1",
			"WORKERS="+strconv.Itoa(workers), "APP="+appPath())
		r := &running{}
		return r, r.add(cmd, filepath.Join(logDir, "node-cluster.log"))
	}}
}

// pm2Cluster is PM2 in cluster mode: `pm2 start app -i N`, with its own
// PM2_HOME, so it neither sees nor disturbs another PM2 on the machine.
// PM2's daemon detaches into a session of its own: it is found by its
// pid file and stopped with `pm2 kill`, then its group is killed.
func pm2Cluster(workers int, logDir string) contender {
	c := contender{name: "pm2", workers: workers}
	pm2, err := exec.LookPath("pm2")
	if err != nil {
		c.skip = "skipped: install with `npm install -g pm2`"
		return c
	}
	c.start = func(port int) (*running, error) {
		home, err := os.MkdirTemp(logDir, "pm2-home-")
		if err != nil {
			return nil, err
		}
		env := append(os.Environ(), "PM2_HOME="+home, "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
		cmd := exec.Command(pm2, "start", appPath(), "-i", strconv.Itoa(workers), "--name", "bench-app")
		cmd.Env = env
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("pm2 start: %w: %s", err, out)
		}
		b, err := os.ReadFile(filepath.Join(home, "pm2.pid"))
		daemon, _ := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || daemon == 0 {
			return nil, fmt.Errorf("pm2 daemon pid in %s: %v", home, err)
		}
		r := &running{roots: []int{daemon}}
		r.stops = append(r.stops, func() {
			kill := exec.Command(pm2, "kill")
			kill.Env = env
			_ = kill.Run()
			_ = syscall.Kill(-daemon, syscall.SIGKILL)
		})
		return r, nil
	}
	return c
}

// proxied starts workers app processes on free ports, then the proxy
// that conf(ports) configures, run by argv(configPath).
func proxied(name, logDir string, workers int, confName string,
	conf func(ports []int, port int) string, argv func(config string) []string) func(int) (*running, error) {
	return func(port int) (*running, error) {
		r := &running{}
		var ports []int
		for i := 1; i <= workers; i++ {
			p, err := freePort()
			if err != nil {
				r.stop()
				return nil, err
			}
			if err := r.add(appCmd(p, i, workers), filepath.Join(logDir, fmt.Sprintf("%s-app-%d.log", name, i))); err != nil {
				r.stop()
				return nil, err
			}
			ports = append(ports, p)
		}
		for _, p := range ports {
			if err := waitListening(p); err != nil {
				r.stop()
				return nil, err
			}
		}
		dir := filepath.Join(logDir, name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			r.stop()
			return nil, err
		}
		path := filepath.Join(dir, confName)
		if err := os.WriteFile(path, []byte(conf(ports, port)), 0o644); err != nil {
			r.stop()
			return nil, err
		}
		args := argv(path)
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
		if err := r.add(cmd, filepath.Join(logDir, name+".log")); err != nil {
			r.stop()
			return nil, err
		}
		return r, nil
	}
}

// openFiles is the open-file limit the proxies inherit and are
// configured for; raiseNoFile sets it.
var openFiles uint64 = 1024

// nginxLeastConn is nginx with least_conn and upstream keep-alive in
// front of workers app processes.
func nginxLeastConn(workers int, logDir string) contender {
	c := contender{name: "nginx", workers: workers}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		c.skip = "skipped: install with `apt-get install nginx`"
		return c
	}
	c.start = proxied("nginx", logDir, workers, "nginx.conf",
		func(ports []int, port int) string {
			return nginxConf(filepath.Join(logDir, "nginx"), port, ports, openFiles)
		},
		func(conf string) []string { return []string{bin, "-p", filepath.Dir(conf), "-c", conf, "-e", "stderr"} })
	return c
}

// haproxyLeastConn is HAProxy with balance leastconn and connection
// reuse, and extra in its backend.
func haproxyLeastConn(name string, workers int, logDir string, extra haproxyExtra) contender {
	c := contender{name: name, workers: workers}
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		c.skip = "skipped: install with `apt-get install haproxy`"
		return c
	}
	c.start = proxied(name, logDir, workers, "haproxy.cfg",
		func(ports []int, port int) string { return haproxyConf(port, ports, openFiles, extra) },
		func(conf string) []string { return []string{bin, "-db", "-f", conf} })
	return c
}

// caddyReverseProxy is stock Caddy reverse_proxy (least_conn, static
// upstreams, options), run by our Caddy binary.
func caddyReverseProxy(name, caddy string, workers int, options, logDir string) contender {
	return contender{name: name, workers: workers, start: proxied(name, logDir, workers, "Caddyfile",
		func(ports []int, port int) string { return caddyRPConf(port, ports, options) },
		func(conf string) []string { return []string{caddy, "run", "--config", conf, "--adapter", "caddyfile"} })}
}

// workerPool is our Caddy with a worker_pool of the given options.
func workerPool(name, caddy string, workers int, options, logDir string) contender {
	return ourCaddy(name, caddy, workers, logDir, func(port int) string {
		return workerPoolConf(port, nodeBin, appPath(), workers, options)
	})
}

// caddyRespond is our Caddy answering every request itself with a static
// respond, no proxy and no workers: the floor of what Caddy's own server
// costs per request, under any module.
func caddyRespond(caddy, logDir string) contender {
	return ourCaddy("caddy-respond", caddy, 0, logDir, caddyRespondConf)
}

// ourCaddy is our Caddy binary running the Caddyfile conf(port), whose
// site has workers app processes of its own.
func ourCaddy(name, caddy string, workers int, logDir string, conf func(port int) string) contender {
	return contender{name: name, workers: workers, start: func(port int) (*running, error) {
		path := filepath.Join(logDir, name+".Caddyfile")
		if err := os.WriteFile(path, []byte(conf(port)), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(caddy, "run", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+logDir, "XDG_CONFIG_HOME="+logDir)
		r := &running{}
		return r, r.add(cmd, filepath.Join(logDir, name+".log"))
	}}
}

// launch starts c on a free port and waits until every worker answers.
func launch(c contender) (*running, error) {
	if c.start == nil {
		return nil, errors.New(c.skip)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	r, err := c.start(port)
	if err != nil {
		return nil, err
	}
	r.url = "http://127.0.0.1:" + strconv.Itoa(port)
	if err := waitReady(r.url, c.workers); err != nil {
		r.stop()
		return nil, fmt.Errorf("%s: %w", c.name, err)
	}
	return r, nil
}

// waitListening waits until something accepts connections on port.
func waitListening(port int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: nothing listening within 30s", addr)
}

// waitReady waits until workers distinct pids answer GET / (one answer
// when there are no workers).
func waitReady(url string, workers int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A new connection per request: Node cluster balances connections.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for ctx.Err() == nil {
		seen := map[int]bool{}
		for range 20 * max(workers, 1) {
			resp, err := client.Get(url + "/")
			if err != nil {
				break
			}
			var r struct{ PID int }
			_ = json.NewDecoder(resp.Body).Decode(&r)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			seen[r.PID] = true
		}
		if len(seen) >= max(workers, 1) {
			return nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s: %d workers not answering within 30s", url, workers)
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// buildCaddy builds ../cmd/caddy into dir.
func buildCaddy(dir string) (string, error) {
	out := filepath.Join(dir, "caddy")
	cmd := exec.Command("go", "build", "-o", out, "./cmd/caddy")
	cmd.Dir = repoRoot()
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("build our caddy (or pass -caddy): %w", err)
	}
	return out, nil
}

// pm2Version reads the version from the package.json beside PM2's
// script: `pm2 --version` would start PM2's daemon.
func pm2Version() string {
	path, err := exec.LookPath("pm2")
	if err != nil {
		return ""
	}
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "..", "package.json"))
	if err != nil {
		return ""
	}
	var pkg struct{ Version string }
	if json.Unmarshal(b, &pkg) != nil {
		return ""
	}
	return pkg.Version
}
