//go:build unix

package transport

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"time"
)

// nodeReply is what a tiny Node.js app answers, headers and all.
const nodeReply = "HTTP/1.1 200 OK\r\nX-Powered-By: Express\r\nContent-Type: application/json; charset=utf-8\r\n" +
	"Content-Length: 28\r\nETag: W/\"1b-abc\"\r\nDate: Sun, 29 Nov 2026 12:00:00 GMT\r\n" +
	"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n{\"ok\":true,\"worker\":\"bench\"}"

// replyWorker answers every request head it reads with nodeReply, at
// as little cost as it can, so that a benchmark measures the front.
func replyWorker(b *testing.B) string {
	return serveConns(b, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return
			}
			if len(line) <= 2 { // the empty line after a GET's head
				if _, err := io.WriteString(c, nodeReply); err != nil {
					return
				}
			}
		}
	})
}

// cpuTime is the CPU time this process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loopCPU runs body b.N times and reports the CPU time of the whole
// process per iteration: on a busy machine a steadier measure than
// ns/op, which counts the waits of a round trip too.
func loopCPU(b *testing.B, body func()) {
	b.ReportAllocs()
	start := cpuTime()
	for b.Loop() {
		body()
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N), "cpu-ns/op")
}

// discardWriter is a ResponseWriter that keeps nothing but its header
// map, cleared for each request as a server would start a new one.
type discardWriter struct {
	h      http.Header
	status int
}

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) WriteHeader(code int)        { w.status = code }
func (w *discardWriter) Write(p []byte) (int, error) { return len(p), nil }

// BenchmarkForward compares the forwarding leg of the lean forwarder and
// of the endpoint's httputil.ReverseProxy with http.Transport, to the
// same worker, for a GET with browser-like fields answered by a tiny
// JSON reply with Node's fields.
//
// leg: the leg alone, called with a ResponseWriter that discards, to a
// worker that answers at almost no cost: ns/op and allocs/op are the
// leg's own (but the worker's few syscalls).
//
// front: a real front server on loopback, a net/http client and a
// net/http worker, all in this process: the leg's share is smaller.
func BenchmarkForward(b *testing.B) {
	b.Run("leg", func(b *testing.B) {
		addr := replyWorker(b)
		t := New(Config{Network: "tcp", Address: addr})
		defer t.CloseIdle()
		f := t.lean

		ctx, cancel := context.WithCancel(context.Background()) // as a server's request has
		defer cancel()
		req := httptest.NewRequestWithContext(ctx, "GET", "http://app.example/api/items?page=2", nil)
		req.RemoteAddr = "192.0.2.7:51234"
		req.Header = http.Header{
			"User-Agent":      {"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0 Safari/537.36"},
			"Accept":          {"application/json"},
			"Accept-Encoding": {"gzip, deflate, br"},
			"Accept-Language": {"en-US,en;q=0.9"},
			"Connection":      {"keep-alive"},
		}
		for _, leg := range []struct {
			name  string
			serve func(http.ResponseWriter, *http.Request)
		}{
			{"lean", func(w http.ResponseWriter, r *http.Request) {
				if _, err := f.forward(w, r, new(Exchange)); err != nil {
					b.Fatal(err)
				}
			}},
			{"reverseproxy", t.proxy.ServeHTTP},
		} {
			b.Run(leg.name, func(b *testing.B) {
				w := &discardWriter{h: http.Header{}}
				loopCPU(b, func() {
					clear(w.h)
					w.status = 0
					leg.serve(w, req)
					if w.status != 200 {
						b.Fatal(w.status)
					}
				})
			})
		}
	})

	b.Run("front", func(b *testing.B) {
		worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "application/json; charset=utf-8")
			_, _ = io.WriteString(w, `{"ok":true,"worker":"bench"}`)
		}))
		defer worker.Close()
		addr := worker.Listener.Addr().String()
		t := New(Config{Network: "tcp", Address: addr})
		defer t.CloseIdle()
		f := t.lean
		for _, leg := range []struct {
			name  string
			serve http.HandlerFunc
		}{
			{"lean", func(w http.ResponseWriter, r *http.Request) {
				if _, err := f.forward(w, r, new(Exchange)); err != nil {
					b.Error(err)
				}
			}},
			{"reverseproxy", t.proxy.ServeHTTP},
		} {
			b.Run(leg.name, func(b *testing.B) {
				front := httptest.NewServer(leg.serve)
				defer front.Close()
				client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
				defer client.CloseIdleConnections()
				loopCPU(b, func() {
					resp, err := client.Get(front.URL + "/api/items")
					if err != nil {
						b.Fatal(err)
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						b.Fatal(resp.Status)
					}
				})
			})
		}
	})
}

