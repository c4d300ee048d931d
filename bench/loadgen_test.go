package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// wrk 4.1's own report with the lines wrkScript adds.
const wrkOutput = `Running 5s test @ http://127.0.0.1:40123/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.01ms  743.12us  21.33ms   91.20%
    Req/Sec    31.80k     2.10k   34.90k    80.00%
  158321 requests in 5.00s, 24.01MB read
  Non-2xx or 3xx responses: 12
Requests/sec:  31664.20
Transfer/sec:      4.80MB
bench-summary requests=158321 duration_us=5000105 connect=0 read=3 write=0 status=12 timeout=1
bench-latency p50=1890 p90=2650 p99=4870 p99.9=12004
`

func TestParseWrk(t *testing.T) {
	r, err := parseWrk(wrkOutput)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests != 158321 || r.Non2xx != 12 || r.SocketErrors != 4 {
		t.Errorf("requests %d non-2xx %d socket errors %d", r.Requests, r.Non2xx, r.SocketErrors)
	}
	if r.good() != 158309 || r.errors() != 16 {
		t.Errorf("good %d errors %d", r.good(), r.errors())
	}
	if r.P50 != 1.89 || r.P90 != 2.65 || r.P99 != 4.87 || r.P999 != 12.004 {
		t.Errorf("percentiles %v %v %v %v ms", r.P50, r.P90, r.P99, r.P999)
	}
	if r.DurationS != 5.000105 || int(r.RPS) != 31663 {
		t.Errorf("duration %v s, %v req/s", r.DurationS, r.RPS)
	}
	if _, err := parseWrk("Running 5s test @ http://x/\nRequests/sec: 1.0\n"); err == nil {
		t.Error("output without the script's lines accepted")
	}
}

func TestSplitURL(t *testing.T) {
	host, path, err := splitURL("http://127.0.0.1:8080/work?ms=2")
	if err != nil || host != "127.0.0.1:8080" || path != "/work?ms=2" {
		t.Fatalf("%q %q %v", host, path, err)
	}
	if _, _, err := splitURL("https://x/"); err == nil {
		t.Error("https accepted")
	}
}

// The Go client against a real server that fails every 10th request:
// failures are counted, nothing is resent.
func TestGoClosedLoop(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1)%10 == 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	tl := &timeline{start: time.Now()}
	r, err := goClosedLoop(srv.URL+"/", 4, 300*time.Millisecond, tl)
	if err != nil {
		t.Fatal(err)
	}
	if r.Requests == 0 || int64(r.Requests) != n.Load() {
		t.Fatalf("client counted %d requests, server saw %d", r.Requests, n.Load())
	}
	if r.Non2xx != int(n.Load()/10) || r.SocketErrors != 0 {
		t.Errorf("non-2xx %d (server failed %d), socket errors %d", r.Non2xx, n.Load()/10, r.SocketErrors)
	}
	ok, bad := 0, 0
	for i := range tl.ok {
		ok, bad = ok+tl.ok[i], bad+tl.bad[i]
	}
	if ok+bad != r.Requests || bad != r.Non2xx {
		t.Errorf("timeline %d ok %d failed, want %d requests %d failed", ok, bad, r.Requests, r.Non2xx)
	}
}

func TestIdleConns(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
	defer srv.Close()
	conns, failed := idleConns(srv.URL+"/", 20)
	if len(conns) != 20 || failed != 0 {
		t.Fatalf("%d open, %d failed", len(conns), failed)
	}
	if open := stillOpen(conns); open != 20 {
		t.Errorf("%d still open, want 20", open)
	}
	srv.CloseClientConnections()
	time.Sleep(50 * time.Millisecond)
	if open := stillOpen(conns); open != 0 {
		t.Errorf("%d still open after the server closed them all", open)
	}
	for _, c := range conns {
		c.Close()
	}
	var _ net.Conn = conns[0]
}

func TestRecovery(t *testing.T) {
	// 10 per slot, killed at 3 s: nothing for 1 s, then back.
	var ok []int
	for i := range 80 {
		switch {
		case i >= 30 && i < 40:
			ok = append(ok, 0)
		default:
			ok = append(ok, 10)
		}
	}
	base, back := recovery(ok, 3.0)
	if base != 100 {
		t.Errorf("baseline %v/s, want 100", base)
	}
	if back < 1.4 || back > 1.6 {
		t.Errorf("back after %v s, want 1.5 (1 s down plus the 500 ms window)", back)
	}
	// Half throughput for ever: never back.
	for i := 30; i < len(ok); i++ {
		ok[i] = 5
	}
	if _, back := recovery(ok, 3.0); back != -1 {
		t.Errorf("back after %v s at half throughput, want -1", back)
	}
}

func TestWorkerCounts(t *testing.T) {
	for n, want := range map[int][]int{1: {1}, 2: {1, 2}, 6: {1, 2, 4, 6}, 8: {1, 2, 4, 8}} {
		if got := workerCounts(n); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("workerCounts(%d) = %v, want %v", n, got, want)
		}
	}
}
