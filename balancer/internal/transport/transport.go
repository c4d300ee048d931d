// Package transport sends one request to one worker address and copies
// the answer back. It knows nothing of endpoints, breakers, queues or
// retries: it reports what happened as its own values (an *Error of a
// Kind, the status it wrote, whether the answer is a stream), and the
// caller decides what that means for the worker.
//
// Plain HTTP/1.1 exchanges go over pooled keep-alive connections written
// and read by hand (the lean path, see forwarder); what that path does
// not handle — protocol switches, Expect, trailers in the request,
// anything httputil.ReverseProxy would rewrite — goes through
// ReverseProxy over an http.Transport that dials the same address (the
// standard path). Both send the same request and apply the same limits.
package transport

import (
	"errors"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

// Defaults of Config.
const (
	// DefaultDialTimeout bounds connecting to a worker.
	DefaultDialTimeout = 5 * time.Second
	// DefaultIdleTimeout closes idle keep-alive connections before
	// Node's default keepAliveTimeout (5 s) would, so that a request is
	// never written to a socket the worker is closing at that moment — a
	// classic source of stray 502s behind proxies.
	DefaultIdleTimeout = 4 * time.Second
	// DefaultMaxIdle bounds the idle connections kept per worker.
	DefaultMaxIdle = 256
)

// MaxResponseHeadBytes bounds a worker's response head (status line and
// header fields), and its trailer section, on both paths. Browsers refuse
// far smaller heads (Chromium: 256 KiB), so a larger one is a worker's
// bug: it gets a 502 that says so rather than being passed on.
const MaxResponseHeadBytes = 1 << 20

// Config sets up a Transport. Zero fields take the defaults.
type Config struct {
	// Network is "tcp" or "unix"; Address is host:port or a socket path.
	Network, Address string
	// DialTimeout bounds connecting.
	DialTimeout time.Duration
	// IdleTimeout closes a connection idle that long; it must be shorter
	// than the worker's keep-alive timeout.
	IdleTimeout time.Duration
	// MaxIdle bounds the idle connections kept.
	MaxIdle int
	// TrustForwarded reports whether a request came through a trusted
	// proxy, whose X-Forwarded-* headers are then kept and extended; nil
	// trusts nobody.
	TrustForwarded func(*http.Request) bool
	// Standard sends every request by the standard path, for comparison.
	Standard bool
	// Protocol is what the worker speaks: ProtocolHTTP1, ProtocolH2C or
	// ProtocolAuto (empty means auto).
	Protocol string
}

// What a worker speaks (Config.Protocol).
const (
	// ProtocolHTTP1: HTTP/1.1 only.
	ProtocolHTTP1 = "http1"
	// ProtocolH2C: HTTP/2 with prior knowledge, over cleartext, only
	// (grpc-js servers, node:http2 servers without allowHTTP1).
	ProtocolH2C = "h2c"
	// ProtocolAuto: gRPC calls over h2c, everything else over HTTP/1.1.
	ProtocolAuto = "auto"
)

func (c Config) withDefaults() Config {
	if c.DialTimeout <= 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxIdle <= 0 {
		c.MaxIdle = DefaultMaxIdle
	}
	return c
}

// Transport carries requests to one worker address. It is safe for
// concurrent use.
type Transport struct {
	lean     *forwarder
	proxy    *httputil.ReverseProxy
	std      *http.Transport
	standard bool
	// h2proxy, over h2, carries the requests the worker takes over h2c:
	// every request with ProtocolH2C, gRPC calls with ProtocolAuto.
	h2proxy *httputil.ReverseProxy
	h2      *http.Transport
	h2only  bool

	mu      sync.Mutex
	sockets map[*socketConn]struct{} // open WebSocket connections of clients
}

// New returns a transport to cfg's address. It dials nothing yet.
func New(cfg Config) *Transport {
	cfg = cfg.withDefaults()
	t := &Transport{lean: newForwarder(cfg), standard: cfg.Standard, h2only: cfg.Protocol == ProtocolH2C}
	t.proxy, t.std = newProxy(cfg, false)
	if cfg.Protocol != ProtocolHTTP1 {
		t.h2proxy, t.h2 = newProxy(cfg, true)
	}
	return t
}

// CloseIdle closes the idle connections of both paths; exchanges in
// progress finish.
func (t *Transport) CloseIdle() {
	t.lean.CloseIdle()
	t.std.CloseIdleConnections()
	if t.h2 != nil {
		t.h2.CloseIdleConnections()
	}
}

// Exchange is one request's settings for Forward, and what Forward
// learnt of it. The zero value is ready; Reset readies it again.
type Exchange struct {
	// Timeout bounds the wait for the worker's final response to begin
	// (not a stream or switched protocol that follows); 0 means none.
	Timeout time.Duration
	// Idempotent says the request may be sent twice: on a pooled
	// connection that the worker closed while idle, the lean path sends
	// it again on a fresh one even if part of it went out.
	Idempotent bool
	// Replay puts the request's body back at its start; nil when the
	// body cannot be sent again.
	Replay func(*http.Request) error
	// OnStream, if set, is told once when the answer turns out to be a
	// long-lived stream — a switched protocol (101) or an event stream,
	// once Status is set and before its body is copied; a gRPC call's
	// answer, before its second message is copied (a unary answer has
	// one).
	OnStream func()
	// SetCookie, if set, is a Set-Cookie value that goes out with the
	// answer's final head (or its switch of protocols), never with an
	// interim response, and not at all when the worker gives no answer.
	SetCookie string

	// Status is the final status written to the client's writer, 0 if
	// none was (1xx interim responses may have been).
	Status int
	// Stream reports that the answer was a long-lived stream.
	Stream bool

	timer      *requestTimer
	bodyFailed atomic.Bool
	body       clientBody
	pw         proxyWriter
	socket     *socketConn // the client's connection of a WebSocket
}

// Reset readies x for another request; the settings are cleared too.
func (x *Exchange) Reset() {
	x.Timeout, x.Idempotent, x.Replay, x.OnStream, x.SetCookie = 0, false, nil, nil, ""
	x.Status, x.Stream = 0, false
	x.timer = nil
	x.bodyFailed.Store(false)
	x.body = clientBody{}
	x.pw = proxyWriter{}
	x.socket = nil
}

// BodyFailed reports whether reading the client's request body failed
// (a malformed chunked body, a client that stopped sending): the
// client's fault, also when it happened after the answer began.
func (x *Exchange) BodyFailed() bool { return x.bodyFailed.Load() }

// TimedOut reports whether the request timeout passed before the answer
// began.
func (x *Exchange) TimedOut() bool { return x.timer.fired() }

// head adds what the caller gives the answer's final head to h, once.
func (x *Exchange) head(h http.Header) {
	if x.SetCookie != "" {
		h["Set-Cookie"] = append(h["Set-Cookie"], x.SetCookie)
		x.SetCookie = ""
	}
}

// answered is called when the final response begins: the timeout bounds
// only the wait for it.
func (x *Exchange) answered(status int) {
	x.timer.stop()
	x.Status = status
}

// stream marks the answer as a stream and tells OnStream, once.
func (x *Exchange) stream() {
	if x.Stream {
		return
	}
	x.Stream = true
	if x.OnStream != nil {
		x.OnStream()
	}
}

// Forward sends r to the worker and copies its answer to w. It returns
// nil once the answer is complete, or an *Error when the worker could
// not answer and nothing of an answer was written to w. An answer that
// began and then broke off cannot be told to the client any more: like
// httputil.ReverseProxy, Forward then panics with http.ErrAbortHandler,
// which aborts the client's connection, so that a cut body is never
// taken for a whole one. r.Body is r's own again when Forward returns
// or panics.
func (t *Transport) Forward(w http.ResponseWriter, r *http.Request, x *Exchange) error {
	if x.Timeout > 0 {
		x.timer = newRequestTimer(x.Timeout)
		defer x.timer.stop()
	}
	body := r.Body
	if body != nil && body != http.NoBody {
		x.body = clientBody{ReadCloser: body, failed: &x.bodyFailed}
		r.Body = &x.body
		defer func() { r.Body = x.body.ReadCloser }()
	}
	if t.h2proxy != nil && (t.h2only || grpcstatus.IsCall(r)) {
		return t.viaProxy(w, r, x, t.h2proxy)
	}
	if t.standard || !forwardable(r) {
		return t.viaProxy(w, r, x, t.proxy)
	}
	status, err := t.lean.forward(w, r, x)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errNotForwarded):
		return t.viaProxy(w, r, x, t.proxy)
	case status != 0 || x.Status != 0:
		panic(http.ErrAbortHandler)
	}
	return x.classify(r, err)
}

