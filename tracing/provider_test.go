package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

// The shared provider lives while anyone holds it, and the last Release
// flushes: with a batch delay of a minute, only the shutdown can deliver
// the span to the OTLP receiver before the test ends.
func TestSharedProviderFlushesOnLastRelease(t *testing.T) {
	var received atomic.Int64
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var req coltracepb.ExportTraceServiceRequest
		if err := proto.Unmarshal(body, &req); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				received.Add(int64(len(ss.Spans)))
			}
		}
		out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	defer collector.Close()
	t.Setenv("OTEL_TRACES_EXPORTER", "otlp")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "60000")

	first, err := tracing.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	second, err := tracing.Acquire(context.Background()) // a reload's new config
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatal("a second Acquire made a second provider")
	}
	_, span := first.Tracer("test").Start(context.Background(), "one")
	span.End()
	if err := tracing.Release(); err != nil { // the old config goes
		t.Fatal(err)
	}
	if n := received.Load(); n != 0 {
		t.Fatalf("%d spans exported while the provider is still held", n)
	}
	if err := tracing.Release(); err != nil {
		t.Fatal(err)
	}
	if n := received.Load(); n != 1 {
		t.Fatalf("the last Release flushed %d spans, want 1", n)
	}
	if err := tracing.Release(); err != nil {
		t.Fatal("a Release too many must be harmless:", err)
	}
	third, err := tracing.Acquire(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer tracing.Release()
	if third == first {
		t.Fatal("Acquire after the last Release returned the provider that was shut down")
	}
}
