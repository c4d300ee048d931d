//go:build unix

package balancer_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"syscall"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/transport"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// BenchmarkProxy sends tiny requests to a real worker process, straight
// ("direct") and through the balancer on a real socket ("balancer",
// and "balancer-timeout" with the module's default request timeout of a
// minute). The ratio of the two is the cost of the front; allocs/op
// counts the client and, in the balancer case, our server side (the
// worker is another process).
func BenchmarkProxy(b *testing.B) {
	p := testworker.Start(b, "serve")
	front := func(cfg balancer.Config) *httptest.Server {
		bal, _ := balancer.New(cfg)
		e := bal.NewEndpoint(1, p.PID, p.Network, p.Address)
		b.Cleanup(e.Close)
		bal.Add(e)
		srv := httptest.NewServer(bal)
		b.Cleanup(srv.Close)
		return srv
	}
	srv, timed := front(balancer.Config{}), front(balancer.Config{RequestTimeout: time.Minute})

	for _, c := range []struct{ name, url string }{
		{"direct", "http://" + p.Address + "/pid"},
		{"balancer", srv.URL + "/pid"},
		{"balancer-timeout", timed.URL + "/pid"},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				get(b, client, c.url, 200)
			}
		})
	}
}

// BenchmarkQueuedPath is what waiting for a slot costs the front: eight
// clients send tiny requests through the balancer to one real worker,
// with no in-flight limit ("direct": no request ever waits) and with
// max_inflight 1 ("queued": nearly every request waits in the queue).
// "refused" is a request the queue turns away at once (the worker's slot
// and the one place in the queue are held): what overload costs the
// front per request it cannot serve.
//
// cpu-ns/op is the CPU this process (clients and balancer; the worker is
// another process) used per request: queued/direct is the queue's cost,
// a ratio that a busy machine skews less than ns/op.
func BenchmarkQueuedPath(b *testing.B) {
	p := testworker.Start(b, "serve")
	for _, c := range []struct {
		name   string
		limit  int
		status int
	}{{"direct", 0, 200}, {"queued", 1, 200}, {"refused", 1, 503}} {
		b.Run(c.name, func(b *testing.B) {
			cfg := balancer.Config{MaxInflight: c.limit}
			if c.status != 200 {
				cfg.QueueSize = 1
			}
			bal, _, url, client := through(b, cfg, p)
			if c.status != 200 {
				held := make(chan struct{}, 2)
				for range 2 {
					go func() {
						get(b, client, url+"/block", 200)
						held <- struct{}{}
					}()
				}
				for p.Blocked() != 1 || bal.QueueLen() != 1 {
					runtime.Gosched()
				}
				defer func() {
					_, _ = p.Do(http.MethodPost, "/release")
					<-held
					// The queued one goes to the worker, which must hold it
					// before it can be let go.
					for p.Blocked() != 1 {
						runtime.Gosched()
					}
					_, _ = p.Do(http.MethodPost, "/release")
					<-held
				}()
			}
			b.ReportAllocs()
			b.SetParallelism(4) // 8 clients on 2 CPUs
			cpu := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get(b, client, url+"/pid", c.status)
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}

// through serves a balancer of cfg in front of worker p on a real
// socket, until the benchmark ends; it returns the balancer, p's
// endpoint, the server's URL and a client with room for eight
// connections.
func through(b *testing.B, cfg balancer.Config, p *testworker.Proc) (*balancer.Balancer, *balancer.Endpoint, string, *http.Client) {
	bal, _ := balancer.New(cfg)
	e := bal.NewEndpoint(1, p.PID, p.Network, p.Address)
	bal.Add(e)
	srv := httptest.NewServer(bal)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	b.Cleanup(func() {
		client.CloseIdleConnections()
		srv.Close()
		e.Close()
	})
	return bal, e, srv.URL, client
}

func get(b *testing.B, client *http.Client, url string, status int) {
	resp, err := client.Get(url)
	if err != nil {
		b.Error(err)
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != status {
		b.Errorf("%s: %s", url, resp.Status)
	}
}

// processCPU is the user and system CPU time this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkLimitShortRequests is max_inflight on short requests of a
// worker that computes (100 µs of CPU each, one at a time), eight
// clients: at a limit of 1 the worker idles for every hand-off, which a
// second slot hides. ns/op is the time per request of the whole pool:
// auto should come near the best fixed limit.
func BenchmarkLimitShortRequests(b *testing.B) {
	p := testworker.Start(b, "serve")
	for _, c := range []struct {
		name  string
		limit int
		auto  bool
	}{{"1", 1, false}, {"2", 2, false}, {"4", 4, false}, {"0", 0, false}, {"auto", 0, true}} {
		b.Run(c.name, func(b *testing.B) {
			_, e, url, client := through(b, balancer.Config{MaxInflight: c.limit, AdaptiveLimit: c.auto}, p)
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					get(b, client, url+"/cpu?us=100", 200)
				}
			})
			b.ReportMetric(float64(e.Limit()), "limit")
		})
	}
}

// grpcMessage is one length-prefixed gRPC message with payload p.
func grpcMessage(p string) []byte {
	b := make([]byte, 5, 5+len(p))
	binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
	return append(b, p...)
}

// BenchmarkGRPC sends unary gRPC calls over h2c, 16 in flight on one
// client connection (the gRPC bench's one channel), to a Go HTTP/2
// worker that answers as a unary gRPC method does, through a front
// server (net/http's h2c, as Caddy's) whose handler is:
//
//   - transport: the endpoint's transport alone, the floor;
//   - balancer: the balancer as the module configures it by default
//     (max_inflight auto, a request timeout of a minute).
//
// cpu-ns/op is the CPU of the whole process (client, front, worker) per
// call; balancer/transport is the balancer's own share.
func BenchmarkGRPC(b *testing.B) {
	reply := grpcMessage(`{"ok":true,"worker":"bench"}`)
	worker := h2cServer(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h := w.Header()
		h["Content-Type"] = []string{"application/grpc"}
		h["Trailer"] = []string{"Grpc-Status, Grpc-Message"}
		w.WriteHeader(200)
		_, _ = w.Write(reply)
		h["Grpc-Status"] = []string{"0"}
		h["Grpc-Message"] = []string{""}
	}))
	addr := worker.Listener.Addr().String()
	tr := transport.New(transport.Config{Network: "tcp", Address: addr})
	b.Cleanup(tr.CloseIdle)
	bal, _ := balancer.New(balancer.Config{AdaptiveLimit: true, RequestTimeout: time.Minute})
	e := bal.NewEndpoint(1, 0, "tcp", addr)
	b.Cleanup(e.Close)
	bal.Add(e)
	payload := grpcMessage(`{"ms":0}`)
	for _, c := range []struct {
		name  string
		serve http.HandlerFunc
	}{
		{"transport", func(w http.ResponseWriter, r *http.Request) {
			if err := tr.Forward(w, r, new(transport.Exchange)); err != nil {
				b.Error(err)
			}
		}},
		{"balancer", bal.ServeHTTP},
	} {
		b.Run(c.name, func(b *testing.B) {
			front := h2cServer(b, c.serve)
			client := &http.Client{Transport: &http.Transport{Protocols: front.Config.Protocols}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			b.SetParallelism(8) // 16 calls in flight on 2 CPUs
			cpu := processCPU()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					req, _ := http.NewRequestWithContext(context.Background(), "POST", front.URL+"/pool.example.Demo/Work", bytes.NewReader(payload))
					req.Header = http.Header{
						"Content-Type": {"application/grpc"},
						"Te":           {"trailers"},
						"User-Agent":   {"grpc-node-js/1.14.3"},
					}
					resp, err := client.Do(req)
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.Trailer.Get("Grpc-Status") != "0" {
						b.Errorf("%s, trailers %v", resp.Status, resp.Trailer)
					}
				}
			})
			b.StopTimer()
			b.ReportMetric(float64(processCPU()-cpu)/float64(b.N), "cpu-ns/op")
		})
	}
}
