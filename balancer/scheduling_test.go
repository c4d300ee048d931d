package balancer_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// blockReply is what /block answers once released.
type blockReply struct {
	PID int    `json:"pid"`
	ID  string `json:"id"`
}

type outcome struct {
	status int
	reply  blockReply
	header http.Header
	err    error
}

// send runs a request in the background; its outcome arrives on the
// returned channel.
func send(c *http.Client, method, url string, body io.Reader) <-chan outcome {
	ch := make(chan outcome, 1)
	go func() {
		req, _ := http.NewRequest(method, url, body)
		resp, err := c.Do(req)
		if err != nil {
			ch <- outcome{err: err}
			return
		}
		defer resp.Body.Close()
		o := outcome{status: resp.StatusCode, header: resp.Header}
		b, _ := io.ReadAll(resp.Body)
		_ = json.Unmarshal(b, &o.reply)
		ch <- o
	}()
	return ch
}

func recv(t *testing.T, ch <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-ch:
		if o.err != nil {
			t.Fatal(o.err)
		}
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("no answer")
	}
	return outcome{}
}

func await(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testworker.Eventually(t, 10*time.Second, what, cond)
}

func TestQueuedRequestGoesToFirstWorkerThatFreesUp(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	var mu sync.Mutex
	var waits []time.Duration
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 1,
		OnResult: func(_ *http.Request, res *balancer.Result) {
			mu.Lock()
			waits = append(waits, res.QueueWait)
			mu.Unlock()
		},
	})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()

	first := send(c, "GET", srv.URL+"/block?id=1", nil)
	second := send(c, "GET", srv.URL+"/block?id=2", nil)
	await(t, "both workers holding a request", func() bool { return a.Blocked() == 1 && b.Blocked() == 1 })
	third := send(c, "GET", srv.URL+"/", nil)
	await(t, "the third request queued", func() bool { return bal.QueueLen() == 1 })
	if eps[0].Inflight() != 1 || eps[1].Inflight() != 1 {
		t.Fatal("a worker at max_inflight 1 took a second request")
	}

	// Free worker b: the waiting request must go there at once.
	if _, err := b.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	// One of the blocked requests is on b; it finishes, and the queued
	// request takes b's freed slot.
	var onA <-chan outcome
	select {
	case o := <-first:
		onA = second
		if o.reply.PID != b.PID {
			t.Fatalf("request 1 answered by %d without a release", o.reply.PID)
		}
	case o := <-second:
		onA = first
		if o.reply.PID != b.PID {
			t.Fatalf("request 2 answered by %d without a release", o.reply.PID)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("worker b's request did not finish")
	}
	if o := recv(t, third); o.status != 200 {
		t.Fatalf("queued request: %d", o.status)
	}
	if eps[1].Served() != 2 || eps[0].Served() != 0 {
		t.Fatalf("served a=%d b=%d, want the queued request on b", eps[0].Served(), eps[1].Served())
	}
	if _, err := a.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	recv(t, onA)
	mu.Lock()
	defer mu.Unlock()
	queued := 0
	for _, w := range waits {
		if w > 0 {
			queued++
		}
	}
	if queued != 1 {
		t.Fatalf("queue waits %v: want exactly one request with a recorded wait", waits)
	}
}

func TestQueueIsFIFO(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1})
	join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()

	var chans []<-chan outcome
	for i := range 5 {
		chans = append(chans, send(c, "GET", fmt.Sprintf("%s/block?id=%d", srv.URL, i), nil))
		// Each request is in place (in the worker, then in the queue)
		// before the next is sent, so the arrival order is known.
		await(t, fmt.Sprintf("request %d in place", i), func() bool {
			return p.Blocked() == 1 && bal.QueueLen() == i
		})
	}
	for i := range 5 {
		if _, err := p.Do(http.MethodPost, "/release"); err != nil {
			t.Fatal(err)
		}
		o := recv(t, chans[i])
		if o.reply.ID != fmt.Sprint(i) {
			t.Fatalf("answer %d was request %q: the queue is not FIFO", i, o.reply.ID)
		}
		if i < 4 {
			await(t, "the next request in the worker", func() bool {
				return p.Blocked() == 1 && bal.QueueLen() == 3-i
			})
		}
	}
}

