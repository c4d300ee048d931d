package transport

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/textproto"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/retry"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// countingWorker is a net/http server as the worker; it counts the
// connections it accepted.
type countingWorker struct {
	*httptest.Server
	conns atomic.Int32
}

func newWorker(t *testing.T, h http.HandlerFunc) *countingWorker {
	t.Helper()
	w := &countingWorker{Server: httptest.NewUnstartedServer(h)}
	w.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			w.conns.Add(1)
		}
	}
	w.Start()
	t.Cleanup(func() {
		w.CloseClientConnections()
		w.Close()
	})
	return w
}

func testForwarder(t *testing.T, network, address string, trust func(*http.Request) bool) *forwarder {
	f := newForwarder(Config{Network: network, Address: address, TrustForwarded: trust}.withDefaults())
	t.Cleanup(f.CloseIdle)
	return f
}

// outcome is what the front's last forward returned.
type outcome struct {
	status int
	err    error
}

// leanFront serves the forwarder on a real socket, as the balancer's
// attempt path will: a declined request gets 599, a failure before the
// response 502, a failure after it aborts the connection.
func leanFront(t *testing.T, f *forwarder) (*httptest.Server, <-chan outcome) {
	t.Helper()
	out := make(chan outcome, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		status, err := f.forward(w, r, exchangeFor(r))
		out <- outcome{status, err}
		switch {
		case err == nil:
		case errors.Is(err, errNotForwarded):
			w.WriteHeader(599)
		case status != 0:
			panic(http.ErrAbortHandler)
		default:
			http.Error(w, err.Error(), http.StatusBadGateway)
		}
	}))
	srv.Config.ErrorLog = quietLog()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv, out
}

// exchangeFor is what the balancer gives an exchange of r: whether r is
// idempotent, as its retry rules say.
func exchangeFor(r *http.Request) *Exchange {
	return &Exchange{Idempotent: retry.Idempotent(r)}
}

func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }

func newClient(t *testing.T) *http.Client {
	tr := &http.Transport{DisableCompression: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func do(t *testing.T, c *http.Client, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(body)
}

func lastOutcome(t *testing.T, out <-chan outcome) outcome {
	t.Helper()
	select {
	case o := <-out:
		return o
	case <-time.After(10 * time.Second):
		t.Fatal("the front did not finish")
		return outcome{}
	}
}

func TestForwardExchanges(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/echo":
			w.Header().Set("X-Method", r.Method)
			w.Header().Set("X-Length", strconv.FormatInt(r.ContentLength, 10))
			w.Header().Set("X-TE", strings.Join(r.TransferEncoding, ","))
			_, _ = io.Copy(w, r.Body)
		case "/sum":
			h := sha256.New()
			n, _ := io.Copy(h, r.Body)
			fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
		case "/big":
			_, _ = w.Write(big)
		case "/chunks":
			w.Header()["Content-Type"] = nil // no type, and none sniffed
			for i := range 3 {
				fmt.Fprintf(w, "part %d;", i)
				w.(http.Flusher).Flush()
			}
		case "/head":
			w.Header().Set("Content-Length", "1234")
		case "/nocontent":
			w.WriteHeader(http.StatusNoContent)
		case "/notmodified":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		case "/multi":
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			w.Header().Set("content-type", "text/plain")
			w.WriteHeader(http.StatusTeapot)
			_, _ = io.WriteString(w, "tea")
		}
	})
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	front, out := leanFront(t, f)
	c := newClient(t)
	bigSum := fmt.Sprintf("%d %x", len(big), sha256.Sum256(big))

	cases := []struct {
		name, method, path string
		body               io.Reader
		chunked            bool
		wantStatus         int
		wantBody           string
		wantHeader         map[string]string
	}{
		{name: "GET", method: "GET", path: "/echo", wantStatus: 200,
			wantHeader: map[string]string{"X-Method": "GET", "X-Length": "0"}},
		{name: "POST length", method: "POST", path: "/echo", body: strings.NewReader("hello"), wantStatus: 200,
			wantBody: "hello", wantHeader: map[string]string{"X-Length": "5", "X-TE": ""}},
		{name: "POST chunked", method: "POST", path: "/echo", body: strings.NewReader("hello chunks"), chunked: true,
			wantStatus: 200, wantBody: "hello chunks", wantHeader: map[string]string{"X-Length": "-1", "X-TE": "chunked"}},
		{name: "POST empty", method: "POST", path: "/echo", wantStatus: 200, wantHeader: map[string]string{"X-Length": "0"}},
		{name: "large body up", method: "PUT", path: "/sum", body: bytes.NewReader(big), wantStatus: 200, wantBody: bigSum},
		{name: "large chunked body up", method: "PUT", path: "/sum", body: bytes.NewReader(big), chunked: true,
			wantStatus: 200, wantBody: bigSum},
		{name: "large body down", method: "GET", path: "/big", wantStatus: 200, wantBody: string(big)},
		{name: "chunked response", method: "GET", path: "/chunks", wantStatus: 200, wantBody: "part 0;part 1;part 2;",
			wantHeader: map[string]string{"Content-Type": ""}}, // a stream is not sniffed
		{name: "HEAD", method: "HEAD", path: "/head", wantStatus: 200, wantHeader: map[string]string{"Content-Length": "1234"}},
		{name: "204", method: "GET", path: "/nocontent", wantStatus: 204},
		{name: "304", method: "GET", path: "/notmodified", wantStatus: 304, wantHeader: map[string]string{"Etag": `"x"`}},
		{name: "multi-valued", method: "GET", path: "/multi", wantStatus: 418, wantBody: "tea",
			wantHeader: map[string]string{"Content-Type": "text/plain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			body := tc.body
			if tc.chunked {
				body = io.MultiReader(body) // unknown length: the client sends it chunked
			}
			req, _ := http.NewRequest(tc.method, front.URL+tc.path, body)
			resp, got := do(t, c, req)
			if o := lastOutcome(t, out); o.err != nil || o.status != tc.wantStatus {
				t.Fatalf("forward returned %d, %v", o.status, o.err)
			}
			if resp.StatusCode != tc.wantStatus || got != tc.wantBody {
				t.Fatalf("got %d %.80q, want %d %.80q", resp.StatusCode, got, tc.wantStatus, tc.wantBody)
			}
			for k, v := range tc.wantHeader {
				if resp.Header.Get(k) != v {
					t.Errorf("%s: %q, want %q", k, resp.Header.Get(k), v)
				}
			}
		})
	}
	if resp, _ := do(t, c, mustRequest("GET", front.URL+"/multi", nil)); len(resp.Header["Set-Cookie"]) != 2 {
		t.Errorf("Set-Cookie %q, want both", resp.Header["Set-Cookie"])
	}
	<-out
	// Every exchange ended cleanly, one after the other: one connection
	// carried them all.
	if n := worker.conns.Load(); n != 1 {
		t.Errorf("the worker accepted %d connections, want 1", n)
	}
}

