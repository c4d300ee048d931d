package balancer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	goleak.VerifyTestMain(m)
}

// front serves b on a real socket, as Caddy's server would.
func front(t *testing.T, b http.Handler) *httptest.Server {
	srv := httptest.NewServer(b)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

func newBalancer(t *testing.T, cfg balancer.Config) *balancer.Balancer {
	t.Helper()
	b, err := balancer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// join makes an endpoint for each worker process, numbered from 1, and
// puts them in rotation.
func join(t *testing.T, b *balancer.Balancer, procs ...*testworker.Proc) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, len(procs))
	for i, p := range procs {
		eps[i] = b.NewEndpoint(i+1, p.PID, p.Network, p.Address)
		t.Cleanup(eps[i].Close)
		b.Add(eps[i])
	}
	return eps
}

func getReply(t *testing.T, c *http.Client, url string, hdr http.Header) testworker.Reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET %s: %d %s", url, resp.StatusCode, b)
	}
	var r testworker.Reply
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLeastInflightAvoidsBusyWorker(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{})
	eps := join(t, bal, a, b)
	ea, eb := eps[0], eps[1]
	srv := front(t, bal)
	c := srv.Client()

	blocked := make(chan int, 1)
	go func() {
		resp, err := c.Get(srv.URL + "/block")
		if err != nil {
			blocked <- 0
			return
		}
		defer resp.Body.Close()
		var r struct{ PID int }
		_ = json.NewDecoder(resp.Body).Decode(&r)
		blocked <- r.PID
	}()
	testworker.Eventually(t, 5*time.Second, "the blocking request in flight", func() bool {
		return ea.Inflight()+eb.Inflight() == 1
	})
	busy, free := a, b
	if eb.Inflight() == 1 {
		busy, free = b, a
	}
	for range 20 {
		if got := getReply(t, c, srv.URL+"/", nil).PID; got != free.PID {
			t.Fatalf("request went to pid %d, which holds a blocked request; the free worker is %d", got, free.PID)
		}
	}
	if _, err := busy.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	if pid := <-blocked; pid != busy.PID {
		t.Fatalf("blocked request answered by %d, want %d", pid, busy.PID)
	}
	if ea.Inflight() != 0 || eb.Inflight() != 0 {
		t.Fatalf("in flight after all answered: %d, %d", ea.Inflight(), eb.Inflight())
	}
	if ea.Served()+eb.Served() != 21 {
		t.Fatalf("served %d, want 21", ea.Served()+eb.Served())
	}
}

func TestPoliciesSpreadIdleLoad(t *testing.T) {
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	for _, name := range []string{balancer.LeastInflight, balancer.P2CEWMA, balancer.RoundRobin, balancer.Random} {
		t.Run(name, func(t *testing.T) {
			bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: name}})
			eps := fakeEndpoints(bal, 4)
			p, err := balancer.NewPolicy(balancer.PolicyConfig{Name: name})
			if err != nil {
				t.Fatal(err)
			}
			seen := map[int]int{}
			for range 400 {
				seen[p.Select(eps, &balancer.Pick{Request: req}).Worker]++
			}
			// Idle endpoints: the policy must spread the load, not pin
			// the first endpoint.
			for _, e := range eps {
				if seen[e.Worker] < 40 {
					t.Fatalf("worker %d picked %d of 400 times: %v", e.Worker, seen[e.Worker], seen)
				}
			}
		})
	}
	first, _ := balancer.NewPolicy(balancer.PolicyConfig{Name: balancer.First})
	bal := newBalancer(t, balancer.Config{})
	eps := fakeEndpoints(bal, 3)
	if e := first.Select(eps, &balancer.Pick{Request: req}); e.Worker != 1 {
		t.Fatalf("first picked worker %d", e.Worker)
	}
}

// fakeEndpoints makes endpoints that are never dialled: policies only
// look at their load.
func fakeEndpoints(b *balancer.Balancer, n int) []*balancer.Endpoint {
	eps := make([]*balancer.Endpoint, n)
	for i := range eps {
		eps[i] = b.NewEndpoint(i+1, 0, "tcp", "127.0.0.1:1")
	}
	return eps
}

