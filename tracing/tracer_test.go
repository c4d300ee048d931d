package tracing_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.uber.org/goleak"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/tracing"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	goleak.VerifyTestMain(m)
}

const (
	clientTrace  = "4bf92f3577b34da6a3ce929d0e0e4736"
	clientParent = "00f067aa0ba902b7"
)

// rig is a balancer over real worker processes behind a real socket,
// with a tracer whose spans land in a recorder.
type rig struct {
	rec    *tracetest.SpanRecorder
	tracer *tracing.Tracer
	url    string
	eps    []*balancer.Endpoint
}

// newRig starts a front for the workers at addrs ("" starts a worker
// process; anything else is an address that nobody answers on).
func newRig(t *testing.T, sampler sdktrace.Sampler, traced bool, cfg balancer.Config, addrs ...string) *rig {
	t.Helper()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sampler))
	t.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	tr := tracing.New(tp, prop, tracing.Config{Pool: "app", Route: func(r *http.Request) string {
		if strings.HasPrefix(r.URL.Path, "/things/") {
			return "/things/{id}"
		}
		return ""
	}})
	cfg.OnAttempt = tracing.Attempt
	b, err := balancer.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	rg := &rig{rec: rec, tracer: tr}
	for i, addr := range addrs {
		pid, network := 0, "tcp"
		if addr == "" {
			p := testworker.Start(t, "serve")
			pid, network, addr = p.PID, p.Network, p.Address
		}
		e := b.NewEndpoint(i+1, pid, network, addr)
		t.Cleanup(e.Close)
		b.Add(e)
		rg.eps = append(rg.eps, e)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if traced {
			var end func()
			w, r, end = tr.Start(w, r)
			defer end()
		}
		b.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	rg.url = srv.URL
	return rg
}

// get sends a GET with hdr and returns what the worker saw.
func (rg *rig) get(t *testing.T, path string, hdr map[string]string) (testworker.Reply, int) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, rg.url+path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep testworker.Reply
	if resp.StatusCode == 200 {
		if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
			t.Fatal(err)
		}
	}
	return rep, resp.StatusCode
}

func attrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// byKind splits the ended spans into server and client spans.
func byKind(spans []sdktrace.ReadOnlySpan) (server, client []sdktrace.ReadOnlySpan) {
	for _, s := range spans {
		switch s.SpanKind() {
		case trace.SpanKindServer:
			server = append(server, s)
		case trace.SpanKindClient:
			client = append(client, s)
		}
	}
	return server, client
}

func TestSpansContinueTheClientsTrace(t *testing.T) {
	rg := newRig(t, sdktrace.AlwaysSample(), true, balancer.Config{}, "")
	rep, status := rg.get(t, "/things/42?secret=x", map[string]string{
		"traceparent": "00-" + clientTrace + "-" + clientParent + "-01",
		"baggage":     "tenant=blue",
	})
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	server, client := byKind(rg.rec.Ended())
	if len(server) != 1 || len(client) != 1 {
		t.Fatalf("got %d server and %d client spans, want 1 and 1", len(server), len(client))
	}
	srv, att := server[0], client[0]

	if got := srv.SpanContext().TraceID().String(); got != clientTrace {
		t.Errorf("server span trace %s, want the client's %s", got, clientTrace)
	}
	if got := srv.Parent().SpanID().String(); got != clientParent || !srv.Parent().IsRemote() {
		t.Errorf("server span parent %s (remote %v), want the client's span %s", got, srv.Parent().IsRemote(), clientParent)
	}
	if att.Parent().SpanID() != srv.SpanContext().SpanID() {
		t.Errorf("attempt span's parent is %s, want the server span %s", att.Parent().SpanID(), srv.SpanContext().SpanID())
	}
	// The worker continues from the attempt span, with the baggage.
	want := "00-" + clientTrace + "-" + att.SpanContext().SpanID().String() + "-01"
	if got := rep.Header.Get("Traceparent"); got != want {
		t.Errorf("worker got traceparent %q, want %q", got, want)
	}
	if got := rep.Header.Get("Baggage"); got != "tenant=blue" {
		t.Errorf("worker got baggage %q", got)
	}

	if srv.Name() != "GET /things/{id}" {
		t.Errorf("server span named %q", srv.Name())
	}
	sa := attrs(srv)
	for k, v := range map[attribute.Key]string{
		"http.request.method": "GET", "http.route": "/things/{id}", "url.path": "/things/42",
		"url.scheme": "http", "worker_pool.name": "app", "network.protocol.version": "1.1",
	} {
		if sa[k].AsString() != v {
			t.Errorf("server span %s = %q, want %q", k, sa[k].AsString(), v)
		}
	}
	if sa["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("server span status code %v", sa["http.response.status_code"])
	}
	e := rg.eps[0]
	aa := attrs(att)
	if aa["worker.id"].AsInt64() != 1 || aa["worker.pid"].AsInt64() != int64(e.PID) || aa["worker.address"].AsString() != e.Address {
		t.Errorf("attempt span worker attributes %v %v %v, want 1 %d %s", aa["worker.id"], aa["worker.pid"], aa["worker.address"], e.PID, e.Address)
	}
	if aa["worker_pool.attempt"].AsInt64() != 1 || aa["worker_pool.breaker_state"].AsString() != "closed" {
		t.Errorf("attempt %v breaker %v", aa["worker_pool.attempt"], aa["worker_pool.breaker_state"])
	}
	if _, ok := aa["worker_pool.queue_wait_seconds"]; !ok {
		t.Error("attempt span has no queue wait")
	}
	if got := aa["url.full"].AsString(); got != "http://"+e.Address+"/things/42" {
		t.Errorf("url.full %q: want the worker's address and no query string", got)
	}
	if aa["http.response.status_code"].AsInt64() != 200 || att.Status().Code == codes.Error {
		t.Errorf("attempt span status %v %v", aa["http.response.status_code"], att.Status())
	}
}

