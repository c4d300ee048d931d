package tracing_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

// A gRPC call's server span carries the RPC attributes, is named by its
// method, and fails only with the codes that say the server failed; the
// stable conventions are there on request.
func TestGRPCServerSpans(t *testing.T) {
	for _, c := range []struct {
		optIn, path, status, trailer string
		name                         string
		want                         map[attribute.Key]string
		absent                       []attribute.Key
		failed                       bool
	}{
		{path: "/pool.example.Demo/Work", trailer: "0", name: "pool.example.Demo/Work",
			want:   map[attribute.Key]string{"rpc.system": "grpc", "rpc.service": "pool.example.Demo", "rpc.method": "Work", "rpc.grpc.status_code": "0"},
			absent: []attribute.Key{"rpc.system.name", "rpc.response.status_code"}},
		{path: "/pool.example.Demo/Work", status: "5", name: "pool.example.Demo/Work", // trailers-only NOT_FOUND: the application's
			want: map[attribute.Key]string{"rpc.grpc.status_code": "5"}},
		{path: "/pool.example.Demo/Work", status: "14", name: "pool.example.Demo/Work", failed: true,
			want: map[attribute.Key]string{"rpc.grpc.status_code": "14"}},
		{path: "/pool.example.Demo/Nope", status: "12", name: "POST", failed: true,
			want: map[attribute.Key]string{"rpc.method": "Nope", "rpc.grpc.status_code": "12"}},
		{optIn: "http,rpc", path: "/pool.example.Demo/Work", trailer: "4", name: "pool.example.Demo/Work", failed: true,
			want:   map[attribute.Key]string{"rpc.system.name": "grpc", "rpc.method": "pool.example.Demo/Work", "rpc.response.status_code": "DEADLINE_EXCEEDED"},
			absent: []attribute.Key{"rpc.system", "rpc.service", "rpc.grpc.status_code"}},
		{optIn: "rpc/dup", path: "/pool.example.Demo/Work", trailer: "0", name: "pool.example.Demo/Work",
			want: map[attribute.Key]string{"rpc.system": "grpc", "rpc.system.name": "grpc", "rpc.service": "pool.example.Demo",
				"rpc.method": "pool.example.Demo/Work", "rpc.grpc.status_code": "0", "rpc.response.status_code": "OK"}},
	} {
		t.Run(c.optIn+c.path+c.status+c.trailer, func(t *testing.T) {
			t.Setenv("OTEL_SEMCONV_STABILITY_OPT_IN", c.optIn)
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
			tr := tracing.New(tp, propagation.TraceContext{}, tracing.Config{Pool: "app"})
			r := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(""))
			r.Header.Set("Content-Type", "application/grpc")
			w, _, end := tr.Start(httptest.NewRecorder(), r)
			w.Header().Set("Content-Type", "application/grpc")
			if c.status != "" {
				w.Header().Set("Grpc-Status", c.status)
			}
			w.WriteHeader(http.StatusOK)
			if c.trailer != "" {
				w.Header().Set(http.TrailerPrefix+"Grpc-Status", c.trailer)
			}
			end()
			spans := rec.Ended()
			if len(spans) != 1 {
				t.Fatalf("%d spans, want 1", len(spans))
			}
			s := spans[0]
			got := attrs(s)
			for k, v := range c.want {
				if got[k].Emit() != v {
					t.Errorf("%s = %q, want %q", k, got[k].Emit(), v)
				}
			}
			for _, k := range c.absent {
				if _, ok := got[k]; ok {
					t.Errorf("%s is set (%q), want it absent", k, got[k].Emit())
				}
			}
			if code, ok := got["rpc.grpc.status_code"]; ok && code.Type() != attribute.INT64 {
				t.Errorf("rpc.grpc.status_code is a %v, want an int", code.Type())
			}
			if s.Name() != c.name {
				t.Errorf("span name %q, want %q", s.Name(), c.name)
			}
			if failed := s.Status().Code == codes.Error; failed != c.failed {
				t.Errorf("span failed %v, want %v (%v)", failed, c.failed, s.Status())
			}
		})
	}
}

// A request that is not a gRPC call has no RPC attributes.
func TestPlainRequestsHaveNoRPCAttributes(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	tr := tracing.New(tp, propagation.TraceContext{}, tracing.Config{Pool: "app"})
	r := httptest.NewRequest(http.MethodPost, "/pool.example.Demo/Work", nil)
	r.Header.Set("Content-Type", "application/grpc-web")
	w, _, end := tr.Start(httptest.NewRecorder(), r)
	w.WriteHeader(http.StatusOK)
	end()
	for k := range attrs(rec.Ended()[0]) {
		if strings.HasPrefix(string(k), "rpc.") {
			t.Errorf("a gRPC-Web request's span has %s", k)
		}
	}
}