func TestBadPolicyConfig(t *testing.T) {
	for _, c := range []struct {
		cfg  balancer.PolicyConfig
		want string
	}{
		{balancer.PolicyConfig{Name: "fastest"}, "unknown policy"},
		{balancer.PolicyConfig{Name: "hash", HashOn: "header"}, "give the header name"},
		{balancer.PolicyConfig{Name: "hash", HashOn: "path"}, "hash on header"},
	} {
		if _, err := balancer.NewPolicy(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewPolicy(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
	for _, c := range []struct {
		cfg  balancer.Config
		want string
	}{
		{balancer.Config{MaxInflight: -1}, "max_inflight"},
		{balancer.Config{QueueSize: -5}, "queue_size"},
		{balancer.Config{Retries: new(9)}, "retries"},
		{balancer.Config{Retries: new(-1)}, "retries"},
		{balancer.Config{Breaker: balancer.BreakerConfig{Statuses: []int{42}}}, "statuses"},
	} {
		if _, err := balancer.New(c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", c.cfg, err, c.want)
		}
	}
}

func TestNoEndpointAnswers503(t *testing.T) {
	srv := front(t, newBalancer(t, balancer.Config{}))
	began := time.Now()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if took := time.Since(began); took > 2*time.Second {
		t.Fatalf("503 took %v", took)
	}
	checkProblem(t, resp, http.StatusServiceUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("503 without Retry-After")
	}
}

func checkProblem(t *testing.T, resp *http.Response, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d", resp.StatusCode, status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type %q, want %q", ct, problem.ContentType)
	}
	var d problem.Details
	if err := json.NewDecoder(resp.Body).Decode(&d); err != nil {
		t.Fatal(err)
	}
	if d.Status != status || d.Title == "" {
		t.Fatalf("problem %+v", d)
	}
}

func TestDeadEndpointAnswers502(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	var seen error
	bal := newBalancer(t, balancer.Config{
		OnError: func(_ *balancer.Endpoint, _ *http.Request, err error) { seen = err },
	})
	e := bal.NewEndpoint(7, 0, "tcp", addr)
	defer e.Close()
	bal.Add(e)
	srv := front(t, bal)
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	checkProblem(t, resp, http.StatusBadGateway)
	if seen == nil || !strings.Contains(seen.Error(), "refused") {
		t.Fatalf("OnError saw %v", seen)
	}
}

func TestAddRemove(t *testing.T) {
	bal := newBalancer(t, balancer.Config{})
	e := bal.NewEndpoint(1, 0, "tcp", "127.0.0.1:1")
	bal.Add(e)
	bal.Add(e)
	if n := len(bal.Endpoints()); n != 1 {
		t.Fatalf("%d endpoints after adding one twice", n)
	}
	if !bal.Remove(e) || bal.Remove(e) || len(bal.Endpoints()) != 0 {
		t.Fatal("Remove did not remove exactly once")
	}
}

func TestForwardedHeaders(t *testing.T) {
	p := testworker.Start(t, "serve")
	for _, trusted := range []bool{false, true} {
		t.Run("trusted="+strconv.FormatBool(trusted), func(t *testing.T) {
			bal := newBalancer(t, balancer.Config{TrustForwarded: func(*http.Request) bool { return trusted }})
			join(t, bal, p)
			srv := front(t, bal)
			req := http.Header{"X-Forwarded-For": {"203.0.113.9"}, "X-Forwarded-Proto": {"https"}}
			r := getReply(t, srv.Client(), srv.URL+"/x", req)
			host := strings.TrimPrefix(srv.URL, "http://")
			wantXFF, wantProto := "127.0.0.1", "http"
			if trusted {
				wantXFF, wantProto = "203.0.113.9, 127.0.0.1", "https"
			}
			if got := r.Header.Get("X-Forwarded-For"); got != wantXFF {
				t.Errorf("X-Forwarded-For %q, want %q", got, wantXFF)
			}
			if got := r.Header.Get("X-Forwarded-Proto"); got != wantProto {
				t.Errorf("X-Forwarded-Proto %q, want %q", got, wantProto)
			}
			if got := r.Header.Get("X-Forwarded-Host"); got != host {
				t.Errorf("X-Forwarded-Host %q, want %q", got, host)
			}
			if r.Host != host || r.Path != "/x" {
				t.Errorf("worker saw Host %q path %q, want %q /x", r.Host, r.Path, host)
			}
		})
	}
}

func TestStreamingArrivesIncrementally(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{})
	join(t, bal, p)
	srv := front(t, bal)
	resp, err := srv.Client().Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	// The worker holds the rest of the stream until /release: reading the
	// first event now proves it was flushed through on its own.
	line, err := rd.ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	if _, err := p.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "\ndata: last\n\n" {
		t.Fatalf("rest %q, %v", rest, err)
	}
}

func TestWebSocketEcho(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{})
	join(t, bal, p)
	srv := front(t, bal)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	for _, msg := range []string{"hello", "world"} {
		if err := c.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.Read(ctx)
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("read %q, %v", got, err)
		}
	}
	c.Close(websocket.StatusNormalClosure, "")
}

// When the pool ends a WebSocket (a drain or a stop that reached its
// timeout), the client gets a close frame with status 1001, going away,
// as from a server that shuts down, not a dropped connection (1006).
func TestCloseSocketsSaysGoingAway(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{})
	eps := join(t, bal, p)
	srv := front(t, bal)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := testworker.EchoSocket(ctx, t, srv.URL)
	if n := eps[0].CloseSockets(); n != 1 {
		t.Fatalf("closed %d sockets, want 1", n)
	}
	_, _, err := c.Read(ctx)
	if s := websocket.CloseStatus(err); s != websocket.StatusGoingAway {
		t.Fatalf("the client read %v (status %d), want a close frame with status 1001", err, s)
	}
	await(t, "the stream ended", func() bool { return eps[0].Streams() == 0 })
}
