package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// What an operator sees of gRPC calls through a real Caddy in front of
// real grpc-js workers, called by the grpc-js client: the calls by
// method and status in the metrics, the admin JSON and the status page;
// spans with the rpc.* attributes on a real OTLP receiver; and the
// refusals of request validation in gRPC's terms. Three sites share the
// pool: one plain, one with max_body 4 (smaller than any call), one that
// accepts only JSON bodies.
func TestGRPCCallsAreVisible(t *testing.T) {
	dir := grpcExample(t)
	recv := &otlpReceiver{}
	collector := httptest.NewServer(recv)
	defer collector.Close()

	tmp := t.TempDir()
	adminPort, port, limitedPort, typedPort := testworker.FreePort(t), testworker.FreePort(t), testworker.FreePort(t), testworker.FreePort(t)
	poolCfg := fmt.Sprintf(`name g
		command node %s
		count 2
		stop_timeout 5s`, filepath.Join(dir, "server.js"))
	caddyfile := h2cGlobals(adminPort) + fmt.Sprintf(`
http://127.0.0.1:%d {
	handle /status {
		worker_pool_status
	}
	handle {
		worker_pool {
			%s
		}
	}
}

http://127.0.0.1:%d {
	worker_pool {
		%s
		validate {
			max_body 4
		}
	}
}

http://127.0.0.1:%d {
	worker_pool {
		%s
		validate {
			content_types application/json
		}
	}
}
`, port, poolCfg, limitedPort, poolCfg, typedPort, poolCfg)
	path := filepath.Join(tmp, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := runCaddy(t, tmp, port, path, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL,
		"OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf",
		"OTEL_BSP_SCHEDULE_DELAY=50",
		"OTEL_SERVICE_NAME=e2e-grpc",
	})
	target := func(port int) string { return fmt.Sprintf("127.0.0.1:%d", port) }
	awaitGRPC(t, dir, target(port))

	const work = "/pool.example.Demo/Work"
	for _, r := range grpcCall(t, dir, target(port), "unary", "3") {
		if code(r) != 0 {
			t.Fatalf("a call failed: %v", r)
		}
	}
	if r := grpcCall(t, dir, target(port), "unary", "1", "0", "0", "5")[0]; code(r) != 5 {
		t.Fatalf("a call that fails with NOT_FOUND on purpose: %v", r)
	}

	t.Run("refusals in gRPC terms", func(t *testing.T) {
		// grpc-js reads a status only from a gRPC answer: problem+json
		// would come back as UNKNOWN or INTERNAL with the HTTP status in
		// its details.
		r := grpcCall(t, dir, target(limitedPort), "unary", "1")[0]
		if code(r) != 8 || !strings.Contains(fmt.Sprint(r["details"]), "the request body is larger than 4 bytes") {
			t.Errorf("a call over max_body: %v; want RESOURCE_EXHAUSTED (8) saying the body is larger than 4 bytes", r)
		}
		r = grpcCall(t, dir, target(typedPort), "unary", "1")[0]
		if code(r) != 3 || !strings.Contains(fmt.Sprint(r["details"]), `content type "application/grpc" is not accepted`) {
			t.Errorf("a call of a media type validation refuses: %v; want INVALID_ARGUMENT (3) naming it", r)
		}
	})

	t.Run("metrics by method and status", func(t *testing.T) {
		want := map[string]float64{"OK": 3, "NOT_FOUND": 1, "RESOURCE_EXHAUSTED": 1, "INVALID_ARGUMENT": 1}
		var text string
		testworker.Eventually(t, 10*time.Second, "the calls in the metrics", func() bool {
			text = scrapeText(t, fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
			for status, n := range want {
				got := metricValue(text, "caddy_worker_pool_grpc_call_duration_seconds_count", `pool="g"`, `method="`+work+`"`, `grpc_status="`+status+`"`)
				if got < n || status != "OK" && got != n {
					return false
				}
			}
			return true
		})
		if metricValue(text, "caddy_worker_pool_grpc_call_duration_seconds_sum", `method="`+work+`"`, `grpc_status="OK"`) <= 0 {
			t.Errorf("no duration observed:\n%s", grpcLines(text))
		}
		if metricValue(text, "caddy_worker_pool_grpc_call_duration_seconds_bucket", `method="`+work+`"`, `grpc_status="OK"`, `le="+Inf"`) < 3 {
			t.Errorf("no buckets:\n%s", grpcLines(text))
		}
		if t.Failed() {
			t.Logf("metrics:\n%s", grpcLines(text))
		}
	})

	t.Run("admin JSON and status page", func(t *testing.T) {
		for _, url := range []string{fmt.Sprintf("http://127.0.0.1:%d/worker_pool/", adminPort), c.url + "/status?format=json"} {
			var st []pool.Status
			if err := json.Unmarshal([]byte(scrapeText(t, url)), &st); err != nil || len(st) != 1 {
				t.Fatalf("%s: %v, %d pools", url, err, len(st))
			}
			calls := map[string]pool.GRPCCalls{}
			for _, g := range st[0].GRPC {
				calls[g.Method+" "+g.Status] = g
			}
			if ok := calls[work+" OK"]; ok.Calls < 3 || ok.Code != 0 || ok.MeanMS <= 0 {
				t.Errorf("%s: OK calls of %s: %+v; all: %+v", url, work, ok, st[0].GRPC)
			}
			if nf := calls[work+" NOT_FOUND"]; nf.Calls != 1 || nf.Code != 5 {
				t.Errorf("%s: NOT_FOUND calls of %s: %+v; all: %+v", url, work, nf, st[0].GRPC)
			}
		}
		browser, err := exec.LookPath("chromium")
		if err != nil {
			t.Log("chromium not found: the page itself is not rendered")
			return
		}
		dom := dumpDOM(t, browser, c.url+"/status")
		for _, want := range []string{`data-method="` + work + `" data-status="OK"`, `data-method="` + work + `" data-status="NOT_FOUND" data-calls="1"`} {
			if !strings.Contains(dom, want) {
				t.Errorf("the status page shows no %s; DOM:\n%s", want, dom)
			}
		}
	})

	t.Run("spans carry rpc attributes", func(t *testing.T) {
		var server, attempt *tracepb.Span
		var refused, notFound bool
		testworker.Eventually(t, 10*time.Second, "the calls' spans", func() bool {
			recv.mu.Lock()
			spans := append([]receivedSpan(nil), recv.spans...)
			recv.mu.Unlock()
			server, attempt, refused, notFound = nil, nil, false, false
			for _, s := range spans {
				sp := s.span
				if rpcAttr(sp, "rpc.service") != "pool.example.Demo" || rpcAttr(sp, "rpc.method") != "Work" || rpcAttr(sp, "rpc.system") != "grpc" {
					continue
				}
				switch status := rpcAttr(sp, "rpc.grpc.status_code"); {
				case sp.Kind == tracepb.Span_SPAN_KIND_SERVER && status == "int 0":
					server = sp
				case sp.Kind == tracepb.Span_SPAN_KIND_CLIENT && status == "int 0":
					attempt = sp
				case sp.Kind == tracepb.Span_SPAN_KIND_SERVER && status == "int 8":
					refused = true
				case sp.Kind == tracepb.Span_SPAN_KIND_SERVER && status == "int 5":
					notFound = true
				}
			}
			return server != nil && attempt != nil && refused && notFound
		})
		if server.Name != "pool.example.Demo/Work" {
			t.Errorf("the server span is named %q, want pool.example.Demo/Work", server.Name)
		}
		if server.Status.GetCode() == tracepb.Status_STATUS_CODE_ERROR {
			t.Errorf("an OK call's server span failed: %v", server.Status)
		}
	})
}

// rpcAttr is a span's attribute, typed: "int 0", "string grpc"; "" if
// it has none.
func rpcAttr(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key != key {
			continue
		}
		switch v := kv.GetValue().GetValue().(type) {
		case *commonpb.AnyValue_IntValue:
			return fmt.Sprint("int ", v.IntValue)
		case *commonpb.AnyValue_StringValue:
			if key == "rpc.grpc.status_code" {
				return "string " + v.StringValue
			}
			return v.StringValue
		}
		return fmt.Sprint(kv.GetValue())
	}
	return ""
}

func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// metricValue sums the samples of name whose labels include every one
// of labels; -1 if there is none.
func metricValue(text, name string, labels ...string) float64 {
	sum, found := 0.0, false
next:
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

func grpcLines(text string) string {
	var b strings.Builder
	for _, line := range strings.Split(text, "\n") {
		if strings.Contains(line, "grpc_call") && !strings.Contains(line, "_bucket") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// dumpDOM is the page at url as headless Chromium renders it, after its
// script polled.
func dumpDOM(t *testing.T, browser, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var out, errs bytes.Buffer
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--no-first-run", "--user-data-dir="+t.TempDir(), "--virtual-time-budget=4000", "--dump-dom", url)
	cmd.Stdout, cmd.Stderr = &out, &errs
	if err := cmd.Run(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, errs.String())
	}
	return out.String()
}
