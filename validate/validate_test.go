package validate_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
	"github.com/caddy-workerpool/caddy-workerpool/validate"
)

const goodOrder = `{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","createdAt":"2026-11-20T10:00:00Z","status":"paid",
"customer":{"email":"a@example.com","name":"Ann","address":{"street":"Main 1","city":"Oslo","zip":"0150","country":"NO"}},
"items":[{"sku":"ABC-1234","qty":2,"price":9.5,"note":null},{"sku":"XYZ-0001","qty":1,"price":100}],"tags":["a","b"]}`

// order is goodOrder with one change made by edit.
func order(t testing.TB, edit func(m map[string]any)) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(goodOrder), &m); err != nil {
		t.Fatal(err)
	}
	edit(m)
	b, _ := json.Marshal(m)
	return string(b)
}

func item(m map[string]any, i int) map[string]any {
	return m["items"].([]any)[i].(map[string]any)
}

func newValidator(t testing.TB, cfg validate.Config) *validate.Validator {
	t.Helper()
	v, err := validate.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// serve runs r through v in front of a handler that echoes the body,
// and returns the response and whether the handler was reached.
func serve(v *validate.Validator, r *http.Request) (*httptest.ResponseRecorder, []byte, bool) {
	rec := httptest.NewRecorder()
	var got []byte
	reached := false
	w, r2, ok := v.Serve(rec, r)
	if ok {
		reached = true
		var err error
		got, err = io.ReadAll(r2.Body)
		if err != nil {
			w.WriteHeader(http.StatusBadGateway) // as the proxy does when the body breaks
			return rec, got, reached
		}
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(got)
	}
	return rec, got, reached
}

func decodeProblem(t *testing.T, rec *httptest.ResponseRecorder) problem.Details {
	t.Helper()
	if ct := rec.Header().Get("Content-Type"); ct != problem.ContentType {
		t.Fatalf("Content-Type %q, want %s; body %s", ct, problem.ContentType, rec.Body)
	}
	var d problem.Details
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

type badCase struct {
	name    string
	method  string
	target  string
	ctype   string
	body    string
	header  map[string]string
	status  int
	pointer string // one of the errors' pointers, if any
	allow   string
}

// openAPICases hold for both orders-3.0.yaml and orders-3.1.yaml.
func openAPICases(t *testing.T) []badCase {
	return []badCase{
		{name: "invalid JSON", method: "POST", target: "/orders", body: `{"id":`, status: 400, pointer: "/body"},
		{name: "trailing garbage", method: "POST", target: "/orders", body: goodOrder + "x", status: 400, pointer: "/body"},
		{name: "wrong type", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 0)["qty"] = "two" }), status: 400, pointer: "/body/items/0/qty"},
		{name: "not an integer", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 1)["qty"] = 1.5 }), status: 400, pointer: "/body/items/1/qty"},
		{name: "below minimum", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 0)["qty"] = 0 }), status: 400, pointer: "/body/items/0/qty"},
		{name: "missing required", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { delete(item(m, 0), "sku") }), status: 400, pointer: "/body/items/0/sku"},
		{name: "missing nested required", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { delete(m["customer"].(map[string]any), "email") }), status: 400, pointer: "/body/customer/email"},
		{name: "extra field forbidden", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 0)["discount"] = 5 }), status: 400, pointer: "/body/items/0/discount"},
		{name: "enum", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["status"] = "lost" }), status: 400, pointer: "/body/status"},
		{name: "email format", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["customer"].(map[string]any)["email"] = "nope" }), status: 400, pointer: "/body/customer/email"},
		{name: "uuid format", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["id"] = "123" }), status: 400, pointer: "/body/id"},
		{name: "date-time format", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["createdAt"] = "yesterday" }), status: 400, pointer: "/body/createdAt"},
		{name: "pattern", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 0)["sku"] = "abc" }), status: 400, pointer: "/body/items/0/sku"},
		{name: "null where not nullable", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["status"] = nil }), status: 400, pointer: "/body/status"},
		{name: "nullable gets a number", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { item(m, 0)["note"] = 5 }), status: 400, pointer: "/body/items/0/note"},
		{name: "empty array", method: "POST", target: "/orders", body: order(t, func(m map[string]any) { m["items"] = []any{} }), status: 400, pointer: "/body/items"},
		{name: "no body", method: "POST", target: "/orders", status: 400, pointer: "/body"},
		{name: "wrong content type", method: "POST", target: "/orders", ctype: "text/plain", body: goodOrder, status: 415},
		{name: "no content type", method: "POST", target: "/orders", ctype: "-", body: goodOrder, status: 415},
		{name: "bad path parameter", method: "GET", target: "/orders/not-a-uuid", status: 400, pointer: "/path/orderId"},
		{name: "bad integer path parameter", method: "GET", target: "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/items/x", status: 400, pointer: "/path/line"},
		{name: "bad query parameter", method: "GET", target: "/orders?limit=1000", status: 400, pointer: "/query/limit"},
		{name: "query parameter not a number", method: "GET", target: "/orders?limit=ten", status: 400, pointer: "/query/limit"},
		{name: "query enum", method: "GET", target: "/orders?status=lost", status: 400, pointer: "/query/status"},
		{name: "bad header parameter", method: "POST", target: "/orders", body: goodOrder, header: map[string]string{"X-Request-Id": "nope"}, status: 400, pointer: "/header/X-Request-Id"},
		{name: "unknown route", method: "GET", target: "/nowhere", status: 404},
		{name: "unknown deeper route", method: "GET", target: "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/items", status: 404},
		{name: "wrong method", method: "PUT", target: "/orders", body: goodOrder, status: 405, allow: "GET, POST, HEAD"},
		{name: "wrong method with path parameter", method: "POST", target: "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7", status: 405, allow: "GET, DELETE, HEAD"},
	}
}

