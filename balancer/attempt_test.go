package balancer_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// Passive health fires every time an endpoint fails PassiveFails times
// in a row, not only the first time.
func TestPassiveDownFiresEachTime(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there: every attempt fails to connect
	var downs atomic.Int32
	bal := newBalancer(t, balancer.Config{
		Retries:       new(0),
		PassiveFails:  3,
		Breaker:       balancer.BreakerConfig{Failures: 1000},
		OnPassiveDown: func(*balancer.Endpoint) { downs.Add(1) },
	})
	e := bal.NewEndpoint(1, 0, "tcp", addr)
	t.Cleanup(e.Close)
	bal.Add(e)
	srv := front(t, bal)
	for range 9 {
		if o := recv(t, send(srv.Client(), "GET", srv.URL+"/", nil)); o.status != http.StatusBadGateway {
			t.Fatalf("status %d, want 502", o.status)
		}
	}
	if n := downs.Load(); n != 3 {
		t.Fatalf("OnPassiveDown fired %d times for 9 failures in a row, want 3", n)
	}
}

// A worker that fails fast must not look fast to p2c_ewma: the healthy
// one takes 5 ms a request, the failing one answers 500 at once.
func TestFastFailuresDoNotAttractP2C(t *testing.T) {
	good, bad := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		Policy:  balancer.PolicyConfig{Name: balancer.P2CEWMA},
		Breaker: balancer.BreakerConfig{Failures: 1000}, // keep the breaker out of it
	})
	eps := join(t, bal, good, bad)
	srv := front(t, bal)
	if _, err := bad.Do(http.MethodPost, "/fail"); err != nil {
		t.Fatal(err)
	}
	const n = 100
	for range n {
		recv(t, send(srv.Client(), "GET", srv.URL+"/sleep?ms=5", nil))
	}
	if s := eps[1].Served(); s > n/10 {
		t.Fatalf("the failing worker served %d of %d requests, want few", s, n)
	}
}

// While a half-open breaker's probes are out, more requests wait for
// the verdict instead of failing at once.
func TestHalfOpenBreakerQueuesBeyondItsProbes(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		MaxInflight:  4,
		QueueTimeout: 10 * time.Second,
		Breaker:      balancer.BreakerConfig{Failures: 1, OpenFor: 100 * time.Millisecond, HalfOpenRequests: 1},
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()
	if _, err := p.Do(http.MethodPost, "/fail"); err != nil {
		t.Fatal(err)
	}
	recv(t, send(c, "GET", srv.URL+"/", nil))
	if _, err := p.Do(http.MethodPost, "/heal"); err != nil {
		t.Fatal(err)
	}
	await(t, "breaker half-open", func() bool { return eps[0].BreakerState() == "half-open" })
	// One by one, so that the first is the probe and the others queue.
	held := []<-chan outcome{send(c, "GET", srv.URL+"/block?id=probe", nil)}
	await(t, "the probe in the worker", func() bool { return p.Blocked() == 1 })
	for i := range 2 {
		held = append(held, send(c, "GET", srv.URL+"/block", nil))
		await(t, "the next request queued", func() bool { return bal.QueueLen() == i+1 })
	}
	if p.Blocked() != 1 {
		t.Fatalf("%d requests in the worker while its breaker is half-open, want the probe alone", p.Blocked())
	}
	_, _ = p.Do(http.MethodPost, "/release")
	if o := recv(t, held[0]); o.status != 200 {
		t.Fatalf("probe: %d", o.status)
	}
	// The probe closed the breaker: the queued requests go in together.
	await(t, "the queued requests in the worker", func() bool { return p.Blocked() == 2 })
	_, _ = p.Do(http.MethodPost, "/release")
	for i, h := range held[1:] {
		if o := recv(t, h); o.status != 200 {
			t.Fatalf("queued request %d: %d, want 200 once the probe succeeded", i, o.status)
		}
	}
}