func mustRequest(method, url string, body io.Reader) *http.Request {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		panic(err)
	}
	return req
}

func TestForwardReusesConnections(t *testing.T) {
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	front, out := leanFront(t, f)
	c := newClient(t)
	for range 50 {
		if _, body := do(t, c, mustRequest("GET", front.URL, nil)); body != "ok" {
			t.Fatalf("body %q", body)
		}
		if o := lastOutcome(t, out); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if n := worker.conns.Load(); n != 1 {
		t.Errorf("50 requests in a row took %d connections, want 1", n)
	}

	// Concurrent requests take a connection each, and give it back.
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			resp, err := c.Get(front.URL)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	for range 8 {
		if o := lastOutcome(t, out); o.err != nil {
			t.Fatal(o.err)
		}
	}
	if n, idle := worker.conns.Load(), f.pool.idleLen(); int(n) != idle || n > 8 {
		t.Errorf("%d connections, %d idle: want all idle, at most 8", n, idle)
	}
}

func TestForwardIdlePool(t *testing.T) {
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // so that the requests overlap
	})
	f := newForwarder(Config{Network: "tcp", Address: worker.Listener.Addr().String(),
		IdleTimeout: 200 * time.Millisecond, MaxIdle: 2}.withDefaults())
	t.Cleanup(f.CloseIdle)
	var wg sync.WaitGroup
	for range 5 {
		wg.Go(func() {
			if _, err := f.forward(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), new(Exchange)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := f.pool.idleLen(); n != 2 {
		t.Errorf("%d idle connections, want MaxIdle 2", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for f.pool.idleLen() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("idle connections outlived the idle timeout")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The pool works on after its timer emptied it.
	if _, err := f.forward(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), new(Exchange)); err != nil {
		t.Fatal(err)
	}
	if f.pool.idleLen() != 1 {
		t.Fatal("the connection did not go back to the pool")
	}
	f.CloseIdle()
	if f.pool.idleLen() != 0 {
		t.Fatal("CloseIdle left idle connections")
	}
}

func TestForwardUnixSocket(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "w.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s %s", r.Host, r.Header.Get("X-Forwarded-Host"), r.URL.RequestURI())
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	f := testForwarder(t, "unix", sock, nil)
	front, out := leanFront(t, f)
	req := mustRequest("GET", front.URL+"/a%20b?x=1", nil)
	req.Host = "app.example"
	if _, body := do(t, newClient(t), req); body != "app.example app.example /a%20b?x=1" {
		t.Errorf("the worker saw %q", body)
	}
	if o := lastOutcome(t, out); o.err != nil {
		t.Fatal(o.err)
	}
}

// rawWorker is a worker that answers each request it reads with
// whatever respond writes, for framing net/http would not produce; it
// closes the connection when respond says so. It counts connections.
type rawWorker struct {
	addr  string
	conns atomic.Int32
}

func newRawWorker(t *testing.T, respond func(c net.Conn, req *http.Request) bool) *rawWorker {
	w := &rawWorker{}
	w.addr = serveConns(t, func(c net.Conn) {
		w.conns.Add(1)
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			_, _ = io.Copy(io.Discard, req.Body)
			if !respond(c, req) {
				return
			}
		}
	})
	return w
}

// serveConns accepts connections on loopback and serves each in its own
// goroutine, which ends when serve returns (the connection is closed
// then) or the test ends. It returns the address.
func serveConns(tb testing.TB, serve func(c net.Conn)) string {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				serve(c)
			})
		}
	})
	tb.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