func request(c badCase) *http.Request {
	var body io.Reader = http.NoBody
	if c.body != "" {
		body = strings.NewReader(c.body)
	}
	r := httptest.NewRequest(c.method, c.target, body)
	switch c.ctype {
	case "":
		if c.body != "" {
			r.Header.Set("Content-Type", "application/json")
		}
	case "-":
	default:
		r.Header.Set("Content-Type", c.ctype)
	}
	for k, v := range c.header {
		r.Header.Set(k, v)
	}
	return r
}

func TestOpenAPIRefusesBadRequests(t *testing.T) {
	for _, doc := range []string{"orders-3.0.yaml", "orders-3.1.yaml"} {
		v := newValidator(t, validate.Config{OpenAPI: filepath.Join("testdata", doc)})
		for _, c := range openAPICases(t) {
			t.Run(doc+"/"+c.name, func(t *testing.T) {
				rec, _, reached := serve(v, request(c))
				if reached {
					t.Fatalf("reached the handler; want %d", c.status)
				}
				if rec.Code != c.status {
					t.Fatalf("status %d, want %d: %s", rec.Code, c.status, rec.Body)
				}
				d := decodeProblem(t, rec)
				if d.Status != c.status || d.Detail == "" {
					t.Fatalf("problem %+v", d)
				}
				if c.allow != "" && rec.Header().Get("Allow") != c.allow {
					t.Fatalf("Allow %q, want %q", rec.Header().Get("Allow"), c.allow)
				}
				if c.pointer != "" {
					found := false
					for _, e := range d.Errors {
						found = found || e.Pointer == c.pointer
						if e.Detail == "" {
							t.Errorf("error without detail: %+v", e)
						}
					}
					if !found {
						t.Fatalf("errors %+v lack pointer %s", d.Errors, c.pointer)
					}
				}
				// Nothing of Go's or the library's insides in the answer.
				for _, leak := range []string{"jsonschema", "*", "openapi3", "goroutine", ".go:", "map[", "interface", "file:///"} {
					if leak == "*" {
						continue
					}
					if strings.Contains(rec.Body.String(), leak) {
						t.Fatalf("answer leaks %q: %s", leak, rec.Body)
					}
				}
			})
		}
	}
}

func TestOpenAPI31Keywords(t *testing.T) {
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml"})
	for name, c := range map[string]struct {
		coupon  map[string]any
		pointer string
	}{
		"const":            {map[string]any{"kind": "fixed"}, "/body/coupon/kind"},
		"exclusiveMinimum": {map[string]any{"kind": "percent", "value": 0}, "/body/coupon/value"},
		"exclusiveMaximum": {map[string]any{"kind": "percent", "value": 100}, "/body/coupon/value"},
		"valid":            {map[string]any{"kind": "percent", "value": 10}, ""},
	} {
		t.Run(name, func(t *testing.T) {
			body := order(t, func(m map[string]any) { m["coupon"] = c.coupon })
			rec, _, reached := serve(v, request(badCase{method: "POST", target: "/orders", body: body}))
			if c.pointer == "" {
				if !reached || rec.Code != 200 {
					t.Fatalf("valid coupon refused: %d %s", rec.Code, rec.Body)
				}
				return
			}
			if reached || rec.Code != 400 || !strings.Contains(rec.Body.String(), `"pointer":"`+c.pointer+`"`) {
				t.Fatalf("got %d %s, want 400 at %s", rec.Code, rec.Body, c.pointer)
			}
		})
	}
}