func TestQueueTimeoutAndOverflow(t *testing.T) {
	p := testworker.Start(t, "serve")
	// A worker held by /block is idle: parking would let the queued
	// request through (see TestIdleWorkerParksItsLongPolls).
	bal := newBalancer(t, balancer.Config{MaxInflight: 1, QueueSize: 1, QueueTimeout: 300 * time.Millisecond, ParkIdle: -1})
	join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()
	held := send(c, "GET", srv.URL+"/block", nil)
	await(t, "worker busy", func() bool { return p.Blocked() == 1 })

	waiting := send(c, "GET", srv.URL+"/", nil)
	await(t, "one request queued", func() bool { return bal.QueueLen() == 1 })
	// The queue holds one: the next is refused at once.
	resp, err := c.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	checkProblem(t, resp, http.StatusServiceUnavailable)
	resp.Body.Close()
	if resp.Header.Get("Retry-After") == "" {
		t.Fatal("queue overflow 503 without Retry-After")
	}
	// The queued one times out.
	o := recv(t, waiting)
	if o.status != http.StatusServiceUnavailable || o.header.Get("Retry-After") == "" {
		t.Fatalf("queue timeout: %d, Retry-After %q", o.status, o.header.Get("Retry-After"))
	}
	if bal.QueueLen() != 0 {
		t.Fatalf("queue length %d after the timeout", bal.QueueLen())
	}
	if _, err := p.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	recv(t, held)
}

func TestCancelledWaiterLeavesQueue(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1})
	eps := join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()
	held := send(c, "GET", srv.URL+"/block", nil)
	await(t, "worker busy", func() bool { return p.Blocked() == 1 })

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/", nil)
		_, err := c.Do(req)
		done <- err
	}()
	await(t, "request queued", func() bool { return bal.QueueLen() == 1 })
	cancel()
	<-done
	await(t, "cancelled request out of the queue", func() bool { return bal.QueueLen() == 0 })

	if _, err := p.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	recv(t, held)
	if eps[0].Inflight() != 0 || eps[0].Served() != 1 {
		t.Fatalf("inflight %d served %d: the cancelled request must never reach the worker", eps[0].Inflight(), eps[0].Served())
	}
}

func TestRendezvousHashing(t *testing.T) {
	bal := newBalancer(t, balancer.Config{})
	eps := fakeEndpoints(bal, 5)
	pol, err := balancer.NewPolicy(balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashHeader, HashKey: "X-User"})
	if err != nil {
		t.Fatal(err)
	}
	pick := func(eps []*balancer.Endpoint, key string) int {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("X-User", key)
		return pol.Select(eps, &balancer.Pick{Request: r}).Worker
	}
	const keys = 2000
	before := make(map[string]int, keys)
	perWorker := map[int]int{}
	for i := range keys {
		k := fmt.Sprintf("user-%d", i)
		before[k] = pick(eps, k)
		perWorker[before[k]]++
		if again := pick(eps, k); again != before[k] {
			t.Fatalf("key %s went to %d, then %d", k, before[k], again)
		}
	}
	for w, n := range perWorker {
		if n < keys/5/2 {
			t.Fatalf("worker %d got %d of %d keys: %v", w, n, keys, perWorker)
		}
	}
	// Worker 3 leaves: only its keys move, and they spread over the rest.
	rest := []*balancer.Endpoint{eps[0], eps[1], eps[3], eps[4]}
	moved := 0
	for k, w := range before {
		now := pick(rest, k)
		if w != 3 && now != w {
			t.Fatalf("key %s moved from %d to %d though its worker stayed", k, w, now)
		}
		if w == 3 {
			moved++
		}
	}
	if moved < keys/5/2 || moved > keys/5*2 {
		t.Fatalf("%d of %d keys moved, want about 1/5", moved, keys)
	}
}

