package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

// otlpReceiver is a real OTLP/HTTP trace receiver: it decodes the
// protobuf ExportTraceServiceRequest that exporters POST to /v1/traces.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []receivedSpan
}

type receivedSpan struct {
	service string
	scope   string
	span    *tracepb.Span
}

func (s receivedSpan) traceID() string  { return hex.EncodeToString(s.span.TraceId) }
func (s receivedSpan) spanID() string   { return hex.EncodeToString(s.span.SpanId) }
func (s receivedSpan) parentID() string { return hex.EncodeToString(s.span.ParentSpanId) }

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(body, &req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, sp := range ss.Spans {
				o.spans = append(o.spans, receivedSpan{service: service, scope: ss.GetScope().GetName(), span: sp})
			}
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans received for traceID.
func (o *otlpReceiver) trace(traceID string) []receivedSpan {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []receivedSpan
	for _, s := range o.spans {
		if s.traceID() == traceID {
			out = append(out, s)
		}
	}
	return out
}

func attr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			v := kv.GetValue()
			if v.GetIntValue() != 0 {
				return fmt.Sprint(v.GetIntValue())
			}
			return v.GetStringValue()
		}
	}
	return ""
}

// sendTraced sends a GET with the given traceparent (none if "") and
// returns the traceparent the Node worker saw (it answers 404 for paths
// it does not know, which is fine here).
func sendTraced(t *testing.T, url, traceparent string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if traceparent != "" {
		req.Header.Set("traceparent", traceparent)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	return resp.Header.Get("X-Seen-Traceparent")
}

// TestTracesOnTheWire runs our Caddy with OTEL_EXPORTER_OTLP_ENDPOINT
// pointing at a real OTLP/HTTP receiver, in front of the example Node
// app. One config, three routes: the default (the environment turns
// tracing on), "tracing off", and a route where Caddy's own tracing
// handler runs first. The two worker_pool handlers share one pool.
func TestTracesOnTheWire(t *testing.T) {
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	app, _ := filepath.Abs("../../examples/node/server.js")
	spec, _ := filepath.Abs("../../examples/node/openapi.json")
	dir := t.TempDir()
	port := testworker.FreePort(t)
	pool := fmt.Sprintf(`command node %s
		count 2
		health_uri /healthz
		health_interval 100ms`, app)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	log
	handle /off/* {
		worker_pool {
			%s
			tracing off
		}
	}
	handle /front/* {
		tracing {
			span front
		}
		worker_pool {
			%s
		}
	}
	handle {
		worker_pool {
			%s
			validate {
				openapi %s
				unknown_routes pass
			}
		}
	}
}
`, port, pool, pool, pool, spec)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := runCaddy(t, dir, port, path, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=50",
		"OTEL_SERVICE_NAME=e2e-front",
	})
	waitPIDs(t, c, 2)

	const clientTrace = "0af7651916cd43dd8448eb211c80319c"
	const clientSpan = "b7ad6b7169203331"

	// Off: the worker gets the client's header untouched and no span is
	// made. Sent first, so that its spans, were there any, would be
	// exported before those of the requests below.
	offTrace := "11112222333344445555666677778888"
	offParent := "00-" + offTrace + "-" + clientSpan + "-01"
	if seen := sendTraced(t, c.url+"/off/x", offParent); seen != offParent {
		t.Errorf("with tracing off the worker got traceparent %q, want the client's %q", seen, offParent)
	}

	// Default: our server span continues the client's trace, the attempt
	// span is its child, and the worker continues from the attempt.
	seen := sendTraced(t, c.url+"/work?ms=1", "00-"+clientTrace+"-"+clientSpan+"-01")
	parts := strings.Split(seen, "-")
	if len(parts) != 4 || parts[1] != clientTrace || parts[2] == clientSpan {
		t.Fatalf("worker got traceparent %q: want trace %s with our attempt span as parent", seen, clientTrace)
	}
	var server, attempt receivedSpan
	testworker.Eventually(t, 15*time.Second, "the request's spans at the OTLP receiver", func() bool {
		for _, s := range recv.trace(clientTrace) {
			switch s.span.Kind {
			case tracepb.Span_SPAN_KIND_SERVER:
				server = s
			case tracepb.Span_SPAN_KIND_CLIENT:
				attempt = s
			}
		}
		return server.span != nil && attempt.span != nil
	})
	if server.scope != tracing.ScopeName || server.service != "e2e-front" {
		t.Errorf("server span from scope %q, service %q", server.scope, server.service)
	}
	// The OpenAPI route the request matched names the span.
	if server.span.Name != "GET /work" || attr(server.span, "http.route") != "/work" {
		t.Errorf("server span %q with http.route %q, want GET /work and /work", server.span.Name, attr(server.span, "http.route"))
	}
	if server.parentID() != clientSpan {
		t.Errorf("server span's parent %s, want the client's %s", server.parentID(), clientSpan)
	}
	if attempt.parentID() != server.spanID() {
		t.Errorf("attempt span's parent %s, want the server span %s", attempt.parentID(), server.spanID())
	}
	if attempt.spanID() != parts[2] {
		t.Errorf("the worker's parent span %s is not the attempt span %s", parts[2], attempt.spanID())
	}
	if attr(attempt.span, "worker.pid") == "" || attr(attempt.span, "worker.address") == "" || attr(attempt.span, "http.response.status_code") != "200" {
		t.Errorf("attempt span attributes: %v", attempt.span.Attributes)
	}
	// Caddy's access log entry of the request carries the ids.
	testworker.Eventually(t, 5*time.Second, "the access log entry with the trace id", func() bool {
		return strings.Contains(c.log.String(), `"traceID":"`+clientTrace+`"`)
	})

	// A request without a trace starts one; the worker joins it.
	seen = sendTraced(t, c.url+"/", "")
	if parts = strings.Split(seen, "-"); len(parts) != 4 {
		t.Fatalf("worker got traceparent %q for a request that came without one", seen)
	}
	testworker.Eventually(t, 15*time.Second, "spans of the new trace", func() bool {
		for _, s := range recv.trace(parts[1]) {
			if s.spanID() == parts[2] && s.span.Kind == tracepb.Span_SPAN_KIND_CLIENT {
				return true
			}
		}
		return false
	})

	// Behind Caddy's tracing handler: its span is the server span, ours
	// the attempt below it; we add no second server span.
	frontTrace := "aaaabbbbccccddddeeeeffff00001111"
	seen = sendTraced(t, c.url+"/front/x", "00-"+frontTrace+"-"+clientSpan+"-01")
	var front, frontAttempt receivedSpan
	testworker.Eventually(t, 15*time.Second, "spans of the request behind Caddy's tracing", func() bool {
		front, frontAttempt = receivedSpan{}, receivedSpan{}
		for _, s := range recv.trace(frontTrace) {
			switch {
			case s.span.Name == "front":
				front = s
			case s.span.Kind == tracepb.Span_SPAN_KIND_CLIENT:
				frontAttempt = s
			}
		}
		return front.span != nil && frontAttempt.span != nil
	})
	for _, s := range recv.trace(frontTrace) {
		if s.scope == tracing.ScopeName && s.span.Kind == tracepb.Span_SPAN_KIND_SERVER {
			t.Error("a second server span beside Caddy's")
		}
	}
	if frontAttempt.parentID() != front.spanID() || front.parentID() != clientSpan {
		t.Errorf("attempt's parent %s, want Caddy's span %s (whose parent %s should be %s)",
			frontAttempt.parentID(), front.spanID(), front.parentID(), clientSpan)
	}
	if !strings.Contains(seen, frontAttempt.spanID()) {
		t.Errorf("worker got %q, want the attempt span %s as parent", seen, frontAttempt.spanID())
	}

	if n := len(recv.trace(offTrace)); n != 0 {
		t.Errorf("%d spans for a request to a handler with tracing off", n)
	}
}
