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
	"sync"
	"sync/atomic"
)

// newProxy builds the standard path: a reverse proxy and the keep-alive
// transport under it, which dials only the worker's address.
func newProxy(cfg Config) (*httputil.ReverseProxy, *http.Transport) {
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
		// Workers speak HTTP/1.1 on loopback; h2c would gain nothing.
		ForceAttemptHTTP2: false,
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
func (t *Transport) viaProxy(w http.ResponseWriter, r *http.Request, x *Exchange) error {
	x.pw = proxyWriter{ResponseWriter: w, x: x}
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
	t.proxy.ServeHTTP(&x.pw, r)
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
}

func (w *proxyWriter) WriteHeader(code int) {
	// An interim response (100 Continue, 103 Early Hints) is not the
	// answer: the worker may still hang after it.
	if code >= 200 {
		w.x.answered(code)
		if isEventStream(w.Header().Get("Content-Type")) {
			w.x.stream()
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *proxyWriter) Write(b []byte) (int, error) {
	if w.x.Status == 0 {
		w.x.answered(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

// Hijack is how ReverseProxy takes over the connection of a switched
// protocol (101).
func (w *proxyWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	w.x.timer.stop()
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.x.Status = http.StatusSwitchingProtocols
		w.x.stream()
	}
	return conn, brw, err
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