// Kind says what kind of failure an Error is.
type Kind uint8

// The kinds of Error.
const (
	// Unreached: the worker could not be connected to; nothing was sent.
	Unreached Kind = iota + 1
	// NoAnswer: the connection broke, or was closed, before the answer
	// began. The worker may have seen the request.
	NoAnswer
	// BadAnswer: the worker answered with something that is not HTTP/1.1
	// that can be passed on: malformed, or a head over
	// MaxResponseHeadBytes.
	BadAnswer
	// TimedOut: the request timeout passed before the answer began. The
	// worker has the request.
	TimedOut
	// ClientGone: the client's context ended, or writing to it failed.
	ClientGone
	// ClientBody: the client's request body could not be read.
	ClientBody
	// WrongProtocol: the worker speaks another protocol than it was
	// sent (HTTP/2 only, sent HTTP/1.1, or the reverse): a setting to
	// change, neither the worker's failure nor the client's.
	WrongProtocol
)

var kindNames = [...]string{"", "unreached", "no answer", "bad answer", "timed out", "client gone", "client body", "wrong protocol"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Error is how Forward failed.
type Error struct {
	Kind Kind
	// Err is the cause.
	Err error
	// reason is the cause in a few words, for BadAnswer.
	reason error
}

func (e *Error) Error() string { return e.Err.Error() }

// Reason says in a few words what was wrong with a BadAnswer (for
// example "response head larger than 1 MiB, the limit"); for other kinds
// it is the cause.
func (e *Error) Reason() string {
	if e.reason != nil {
		return e.reason.Error()
	}
	return e.Err.Error()
}

// The worker speaks another protocol than it was sent.
var (
	errSpeaksHTTP2 = errors.New("the worker speaks only HTTP/2: set upstream_protocol h2c (or auto, which sends gRPC calls over h2c)")
	errSpeaksHTTP1 = errors.New("the worker speaks only HTTP/1.1: set upstream_protocol http1, or auto (which sends gRPC calls over h2c)")
)

// badAnswers are the lean path's errors for an answer it cannot pass on.
var badAnswers = []error{errHeadTooLarge, errStatusLine, errFieldLine, errFraming, errSwitch, errInterim}

func (e *Error) Unwrap() error { return e.Err }

// KindOf is err's Kind, 0 if err is not an *Error.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return 0
}

