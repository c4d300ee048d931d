package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
)

// forwarder sends plain HTTP/1.1 exchanges to one worker over pooled
// keep-alive connections, writing the request and reading the response
// by hand: no goroutine per connection, no header map cloned, a few
// allocations per exchange. It sends what the standard path (proxy.go)
// sends, and copies back what it would; what it does not handle
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
	// errAborted: the connection broke while the response was copied.
	errAborted = errors.New("response aborted")
	// errClientGone: the client's context ended, or writing to it failed.
	errClientGone = errors.New("client went away")
	// errBodyRead: the client's request body could not be read.
	errBodyRead = errors.New("could not read the request body")
)

// newForwarder returns a forwarder to cfg's address; cfg has its
// defaults.
func newForwarder(cfg Config) *forwarder {
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
//
// x gives the request timeout, whether r is idempotent and how to
// replay its body, and learns the status and whether the answer is a
// stream.
func (f *forwarder) forward(w http.ResponseWriter, r *http.Request, x *Exchange) (status int, err error) {
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
	status, keep, touched, err := f.exchange(c, w, r, x)
	if status == 0 && c.reused && c.read == 0 && errors.Is(err, errNoResponse) && !x.timer.fired() && mayResend(x, c, touched) {
		c.close()
		if touched {
			if rerr := replay(r, x); rerr != nil {
				return 0, fmt.Errorf("%w: %w", errBodyRead, rerr)
			}
		}
		if c, err = f.pool.dial(ctx); err != nil {
			if ctx.Err() != nil {
				return 0, clientGone(ctx)
			}
			return 0, err
		}
		status, keep, _, err = f.exchange(c, w, r, x)
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
func mayResend(x *Exchange, c *conn, touched bool) bool {
	if touched && x.Replay == nil {
		return false
	}
	return c.written == 0 || x.Idempotent
}

// replay puts r's body, which Forward wrapped, back at its start.
func replay(r *http.Request, x *Exchange) error {
	r.Body = x.body.ReadCloser
	err := x.Replay(r)
	x.body.ReadCloser = r.Body
	r.Body = &x.body
	return err
}

// exchange sends r on c and copies the response to w. keep reports
// whether c may carry another exchange; touched whether anything was
// read from r.Body.
func (f *forwarder) exchange(c *conn, w http.ResponseWriter, r *http.Request, x *Exchange) (status int, keep, touched bool, err error) {
	ctx := r.Context()
	rt := x.timer
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
		if !errors.Is(err, errBodyRead) {
			err = fmt.Errorf("%w: %w", errNoResponse, err)
		}
	} else {
		status, keep, err = f.readResponse(c, w, x, r.Method == http.MethodHead)
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

func clientGone(ctx context.Context) error {
	return fmt.Errorf("%w: %w", errClientGone, context.Cause(ctx))
}