func TestHashFallsBackToNextInRankingWhenFull(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		MaxInflight: 1,
		Policy:      balancer.PolicyConfig{Name: balancer.Hash, HashOn: balancer.HashHeader, HashKey: "X-User", Spill: true},
	})
	join(t, bal, a, b)
	srv := front(t, bal)
	get := func(path string) <-chan outcome {
		ch := make(chan outcome, 1)
		go func() {
			req, _ := http.NewRequest(http.MethodGet, srv.URL+path, nil)
			req.Header.Set("X-User", "alice")
			resp, err := srv.Client().Do(req)
			if err != nil {
				ch <- outcome{err: err}
				return
			}
			defer resp.Body.Close()
			var r blockReply
			_ = json.NewDecoder(resp.Body).Decode(&r)
			ch <- outcome{status: resp.StatusCode, reply: r}
		}()
		return ch
	}
	home := recv(t, get("/")).reply.PID
	for range 5 {
		if pid := recv(t, get("/")).reply.PID; pid != home {
			t.Fatalf("sticky key went to %d, then %d", home, pid)
		}
	}
	held := get("/block")
	await(t, "alice's worker busy", func() bool { return a.Blocked()+b.Blocked() == 1 })
	if pid := recv(t, get("/")).reply.PID; pid == home {
		t.Fatal("a full worker took its key's request")
	}
	for _, p := range []*testworker.Proc{a, b} {
		if p.PID == home {
			_, _ = p.Do(http.MethodPost, "/release")
		}
	}
	recv(t, held)
}

func TestBreakerOpensThenProbes(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	var mu sync.Mutex
	var changes []string
	bal := newBalancer(t, balancer.Config{
		// "first" sends everything to worker 1 while it is usable.
		Policy:  balancer.PolicyConfig{Name: balancer.First},
		Breaker: balancer.BreakerConfig{Failures: 3, OpenFor: 200 * time.Millisecond, HalfOpenRequests: 2},
		OnBreakerChange: func(e *balancer.Endpoint, from, to string) {
			mu.Lock()
			changes = append(changes, fmt.Sprintf("%d:%s>%s", e.Worker, from, to))
			mu.Unlock()
		},
	})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()
	if _, err := a.Do(http.MethodPost, "/fail"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if o := recv(t, send(c, "GET", srv.URL+"/", nil)); o.status != 500 {
			t.Fatalf("request %d: %d, want worker 1's 500", i, o.status)
		}
	}
	if got := eps[0].BreakerState(); got != "open" {
		t.Fatalf("breaker %s after 3 failures", got)
	}
	for range 10 {
		if o := recv(t, send(c, "GET", srv.URL+"/", nil)); o.status != 200 || o.reply.PID != b.PID {
			t.Fatalf("with worker 1's breaker open: %d from pid %d, want 200 from worker 2", o.status, o.reply.PID)
		}
	}
	if eps[0].Served() != 3 {
		t.Fatalf("worker 1 served %d requests while its breaker was open", eps[0].Served())
	}
	if _, err := a.Do(http.MethodPost, "/heal"); err != nil {
		t.Fatal(err)
	}
	await(t, "breaker half-open after open_for", func() bool { return eps[0].BreakerState() == "half-open" })
	// Three requests that stay in flight: worker 1 may take exactly two
	// probes; the third goes to worker 2.
	var held []<-chan outcome
	for i := range 3 {
		held = append(held, send(c, "GET", fmt.Sprintf("%s/block?id=%d", srv.URL, i), nil))
		await(t, fmt.Sprintf("request %d in a worker", i), func() bool { return a.Blocked()+b.Blocked() == i+1 })
	}
	if eps[0].Inflight() != 2 || eps[1].Inflight() != 1 {
		t.Fatalf("in flight: worker 1 %d, worker 2 %d; want exactly 2 probes on worker 1", eps[0].Inflight(), eps[1].Inflight())
	}
	_, _ = a.Do(http.MethodPost, "/release")
	_, _ = b.Do(http.MethodPost, "/release")
	for _, h := range held {
		if o := recv(t, h); o.status != 200 {
			t.Fatalf("probe answered %d", o.status)
		}
	}
	if got := eps[0].BreakerState(); got != "closed" {
		t.Fatalf("breaker %s after 2 successful probes", got)
	}
	mu.Lock()
	defer mu.Unlock()
	want := "1:closed>open 1:open>half-open 1:half-open>closed"
	if got := strings.Join(changes, " "); got != want {
		t.Fatalf("breaker changes %q, want %q", got, want)
	}
}

