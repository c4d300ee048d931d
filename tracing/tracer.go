package tracing

import (
	"bufio"
	"context"
	"net"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

// ScopeName is the instrumentation scope of the spans this package makes.
const ScopeName = "github.com/caddy-workerpool/caddy-workerpool/tracing"

// Attribute keys of our own, beside the HTTP semantic conventions.
const (
	PoolKey      = attribute.Key("worker_pool.name")
	AttemptKey   = attribute.Key("worker_pool.attempt")
	BreakerKey   = attribute.Key("worker_pool.breaker_state")
	QueueWaitKey = attribute.Key("worker_pool.queue_wait_seconds")
	WorkerIDKey  = attribute.Key("worker.id")
	WorkerPIDKey = attribute.Key("worker.pid")
	WorkerAddr   = attribute.Key("worker.address")
)

// Config says how a Tracer names what it traces.
type Config struct {
	// Pool is the pool's name, an attribute of every span.
	Pool string
	// Route returns the request's low-cardinality route (a path
	// template such as /users/{id}), asked once the response is done;
	// "" when it has none. Spans are then named "<METHOD> <route>",
	// else "<METHOD>", as the HTTP semantic conventions say.
	Route func(*http.Request) string
}

// Tracer makes the spans of the requests of one handler.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
	cfg    Config
	rpc    rpcConventions
}

// New returns a Tracer that makes its spans with tp and carries trace
// context in and out with prop.
func New(tp trace.TracerProvider, prop propagation.TextMapPropagator, cfg Config) *Tracer {
	return &Tracer{tracer: tp.Tracer(ScopeName), prop: prop, cfg: cfg, rpc: rpcConventionsFromEnv()}
}

// tracerKey is where Start leaves, for Attempt, a *statusWriter: the
// Tracer, and the response whose header holds a gRPC call's status.
type tracerKey struct{}

// Start begins tracing r. If r's context already holds a span of this
// process (Caddy's tracing handler ran first), that span stays the
// request's server span and ours are its children; otherwise Start
// continues the trace of r's headers, if any, with a server span. It
// returns the writer and request to pass on, and end, which the caller
// must call once the response is done. A gRPC call's spans also carry
// the RPC attributes (rpc.system, rpc.service, rpc.method,
// rpc.grpc.status_code; see rpcConventions), and its server span is
// named by its method.
func (t *Tracer) Start(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	ctx := r.Context()
	grpc := grpcstatus.IsCall(r)
	if parent := trace.SpanFromContext(ctx); parent.SpanContext().IsValid() && !parent.SpanContext().IsRemote() {
		sw := &statusWriter{ResponseWriter: w, t: t, grpc: grpc}
		ctx = context.WithValue(ctx, tracerKey{}, sw)
		r = r.WithContext(ctx)
		return w, r, func() {
			if !parent.IsRecording() {
				return
			}
			if route := t.route(r); route != "" {
				parent.SetAttributes(semconv.HTTPRoute(route))
			}
			if grpc {
				// Not our span: its name and status stay its maker's.
				attrs := t.rpc.rpcStart(make([]attribute.KeyValue, 0, 6), r)
				if code, ok := grpcstatus.FromHeader(w.Header()); ok {
					attrs = t.rpc.rpcEnd(attrs, code)
				}
				parent.SetAttributes(attrs...)
			}
		}
	}
	ctx = t.prop.Extract(ctx, propagation.HeaderCarrier(r.Header))
	method, known := methodName(r.Method)
	// Attributes given at the start let a sampler see them, and let the
	// span size its attribute list once.
	attrs := serverAttributes(r, known, t.cfg.Pool)
	if grpc {
		attrs = t.rpc.rpcStart(attrs, r)
	}
	ctx, span := t.tracer.Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer), trace.WithAttributes(attrs...))
	sw := &statusWriter{ResponseWriter: w, t: t, grpc: grpc}
	ctx = context.WithValue(ctx, tracerKey{}, sw)
	r = r.WithContext(ctx)
	return sw, r, func() {
		if span.IsRecording() {
			status := sw.status
			if status == 0 {
				status = http.StatusOK
			}
			end := make([]attribute.KeyValue, 1, 3)
			end[0] = semconv.HTTPResponseStatusCode(status)
			if status >= 500 {
				// A server span's 4xx is the client's error, not ours.
				span.SetStatus(codes.Error, "")
				end = append(end, semconv.ErrorTypeKey.String(strconv.Itoa(status)))
			}
			if route := t.route(r); route != "" {
				span.SetName(method + " " + route)
				end = append(end, semconv.HTTPRoute(route))
			}
			span.SetAttributes(end...)
			if grpc {
				t.endGRPCServer(span, r, sw.Header(), status)
			}
		}
		span.End()
	}
}

func (t *Tracer) route(r *http.Request) string {
	if t.cfg.Route == nil {
		return ""
	}
	return t.cfg.Route(r)
}