// A client that leaves while its response streams is a 499, not a 502.
func TestClientLeavingMidStreamIs499(t *testing.T) {
	p := testworker.Start(t, "serve")
	statuses := make(chan int, 1)
	bal := newBalancer(t, balancer.Config{
		OnResult: func(_ *http.Request, res *balancer.Result) { statuses <- res.Status },
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/stream", nil)
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	if eps[0].Streams() != 1 || eps[0].Inflight() != 0 {
		t.Fatalf("an open stream: %d streams, %d in flight; want 1 and 0", eps[0].Streams(), eps[0].Inflight())
	}
	cancel()
	resp.Body.Close()
	select {
	case s := <-statuses:
		if s != 499 {
			t.Fatalf("reported %d for a client that left mid-stream, want 499", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
	}
	await(t, "stream closed", func() bool { return eps[0].Streams() == 0 })
}

// A panic in the OnAttempt hook gives the slot back.
func TestPanickingAttemptHookReleasesTheSlot(t *testing.T) {
	p := testworker.Start(t, "serve")
	var once sync.Once
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 1,
		OnAttempt: func(r *http.Request, _ *balancer.Attempt) (*http.Request, func(int, error)) {
			once.Do(func() { panic("hook") })
			return r, nil
		},
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the server logs the panic it recovers
	if _, err := srv.Client().Get(srv.URL + "/"); err == nil {
		t.Fatal("the request whose hook panicked got an answer")
	}
	if n := eps[0].Inflight(); n != 0 {
		t.Fatalf("%d slots held after the hook panicked", n)
	}
	if o := recv(t, send(srv.Client(), "GET", srv.URL+"/", nil)); o.status != 200 {
		t.Fatalf("next request: %d", o.status)
	}
}

// A request body the client breaks is the client's error: 400, and
// neither the breaker nor passive health hears of it.
func TestBrokenClientBodyIsNotTheWorkersFault(t *testing.T) {
	p := testworker.Start(t, "serve")
	var downs atomic.Int32
	bal := newBalancer(t, balancer.Config{
		PassiveFails:  1,
		Breaker:       balancer.BreakerConfig{Failures: 1},
		OnPassiveDown: func(*balancer.Endpoint) { downs.Add(1) },
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	for range 3 {
		conn, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		// The worker's /echo reads the whole body before it answers.
		_, _ = conn.Write([]byte("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n"))
		line, err := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if err != nil || !strings.Contains(line, " 400 ") {
			t.Fatalf("malformed chunked body: %q %v, want 400", line, err)
		}
	}
	if downs.Load() != 0 || eps[0].BreakerState() != "closed" {
		t.Fatalf("after clients' broken bodies: %d passive downs, breaker %s", downs.Load(), eps[0].BreakerState())
	}
}

// A worker that does not answer within the request timeout gets 504, and
// the timeout is the worker's failure: passive health and the breaker
// hear of it, by the lean forwarder as by ReverseProxy. Its connection
// is not used again (its deadline is in the past), so the next request
// to the same worker is answered.
func TestRequestTimeoutIsTheWorkersFailure(t *testing.T) {
	for _, standard := range []bool{false, true} {
		name := "lean"
		if standard {
			name = "reverseproxy"
		}
		t.Run(name, func(t *testing.T) {
			p := testworker.Start(t, "serve")
			var downs atomic.Int32
			bal := newBalancer(t, balancer.Config{
				Retries:        new(0),
				RequestTimeout: 150 * time.Millisecond,
				PassiveFails:   2,
				Breaker:        balancer.BreakerConfig{Failures: 1000},
				StandardProxy:  standard,
				OnPassiveDown:  func(*balancer.Endpoint) { downs.Add(1) },
			})
			eps := join(t, bal, p)
			srv := front(t, bal)
			// Warm a pooled connection: the timeouts below must not
			// leave it broken for the next request.
			if o := recv(t, send(srv.Client(), "GET", srv.URL+"/", nil)); o.status != http.StatusOK {
				t.Fatalf("first request: %d", o.status)
			}
			for i := range 4 {
				start := time.Now()
				o := recv(t, send(srv.Client(), "GET", srv.URL+"/sleep?ms=3000", nil))
				if o.status != http.StatusGatewayTimeout || time.Since(start) > 2*time.Second {
					t.Fatalf("request %d to a worker that answers after 3s: %d after %v, want 504 after the 150ms timeout", i, o.status, time.Since(start))
				}
			}
			if n := downs.Load(); n != 2 {
				t.Fatalf("OnPassiveDown fired %d times for 4 timeouts in a row (PassiveFails 2), want 2", n)
			}
			for range 3 {
				if o := recv(t, send(srv.Client(), "GET", srv.URL+"/", nil)); o.status != http.StatusOK {
					t.Fatalf("a request after the timeouts: %d, want 200", o.status)
				}
			}
			if eps[0].Served() < 4 {
				t.Fatalf("served %d", eps[0].Served())
			}
		})
	}
}

// An event stream gives its slot back as soon as it starts, whatever
// the case of its media type (RFC 9110: media types are
// case-insensitive), on both transport paths: with max_inflight 1 the
// worker serves another request while the stream stays open.
func TestEventStreamGivesItsSlotBack(t *testing.T) {
	p := testworker.Start(t, "serve")
	for _, standard := range []bool{false, true} {
		for _, ct := range []string{"text/event-stream", "Text/Event-Stream", "TEXT/EVENT-STREAM; charset=utf-8"} {
			t.Run(fmt.Sprintf("standard=%v/%s", standard, ct), func(t *testing.T) {
				bal := newBalancer(t, balancer.Config{MaxInflight: 1, StandardProxy: standard})
				eps := join(t, bal, p)
				srv := front(t, bal)
				resp, err := srv.Client().Get(srv.URL + "/stream?type=" + url.QueryEscape(ct))
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				rd := bufio.NewReader(resp.Body)
				if line, err := rd.ReadString('\n'); err != nil || line != "data: first\n" {
					t.Fatalf("first event %q, %v", line, err)
				}
				if eps[0].Streams() != 1 || eps[0].Inflight() != 0 {
					t.Fatalf("an open %q stream: %d streams, %d in flight; want 1 and 0", ct, eps[0].Streams(), eps[0].Inflight())
				}
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/pid", nil)
				r2, err := srv.Client().Do(req)
				if err != nil {
					t.Fatalf("a request beside the open stream: %v", err)
				}
				r2.Body.Close()
				if r2.StatusCode != 200 {
					t.Fatalf("a request beside the open stream: %s", r2.Status)
				}
				if _, err := p.Do(http.MethodPost, "/release"); err != nil {
					t.Fatal(err)
				}
				if _, err := io.ReadAll(rd); err != nil {
					t.Fatal(err)
				}
				await(t, "stream closed", func() bool { return eps[0].Streams() == 0 })
			})
		}
	}
}

// Both transport paths take a worker's response head up to one limit,
// and name it when a head is over it: a 502 that says what happened,
// not "the worker did not answer".
func TestResponseHeadLimit(t *testing.T) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("kib"))
		w.Header().Set("X-Big", strings.Repeat("a", n<<10))
		_, _ = io.WriteString(w, "ok")
	}))
	defer worker.Close()
	for _, standard := range []bool{false, true} {
		t.Run(fmt.Sprintf("standard=%v", standard), func(t *testing.T) {
			bal := newBalancer(t, balancer.Config{StandardProxy: standard, Retries: new(0)})
			e := bal.NewEndpoint(1, 0, "tcp", worker.Listener.Addr().String())
			t.Cleanup(e.Close)
			bal.Add(e)
			for _, c := range []struct {
				kib  int
				want int
			}{{512, 200}, {1100, 502}} {
				rec := httptest.NewRecorder()
				bal.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, fmt.Sprintf("/?kib=%d", c.kib), nil))
				if rec.Code != c.want {
					t.Fatalf("a %d KiB header: %d, want %d", c.kib, rec.Code, c.want)
				}
				if c.want == 502 && !strings.Contains(rec.Body.String(), "response head larger than 1 MiB") {
					t.Fatalf("a %d KiB header: %q does not say what was wrong", c.kib, rec.Body)
				}
			}
		})
	}
}