func TestRetryOnAnotherWorkerWhenListenerClosed(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.First}})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	if _, err := a.Do(http.MethodPost, "/close-listener"); err != nil {
		t.Fatal(err)
	}
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		// Even a POST is retried: it never reached worker 1.
		o := recv(t, send(srv.Client(), method, srv.URL+"/", strings.NewReader("payload")))
		if o.status != 200 {
			t.Fatalf("%s: %d, want 200 from worker 2", method, o.status)
		}
	}
	if eps[1].Served() != 2 {
		t.Fatalf("worker 2 served %d, want 2", eps[1].Served())
	}
}

func TestBrokenConnectionRetriesOnlyIdempotent(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{Policy: balancer.PolicyConfig{Name: balancer.First}})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	c := srv.Client()
	// Worker 1's /die reads the request and closes the connection; worker
	// 2's does too, so a retried GET fails twice and says 502, having
	// reached both. A POST reaches only worker 1.
	o := recv(t, send(c, http.MethodPost, srv.URL+"/die", strings.NewReader("order #1")))
	if o.status != http.StatusBadGateway {
		t.Fatalf("POST: %d, want 502", o.status)
	}
	if eps[0].Served() != 1 || eps[1].Served() != 0 {
		t.Fatalf("POST reached worker 1 %d and worker 2 %d times; a POST the worker read must not be retried", eps[0].Served(), eps[1].Served())
	}
	o = recv(t, send(c, http.MethodGet, srv.URL+"/die", nil))
	if o.status != http.StatusBadGateway || eps[1].Served() != 1 {
		t.Fatalf("GET: %d, worker 2 served %d; an idempotent request is retried on another worker", o.status, eps[1].Served())
	}
}