func TestValidRequestsPassUnchanged(t *testing.T) {
	for _, doc := range []string{"orders-3.0.yaml", "orders-3.1.yaml"} {
		v := newValidator(t, validate.Config{OpenAPI: filepath.Join("testdata", doc), MaxBody: 4096})
		for _, c := range []struct {
			method, target, body, route string
			chunked                     bool
		}{
			{"POST", "/orders?dry_run=true", goodOrder, "/orders", false},
			{"POST", "/orders", goodOrder, "/orders", true},
			{"GET", "/orders?limit=10&status=paid", "", "/orders", false},
			{"GET", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7", "", "/orders/{orderId}", false},
			{"HEAD", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7", "", "/orders/{orderId}", false},
			{"GET", "/orders/7C9E6679-7425-40DE-944B-E07FC1F90AE7/items/3", "", "/orders/{orderId}/items/{line}", false},
			{"POST", "/echo", "any text at all", "/echo", false},
		} {
			t.Run(doc+" "+c.method+" "+c.target, func(t *testing.T) {
				r := request(badCase{method: c.method, target: c.target, body: c.body, ctype: map[bool]string{true: "text/plain; charset=utf-8", false: ""}[c.target == "/echo"]})
				if c.chunked {
					r.ContentLength = -1
				}
				rec := httptest.NewRecorder()
				w, r2, ok := v.Serve(rec, r)
				if !ok {
					t.Fatalf("refused: %d %s", rec.Code, rec.Body)
				}
				if got := validate.Route(r2); got != c.route {
					t.Fatalf("Route = %q, want %q", got, c.route)
				}
				got, err := io.ReadAll(r2.Body)
				if err != nil || string(got) != c.body {
					t.Fatalf("body at the handler %q (%v), want the client's bytes", got, err)
				}
				if c.body != "" && r2.ContentLength != int64(len(c.body)) && !(c.target == "/echo" && r2.ContentLength == int64(len(c.body))) {
					t.Fatalf("ContentLength %d, want %d", r2.ContentLength, len(c.body))
				}
				w.WriteHeader(http.StatusNoContent)
				if rec.Code != http.StatusNoContent {
					t.Fatalf("the handler's answer was changed to %d", rec.Code)
				}
			})
		}
	}
}

func TestUnknownRoutesPass(t *testing.T) {
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.0.yaml", UnknownRoutes: "pass"})
	rec, _, reached := serve(v, httptest.NewRequest("GET", "/metrics", nil))
	if !reached || rec.Code != 200 {
		t.Fatalf("unknown route with pass: %d reached=%v", rec.Code, reached)
	}
	// A known path still checks its methods and parameters.
	rec, _, reached = serve(v, httptest.NewRequest("PATCH", "/orders", nil))
	if reached || rec.Code != 405 {
		t.Fatalf("known path, undeclared method: %d reached=%v", rec.Code, reached)
	}
}

func TestLimits(t *testing.T) {
	v := newValidator(t, validate.Config{
		MaxBody: 10, MaxQuery: 8, MaxHeaders: 3,
		Methods: []string{"get", "POST"}, ContentTypes: []string{"application/json", "text/*"},
	})
	post := func(ctype, body string, chunked bool) *http.Request {
		r := httptest.NewRequest("POST", "/x", strings.NewReader(body))
		r.Header.Set("Content-Type", ctype)
		if chunked {
			r.ContentLength = -1
		}
		return r
	}
	many := httptest.NewRequest("GET", "/", nil)
	for _, h := range []string{"A", "B", "C", "D"} {
		many.Header.Set("X-"+h, "1")
	}
	for _, c := range []struct {
		name    string
		r       *http.Request
		status  int
		reached bool
		allow   string
	}{
		{"allowed", post("application/json", `{"a":1}`, false), 200, true, ""},
		{"HEAD with GET", httptest.NewRequest("HEAD", "/", nil), 200, true, ""},
		{"method", httptest.NewRequest("DELETE", "/", nil), 405, false, "GET, POST, HEAD"},
		{"query", httptest.NewRequest("GET", "/?q=123456789", nil), 414, false, ""},
		{"query at the limit", httptest.NewRequest("GET", "/?q=123456", nil), 200, true, ""},
		{"headers", many, 431, false, ""},
		{"content type", post("application/xml", "<a/>", false), 415, false, ""},
		{"content type with parameters", post("text/plain; charset=utf-8", "hi", false), 200, true, ""},
		{"declared too large", post("text/plain", "0123456789A", false), 413, false, ""},
		{"body at the limit", post("text/plain", "0123456789", false), 200, true, ""},
		{"streamed at the limit", post("text/plain", "0123456789", true), 200, true, ""},
		{"streamed too large", post("text/plain", strings.Repeat("x", 100), true), 413, true, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec, _, reached := serve(v, c.r)
			if rec.Code != c.status || reached != c.reached {
				t.Fatalf("status %d reached %v, want %d %v: %s", rec.Code, reached, c.status, c.reached, rec.Body)
			}
			if c.status != 200 {
				decodeProblem(t, rec)
			}
			if rec.Header().Get("Allow") != c.allow {
				t.Fatalf("Allow %q, want %q", rec.Header().Get("Allow"), c.allow)
			}
		})
	}
}

// A streamed body past the limit never reaches the handler whole: it
// reads at most the limit, then an error, and the request's context ends
// so a proxy stops.
func TestStreamedBodyIsCutAtTheLimit(t *testing.T) {
	v := newValidator(t, validate.Config{MaxBody: 1000})
	src := &countingReader{r: bytes.NewReader(make([]byte, 1<<20))}
	r := httptest.NewRequest("POST", "/", src)
	r.ContentLength = -1
	rec := httptest.NewRecorder()
	_, r2, ok := v.Serve(rec, r)
	if !ok {
		t.Fatal("refused before reading")
	}
	n, err := io.Copy(io.Discard, r2.Body)
	if !errors.Is(err, validate.ErrBodyTooLarge) || n > 1000 {
		t.Fatalf("read %d bytes, err %v; want at most 1000 and ErrBodyTooLarge", n, err)
	}
	if src.n > 1000+32<<10 {
		t.Fatalf("%d bytes were taken from the client: the body was buffered", src.n)
	}
	if r2.Context().Err() == nil {
		t.Fatal("the request's context goes on after the cut")
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestSchemaBodyLimitDefaultsTo1MiB(t *testing.T) {
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.0.yaml"})
	big := `{"pad":"` + strings.Repeat("x", validate.DefaultSchemaBodyLimit) + `"}`
	for _, chunked := range []bool{false, true} {
		r := request(badCase{method: "POST", target: "/orders", body: big})
		if chunked {
			r.ContentLength = -1
		}
		rec, _, reached := serve(v, r)
		if reached || rec.Code != 413 {
			t.Fatalf("chunked=%v: %d reached=%v", chunked, rec.Code, reached)
		}
	}
}

func TestConfigErrorsNameTheField(t *testing.T) {
	dir := t.TempDir()
	broken := filepath.Join(dir, "broken.yaml")
	if err := os.WriteFile(broken, []byte("openapi: 3.0.3\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    get:\n      responses: {'200': {description: ok}}\n      parameters: [{name: id, in: nowhere, schema: {type: string}}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	notOpenAPI := filepath.Join(dir, "no.yaml")
	if err := os.WriteFile(notOpenAPI, []byte("- just\n- a list\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	badRef := filepath.Join(dir, "ref.yaml")
	if err := os.WriteFile(badRef, []byte("openapi: 3.1.0\ninfo: {title: x, version: '1'}\npaths:\n  /a:\n    post:\n      requestBody: {content: {application/json: {schema: {$ref: '#/components/schemas/Nope'}}}}\n      responses: {'200': {description: ok}}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		cfg  validate.Config
		want []string
	}{
		{validate.Config{OpenAPI: filepath.Join(dir, "missing.yaml")}, []string{"openapi", "missing.yaml"}},
		{validate.Config{OpenAPI: broken}, []string{"openapi", "broken.yaml", "nowhere"}},
		{validate.Config{OpenAPI: notOpenAPI}, []string{"openapi", "no.yaml"}},
		{validate.Config{OpenAPI: badRef}, []string{"openapi", "Nope"}},
		{validate.Config{OpenAPI: "testdata/orders-3.0.yaml", UnknownRoutes: "maybe"}, []string{"unknown_routes", "maybe", "reject", "pass"}},
		{validate.Config{UnknownRoutes: "pass"}, []string{"unknown_routes", "openapi"}},
		{validate.Config{MaxBody: -1}, []string{"max_body"}},
		{validate.Config{ContentTypes: []string{"json"}}, []string{"content_types", "json"}},
		{validate.Config{Methods: []string{"GE T"}}, []string{"methods"}},
	} {
		_, err := validate.New(c.cfg)
		if err == nil {
			t.Errorf("%+v accepted", c.cfg)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%+v: error %q does not mention %q", c.cfg, err, w)
			}
		}
	}
}

// max_body holds for every body, whatever its framing and media type: a
// declared type whose body is not checked against a schema (text/plain
// here) is limited as it streams, like an undeclared one.
func TestMaxBodyHoldsForEveryMediaType(t *testing.T) {
	for _, doc := range []string{"orders-3.0.yaml", "orders-3.1.yaml"} {
		v := newValidator(t, validate.Config{OpenAPI: filepath.Join("testdata", doc), MaxBody: 1000})
		for _, ctype := range []string{"text/plain", "application/octet-stream", "application/json"} {
			t.Run(doc+" "+ctype, func(t *testing.T) {
				body := strings.Repeat("x", 100_000)
				if ctype == "application/json" {
					body = `"` + body + `"`
				}
				r := httptest.NewRequest("POST", "/echo", strings.NewReader(body))
				r.Header.Set("Content-Type", ctype)
				r.ContentLength = -1
				rec, got, _ := serve(v, r)
				if rec.Code != http.StatusRequestEntityTooLarge || len(got) > 1000 {
					t.Fatalf("status %d, the handler read %d bytes; want 413 and at most 1000", rec.Code, len(got))
				}
			})
		}
	}
}

// A path that a worker's URL parser would resolve to another path (dot
// segments, percent-encoded or not) or that it might merge (//) cannot
// dodge the document with unknown_routes pass: it is refused.
func TestAmbiguousPathsAreRefused(t *testing.T) {
	for _, unknown := range []string{"reject", "pass"} {
		v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", UnknownRoutes: unknown})
		for _, target := range []string{
			"/x/../orders", "/./orders", "/orders/.", "/orders/..", "/echo/%2e%2e/orders", "/echo/.%2E/orders",
			"/echo/%2E/orders", "//orders", "/orders//7c9e6679-7425-40de-944b-e07fc1f90ae7", "/x/..",
		} {
			t.Run(unknown+" "+target, func(t *testing.T) {
				rec, _, reached := serve(v, request(badCase{method: "POST", target: target, body: `{}`}))
				if reached || rec.Code != 400 {
					t.Fatalf("%s: %d reached=%v, want 400", target, rec.Code, reached)
				}
				if d := decodeProblem(t, rec); len(d.Errors) != 1 || d.Errors[0].Pointer != "/path" {
					t.Fatalf("%s: errors %+v, want one at /path", target, d.Errors)
				}
			})
		}
	}
	// Segments that merely hold dots, and a trailing slash, are paths
	// like any other.
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", UnknownRoutes: "pass"})
	for _, target := range []string{"/a..b", "/...", "/.well-known/x", "/orders/", "/%2e%2e%2e", "/"} {
		if rec, _, reached := serve(v, httptest.NewRequest("GET", target, nil)); !reached {
			t.Errorf("%s refused: %d %s", target, rec.Code, rec.Body)
		}
	}
}

// A scalar query parameter given twice, or in the bracket forms some
// frameworks read as an array or object (qs: limit[]=, limit[a]=), is
// refused: the worker might read a value other than the one checked.
func TestRepeatedScalarQueryParameters(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(doc, []byte(`openapi: 3.1.0
info: {title: x, version: "1"}
paths:
  /items:
    get:
      parameters:
        - {name: limit, in: query, schema: {type: integer, maximum: 100}}
        - {name: tag, in: query, schema: {type: array, items: {type: string}}}
        - {name: ids, in: query, explode: false, schema: {type: array, items: {type: integer}}}
      responses: {"200": {description: ok}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	v := newValidator(t, validate.Config{OpenAPI: doc})
	for _, c := range []struct {
		query   string
		pointer string // "" if it passes
	}{
		{"limit=5", ""},
		{"limit=5&limit=100000", "/query/limit"},
		{"limit=5&limit=5", "/query/limit"},
		{"limit[]=100000", "/query/limit"},
		{"limit%5B%5D=100000", "/query/limit"},
		{"limit[x]=1", "/query/limit"},
		{"tag=a&tag=b", ""},
		{"tag[]=a", "/query/tag"},
		{"ids=1,2", ""},
		{"ids=1,2&ids=3", ""},
		{"other=1&other=2&other[]=3", ""},
	} {
		rec, _, reached := serve(v, httptest.NewRequest("GET", "/items?"+c.query, nil))
		if c.pointer == "" {
			if !reached {
				t.Errorf("?%s refused: %d %s", c.query, rec.Code, rec.Body)
			}
			continue
		}
		if reached || rec.Code != 400 || !strings.Contains(rec.Body.String(), `"pointer":"`+c.pointer+`"`) {
			t.Errorf("?%s: %d reached=%v %s; want 400 at %s", c.query, rec.Code, reached, rec.Body, c.pointer)
		}
	}
}

// With unknown_routes reject, an operation that declares no requestBody
// takes none: a body sent to it is refused, not passed on unchecked.
func TestBodyToAnOperationWithoutOne(t *testing.T) {
	const target = "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7"
	send := func(v *validate.Validator, body string, chunked bool) (*httptest.ResponseRecorder, bool) {
		r := httptest.NewRequest("DELETE", target, strings.NewReader(body))
		if body == "" {
			r = httptest.NewRequest("DELETE", target, nil)
		}
		if chunked {
			r.Body = io.NopCloser(strings.NewReader(body))
			r.ContentLength = -1
		}
		rec, _, reached := serve(v, r)
		return rec, reached
	}
	for _, unknown := range []string{"", "reject"} {
		v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", UnknownRoutes: unknown})
		for _, chunked := range []bool{false, true} {
			rec, reached := send(v, `{"why":"no"}`, chunked)
			if reached || rec.Code != 400 || !strings.Contains(rec.Body.String(), `"pointer":"/body"`) {
				t.Errorf("unknown_routes %q, chunked %v: %d reached=%v %s", unknown, chunked, rec.Code, reached, rec.Body)
			}
			// An empty body is no body.
			if rec, reached := send(v, "", chunked); !reached {
				t.Errorf("unknown_routes %q, chunked %v, empty body: %d %s", unknown, chunked, rec.Code, rec.Body)
			}
		}
	}
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", UnknownRoutes: "pass"})
	if rec, reached := send(v, `{"why":"no"}`, false); !reached {
		t.Errorf("unknown_routes pass: refused %d %s", rec.Code, rec.Body)
	}
}

// A number literal beyond the limits (digits, exponent) is refused
// before any exact comparison, wherever it is: in a body the fast
// decoder reads, in one it hands over (a \u escape), in a parameter.
func TestHugeNumbersAreRefused(t *testing.T) {
	v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", MaxBody: 1 << 20})
	digits := "1" + strings.Repeat("0", 900_000)
	for _, c := range []struct {
		name, number, note, pointer string
	}{
		{"900,000 digits", digits, "", "/body"},
		{"900,000 digits after a \\u escape", digits, `\u0041`, "/body/items/0/qty"},
		{"900,000 fraction digits", "0." + strings.Repeat("0", 899_990) + "1", "", "/body"},
		{"exponent", "1e999999", "", "/body"},
		{"exponent after a \\u escape", "1e999999", `\u0041`, "/body/items/0/qty"},
		{"negative exponent", "1E-1001", "", "/body"},
	} {
		t.Run(c.name, func(t *testing.T) {
			body := order(t, func(m map[string]any) { item(m, 0)["qty"] = json.Number(c.number) })
			if c.note != "" {
				body = strings.Replace(body, `"note":null`, `"note":"`+c.note+`"`, 1)
			}
			rec, _, reached := serve(v, request(badCase{method: "POST", target: "/orders", body: body}))
			if reached || rec.Code != 400 {
				t.Fatalf("%d reached=%v", rec.Code, reached)
			}
			d := decodeProblem(t, rec)
			if len(d.Errors) != 1 || d.Errors[0].Pointer != c.pointer || !strings.Contains(d.Errors[0].Detail, "more than 1000 digits") {
				t.Fatalf("errors %+v, want one at %s about the number's size", d.Errors, c.pointer)
			}
		})
	}
	// A query parameter.
	rec, _, reached := serve(v, httptest.NewRequest("GET", "/orders?limit="+digits, nil))
	if reached || rec.Code != 400 || !strings.Contains(rec.Body.String(), `"pointer":"/query/limit","detail":"has more than 1000 digits`) {
		t.Fatalf("query: %d reached=%v %.300s", rec.Code, reached, rec.Body)
	}
	// Within the limits, numbers are compared exactly.
	for number, ok := range map[string]bool{
		"1" + strings.Repeat("0", 999): false, "1000." + strings.Repeat("0", 995): true,
		"1000." + strings.Repeat("0", 994) + "1": false, "1e3": true, "1000e-0003": true, "0.001e1000": false,
	} {
		body := order(t, func(m map[string]any) { item(m, 0)["qty"] = json.Number(number) })
		rec, _, reached := serve(v, request(badCase{method: "POST", target: "/orders", body: body}))
		if reached != ok || (!ok && !strings.Contains(rec.Body.String(), `"pointer":"/body/items/0/qty"`)) {
			t.Errorf("qty %.20s… (%d bytes): %d reached=%v %s", number, len(number), rec.Code, reached, rec.Body)
		}
	}
}

// BenchmarkHugeNumber is the cost of refusing a body of one number of
// 900,000 digits (it took seconds before the limits of numbers.go).
func BenchmarkHugeNumber(b *testing.B) {
	v := newValidator(b, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", MaxBody: 1 << 20})
	body := []byte(strings.Replace(goodOrder, `"qty":2`, `"qty":1`+strings.Repeat("0", 900_000), 1))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		r := httptest.NewRequest("POST", "/orders", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		if _, err := v.Check(r); err == nil {
			b.Fatal("accepted")
		}
	}
}

// With unknown_routes pass (or reject), a variant of a documented path
// that the common frameworks route to that path's handler (Express and
// Koa: case-insensitive, a trailing slash optional; servers that route
// on the decoded path: %2F as /) is checked against that operation, and
// passed on with its path unchanged when it fits.
func TestRouteVariantsAreChecked(t *testing.T) {
	bad := order(t, func(m map[string]any) { item(m, 0)["qty"] = "two" })
	variants := []string{"/orders/", "/ORDERS", "/Orders/", "/orders%2f", "/orders%2F", "/ORDERS%2F", "/%6Frders/"}
	for _, unknown := range []string{"pass", "reject"} {
		v := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.1.yaml", UnknownRoutes: unknown})
		for _, target := range variants {
			t.Run(unknown+" "+target, func(t *testing.T) {
				rec, _, reached := serve(v, request(badCase{method: "POST", target: target, body: bad}))
				if reached || rec.Code != 400 {
					t.Fatalf("invalid body to %s: %d reached=%v, want 400", target, rec.Code, reached)
				}
				if d := decodeProblem(t, rec); len(d.Errors) == 0 || d.Errors[0].Pointer != "/body/items/0/qty" {
					t.Fatalf("%s: errors %+v, want one at /body/items/0/qty", target, d.Errors)
				}
				r, err := v.Check(request(badCase{method: "POST", target: target, body: goodOrder}))
				if err != nil {
					t.Fatalf("valid order to %s: %v", target, err)
				}
				if r.URL.EscapedPath() != target || validate.Route(r) != "/orders" {
					t.Fatalf("valid order to %s: passed on as %s, route %q", target, r.URL.EscapedPath(), validate.Route(r))
				}
			})
		}
		for _, c := range []badCase{
			{name: "path parameter of a variant", method: "GET", target: "/ORDERS/not-a-uuid/", status: 400, pointer: "/path/orderId"},
			{name: "deeper variant", method: "GET", target: "/Orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/ITEMS/x", status: 400, pointer: "/path/line"},
			{name: "wrong method on a variant", method: "PUT", target: "/ORDERS/", body: goodOrder, status: 405, allow: "GET, POST, HEAD"},
			{name: "encoded slashes that make an empty segment", method: "POST", target: "/orders%2F%2F", body: bad, status: 400, pointer: "/path"},
			{name: "encoded slashes that make a dot segment", method: "POST", target: "/echo%2F..%2Forders", body: bad, status: 400, pointer: "/path"},
		} {
			t.Run(unknown+" "+c.name, func(t *testing.T) {
				rec, _, reached := serve(v, request(c))
				if reached || rec.Code != c.status {
					t.Fatalf("%s %s: %d reached=%v, want %d", c.method, c.target, rec.Code, reached, c.status)
				}
				if c.allow != "" && rec.Header().Get("Allow") != c.allow {
					t.Fatalf("Allow %q, want %q", rec.Header().Get("Allow"), c.allow)
				}
				if c.pointer != "" {
					if d := decodeProblem(t, rec); len(d.Errors) == 0 || d.Errors[0].Pointer != c.pointer {
						t.Fatalf("errors %+v, want one at %s", d.Errors, c.pointer)
					}
				}
			})
		}
		// A variant of nothing documented is unknown, as before.
		rec, _, reached := serve(v, httptest.NewRequest("GET", "/ORDERS/x/y/z/", nil))
		if want := unknown == "pass"; reached != want || (!want && rec.Code != 404) {
			t.Fatalf("%s: unknown variant: %d reached=%v", unknown, rec.Code, reached)
		}
	}
}

// A variant that fits a literal template beats a parameter that fits it
// exactly: /orders/NEW is checked as /orders/new, where Express routes
// it, not as /orders/{id}. A template's own trailing slash is optional
// too.
func TestRouteVariantLiteralBeatsParameter(t *testing.T) {
	doc := filepath.Join(t.TempDir(), "api.yaml")
	if err := os.WriteFile(doc, []byte(`openapi: 3.1.0
info: {title: x, version: "1"}
paths:
  /orders/new:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, required: [sku], properties: {sku: {type: string}}, additionalProperties: false}
      responses: {"201": {description: ok}}
  /orders/{id}:
    post:
      parameters: [{name: id, in: path, required: true, schema: {type: string}}]
      requestBody:
        content:
          application/json:
            schema: {}
      responses: {"200": {description: ok}}
  /carts/:
    post:
      requestBody:
        required: true
        content:
          application/json:
            schema: {type: object, required: [sku]}
      responses: {"201": {description: ok}}
`), 0o600); err != nil {
		t.Fatal(err)
	}
	v := newValidator(t, validate.Config{OpenAPI: doc, UnknownRoutes: "pass"})
	for target, route := range map[string]string{"/orders/NEW": "/orders/new", "/orders/new/": "/orders/new", "/orders/42": "/orders/{id}", "/carts": "/carts/", "/CARTS/": "/carts/"} {
		rec, _, reached := serve(v, request(badCase{method: "POST", target: target, body: `{"qty":1}`}))
		if wantRefused := route != "/orders/{id}"; reached == wantRefused {
			t.Errorf("POST %s: %d reached=%v; want it checked as %s", target, rec.Code, reached, route)
		}
		r, err := v.Check(request(badCase{method: "POST", target: target, body: `{"sku":"a"}`}))
		if err != nil || validate.Route(r) != route {
			t.Errorf("POST %s: route %q %v, want %s", target, validate.Route(r), err, route)
		}
	}
}

// A gRPC client understands only gRPC's answer: every refusal reaches it
// as HTTP 200, trailers-only, with the grpc-status that fits and a
// grpc-message that says what was refused; never problem+json.
func TestGRPCCallsAreRefusedInGRPCTerms(t *testing.T) {
	limits := newValidator(t, validate.Config{MaxBody: 10, MaxQuery: 4, MaxHeaders: 4, Methods: []string{"POST"}, ContentTypes: []string{"application/grpc"}})
	api := newValidator(t, validate.Config{OpenAPI: "testdata/orders-3.0.yaml"})
	call := func(ct, target, body string, chunked bool) *http.Request {
		r := httptest.NewRequest("POST", target, strings.NewReader(body))
		r.Header.Set("Content-Type", ct)
		r.Header.Set("Te", "trailers")
		if chunked {
			r.ContentLength = -1
		}
		return r
	}
	many := call("application/grpc", "/pkg.S/M", "", false)
	for _, h := range []string{"A", "B", "C", "D"} {
		many.Header.Set("X-"+h, "1")
	}
	get := call("application/grpc", "/pkg.S/M", "", false)
	get.Method = "GET"
	for _, c := range []struct {
		name    string
		v       *validate.Validator
		r       *http.Request
		code    string
		message string
		reached bool
	}{
		{"declared too large", limits, call("application/grpc", "/pkg.S/M", "0123456789A", false), "8", "larger than 10 bytes", false},
		{"streamed too large", limits, call("application/grpc", "/pkg.S/M", strings.Repeat("x", 100), true), "8", "larger than 10 bytes", true},
		{"query", limits, call("application/grpc", "/pkg.S/M?abcdef", "", false), "8", "query string is longer", false},
		{"header fields", limits, many, "8", "header fields", false},
		{"method", limits, get, "12", "method GET is not allowed", false},
		{"media type", limits, call("application/grpc+json", "/pkg.S/M", "{}", false), "3", "not accepted", false},
		{"unknown route", api, call("application/grpc", "/pkg.S/M", "", false), "12", "no route of the API", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			rec, _, reached := serve(c.v, c.r)
			h := rec.Header()
			if rec.Code != http.StatusOK || h.Get("Content-Type") != "application/grpc" || reached != c.reached {
				t.Fatalf("answer %d %q (reached %v), want 200 application/grpc (reached %v): %s", rec.Code, h.Get("Content-Type"), reached, c.reached, rec.Body)
			}
			if h.Get("Grpc-Status") != c.code || !strings.Contains(h.Get("Grpc-Message"), c.message) {
				t.Fatalf("grpc-status %q grpc-message %q; want %s and %q", h.Get("Grpc-Status"), h.Get("Grpc-Message"), c.code, c.message)
			}
			if rec.Body.Len() != 0 || h.Get("Connection") != "" {
				t.Fatalf("a trailers-only answer has no body and leaves the connection alone: body %q, Connection %q", rec.Body, h.Get("Connection"))
			}
		})
	}
	// gRPC-Web is made for HTTP/1.1 clients, which read problem+json.
	rec, _, _ := serve(newValidator(t, validate.Config{MaxBody: 10}), call("application/grpc-web", "/pkg.S/M", "0123456789A", false))
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("a gRPC-Web call got %d, want 413", rec.Code)
	}
	decodeProblem(t, rec)
}