func TestRetriedRequestHasSiblingAttempts(t *testing.T) {
	dead := "127.0.0.1:" + strconv.Itoa(testworker.FreePort(t))
	cfg := balancer.Config{Policy: balancer.PolicyConfig{Name: "first"}}
	rg := newRig(t, sdktrace.AlwaysSample(), true, cfg, dead, "")
	if _, status := rg.get(t, "/", nil); status != 200 {
		t.Fatalf("status %d, want 200 after a retry", status)
	}
	server, client := byKind(rg.rec.Ended())
	if len(server) != 1 || len(client) != 2 {
		t.Fatalf("got %d server and %d attempt spans, want 1 and 2", len(server), len(client))
	}
	parent := server[0].SpanContext().SpanID()
	for i, s := range client {
		a := attrs(s)
		if s.Parent().SpanID() != parent {
			t.Errorf("attempt %d is not a child of the server span", i+1)
		}
		if a["worker_pool.attempt"].AsInt64() != int64(i+1) {
			t.Errorf("span %d has attempt %v", i, a["worker_pool.attempt"])
		}
	}
	first, second := attrs(client[0]), attrs(client[1])
	if client[0].Status().Code != codes.Error || first["error.type"].AsString() != "transport" || first["worker.id"].AsInt64() != 1 {
		t.Errorf("first attempt: status %v error.type %q worker %v; want an error at worker 1", client[0].Status(), first["error.type"].AsString(), first["worker.id"])
	}
	if second["http.request.resend_count"].AsInt64() != 1 || second["worker.id"].AsInt64() != 2 || second["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("second attempt: resend %v worker %v status %v", second["http.request.resend_count"], second["worker.id"], second["http.response.status_code"])
	}
	if server[0].Status().Code == codes.Error {
		t.Error("the server span is an error though the retry answered")
	}
}

func TestNoSpansWhenOff(t *testing.T) {
	rg := newRig(t, sdktrace.AlwaysSample(), false, balancer.Config{}, "")
	rep, status := rg.get(t, "/things/1", map[string]string{"traceparent": "00-" + clientTrace + "-" + clientParent + "-01"})
	if status != 200 {
		t.Fatalf("status %d", status)
	}
	if n := len(rg.rec.Started()); n != 0 {
		t.Fatalf("%d spans started with tracing off", n)
	}
	// The client's own header passes through untouched.
	if got := rep.Header.Get("Traceparent"); got != "00-"+clientTrace+"-"+clientParent+"-01" {
		t.Errorf("worker got traceparent %q", got)
	}
}

func TestUnsampledTraceStillPropagates(t *testing.T) {
	rg := newRig(t, sdktrace.NeverSample(), true, balancer.Config{}, "")
	rep, _ := rg.get(t, "/", nil)
	if n := len(rg.rec.Ended()); n != 0 {
		t.Errorf("%d spans recorded by a never-sampler", n)
	}
	tp := rep.Header.Get("Traceparent")
	if !strings.HasPrefix(tp, "00-") || !strings.HasSuffix(tp, "-00") {
		t.Errorf("worker got traceparent %q, want one with the sampled flag off", tp)
	}
}

// A span that an earlier handler in the same process started (Caddy's
// tracing handler) is the server span: ours are its children.
func TestChildOfAnInProcessServerSpan(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	outer := sdktrace.NewTracerProvider() // a provider of its own, as Caddy's is
	defer outer.Shutdown(context.Background())
	tr := tracing.New(tp, propagation.TraceContext{}, tracing.Config{Route: func(*http.Request) string { return "/r" }})
	b, _ := balancer.New(balancer.Config{OnAttempt: tracing.Attempt})
	p := testworker.Start(t, "serve")
	e := b.NewEndpoint(1, p.PID, p.Network, p.Address)
	defer e.Close()
	b.Add(e)

	var caddySpan trace.Span
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, span := outer.Tracer("caddy").Start(r.Context(), "caddy", trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		caddySpan = span
		w, r, end := tr.Start(w, r.WithContext(ctx))
		defer end()
		b.ServeHTTP(w, r)
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	server, client := byKind(rec.Ended())
	if len(server) != 0 || len(client) != 1 {
		t.Fatalf("got %d server and %d attempt spans, want 0 and 1", len(server), len(client))
	}
	if client[0].Parent().SpanID() != caddySpan.SpanContext().SpanID() {
		t.Error("the attempt span is not a child of the in-process span")
	}
}