func TestAdaptiveLimitConverges(t *testing.T) {
	// With the worker's pid the limit reads its CPU time; without it (an
	// endpoint found by discovery) it has to probe a second slot.
	drive := func(t *testing.T, path string, clients, each int, knownPID bool) *balancer.Endpoint {
		p := testworker.Start(t, "serve")
		bal := newBalancer(t, balancer.Config{AdaptiveLimit: true})
		pid := 0
		if knownPID {
			pid = p.PID
		}
		e := bal.NewEndpoint(1, pid, p.Network, p.Address)
		t.Cleanup(e.Close)
		bal.Add(e)
		srv := front(t, bal)
		var wg sync.WaitGroup
		for range clients {
			wg.Go(func() {
				for range each {
					resp, err := srv.Client().Get(srv.URL + path)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		}
		wg.Wait()
		return e
	}
	for _, knownPID := range []bool{true, false} {
		t.Run(fmt.Sprintf("pid known=%v", knownPID), func(t *testing.T) {
			t.Run("one request at a time", func(t *testing.T) {
				e := drive(t, "/cpu?ms=3", 8, 40, knownPID)
				// 1, or a few short slots where the hand-off is long next
				// to 3 ms (a busy host).
				if l := e.Limit(); l > 4 {
					t.Fatalf("limit %d for a worker that serves one request at a time, want 1–4", l)
				}
			})
			t.Run("waits without CPU", func(t *testing.T) {
				e := drive(t, "/sleep?ms=10", 16, 40, knownPID)
				if l := e.Limit(); l < 6 {
					t.Fatalf("limit %d for a worker whose latency does not grow with load, want well above 1", l)
				}
			})
		})
	}
}

// A worker that computes, one request at a time, idles at a limit of 1
// for every hand-off (its response to Go, the next request to it):
// max_inflight auto gives it a second slot while its requests are short
// next to that, and keeps it at one for a mix whose slow requests would
// hold fast ones up inside the worker.
func TestAdaptiveLimitSecondSlotForShortRequests(t *testing.T) {
	for _, c := range []struct {
		name string
		path func(i int) string
		each int // requests per client
		// Share of requests that found the limit at 2 or more. A host
		// much busier than its cores can make the worker look as if it
		// waited rather than computed, for a while (it gets under
		// cpuBoundShare of a CPU): the mix may have some. Alone it has
		// none; beside 4 busy processes 0–11%; in CI, beside the other
		// packages' tests, once 22%. Without the mix's protection it
		// would be nearly all, as the first case is.
		atLeast, atMost float64
	}{
		{"500 µs of CPU", func(int) string { return "/cpu?us=500" }, 300, 0.25, 1},
		{"1 ms with every 20th 50 ms", func(i int) string {
			if i%20 == 0 {
				return "/cpu?ms=50"
			}
			return "/cpu?ms=1"
		}, 100, 0, 0.4},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := testworker.Start(t, "serve")
			bal := newBalancer(t, balancer.Config{AdaptiveLimit: true})
			e := join(t, bal, p)[0]
			srv := front(t, bal)
			const clients = 8
			each := c.each
			var second atomic.Int64
			var wg sync.WaitGroup
			for g := range clients {
				wg.Go(func() {
					for i := range each {
						resp, err := srv.Client().Get(srv.URL + c.path(g*each+i))
						if err != nil {
							t.Error(err)
							return
						}
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						if e.Limit() >= 2 {
							second.Add(1)
						}
					}
				})
			}
			wg.Wait()
			share := float64(second.Load()) / float64(clients*each)
			if share < c.atLeast || share > c.atMost {
				t.Fatalf("%.0f%% of requests found a second slot, want %.0f–%.0f%%", 100*share, 100*c.atLeast, 100*c.atMost)
			}
		})
	}
}

// Many more clients than the workers can serve at once (1500 against two
// workers, each request 300 µs of CPU) all wait their turn: the queue
// admits whoever can be served within queue_timeout, so nobody is turned
// away to come straight back and cost the workers' CPU in refusals.
func TestOverloadIsQueuedNotRefused(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{AdaptiveLimit: true})
	join(t, bal, a, b)
	srv := front(t, bal)
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 2000}}
	t.Cleanup(c.CloseIdleConnections)
	const clients, each = 1500, 4
	var refused atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range each {
				resp, err := c.Get(srv.URL + "/cpu?us=300")
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					refused.Add(1)
				}
			}
		})
	}
	wg.Wait()
	// Refusing by count refused about a third (1,915 of 6,000); by
	// deadline none on a quiet machine. A machine busy with other test
	// packages stalls the workers for moments the queue cannot foresee,
	// so the bound leaves room for that and still tells the two apart.
	if n := refused.Load(); n > clients*each/10 {
		t.Fatalf("%d of %d requests refused, want at most 10%%", n, clients*each)
	}
}

func TestQueueDrainsWhenLastWorkerLeaves(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1})
	eps := join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()
	held := send(c, "GET", srv.URL+"/block", nil)
	await(t, "worker busy", func() bool { return p.Blocked() == 1 })
	waiting := send(c, "GET", srv.URL+"/", nil)
	await(t, "request queued", func() bool { return bal.QueueLen() == 1 })
	// The only worker leaves rotation (it died, say): the waiting request
	// must get its 503 now, not after queue_timeout (10 s).
	bal.Remove(eps[0])
	select {
	case o := <-waiting:
		if o.status != http.StatusServiceUnavailable {
			t.Fatalf("waiting request got %d, want 503", o.status)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiting request still queued after the last worker left")
	}
	_, _ = p.Do(http.MethodPost, "/release")
	recv(t, held)
}

func TestLongLivedResponsesGiveTheirSlotBack(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{MaxInflight: 1, QueueTimeout: 5 * time.Second})
	eps := join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()

	// A server-sent event stream stays open...
	resp, err := c.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	if err != nil || line != "data: first\n" {
		t.Fatalf("stream: %q %v", line, err)
	}
	// ...and so does a WebSocket.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	// With max_inflight 1, a plain request still gets the worker at once.
	if o := recv(t, send(c, "GET", srv.URL+"/", nil)); o.status != 200 {
		t.Fatalf("request next to open streams: %d", o.status)
	}
	if n := eps[0].Inflight(); n != 0 {
		t.Fatalf("%d slots held by open streams", n)
	}
	_, _ = p.Do(http.MethodPost, "/release")
}

