package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// contender is one way of serving the example app with a pool of workers.
type contender struct {
	name string
	// start runs it on port and returns how to stop it.
	start func(port int) (stop func(), err error)
}

// repoRoot is the repository, one level above this module.
func repoRoot() string {
	wd, _ := os.Getwd()
	return filepath.Dir(wd)
}

func appPath() string { return filepath.Join(repoRoot(), "examples", "node", "server.js") }

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

// nodeCluster is Node's cluster module with the same app and worker count.
func nodeCluster(workers int, logDir string) contender {
	return contender{name: "node-cluster", start: func(port int) (func(), error) {
		cmd := exec.Command("node", filepath.Join(repoRoot(), "bench", "peers", "node-cluster.js"))
		cmd.Env = append(os.Environ(), "PORT="+strconv.Itoa(port), "HOST=127.0.0.1",
			"WORKERS="+strconv.Itoa(workers), "APP="+appPath())
		return startProcess(cmd, filepath.Join(logDir, "node-cluster.log"))
	}}
}

// workerPool is our Caddy with a worker_pool of the given options.
func workerPool(name, caddy string, workers int, options, logDir string) contender {
	return contender{name: name, start: func(port int) (func(), error) {
		caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	worker_pool {
		command node %s
		count %d
		health_uri /healthz
		%s
	}
}
`, port, appPath(), workers, options)
		path := filepath.Join(logDir, name+".Caddyfile")
		if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
			return nil, err
		}
		cmd := exec.Command(caddy, "run", "--config", path, "--adapter", "caddyfile")
		cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+logDir, "XDG_CONFIG_HOME="+logDir)
		return startProcess(cmd, filepath.Join(logDir, name+".log"))
	}}
}

// waitReady waits until workers distinct pids answer GET /.
func waitReady(url string, workers int) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// A new connection per request: Node cluster balances connections.
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for ctx.Err() == nil {
		seen := map[int]bool{}
		for range 20 * workers {
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
		if len(seen) >= workers {
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
		return "", fmt.Errorf("build our caddy: %w", err)
	}
	return out, nil
}
