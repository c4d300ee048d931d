package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// loadResult is what a closed-loop run measured.
type loadResult struct {
	Tool      string  `json:"tool"`
	Conns     int     `json:"connections"`
	DurationS float64 `json:"duration_s"`
	// Requests are the answered requests whatever their status, Non2xx
	// those among them not 2xx; SocketErrors are failed attempts (connect,
	// read, write, timeout) that got no answer.
	Requests     int     `json:"requests"`
	Non2xx       int     `json:"non_2xx"`
	SocketErrors int     `json:"socket_errors"`
	RPS          float64 `json:"requests_per_s"`
	P50          float64 `json:"p50_ms"`
	P90          float64 `json:"p90_ms"`
	P99          float64 `json:"p99_ms"`
	P999         float64 `json:"p999_ms"`
}

// good are the requests answered with 2xx.
func (l loadResult) good() int { return l.Requests - l.Non2xx }

// errors are the requests that failed, answered or not.
func (l loadResult) errors() int { return l.Non2xx + l.SocketErrors }

// wrkScript makes wrk print its summary in a form parseWrk reads: the
// counts, and latency percentiles in microseconds (wrk's own report has
// no p99.9).
const wrkScript = `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("bench-summary requests=%d duration_us=%d connect=%d read=%d write=%d status=%d timeout=%d\n",
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout))
  io.write(string.format("bench-latency p50=%d p90=%d p99=%d p99.9=%d\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
`

// parseWrk reads the lines wrkScript prints among wrk's own output.
func parseWrk(out string) (loadResult, error) {
	var r loadResult
	var sawSummary, sawLatency bool
	kv := func(line string) map[string]int64 {
		m := map[string]int64{}
		for _, f := range strings.Fields(line)[1:] {
			k, v, ok := strings.Cut(f, "=")
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err == nil {
				m[k] = n
			}
		}
		return m
	}
	for line := range strings.Lines(out) {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "bench-summary "):
			m := kv(line)
			sawSummary = true
			r.Requests = int(m["requests"])
			r.DurationS = float64(m["duration_us"]) / 1e6
			// Status errors are answers; the others are failed attempts
			// that wrk does not count as requests.
			r.Non2xx = int(m["status"])
			r.SocketErrors = int(m["connect"] + m["read"] + m["write"] + m["timeout"])
		case strings.HasPrefix(line, "bench-latency "):
			m := kv(line)
			sawLatency = true
			r.P50, r.P90 = float64(m["p50"])/1000, float64(m["p90"])/1000
			r.P99, r.P999 = float64(m["p99"])/1000, float64(m["p99.9"])/1000
		}
	}
	if !sawSummary || !sawLatency {
		return r, fmt.Errorf("wrk output has no bench-summary/bench-latency lines: %q", out)
	}
	if r.DurationS > 0 {
		r.RPS = float64(r.Requests) / r.DurationS
	}
	return r, nil
}

// haveWrk reports whether wrk is installed.
func haveWrk() bool {
	_, err := exec.LookPath("wrk")
	return err == nil
}

// closedLoop drives url with conns connections back to back for d, with
// wrk when it is installed and the Go client otherwise.
func closedLoop(url string, conns int, d time.Duration, tmp string) (loadResult, error) {
	if !haveWrk() {
		return goClosedLoop(url, conns, d, nil)
	}
	return runWrk(url, conns, d, filepath.Join(tmp, "summary.lua"), wrkScript)
}