func TestRequestTimeoutAnswers504AndReportsHung(t *testing.T) {
	a, b := testworker.Start(t, "serve"), testworker.Start(t, "serve")
	hung := make(chan int, 1)
	bal := newBalancer(t, balancer.Config{
		Policy:         balancer.PolicyConfig{Name: balancer.First},
		RequestTimeout: 300 * time.Millisecond,
		OnHung:         func(e *balancer.Endpoint) { hung <- e.Worker },
	})
	eps := join(t, bal, a, b)
	srv := front(t, bal)
	// /block never answers on its own: the worker looks stuck.
	o := recv(t, send(srv.Client(), "GET", srv.URL+"/block", nil))
	if o.status != http.StatusGatewayTimeout {
		t.Fatalf("status %d, want 504", o.status)
	}
	select {
	case w := <-hung:
		if w != 1 {
			t.Fatalf("OnHung for worker %d, want 1", w)
		}
	default:
		t.Fatal("OnHung not called")
	}
	if eps[1].Served() != 0 {
		t.Fatal("a timed-out request was retried on another worker")
	}
	if c := eps[0].BreakerState(); c != "closed" {
		t.Fatalf("breaker %s after one timeout", c)
	}
	_, _ = a.Do(http.MethodPost, "/release")
}

func TestRequestTimeoutBoundsOnlyTheWaitForAnAnswer(t *testing.T) {
	p := testworker.Start(t, "serve")
	hung := make(chan int, 1)
	bal := newBalancer(t, balancer.Config{
		RequestTimeout: 200 * time.Millisecond,
		Breaker:        balancer.BreakerConfig{Failures: 1},
		OnHung:         func(e *balancer.Endpoint) { hung <- e.Worker },
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	resp, err := srv.Client().Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	if line, err := rd.ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	// The stream outlives the timeout: it answered in time.
	time.Sleep(400 * time.Millisecond)
	if _, err := p.Do(http.MethodPost, "/release"); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(rd)
	if err != nil || string(rest) != "\ndata: last\n\n" {
		t.Fatalf("rest of the stream %q, %v", rest, err)
	}
	select {
	case w := <-hung:
		t.Fatalf("worker %d reported hung for a stream that answered in time", w)
	default:
	}
	if s := eps[0].BreakerState(); s != "closed" {
		t.Fatalf("breaker %s after a stream that answered in time", s)
	}
}

func TestStreamingProbeDoesNotHoldTheBreaker(t *testing.T) {
	p := testworker.Start(t, "serve")
	bal := newBalancer(t, balancer.Config{
		Breaker: balancer.BreakerConfig{Failures: 1, OpenFor: 100 * time.Millisecond},
	})
	eps := join(t, bal, p)
	srv := front(t, bal)
	c := srv.Client()
	if _, err := p.Do(http.MethodPost, "/fail"); err != nil {
		t.Fatal(err)
	}
	if o := recv(t, send(c, "GET", srv.URL+"/", nil)); o.status != 500 {
		t.Fatalf("status %d, want the worker's 500", o.status)
	}
	if _, err := p.Do(http.MethodPost, "/heal"); err != nil {
		t.Fatal(err)
	}
	await(t, "breaker half-open", func() bool { return eps[0].BreakerState() == "half-open" })
	// The probe is a stream that stays open...
	resp, err := c.Get(srv.URL + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if line, err := bufio.NewReader(resp.Body).ReadString('\n'); err != nil || line != "data: first\n" {
		t.Fatalf("first event %q, %v", line, err)
	}
	// ...but it answered 200, which closes the breaker now.
	if s := eps[0].BreakerState(); s != "closed" {
		t.Fatalf("breaker %s while a successful streaming probe is open", s)
	}
	if o := recv(t, send(c, "GET", srv.URL+"/", nil)); o.status != 200 {
		t.Fatalf("request beside the stream: %d", o.status)
	}
	_, _ = p.Do(http.MethodPost, "/release")
}
