package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/retry"
)

// forwarderConfig sets up a forwarder. Zero fields take the defaults.
type forwarderConfig struct {
	// Network is "tcp" or "unix"; Address is host:port or a socket path.
	Network, Address string
	// DialTimeout bounds connecting; default DefaultDialTimeout.
	DialTimeout time.Duration
	// IdleTimeout closes a connection idle that long; it must be shorter
	// than the worker's keep-alive timeout. Default
	// DefaultIdleConnTimeout.
	IdleTimeout time.Duration
	// MaxIdle bounds the idle connections kept; default 256.
	MaxIdle int
	// TrustForwarded is Config.TrustForwarded.
	TrustForwarded func(*http.Request) bool
}

// forwarder sends plain HTTP/1.1 exchanges to one worker over pooled
// keep-alive connections, writing the request and reading the response
// by hand: no goroutine per connection, no header map cloned, a few
// allocations per exchange. It sends what ReverseProxy with endpoint.go's
// Rewrite sends, and copies back what it would; what it does not handle
// it declines (see forwardable), for ReverseProxy to take.
//
// It is half-duplex: the response is read once the request body has been
// sent whole.
type forwarder struct {
	pool  connPool
	host  string // Host of a request that has none
	trust func(*http.Request) bool
}

// The outcomes of forward besides success; see forward.
var (
	// errNotForwarded: the forwarder does not handle this request.
	errNotForwarded = errors.New("not for the lean forwarder")
	// errNoResponse: the worker failed before its response began.
	errNoResponse = errors.New("the worker did not answer")
)

func newForwarder(cfg forwarderConfig) *forwarder {
	f := &forwarder{
		pool: connPool{
			network:     cfg.Network,
			address:     cfg.Address,
			dialer:      net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: -1},
			idleTimeout: cfg.IdleTimeout,
			maxIdle:     cfg.MaxIdle,
		},
		host:  cfg.Address,
		trust: cfg.TrustForwarded,
	}
	if f.pool.dialer.Timeout <= 0 {
		f.pool.dialer.Timeout = DefaultDialTimeout
	}
	if f.pool.idleTimeout <= 0 {
		f.pool.idleTimeout = DefaultIdleConnTimeout
	}
	if f.pool.maxIdle <= 0 {
		f.pool.maxIdle = 256
	}
	if cfg.Network == "unix" {
		f.host = "localhost"
	}
	return f
}

// CloseIdle closes the idle connections; exchanges in progress finish.
func (f *forwarder) CloseIdle() { f.pool.closeIdle() }

// forward sends r to the worker and copies its response to w. status is
// the final status written to w, 0 if none was (1xx interim responses
// may have been). The error says what happened, and what the caller may
// do next:
//
//   - nil: the exchange is complete.
//   - errNotForwarded: declined; nothing was written to w or read from
//     r.Body. Use the standard path.
//   - a *net.OpError with Op "dial": the worker could not be reached;
//     nothing was sent. Any endpoint may take the request.
//   - errNoResponse (wrapping the cause): the connection broke, or the
//     worker sent something that is not HTTP/1.1, before the response
//     head was complete; status is 0. The worker may have seen the
//     request: send it elsewhere only if it is idempotent, after
//     rewindBody.
//   - errAborted (wrapping the cause), status set: the response began
//     and then broke. The client has part of it: the caller must write
//     nothing more and abort the client's connection, with
//     panic(http.ErrAbortHandler) as ReverseProxy does, so that a cut
//     body is never taken for a whole one.
//   - retry.ErrBodyRead (wrapping the cause): the client's request body could
//     not be read; the worker may have part of the request (its
//     connection is closed) and no response was written. Not the
//     worker's fault.
//   - errClientGone (wrapping the context's cause, or the failed write):
//     r's context ended or writing to w failed. Not the worker's fault;
//     if status is set, abort as for errAborted.
//
// A connection from the pool that fails before any response byte (the
// worker closed it while idle) is replaced by a fresh one once, when the
// request can be sent again: nothing of it was written, or it is
// idempotent and its body was untouched or can be rewound.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request) (status int, err error) {
	if !forwardable(r) {
		return 0, errNotForwarded
	}
	ctx := r.Context()
	if ctx.Err() != nil {
		return 0, clientGone(ctx)
	}
	c, err := f.pool.get(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return 0, clientGone(ctx)
		}
		return 0, err
	}
	status, keep, touched, err := f.exchange(c, w, r)
	if status == 0 && c.reused && c.read == 0 && errors.Is(err, errNoResponse) && !requestTimerOf(w).fired() && mayResend(r, c, touched) {
		c.close()
		if touched {
			if rerr := retry.Rewind(r); rerr != nil {
				return 0, fmt.Errorf("%w: %w", retry.ErrBodyRead, rerr)
			}
		}
		if c, err = f.pool.dial(ctx); err != nil {
			if ctx.Err() != nil {
				return 0, clientGone(ctx)
			}
			return 0, err
		}
		status, keep, _, err = f.exchange(c, w, r)
	}
	if keep {
		f.pool.put(c)
	} else {
		c.close()
	}
	return status, err
}

// mayResend reports whether a request whose pooled connection failed
// before the response began may go again on a fresh one.
func mayResend(r *http.Request, c *conn, touched bool) bool {
	if touched {
		if !retry.InMemory(r) && r.GetBody == nil {
			return false
		}
	}
	return c.written == 0 || retry.Idempotent(r)
}

// exchange sends r on c and copies the response to w. keep reports
// whether c may carry another exchange; touched whether anything was
// read from r.Body.
func (f *forwarder) exchange(c *conn, w http.ResponseWriter, r *http.Request) (status int, keep, touched bool, err error) {
	ctx := r.Context()
	rt := requestTimerOf(w)
	if !rt.watch(c.abort) {
		return 0, true, false, errRequestTimeout
	}
	c.begin()
	stop := context.AfterFunc(ctx, c.abort)
	body := requestBodyLength(r)
	if !f.writeHead(c.bw, r, body) {
		// Nothing went out unless the head outgrew the buffer: then the
		// worker has part of it, and the connection cannot be used again.
		c.bw.Reset(c)
		fired := rt.unwatch()
		return 0, stop() && !fired && c.written == 0, false, errNotForwarded
	}
	if touched, err = writeBody(c.bw, r.Body, body); err != nil {
		if !errors.Is(err, retry.ErrBodyRead) {
			err = fmt.Errorf("%w: %w", errNoResponse, err)
		}
	} else {
		status, keep, err = f.readResponse(c, w, r.Method == http.MethodHead)
	}
	c.w, c.pending = nil, false
	c.head.release()
	fired := rt.unwatch()
	if !stop() || fired {
		keep = false // the context ended, or the timeout: c's deadline is in the past
	}
	if err != nil {
		keep = false
		if ctx.Err() != nil {
			err = clientGone(ctx)
		}
	}
	return status, keep, touched, err
}

// errRequestTimeout: the request timeout fired before the exchange
// began.
var errRequestTimeout = fmt.Errorf("%w: the request timeout passed", errNoResponse)

// requestTimerOf is the request timeout of the attempt that w belongs
// to, nil when there is none.
func requestTimerOf(w http.ResponseWriter) *requestTimer {
	if aw, ok := w.(*attemptWriter); ok {
		return aw.timeout
	}
	return nil
}

func clientGone(ctx context.Context) error {
	return fmt.Errorf("%w: %w", errClientGone, context.Cause(ctx))
}
