package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

// Tracing configures OpenTelemetry tracing of the requests a handler
// serves. Exporter, sampler, resource and propagators come from the
// standard OTEL_* environment variables.
type Tracing struct {
	// Off disables tracing even when the environment names an exporter.
	Off bool `json:"off,omitempty"`
	// Route names this handler's requests, for span names ("GET
	// <route>") and the http.route attribute, when no OpenAPI route
	// matched them. Keep it low-cardinality: a path template such as
	// /api/*, never a raw path.
	Route string `json:"route,omitempty"`
}

// tracingOn reports whether this handler traces: its config turns
// tracing on (or off), else the environment decides.
func (h *Handler) tracingOn() bool {
	if h.Tracing != nil {
		return !h.Tracing.Off
	}
	return tracing.EnabledByEnv()
}

// provisionTracing sets up the handler's tracer on the shared provider.
func (h *Handler) provisionTracing(ctx caddy.Context) error {
	if !h.tracingOn() {
		return nil
	}
	tp, err := tracing.Acquire(ctx)
	if err != nil {
		return err
	}
	h.tracer = tracing.New(tp, tracing.Propagator(), tracing.Config{Pool: h.Name, Route: h.route})
	return nil
}

// cleanupTracing lets go of the shared provider; the last user flushes it.
func (h *Handler) cleanupTracing() error {
	if h.tracer == nil {
		return nil
	}
	h.tracer = nil
	return tracing.Release()
}

// route is the request's route: the template that validation matched,
// else the configured name.
func (h *Handler) route(r *http.Request) string {
	if route := matchedRoute(r); route != "" {
		return route
	}
	if h.Tracing != nil {
		return h.Tracing.Route
	}
	return ""
}

// startTrace begins the request's spans. When this handler made the
// server span, the access log entry and the {http.vars.trace_id} and
// {http.vars.span_id} placeholders get its ids, as Caddy's own tracing
// handler does for its span.
func (h *Handler) startTrace(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, func()) {
	before := trace.SpanContextFromContext(r.Context())
	w, r, end := h.tracer.Start(w, r)
	sc := trace.SpanContextFromContext(r.Context())
	if sc.IsValid() && sc.SpanID() != before.SpanID() {
		traceID, spanID := sc.TraceID().String(), sc.SpanID().String()
		caddyhttp.SetVar(r.Context(), "trace_id", traceID)
		caddyhttp.SetVar(r.Context(), "span_id", spanID)
		if extra, ok := r.Context().Value(caddyhttp.ExtraLogFieldsCtxKey).(*caddyhttp.ExtraLogFields); ok {
			extra.Add(zap.String("traceID", traceID))
			extra.Add(zap.String("spanID", spanID))
		}
	}
	return w, r, end
}

// parseTracing reads "tracing [off] { route <name> }".
func (h *Handler) parseTracing(d *caddyfile.Dispenser) error {
	h.Tracing = &Tracing{}
	if d.NextArg() {
		switch d.Val() {
		case "off":
			h.Tracing.Off = true
		case "on":
		default:
			return d.Errf("tracing: %q is not a setting; write 'tracing', 'tracing off' or a 'tracing { route <name> }' block", d.Val())
		}
		if d.NextArg() {
			return d.ArgErr()
		}
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "route":
			if !d.NextArg() {
				return d.Err("tracing route: give the route's name, e.g. 'route /api/*'")
			}
			h.Tracing.Route = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized tracing option %q; use route", d.Val())
		}
	}
	return nil
}