// A worker that closed an idle connection costs nothing: the request
// goes again on a fresh connection, if it may.
func TestForwardStaleConnection(t *testing.T) {
	worker := newRawWorker(t, func(c net.Conn, _ *http.Request) bool {
		_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return false // and close, without saying so
	})
	tr := New(Config{Network: "tcp", Address: worker.addr})
	t.Cleanup(tr.CloseIdle)
	f := tr.lean
	for i := range 3 {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest("GET", "/", nil)
		if _, err := f.forward(rec, req, exchangeFor(req)); err != nil || rec.Body.String() != "ok" {
			t.Fatalf("request %d: %v, %q", i, err, rec.Body)
		}
	}
	if n := worker.conns.Load(); n != 3 {
		t.Errorf("%d connections, want 3", n)
	}

	// A POST that reached the stale connection is not sent again: the
	// worker might have taken it.
	rec := httptest.NewRecorder()
	status, err := f.forward(rec, httptest.NewRequest("POST", "/", strings.NewReader("x")), new(Exchange))
	if !errors.Is(err, errNoResponse) || status != 0 || rec.Body.Len() != 0 {
		t.Fatalf("POST on a stale connection: %d, %v, %q", status, err, rec.Body)
	}

	// Unless its body can be sent again and it is idempotent.
	f.forward(httptest.NewRecorder(), httptest.NewRequest("GET", "/", nil), new(Exchange)) // one idle again
	body := strings.NewReader("body")
	req := httptest.NewRequest("POST", "/", body)
	x := &Exchange{Idempotent: true, Replay: func(r *http.Request) error {
		_, err := body.Seek(0, io.SeekStart)
		return err
	}}
	rec = httptest.NewRecorder()
	if err := tr.Forward(rec, req, x); err != nil || rec.Body.String() != "ok" {
		t.Fatalf("idempotent POST with a replayable body: %v, %q", err, rec.Body)
	}
}

func TestForwardBrokenWorker(t *testing.T) {
	cases := []struct {
		name, response string
		status         int   // the status forward returns
		want           error // and the error it wraps
	}{
		{"garbage", "garbage\r\n\r\n", 0, errNoResponse},
		{"closed before answering", "", 0, errNoResponse},
		{"cut head", "HTTP/1.1 200 OK\r\nContent-Le", 0, errNoResponse},
		{"two lengths", "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab", 0, errNoResponse},
		{"gzip transfer coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 0, errNoResponse},
		{"unasked switch", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", 0, errNoResponse},
		{"cut body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc", 200, errAborted},
		{"cut chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab", 200, errAborted},
		{"bad chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n", 200, errAborted},
		{"no last chunk", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n", 200, errAborted},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			worker := newRawWorker(t, func(c net.Conn, _ *http.Request) bool {
				_, _ = io.WriteString(c, tc.response)
				return false
			})
			f := testForwarder(t, "tcp", worker.addr, nil)
			front, out := leanFront(t, f)
			resp, err := newClient(t).Get(front.URL)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			o := lastOutcome(t, out)
			if !errors.Is(o.err, tc.want) || o.status != tc.status {
				t.Fatalf("forward returned %d, %v; want %d, %v", o.status, o.err, tc.status, tc.want)
			}
			if tc.status == 0 && (err != nil || resp.StatusCode != 502) {
				t.Errorf("client got %v, %v; want the front's 502", resp, err)
			}
			if tc.status != 0 && err == nil {
				t.Error("the client took a cut response for a whole one")
			}
		})
	}
}

