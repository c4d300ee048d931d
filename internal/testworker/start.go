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

// FreePortRange returns the first of n consecutive loopback ports that
// nobody listens on now.
func FreePortRange(t testing.TB, n int) int {
	t.Helper()
	for range 100 {
		first := FreePort(t)
		if first+n-1 > 65535 {
			continue
		}
		var lns []net.Listener
		ok := true
		for p := first; p < first+n && ok; p++ {
			ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
		}
		for _, ln := range lns {
			ln.Close()
		}
		if ok {
			return first
		}
	}
	t.Fatalf("no %d consecutive free loopback ports", n)
	return 0
}

// Proc is a worker process started by Start.
type Proc struct {
	PID     int
	Network string
	Address string
	client  *http.Client
	cmd     *exec.Cmd
	exited  chan struct{}
}

// Start runs the test binary as a worker in mode on a free loopback port,
// waits until it answers, and kills it when the test ends.
func Start(t testing.TB, mode string) *Proc {
	t.Helper()
	return StartAt(t, mode, "tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(FreePort(t))))
}

// StartAt is Start on a given address: network "tcp" with a loopback
// host:port, or "unix" with a socket path.
func StartAt(t testing.TB, mode, network, address string) *Proc {
	t.Helper()
	cmd := exec.Command(Command())
	cmd.Env = append(os.Environ(), ModeEnv+"="+mode, "GORACE=atexit_sleep_ms=0")
	if network == "unix" {
		cmd.Env = append(cmd.Env, "SOCKET_PATH="+address)
	} else {
		host, port, err := net.SplitHostPort(address)
		if err != nil {
			t.Fatal(err)
		}
		cmd.Env = append(cmd.Env, "HOST="+host, "PORT="+port)
	}
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
	p := &Proc{PID: cmd.Process.Pid, Network: network, Address: address, cmd: cmd, exited: exited}
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

// Kill kills the worker and returns once it is gone.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.exited
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

// NonLoopbackIPv4 is an IPv4 address of this machine other than loopback
// (or link-local), or "" if it has none: dialled from here, it makes a
// client that a server sees as remote.
func NonLoopbackIPv4() string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() && !n.IP.IsLinkLocalUnicast() {
			return n.IP.String()
		}
	}
	return ""
}