// runWrk runs wrk against url with conns connections for d, with the
// Lua script text written to the file script.
func runWrk(url string, conns int, d time.Duration, script, text string) (loadResult, error) {
	if err := os.WriteFile(script, []byte(text), 0o644); err != nil {
		return loadResult{}, err
	}
	threads := min(conns, max(1, cpuCount()/2))
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.Command("wrk", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", strconv.Itoa(secs)+"s", "--timeout", "10s", "-s", script, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadResult{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	r, err := parseWrk(string(out))
	r.Tool, r.Conns = "wrk", conns
	return r, err
}

// pacedLoop is closedLoop with wrk where each connection pauses pause ms
// between an answer and its next request (wrk's delay hook, whole ms).
func pacedLoop(url string, conns int, pause float64, d time.Duration, tmp string) (loadResult, error) {
	hook := fmt.Sprintf("delay = function() return %d end\n", int(math.Round(pause)))
	return runWrk(url, conns, d, filepath.Join(tmp, "paced.lua"), wrkScript+hook)
}

// timeline counts answers per 100 ms slot since its start.
type timeline struct {
	start time.Time
	mu    sync.Mutex
	ok    []int
	bad   []int
}

const slot = 100 * time.Millisecond

func (t *timeline) add(ok bool) {
	i := int(time.Since(t.start) / slot)
	t.mu.Lock()
	for len(t.ok) <= i {
		t.ok, t.bad = append(t.ok, 0), append(t.bad, 0)
	}
	if ok {
		t.ok[i]++
	} else {
		t.bad[i]++
	}
	t.mu.Unlock()
}

// goClosedLoop is the harness's own closed-loop client: conns
// connections, each sending a request and reading the whole answer, back
// to back, with plain HTTP/1.1 over TCP. Unlike net/http it never
// resends a request on its own: a request whose connection breaks counts
// as an error, as in wrk, and the connection is dialled again.
func goClosedLoop(url string, conns int, d time.Duration, tl *timeline) (loadResult, error) {
	host, path, err := splitURL(url)
	if err != nil {
		return loadResult{}, err
	}
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: workerpool-bench\r\n\r\n")
	var requests, non2xx, sockErrs atomic.Int64
	lats := make([][]time.Duration, conns)
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := range conns {
		wg.Go(func() {
			var c net.Conn
			var br *bufio.Reader
			for time.Now().Before(deadline) {
				if c == nil {
					var err error
					if c, err = net.DialTimeout("tcp", host, 5*time.Second); err != nil {
						sockErrs.Add(1)
						tl.maybeAdd(false)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					br = bufio.NewReader(c)
				}
				t0 := time.Now()
				_ = c.SetDeadline(t0.Add(10 * time.Second))
				status, err := roundTrip(c, br, req)
				if err != nil && status == 0 {
					sockErrs.Add(1)
					tl.maybeAdd(false)
					c.Close()
					c = nil
					continue
				}
				requests.Add(1)
				ok := status/100 == 2
				if !ok {
					non2xx.Add(1)
				}
				tl.maybeAdd(ok)
				lats[i] = append(lats[i], time.Since(t0))
				if err != nil {
					// Answered, then closed by the server.
					c.Close()
					c = nil
				}
			}
			if c != nil {
				c.Close()
			}
		})
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	all := slices.Concat(lats...)
	return loadResult{
		Tool: "go-client", Conns: conns, DurationS: el,
		Requests: int(requests.Load()), Non2xx: int(non2xx.Load()), SocketErrors: int(sockErrs.Load()),
		RPS: float64(requests.Load()) / el,
		P50: pct(all, 50), P90: pct(all, 90), P99: pct(all, 99), P999: pct(all, 99.9),
	}, nil
}

func (t *timeline) maybeAdd(ok bool) {
	if t != nil {
		t.add(ok)
	}
}

// roundTrip writes req on c and reads one whole response.
func roundTrip(c net.Conn, br *bufio.Reader, req []byte) (int, error) {
	if _, err := c.Write(req); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return 0, err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	if resp.Close {
		return resp.StatusCode, errServerClosed
	}
	return resp.StatusCode, nil
}

// errServerClosed: the answer came with Connection: close.
var errServerClosed = errors.New("server closes the connection")

// splitURL splits http://host:port/path into host:port and /path.
func splitURL(url string) (host, path string, err error) {
	rest, ok := strings.CutPrefix(url, "http://")
	if !ok {
		return "", "", fmt.Errorf("%q: only http:// URLs", url)
	}
	host, path, _ = strings.Cut(rest, "/")
	return host, "/" + path, nil
}

// idleConns opens n keep-alive connections to url, sends one GET on each
// and reads its answer, and leaves them open; it returns them and how
// many it could not open.
func idleConns(url string, n int) ([]net.Conn, int) {
	host, path, _ := splitURL(url)
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	conns := make([]net.Conn, n)
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				c, err := net.DialTimeout("tcp", host, 5*time.Second)
				if err != nil {
					failed.Add(1)
					continue
				}
				// A proxy at its connection limit leaves new ones in the
				// kernel's backlog, unanswered.
				_ = c.SetDeadline(time.Now().Add(3 * time.Second))
				if _, err := roundTrip(c, bufio.NewReader(c), req); err != nil {
					failed.Add(1)
					c.Close()
					continue
				}
				_ = c.SetDeadline(time.Time{})
				conns[i] = c
			}
		})
	}
	wg.Wait()
	return slices.DeleteFunc(conns, func(c net.Conn) bool { return c == nil }), int(failed.Load())
}

// stillOpen counts the connections the server has not closed: a read
// that times out means open, EOF or a reset means closed.
func stillOpen(conns []net.Conn) int {
	open := 0
	buf := make([]byte, 1)
	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
		_, err := c.Read(buf)
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			open++
		}
	}
	return open
}
