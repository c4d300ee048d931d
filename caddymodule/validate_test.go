package caddymodule_test

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp/headers"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// itemsAPI is an OpenAPI document for the test worker's catch-all route.
const itemsAPI = `openapi: 3.1.0
info: {title: items, version: "1"}
paths:
  /:
    get:
      responses: {"200": {description: ok}}
  /items/{id}:
    get:
      parameters:
        - {name: id, in: path, required: true, schema: {type: integer}}
      responses: {"200": {description: ok}}
`

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func send(t *testing.T, method, url string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if errors.Is(err, io.EOF) {
		// The old server of a reload closed this idle connection as the
		// request went out; it reached no handler. Clients send it again.
		resp, err = client.Do(req)
	}
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(b)
}

// A reload that changes only the validate block keeps the workers: the
// block is not part of the pool's identity.
func TestValidateBlockChangesKeepWorkers(t *testing.T) {
	port := testworker.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	load(t, site(port, "count 2\n\t\tvalidate {\n\t\t\tmethods GET\n\t\t}"))
	defer stop(t)
	first := waitServing(t, url, 2)
	if resp, body := send(t, "DELETE", url); resp.StatusCode != 405 || resp.Header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("DELETE with methods GET: %s %s", resp.Status, body)
	}

	load(t, site(port, "count 2\n\t\tvalidate {\n\t\t\tmethods GET DELETE\n\t\t}"))
	// The old server closed (or reset) our idle connections.
	client.CloseIdleConnections()
	if resp, body := send(t, "DELETE", url); resp.StatusCode != 200 {
		t.Fatalf("DELETE after the reload allowed it: %s %s", resp.Status, body)
	}
	now := waitServing(t, url, 2)
	for pid := range now {
		if first[pid] == 0 {
			t.Fatalf("changing the validate block replaced the workers: %v, then %v", first, now)
		}
	}
}

// The matched route is the {http.worker_pool.route} placeholder, with
// worker_pool's validate block and with the standalone handler.
func TestRoutePlaceholder(t *testing.T) {
	doc := writeFile(t, "api.yaml", itemsAPI)
	port, port2 := testworker.FreePort(t), testworker.FreePort(t)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	header >X-Route "{http.worker_pool.route}"
	worker_pool {
		command %s
		env %s serve
		env GORACE atexit_sleep_ms=0
		count 1
		health_uri /healthz
		health_interval 50ms
		validate {
			openapi %s
		}
	}
}

http://127.0.0.1:%d {
	header >X-Route "{http.worker_pool.route}"
	worker_pool_validate {
		openapi %s
		max_query 10
	}
	respond "validated"
}
`, port, testworker.Command(), testworker.ModeEnv, doc, port2, doc))
	defer stop(t)
	waitServing(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 1)
	for _, base := range []string{fmt.Sprintf("http://127.0.0.1:%d", port), fmt.Sprintf("http://127.0.0.1:%d", port2)} {
		resp, body := send(t, "GET", base+"/items/42")
		if resp.StatusCode != 200 || resp.Header.Get("X-Route") != "/items/{id}" {
			t.Fatalf("%s/items/42: %s, X-Route %q: %s", base, resp.Status, resp.Header.Get("X-Route"), body)
		}
		resp, body = send(t, "GET", base+"/items/x")
		if resp.StatusCode != 400 || !strings.Contains(body, `"pointer":"/path/id"`) {
			t.Fatalf("%s/items/x: %s %s", base, resp.Status, body)
		}
		resp, body = send(t, "GET", base+"/elsewhere")
		if resp.StatusCode != 404 || resp.Header.Get("Content-Type") != "application/problem+json" {
			t.Fatalf("%s/elsewhere: %s %s", base, resp.Status, body)
		}
	}
	if resp, body := send(t, "GET", fmt.Sprintf("http://127.0.0.1:%d/?q=0123456789", port2)); resp.StatusCode != 414 {
		t.Fatalf("worker_pool_validate max_query: %s %s", resp.Status, body)
	}
}

func TestValidateConfigRefused(t *testing.T) {
	port := testworker.FreePort(t)
	broken := writeFile(t, "broken.yaml", "openapi: 3.1.0\ninfo: {title: x}\npaths:\n  /a: {get: {responses: {'200': {description: ok}}}}\n")
	handler := func(h string) []byte {
		return []byte(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{
			"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},
			"routes":[{"handle":[%s]}]}}}}}`, port, h))
	}
	for _, c := range []struct{ handler, want string }{
		{`{"handler":"worker_pool","command":["/bin/sh"],"validate":{"openapi":"/no/such/api.yaml"}}`, "validate: openapi: cannot read the document"},
		{fmt.Sprintf(`{"handler":"worker_pool","command":["/bin/sh"],"validate":{"openapi":%q}}`, broken), "version"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"validate":{"unknown_routes":"maybe"}}`, `validate: unknown_routes: "maybe" is not a choice`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"validate":{"max_body":-1}}`, "validate: max_body"},
		{`{"handler":"worker_pool_validate","openapi":"/no/such/api.yaml"}`, "worker_pool_validate: validate: openapi"},
	} {
		err := caddy.Load(handler(c.handler), true)
		if err == nil {
			stop(t)
			t.Fatalf("%s: loaded", c.handler)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to contain %q", c.handler, err, c.want)
		}
	}
	for _, c := range []struct{ option, want string }{
		{"validate {\n\t\t\tmax_body lots\n\t\t}", `validate max_body: "lots" is not a size`},
		{"validate {\n\t\t\tunknown_routes maybe\n\t\t}", `validate unknown_routes: "maybe"`},
		{"validate {\n\t\t\tmax_bdy 1MB\n\t\t}", `unrecognized validate option "max_bdy"`},
	} {
		if _, err := adapt(site(8080, c.option)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.option, err, c.want)
		}
	}
}