// grpcCall is a unary call's request as grpc-js sends it: an HTTP/2
// POST of one length-prefixed message, with grpc-js's fields.
func grpcCall(ctx context.Context, url string) *http.Request {
	req, _ := http.NewRequestWithContext(ctx, "POST", url+"/pool.example.Demo/Work", bytes.NewReader(message(`{"ms":0}`)))
	req.Header = http.Header{
		"Content-Type":         {"application/grpc"},
		"Te":                   {"trailers"},
		"User-Agent":           {"grpc-node-js/1.14.3"},
		"Grpc-Accept-Encoding": {"identity,deflate,gzip"},
		"Accept-Encoding":      {"identity"},
	}
	return req
}

// flushWriter is a discardWriter that can be flushed, as a server's
// HTTP/2 writer can.
type flushWriter struct{ discardWriter }

func (w *flushWriter) Flush() {}

// BenchmarkGRPC forwards unary gRPC calls over h2c, as the pool forwards
// them to a grpc-js worker, to a worker that answers at almost no cost
// (rawGRPCWorker).
//
// leg: one call at a time, called with a writer that discards: Forward;
// the transport's ReverseProxy alone; and the bare round trip of its
// http.Transport with the answer copied, the floor for any forwarder
// on it. ns/op and allocs/op are the leg's own (and the fake worker's
// few syscalls).
//
// front: a real h2c front server (net/http's, as Caddy's) whose handler
// is Forward, and an h2c client, all in this process, with 16 calls in
// flight on one client connection (the bench's one grpc-js channel).
func BenchmarkGRPC(b *testing.B) {
	raw := rawGRPCWorker(b, message(`{"ok":true,"worker":"bench"}`))
	b.Run("leg", func(b *testing.B) {
		t := New(Config{Network: "tcp", Address: raw})
		defer t.CloseIdle()
		ctx, cancel := context.WithCancel(context.Background()) // as a server's request has
		defer cancel()
		payload := message(`{"ms":0}`)
		r := grpcCall(ctx, "http://127.0.0.1:7001")
		r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
		r.RemoteAddr = "127.0.0.1:51234"
		body := bytes.NewReader(payload)
		x := new(Exchange)
		for _, leg := range []struct {
			name  string
			serve func(http.ResponseWriter, *http.Request)
		}{
			{"forward", func(w http.ResponseWriter, r *http.Request) {
				x.Reset()
				if err := t.Forward(w, r, x); err != nil {
					b.Fatal(err)
				}
			}},
			{"reverseproxy", t.h2proxy.ServeHTTP},
			{"roundtrip", func(w http.ResponseWriter, r *http.Request) {
				out := r.Clone(r.Context())
				out.URL.Scheme, out.URL.Host = "http", raw
				resp, err := t.h2.RoundTrip(out)
				if err != nil {
					b.Fatal(err)
				}
				maps.Copy(w.Header(), resp.Header)
				w.WriteHeader(resp.StatusCode)
				buf := bufferPool{}.Get()
				_, _ = io.CopyBuffer(w, resp.Body, buf)
				bufferPool{}.Put(buf)
				resp.Body.Close()
				for k, v := range resp.Trailer {
					w.Header()[http.TrailerPrefix+k] = v
				}
			}},
		} {
			b.Run(leg.name, func(b *testing.B) {
				w := &flushWriter{discardWriter{h: http.Header{}}}
				loopCPU(b, func() {
					clear(w.h)
					w.status = 0
					body.Reset(payload)
					r.Body = io.NopCloser(body)
					leg.serve(w, r)
					if w.status != 200 || w.h.Get(http.TrailerPrefix+"Grpc-Status") != "0" {
						b.Fatal(w.status, w.h)
					}
				})
			})
		}
	})
	b.Run("front", func(b *testing.B) {
		t := New(Config{Network: "tcp", Address: raw})
		defer t.CloseIdle()
		front := h2cWorker(b, func(w http.ResponseWriter, r *http.Request) {
			if err := t.Forward(w, r, new(Exchange)); err != nil {
				b.Error(err)
			}
		})
		client := &http.Client{Transport: &http.Transport{Protocols: front.Config.Protocols}}
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		b.SetParallelism(8) // 16 calls in flight on 2 CPUs
		cpu := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := client.Do(grpcCall(context.Background(), front.URL))
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
		b.ReportMetric(float64(cpuTime()-cpu)/float64(b.N), "cpu-ns/op")
	})
}
