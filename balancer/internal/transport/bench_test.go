//go:build unix

package transport

import (
	"bufio"
	"context"
	"io"
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
