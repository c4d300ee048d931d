package testworker

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"testing"
	"time"
)

// FreePort returns a loopback port that nobody listens on now.
func FreePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// Proc is a worker process started by Start.
type Proc struct {
	PID     int
	Network string
	Address string
	client  *http.Client
}

// Start runs the test binary as a worker in mode on a free loopback port,
// waits until it answers, and kills it when the test ends.
func Start(t testing.TB, mode string) *Proc {
	t.Helper()
	port := FreePort(t)
	cmd := exec.Command(Command())
	cmd.Env = append(os.Environ(), ModeEnv+"="+mode, "GORACE=atexit_sleep_ms=0", "HOST=127.0.0.1", "PORT="+strconv.Itoa(port))
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	p := &Proc{PID: cmd.Process.Pid, Network: "tcp", Address: net.JoinHostPort("127.0.0.1", strconv.Itoa(port))}
	p.client = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, p.Network, p.Address)
		},
	}}
	Eventually(t, 10*time.Second, "test worker answering", func() bool {
		_, err := p.Do(http.MethodGet, "/pid")
		return err == nil
	})
	return p
}

// Do sends a request straight to the worker and returns the body.
func (p *Proc) Do(method, path string) (string, error) {
	req, err := http.NewRequest(method, "http://worker"+path, nil)
	if err != nil {
		return "", err
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// Blocked is how many /block requests the worker holds; -1 if it does
// not answer.
func (p *Proc) Blocked() int {
	b, err := p.Do(http.MethodGet, "/blocked")
	if err != nil {
		return -1
	}
	n, err := strconv.Atoi(b)
	if err != nil {
		return -1
	}
	return n
}