// Attempt is a balancer.Config.OnAttempt: for a request that Start
// traces, it starts the attempt's client span and gives the worker the
// attempt's trace context in the request headers. Other requests pass
// untouched, without allocating.
func Attempt(r *http.Request, a *balancer.Attempt) (*http.Request, func(status int, err error)) {
	sw, _ := r.Context().Value(tracerKey{}).(*statusWriter)
	if sw == nil {
		return r, nil
	}
	t := sw.t
	method, known := methodName(r.Method)
	attrs := attemptAttributes(r, a, known, t.cfg.Pool)
	if sw.grpc {
		attrs = t.rpc.rpcStart(attrs, r)
	}
	ctx, span := t.tracer.Start(r.Context(), method, trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attrs...))
	out := r.WithContext(ctx)
	// The incoming headers belong to the client's request; the worker
	// gets a copy that carries this attempt's span as its parent.
	out.Header = r.Header.Clone()
	if out.Header == nil {
		out.Header = http.Header{}
	}
	t.prop.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return out, func(status int, err error) {
		if span.IsRecording() {
			var end [2]attribute.KeyValue
			n := 0
			if status > 0 {
				end[n] = semconv.HTTPResponseStatusCode(status)
				n++
			}
			switch {
			case status == http.StatusGatewayTimeout:
				span.SetStatus(codes.Error, "the worker did not answer within the request timeout")
				end[n] = semconv.ErrorTypeKey.String("timeout")
				n++
			case err != nil:
				span.RecordError(err)
				span.SetStatus(codes.Error, err.Error())
				end[n] = semconv.ErrorTypeKey.String("transport")
				n++
			case status >= 500:
				span.SetStatus(codes.Error, "")
				end[n] = semconv.ErrorTypeKey.String(strconv.Itoa(status))
				n++
			}
			span.SetAttributes(end[:n]...)
			if sw.grpc {
				endGRPCAttempt(span, t.rpc, sw.Header(), status, err)
			}
		}
		span.End()
	}
}

func serverAttributes(r *http.Request, known bool, pool string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 12)
	attrs = appendMethod(attrs, r, known)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	attrs = append(attrs, semconv.URLScheme(scheme), semconv.URLPath(r.URL.Path),
		semconv.NetworkProtocolVersion(protocolVersion(r)), PoolKey.String(pool))
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	if host, _ := splitHostPort(r.RemoteAddr); host != "" {
		attrs = append(attrs, semconv.ClientAddress(host))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	return attrs
}

func attemptAttributes(r *http.Request, a *balancer.Attempt, known bool, pool string) []attribute.KeyValue {
	e := a.Endpoint
	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = appendMethod(attrs, r, known)
	attrs = append(attrs,
		PoolKey.String(pool),
		WorkerIDKey.Int(e.Worker), WorkerPIDKey.Int(e.PID), WorkerAddr.String(e.Address),
		// Read here, where the span records, not for every request: the
		// breaker's state is behind its lock.
		AttemptKey.Int(a.N), BreakerKey.String(e.BreakerState()),
		QueueWaitKey.Float64(a.QueueWait.Seconds()),
	)
	if a.N > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(a.N-1))
	}
	if e.Network == "unix" {
		// The query string is left out of url.full: it may hold secrets.
		attrs = append(attrs, semconv.URLFull("http://localhost"+r.URL.Path), semconv.NetworkTransportUnix)
	} else {
		attrs = append(attrs, semconv.URLFull("http://"+e.Address+r.URL.Path))
		if host, port := splitHostPort(e.Address); host != "" {
			attrs = append(attrs, semconv.ServerAddress(host), semconv.ServerPort(port))
		}
	}
	return attrs
}

// methodName is the method as span names use it: a method outside the
// known set is "HTTP", so that a client cannot blow up their number.
func methodName(m string) (string, bool) {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m, true
	}
	return "HTTP", false
}

func appendMethod(attrs []attribute.KeyValue, r *http.Request, known bool) []attribute.KeyValue {
	if known {
		return append(attrs, semconv.HTTPRequestMethodKey.String(r.Method))
	}
	return append(attrs, semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(r.Method))
}

func protocolVersion(r *http.Request) string {
	switch r.ProtoMajor {
	case 2:
		return "2"
	case 3:
		return "3"
	}
	return "1." + strconv.Itoa(r.ProtoMinor)
}

func splitHostPort(hostport string) (string, int) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return hostport, 0
	}
	p, _ := strconv.Atoi(port)
	return host, p
}

// statusWriter remembers the status of the response for the server span.
// It also carries, in the request's context, the Tracer for Attempt, and
// whether the request is a gRPC call.
type statusWriter struct {
	http.ResponseWriter
	status int
	t      *Tracer
	grpc   bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Hijack takes the connection over for a switched protocol, whose 101
// the proxy writes on the connection itself.
func (w *statusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
	}
	return conn, brw, err
}

// Unwrap lets http.ResponseController reach the real writer, for
// flushing a stream.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