// failingBody yields some bytes, then an error.
type failingBody struct {
	data  []byte
	reads int
}

func (b *failingBody) Read(p []byte) (int, error) {
	b.reads++
	if len(b.data) == 0 {
		return 0, errors.New("client connection reset")
	}
	n := copy(p, b.data)
	b.data = b.data[n:]
	return n, nil
}

func (b *failingBody) Close() error { return nil }

func TestForwardClientBodyError(t *testing.T) {
	got := make(chan error, 2)
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.Copy(io.Discard, r.Body)
		got <- err
	})
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	// More than the write buffer, so that part of the request reaches the
	// worker whatever the framing.
	partial := bytes.Repeat([]byte("x"), 2*connWriteBuf)
	for _, length := range []int64{1 << 20, -1} {
		req := httptest.NewRequest("POST", "/", &failingBody{data: partial})
		req.ContentLength = length
		rec := httptest.NewRecorder()
		status, err := f.forward(rec, req, new(Exchange))
		if !errors.Is(err, errBodyRead) || status != 0 || rec.Body.Len() != 0 {
			t.Fatalf("length %d: %d, %v", length, status, err)
		}
		if err := <-got; err == nil {
			t.Errorf("length %d: the worker took the cut body for a whole one", length)
		}
	}
	if n := f.pool.idleLen(); n != 0 {
		t.Errorf("%d connections with a cut request went back to the pool", n)
	}
}

func TestForwardClientGone(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	workerDone := make(chan error, 1)
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			_, _ = io.WriteString(w, "first")
			w.(http.Flusher).Flush()
		}
		entered <- struct{}{}
		select {
		case <-r.Context().Done():
			workerDone <- r.Context().Err()
		case <-release:
			workerDone <- nil
		}
	})
	defer close(release)
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	for _, path := range []string{"/wait", "/stream"} {
		ctx, cancel := context.WithCancel(context.Background())
		w := &hookWriter{ResponseWriter: httptest.NewRecorder(), wrote: make(chan struct{}, 10)}
		go func() {
			<-entered
			if path == "/stream" {
				<-w.wrote // the response began
			}
			cancel()
		}()
		start := time.Now()
		status, err := f.forward(w, httptest.NewRequest("GET", path, nil).WithContext(ctx), new(Exchange))
		if !errors.Is(err, errClientGone) || !errors.Is(err, context.Canceled) {
			t.Fatalf("%s: %d, %v", path, status, err)
		}
		if wantStatus := map[string]int{"/wait": 0, "/stream": 200}[path]; status != wantStatus {
			t.Errorf("%s: status %d, want %d", path, status, wantStatus)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("%s: forward took %v to notice", path, d)
		}
		// The connection was closed: the worker's request ended too.
		if err := <-workerDone; err == nil {
			t.Errorf("%s: the worker's request went on", path)
		}
	}
}

// hookWriter tells when something was written.
type hookWriter struct {
	http.ResponseWriter
	wrote chan struct{}
}

func (w *hookWriter) Write(p []byte) (int, error) {
	w.wrote <- struct{}{}
	return w.ResponseWriter.Write(p)
}

func TestForwardStreams(t *testing.T) {
	next := make(chan struct{})
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/sse" {
			w.Header().Set("Content-Type", "text/event-stream")
			w.Header().Set("Content-Length", "1000") // a stream for all that
		}
		w.WriteHeader(200)
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			<-next // the client must have seen this event first
		}
		if r.URL.Path == "/sse" {
			_, _ = io.WriteString(w, strings.Repeat(".", 1000-3*len("data: 0\n\n")))
		}
	})
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	front, out := leanFront(t, f)
	for _, path := range []string{"/sse", "/chunked"} {
		resp, err := newClient(t).Get(front.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(resp.Body)
		for i := range 3 {
			line, err := br.ReadString('\n')
			if want := fmt.Sprintf("data: %d\n", i); line != want || err != nil {
				t.Fatalf("%s: event %d: %q, %v", path, i, line, err)
			}
			_, _ = br.ReadString('\n')
			next <- struct{}{}
		}
		_, _ = io.Copy(io.Discard, br)
		resp.Body.Close()
		if o := lastOutcome(t, out); o.err != nil {
			t.Fatal(o.err)
		}
	}
}

