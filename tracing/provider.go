// Package tracing traces requests through a worker pool with
// OpenTelemetry: a server span per request (or, when something in the
// same process already started one, such as Caddy's own tracing
// handler, its spans only), one client span per attempt at a worker, and
// the attempt's trace context in the request the worker gets, so that
// the worker's own spans join the trace.
//
// Everything comes from the standard OTEL_* environment: the exporter
// (OTEL_TRACES_EXPORTER, OTEL_EXPORTER_OTLP_*), the sampler
// (OTEL_TRACES_SAMPLER), the resource (OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES) and the propagators (OTEL_PROPAGATORS, W3C
// tracecontext and baggage by default). It never imports Caddy.
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/contrib/propagators/autoprop"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// ShutdownTimeout bounds the flush of spans still buffered when the last
// user of the shared provider lets go of it.
const ShutdownTimeout = 5 * time.Second

// EnabledByEnv reports whether the environment asks for traces: it names
// an exporter other than "none", or an OTLP endpoint, and does not
// disable the SDK.
func EnabledByEnv() bool {
	if strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch e := strings.TrimSpace(os.Getenv("OTEL_TRACES_EXPORTER")); e {
	case "none":
		return false
	case "":
		return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return true
	}
}

// Propagator is the propagator that OTEL_PROPAGATORS names; W3C trace
// context and baggage when it is unset.
func Propagator() propagation.TextMapPropagator { return autoprop.NewTextMapPropagator() }

// shared is the process's one tracer provider. Configs that trace hold a
// reference each; a reload takes the new config's reference before the
// old config lets go of its own, so the provider, its exporter and its
// buffered spans live across reloads.
var shared struct {
	mu   sync.Mutex
	refs int
	tp   *sdktrace.TracerProvider
}

// Acquire returns the shared tracer provider, creating it from the
// environment on first use. Every successful Acquire must be matched by
// one Release.
func Acquire(ctx context.Context) (trace.TracerProvider, error) {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.tp == nil {
		exp, err := autoexport.NewSpanExporter(ctx)
		if err != nil {
			return nil, fmt.Errorf("tracing: exporter from the OTEL_* environment: %w", err)
		}
		// The resource is OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES
		// with the SDK's own attributes; the sampler is
		// OTEL_TRACES_SAMPLER, parent-based always-on when it is unset.
		shared.tp = sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(resource.Default()))
	}
	shared.refs++
	return shared.tp, nil
}

// Release lets go of a reference taken by Acquire. The last one flushes
// the spans still buffered, within ShutdownTimeout, and shuts the
// provider down; a later Acquire starts a new one.
func Release() error {
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.refs == 0 {
		return nil
	}
	shared.refs--
	if shared.refs > 0 {
		return nil
	}
	tp := shared.tp
	shared.tp = nil
	ctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	if err := tp.Shutdown(ctx); err != nil {
		return fmt.Errorf("tracing: flushing spans at shutdown: %w", err)
	}
	return nil
}