// Worker reports whether an error of this kind is the worker's doing
// (as opposed to the client's).
func (k Kind) Worker() bool { return k >= Unreached && k <= TimedOut }

// classify turns an error of either path into an *Error.
func (x *Exchange) classify(r *http.Request, err error) *Error {
	var op *net.OpError
	switch {
	case errors.Is(err, errClientGone), r.Context().Err() != nil:
		return &Error{Kind: ClientGone, Err: err}
	case errors.Is(err, errBodyRead), x.BodyFailed():
		return &Error{Kind: ClientBody, Err: err}
	case x.TimedOut():
		return &Error{Kind: TimedOut, Err: err}
	case errors.As(err, &op) && op.Op == "dial":
		return &Error{Kind: Unreached, Err: err}
	case errors.Is(err, errSpeaksHTTP2):
		return &Error{Kind: WrongProtocol, Err: err, reason: errSpeaksHTTP2}
	case strings.Contains(err.Error(), "frame header looked like an HTTP/1.1 header"):
		// http.Transport's HTTP/2 client read an HTTP/1.1 answer.
		return &Error{Kind: WrongProtocol, Err: err, reason: errSpeaksHTTP1}
	}
	for _, bad := range badAnswers {
		if errors.Is(err, bad) {
			return &Error{Kind: BadAnswer, Err: err, reason: bad}
		}
	}
	// The standard path's http.Transport has no error values for these.
	switch msg := err.Error(); {
	case strings.Contains(msg, "server response headers exceeded"):
		return &Error{Kind: BadAnswer, Err: err, reason: errHeadTooLarge}
	case strings.Contains(msg, "malformed HTTP"):
		return &Error{Kind: BadAnswer, Err: err, reason: errors.New("malformed HTTP response")}
	}
	return &Error{Kind: NoAnswer, Err: err}
}

// requestTimer is an exchange's request timeout. When it fires before
// the worker's answer begins, it ends what the exchange waits on at that
// moment: the lean path's connection (its deadline goes into the past),
// or the context of ReverseProxy's request. The client's own context is
// left alone, so the failure is the worker's (a timeout), not a client
// that went away. The methods are safe on a nil timer: no timeout.
type requestTimer struct {
	timer *time.Timer
	mu    sync.Mutex
	// expired: it fired; abort is what it ends, while something waits.
	expired bool
	abort   func()
}

func newRequestTimer(d time.Duration) *requestTimer {
	t := &requestTimer{}
	t.timer = time.AfterFunc(d, t.fire)
	return t
}

func (t *requestTimer) fire() {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.expired = true
	if t.abort != nil {
		t.abort()
	}
}

// watch makes abort what the timer ends from now on; it reports false,
// and keeps nothing, when the timer has fired already.
func (t *requestTimer) watch(abort func()) bool {
	if t == nil {
		return true
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.expired {
		return false
	}
	t.abort = abort
	return true
}

// unwatch ends a watch and reports whether the timer fired during it
// (abort ran). Once it returns, the timer can no longer run abort.
func (t *requestTimer) unwatch() (fired bool) {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.abort = nil
	return t.expired
}

// fired reports whether the timer fired.
func (t *requestTimer) fired() bool {
	if t == nil {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.expired
}

// stop stops the timer: the answer has begun.
func (t *requestTimer) stop() {
	if t != nil {
		t.timer.Stop()
	}
}
