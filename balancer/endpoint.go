// Package balancer owns the live set of endpoints a pool serves from,
// their load, the policy that picks one per request, and the proxying
// to it.
//
// It reads as three ideas kept apart: the set (Add, Remove: whoever
// discovers and health-checks endpoints calls them), the load (each
// Endpoint's in-flight count), and the selection (a Policy, a small
// function over the endpoints' load).
package balancer

import (
	"context"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// DefaultIdleConnTimeout closes idle upstream connections before Node's
// default keepAliveTimeout (5 s) would, so a request is never written to
// a socket the worker is closing at that moment — a classic source of
// stray 502s behind proxies.
const DefaultIdleConnTimeout = 4 * time.Second

// Options are shared by all endpoints of a balancer.
type Options struct {
	// TrustForwarded reports whether a request came through a trusted
	// proxy, whose X-Forwarded-* headers are then kept and extended. nil
	// trusts nobody: the headers are replaced, as Caddy does by default.
	TrustForwarded func(*http.Request) bool
	// OnError is told about each failed proxy attempt (not about clients
	// that went away). It must not write to the response.
	OnError func(e *Endpoint, r *http.Request, err error)
	// IdleConnTimeout of the upstream keep-alive connections; zero means
	// DefaultIdleConnTimeout.
	IdleConnTimeout time.Duration
	// MaxIdleConns per endpoint; zero means 256.
	MaxIdleConns int
}

// Endpoint is one place a request can be sent: a worker process, or an
// address found by discovery. It keeps its own keep-alive connections.
type Endpoint struct {
	// Worker is the worker slot id (0 when not spawned by us).
	Worker int
	// PID of the worker process (0 when unknown).
	PID int
	// Network is "tcp" or "unix"; Address is host:port or a socket path.
	Network, Address string

	inflight atomic.Int64
	served   atomic.Uint64

	transport *http.Transport
	proxy     *httputil.ReverseProxy
}

// NewEndpoint prepares proxying to network/address.
func NewEndpoint(worker, pid int, network, address string, opts *Options) *Endpoint {
	e := &Endpoint{Worker: worker, PID: pid, Network: network, Address: address}
	idle := opts.IdleConnTimeout
	if idle <= 0 {
		idle = DefaultIdleConnTimeout
	}
	maxIdle := opts.MaxIdleConns
	if maxIdle <= 0 {
		maxIdle = 256
	}
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: -1}
	e.transport = &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, address)
		},
		MaxIdleConns:        maxIdle,
		MaxIdleConnsPerHost: maxIdle,
		IdleConnTimeout:     idle,
		DisableCompression:  true,
		// Workers speak HTTP/1.1 on loopback; h2c would gain nothing.
		ForceAttemptHTTP2: false,
	}
	urlHost := address
	if network == "unix" {
		urlHost = "localhost"
	}
	trust := opts.TrustForwarded
	onError := opts.OnError
	e.proxy = &httputil.ReverseProxy{
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
		Transport:  e.transport,
		BufferPool: bufferPool{},
		ErrorLog:   log.New(io.Discard, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away; nobody reads an answer. 499 is the
				// status Caddy and nginx log for that.
				w.WriteHeader(499)
				return
			}
			if onError != nil {
				onError(e, r, err)
			}
			problem.Write(w, problem.Details{
				Status: http.StatusBadGateway,
				Detail: "worker " + strconv.Itoa(e.Worker) + " did not answer",
			})
		},
	}
	return e
}

// Inflight is the number of requests the endpoint is serving now.
func (e *Endpoint) Inflight() int64 { return e.inflight.Load() }

// Served is the number of requests the endpoint has finished.
func (e *Endpoint) Served() uint64 { return e.served.Load() }

// ServeHTTP proxies one request to the endpoint, counting it in flight.
func (e *Endpoint) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.inflight.Add(1)
	defer func() {
		e.inflight.Add(-1)
		e.served.Add(1)
	}()
	e.proxy.ServeHTTP(w, r)
}

// Close drops the endpoint's idle connections. Requests in flight finish.
func (e *Endpoint) Close() { e.transport.CloseIdleConnections() }

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
