package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

// BenchmarkTracing sends tiny requests through the balancer to a real
// worker process with tracing off, on and sampled (spans go through the
// batching processor to an exporter that drops them), and on but not
// sampled. Compare each to "off" in the same run: that is the cost of
// tracing. allocs/op counts the client and our server side.
func BenchmarkTracing(b *testing.B) {
	p := testworker.Start(b, "serve")
	prop := tracing.Propagator()
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler // nil: off
	}{
		{"baseline", nil}, // no OnAttempt hook at all
		{"off", nil},
		{"sampled", sdktrace.AlwaysSample()},
		{"unsampled", sdktrace.NeverSample()},
	} {
		b.Run(c.name, func(b *testing.B) {
			cfg := balancer.Config{OnAttempt: tracing.Attempt}
			if c.name == "baseline" {
				cfg.OnAttempt = nil
			}
			bal, _ := balancer.New(cfg)
			e := bal.NewEndpoint(1, p.PID, p.Network, p.Address)
			defer e.Close()
			bal.Add(e)
			var h http.Handler = bal
			if c.sampler != nil {
				tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(c.sampler))
				defer tp.Shutdown(context.Background())
				tr := tracing.New(tp, prop, tracing.Config{Pool: "bench"})
				h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w, r, end := tr.Start(w, r)
					defer end()
					bal.ServeHTTP(w, r)
				})
			}
			srv := httptest.NewServer(h)
			defer srv.Close()
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodGet, srv.URL+"/pid", nil)
			req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}

// BenchmarkSpans is the tracing work of one request alone, without the
// network: Start, one attempt, and both ends, as the handler and the
// balancer do them.
func BenchmarkSpans(b *testing.B) {
	bal, _ := balancer.New(balancer.Config{})
	e := bal.NewEndpoint(1, 1234, "tcp", "127.0.0.1:3001")
	defer e.Close()
	for _, c := range []struct {
		name    string
		sampler sdktrace.Sampler
	}{
		{"sampled", sdktrace.AlwaysSample()},
		{"unsampled", sdktrace.NeverSample()},
	} {
		b.Run(c.name, func(b *testing.B) {
			tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(tracetest.NewNoopExporter()), sdktrace.WithSampler(c.sampler))
			defer tp.Shutdown(context.Background())
			tr := tracing.New(tp, tracing.Propagator(), tracing.Config{Pool: "bench"})
			req := httptest.NewRequest(http.MethodGet, "http://example.com/pid", nil)
			req.Header.Set("traceparent", "00-"+clientTrace+"-"+clientParent+"-01")
			rec := httptest.NewRecorder()
			a := &balancer.Attempt{Endpoint: e, N: 1}
			b.ReportAllocs()
			for b.Loop() {
				w, r, end := tr.Start(rec, req)
				out, done := tracing.Attempt(r, a)
				_ = out
				w.WriteHeader(200)
				done(200, nil)
				end()
			}
		})
	}
}