func TestForwardTrailersAndInterim(t *testing.T) {
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		w.Header().Set("Trailer", "X-Declared")
		_, _ = io.WriteString(w, "body")
		w.Header().Set("X-Declared", "d")
		w.Header().Set(http.TrailerPrefix+"X-Undeclared", "u")
	})
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	front, out := leanFront(t, f)
	var interim []string
	trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
		interim = append(interim, fmt.Sprintf("%d %s", code, h.Get("Link")))
		return nil
	}}
	req := mustRequest("GET", front.URL, nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), trace))
	resp, body := do(t, newClient(t), req)
	if o := lastOutcome(t, out); o.err != nil {
		t.Fatal(o.err)
	}
	if body != "body" || resp.Trailer.Get("X-Declared") != "d" || resp.Trailer.Get("X-Undeclared") != "u" {
		t.Errorf("body %q, trailers %v", body, resp.Trailer)
	}
	if len(interim) != 1 || interim[0] != "103 </style.css>; rel=preload" {
		t.Errorf("interim responses %q", interim)
	}
	if resp.Header.Get("Link") != "" {
		t.Error("the 103's Link field stayed in the final response")
	}
}

// countingBody counts reads, to show that a declined request's body was
// left alone.
type countingBody struct {
	io.Reader
	reads int
}

func (b *countingBody) Read(p []byte) (int, error) { b.reads++; return b.Reader.Read(p) }
func (b *countingBody) Close() error               { return nil }

func TestForwardDeclines(t *testing.T) {
	worker := newWorker(t, func(http.ResponseWriter, *http.Request) {})
	f := testForwarder(t, "tcp", worker.Listener.Addr().String(), nil)
	cases := map[string]func(r *http.Request){
		"websocket": func(r *http.Request) {
			r.Header.Set("Connection", "Upgrade")
			r.Header.Set("Upgrade", "websocket")
		},
		"h2c upgrade":      func(r *http.Request) { r.Header.Set("Upgrade", "h2c") },
		"100-continue":     func(r *http.Request) { r.Header.Set("Expect", "100-continue") },
		"request trailers": func(r *http.Request) { r.Trailer = http.Header{"X-Sum": nil} },
		"declared trailer": func(r *http.Request) { r.Header.Set("Trailer", "X-Sum") },
		"CONNECT":          func(r *http.Request) { r.Method = http.MethodConnect },
		"semicolon query":  func(r *http.Request) { r.URL.RawQuery = "a=1;b=2" },
		"bad escape":       func(r *http.Request) { r.URL.RawQuery = "a=%zz" },
		"space in query":   func(r *http.Request) { r.URL.RawQuery = "a b" },
		"unicode host":     func(r *http.Request) { r.Host = "bücher.example" },
		"host with zone":   func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" },
		"newline in value": func(r *http.Request) { r.Header["X-Bad"] = []string{"a\r\nX-Smuggled: 1"} },
		"bad field name":   func(r *http.Request) { r.Header["X Bad"] = []string{"v"} },
	}
	for name, mutate := range cases {
		t.Run(name, func(t *testing.T) {
			body := &countingBody{Reader: strings.NewReader("body")}
			req := httptest.NewRequest("POST", "/", body)
			mutate(req)
			rec := httptest.NewRecorder()
			status, err := f.forward(rec, req, new(Exchange))
			if err != errNotForwarded || status != 0 {
				t.Fatalf("%d, %v; want errNotForwarded", status, err)
			}
			if body.reads != 0 || rec.Code != 200 || rec.Body.Len() != 0 || len(rec.Header()) != 0 || rec.Flushed {
				t.Errorf("a declined request was touched: %d body reads, recorder %+v", body.reads, rec)
			}
		})
	}
	// A field that cannot be sent was found before anything went out: the
	// connection is as good as before. The worker counts a connection
	// when it accepts it, which can come after the forwarder's dial
	// returned.
	testworker.Eventually(t, 2*time.Second, "the worker to count the connection", func() bool {
		return int(worker.conns.Load()) >= f.pool.idleLen()
	})
	if worker.conns.Load() > 1 || f.pool.idleLen() != int(worker.conns.Load()) {
		t.Errorf("%d connections, %d idle", worker.conns.Load(), f.pool.idleLen())
	}
}

func TestForwardDialError(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	f := testForwarder(t, "tcp", addr, nil)
	req := httptest.NewRequest("POST", "/", strings.NewReader("x"))
	status, err := f.forward(httptest.NewRecorder(), req, new(Exchange))
	var op *net.OpError
	if status != 0 || !errors.As(err, &op) || op.Op != "dial" {
		t.Fatalf("%d, %v; want a dial error", status, err)
	}
	if k := new(Exchange).classify(req, err).Kind; k != Unreached {
		t.Errorf("a POST that was never sent is %v, want %v (the balancer may send it elsewhere)", k, Unreached)
	}
}
