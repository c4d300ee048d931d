package transport

import (
	"bufio"
	"context"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// newProxy builds the standard path: a reverse proxy and the keep-alive
// transport under it, which dials only the worker's address; with h2c,
// one that speaks HTTP/2 with prior knowledge to it, and no HTTP/1.1.
func newProxy(cfg Config, h2c bool) (*httputil.ReverseProxy, *http.Transport) {
	dialer := &net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1}
	network, address := cfg.Network, cfg.Address
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		MaxIdleConns:           cfg.MaxIdle,
		MaxIdleConnsPerHost:    cfg.MaxIdle,
		IdleConnTimeout:        cfg.IdleTimeout,
		MaxResponseHeaderBytes: MaxResponseHeadBytes,
		DisableCompression:     true,
		// Workers speak HTTP/1.1 on loopback unless told otherwise.
		ForceAttemptHTTP2: false,
	}
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		transport.Protocols = &p
	}
	urlHost := address
	if network == "unix" {
		urlHost = "localhost"
	}
	trust := cfg.TrustForwarded
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = urlHost
			// Pass the client's Host through, as Caddy's reverse_proxy does.
			pr.Out.Host = pr.In.Host
			if trust != nil && trust(pr.In) {
				// ReverseProxy dropped these from Out; keep what a trusted
				// proxy before us said, and append to it.
				if v := pr.In.Header.Values("X-Forwarded-For"); len(v) > 0 {
					pr.Out.Header["X-Forwarded-For"] = v
				}
				pr.SetXForwarded()
				for _, h := range []string{"X-Forwarded-Proto", "X-Forwarded-Host"} {
					if v := pr.In.Header.Get(h); v != "" {
						pr.Out.Header.Set(h, v)
					}
				}
				return
			}
			pr.SetXForwarded()
		},
		Transport:    transport,
		BufferPool:   bufferPool{},
		ErrorLog:     log.New(io.Discard, "", 0),
		ErrorHandler: recordError,
	}
	return proxy, transport
}

// viaProxy sends r by the standard path, with a context the request
// timeout can end.
func (t *Transport) viaProxy(w http.ResponseWriter, r *http.Request, x *Exchange, proxy *httputil.ReverseProxy) error {
	x.pw = proxyWriter{ResponseWriter: w, x: x}
	if strings.EqualFold(r.Header.Get("Upgrade"), "websocket") {
		x.pw.t = t
		defer func() {
			if x.socket != nil {
				t.untrack(x.socket)
			}
		}()
	}
	client := r // its context is the client's, which the timeout leaves alone
	if x.timer != nil {
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		if !x.timer.watch(cancel) {
			cancel() // it fired already: the proxy fails at once
		}
		defer x.timer.unwatch()
		r = r.WithContext(ctx)
	}
	proxy.ServeHTTP(&x.pw, r)
	if err := x.pw.err; err != nil {
		x.pw.err = nil
		return x.classify(client, err)
	}
	return nil
}

// recordError is ReverseProxy's ErrorHandler. ReverseProxy calls it
// only before anything was written to the client.
func recordError(w http.ResponseWriter, _ *http.Request, err error) {
	pw := w.(*proxyWriter) // what viaProxy gave ReverseProxy
	// After a protocol switch the connection is the client's and the
	// worker's; a failure to write the 101 is not the worker's.
	if !pw.x.Stream {
		pw.err = err
	}
}

// proxyWriter is the response writer the standard path gives
// ReverseProxy: it learns the status the worker answered with and
// whether the answer is a stream, and takes ReverseProxy's error instead
// of an error response.
type proxyWriter struct {
	http.ResponseWriter
	x   *Exchange
	err error
	t   *Transport // set for a WebSocket upgrade: it tracks the socket
	// grpc: the answer is a gRPC call's, whose messages are counted
	// until a second one makes it a stream.
	grpc     bool
	messages grpcMessages
}

