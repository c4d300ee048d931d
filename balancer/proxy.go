package balancer

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// newProxy builds an endpoint's reverse proxy and the keep-alive
// transport under it, which dials only the endpoint's address.
func newProxy(cfg *Config, network, address string) (*httputil.ReverseProxy, *http.Transport) {
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	transport := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		MaxIdleConns:        cfg.MaxIdleConns,
		MaxIdleConnsPerHost: cfg.MaxIdleConns,
		IdleConnTimeout:     cfg.IdleConnTimeout,
		DisableCompression:  true,
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

// recordError is every endpoint's ReverseProxy.ErrorHandler. ReverseProxy
// calls it only before anything was written to the client.
func recordError(w http.ResponseWriter, _ *http.Request, err error) {
	if aw, ok := w.(*attemptWriter); ok {
		// After a protocol switch the connection is the client's and the
		// worker's; a failure to write the 101 is not the worker's fault.
		if !aw.released {
			aw.err = err
		}
		return
	}
	problem.Write(w, problem.Details{Status: http.StatusBadGateway, Detail: "the worker did not answer"})
}

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