func (w *proxyWriter) WriteHeader(code int) {
	// An interim response (100 Continue, 103 Early Hints) is not the
	// answer: the worker may still hang after it.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.x.head(w.Header())
	}
	if code >= 200 {
		w.x.answered(code)
		switch ct := w.Header().Get("Content-Type"); {
		case isEventStream(ct):
			w.x.stream()
		case isGRPCAnswer(ct):
			w.grpc = true
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *proxyWriter) Write(b []byte) (int, error) {
	if w.x.Status == 0 {
		w.x.head(w.Header())
		w.x.answered(http.StatusOK)
	}
	if w.grpc && !w.x.Stream && w.messages.feed(b) >= 2 {
		// Only a streaming call answers with more than one message.
		w.x.stream()
	}
	return w.ResponseWriter.Write(b)
}

// Hijack is how ReverseProxy takes over the connection of a switched
// protocol (101).
func (w *proxyWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.x.timer.stop()
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil {
		return conn, brw, err
	}
	w.x.Status = http.StatusSwitchingProtocols
	w.x.stream()
	if w.t != nil {
		// ReverseProxy writes the 101 through brw, then copies the
		// worker's frames to the connection returned here.
		w.x.socket = w.t.track(conn)
		return w.x.socket, brw, nil
	}
	return conn, brw, nil
}

// Unwrap lets http.ResponseController reach the real writer, for
// flushing streamed responses.
func (w *proxyWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// bufferPool recycles the copy buffers of ReverseProxy. It stores array
// pointers, so neither Get nor Put allocates.
type bufferPool struct{}

const bufSize = 32 << 10

var buffers = sync.Pool{New: func() any { return new([bufSize]byte) }}

func (bufferPool) Get() []byte { return buffers.Get().(*[bufSize]byte)[:] }

func (bufferPool) Put(b []byte) {
	if cap(b) >= bufSize {
		buffers.Put((*[bufSize]byte)(b[:bufSize]))
	}
}

// clientBody is the client's request body as an exchange reads it: a
// failure to read it is the client's, not the worker's. The standard
// path reads it from a goroutine of its own.
type clientBody struct {
	io.ReadCloser
	failed *atomic.Bool
}

func (b *clientBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && !errors.Is(err, http.ErrBodyReadAfterClose) {
		b.failed.Store(true)
	}
	return n, err
}

// socketConn is a client's WebSocket connection while the transport
// carries it: writes are serialised, so that a close frame the pool
// sends goes out between the worker's writes, not inside one.
type socketConn struct {
	net.Conn
	mu     sync.Mutex
	closed bool
}

func (c *socketConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return 0, net.ErrClosed
	}
	return c.Conn.Write(p)
}

// goingAway is a WebSocket close frame from a server (unmasked) with
// status 1001, "going away" (RFC 6455 sections 5.5.1 and 7.4.1).
var goingAway = []byte{0x88, 0x02, 0x03, 0xe9}

// closeGoingAway sends the client a close frame saying that the server
// goes away, then closes the connection.
func (c *socketConn) closeGoingAway() {
	c.mu.Lock()
	if !c.closed {
		c.closed = true
		_ = c.Conn.SetWriteDeadline(time.Now().Add(time.Second))
		_, _ = c.Conn.Write(goingAway)
	}
	c.mu.Unlock()
	_ = c.Conn.Close()
}

func (t *Transport) track(conn net.Conn) *socketConn {
	c := &socketConn{Conn: conn}
	t.mu.Lock()
	if t.sockets == nil {
		t.sockets = map[*socketConn]struct{}{}
	}
	t.sockets[c] = struct{}{}
	t.mu.Unlock()
	return c
}

func (t *Transport) untrack(c *socketConn) {
	t.mu.Lock()
	delete(t.sockets, c)
	t.mu.Unlock()
}

// CloseSockets ends every WebSocket the transport carries now as a
// server that goes away does: each client gets a close frame with status
// 1001 and its connection closes (and with it the worker's). It reports
// how many it ended. Clients reconnect as after any clean close, rather
// than seeing the connection drop (1006).
func (t *Transport) CloseSockets() int {
	t.mu.Lock()
	open := make([]*socketConn, 0, len(t.sockets))
	for c := range t.sockets {
		open = append(open, c)
	}
	t.mu.Unlock()
	for _, c := range open {
		c.closeGoingAway()
	}
	return len(open)
}
