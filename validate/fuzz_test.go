package validate_test

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/validate"
)

// FuzzValidate sends arbitrary paths, queries and bodies through both
// documents: the validator must never panic, must answer a refused
// request with a problem, and must pass an accepted body on byte for byte.
func FuzzValidate(f *testing.F) {
	var vs []*validate.Validator
	for _, doc := range []string{"testdata/orders-3.0.yaml", "testdata/orders-3.1.yaml"} {
		v, err := validate.New(validate.Config{OpenAPI: doc, MaxBody: 4096})
		if err != nil {
			f.Fatal(err)
		}
		vs = append(vs, v)
	}
	f.Add("POST", "/orders", "dry_run=true", "application/json", []byte(goodOrder))
	f.Add("POST", "/orders", "", "application/json", []byte(`{"items":[{"qty":1e999}]}`))
	f.Add("POST", "/orders", "", "application/json; charset=utf-8", []byte(`[]`))
	f.Add("POST", "/orders", "", "application/json", []byte(`{"id":"\ud800"}`))
	f.Add("GET", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/items/-0", "", "", []byte(nil))
	f.Add("GET", "/orders", "limit=1&limit=2&status=", "", []byte(nil))
	f.Add("GET", "/orders/%2F..%2F/items/1", "limit=%zz", "", []byte(nil))
	f.Add("HEAD", "//orders//", "", "", []byte(nil))
	f.Add("POST", "/echo", "", "text/plain", []byte("hello"))
	// The cases of issue 19: paths a worker's parser resolves to another
	// path, repeated and bracketed parameters, numbers too long to
	// compare, bodies where the document declares none or no schema.
	f.Add("POST", "/x/../orders", "", "application/json", []byte(`{}`))
	f.Add("POST", "/echo/%2e%2e/orders", "", "application/json", []byte(`{}`))
	f.Add("POST", "/echo/.%2E/orders", "", "application/json", []byte(`{}`))
	f.Add("POST", "//orders", "", "application/json", []byte(`{}`))
	f.Add("GET", "/orders", "limit=5&limit=100000", "", []byte(nil))
	f.Add("GET", "/orders", "limit[]=100000&limit%5Bx%5D=1", "", []byte(nil))
	f.Add("GET", "/orders", "limit=1"+strings.Repeat("0", 1200), "", []byte(nil))
	f.Add("POST", "/orders", "", "application/json", []byte(`{"items":[{"qty":1`+strings.Repeat("0", 1200)+`}]}`))
	f.Add("POST", "/orders", "", "application/json", []byte(`{"items":[{"qty":1e999999,"note":"\u0041"}]}`))
	f.Add("POST", "/orders", "", "application/json", []byte(`{"items":[{"qty":0.`+strings.Repeat("0", 999)+`1e-1000}]}`))
	f.Add("DELETE", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7", "", "application/json", []byte(`{"why":"no"}`))
	f.Add("POST", "/echo", "", "application/octet-stream", bytes.Repeat([]byte("x"), 5000))
	f.Fuzz(func(t *testing.T, method, path, query, ctype string, body []byte) {
		// The path as the client sends it, escapes and all.
		target := "http://x" + path
		if query != "" {
			target += "?" + query
		}
		r, err := http.NewRequest(method, target, bytes.NewReader(body))
		if err != nil || r.URL.Host != "x" {
			return
		}
		if ctype != "" {
			r.Header.Set("Content-Type", ctype)
		}
		for _, v := range vs {
			rec := httptest.NewRecorder()
			_, r2, ok := v.Serve(rec, r.Clone(r.Context()))
			if !ok {
				if rec.Code < 400 || rec.Header().Get("Content-Type") != "application/problem+json" {
					t.Fatalf("refused with %d %q", rec.Code, rec.Header().Get("Content-Type"))
				}
				continue
			}
			got, err := io.ReadAll(r2.Body)
			if err != nil {
				continue // limited stream, over the limit
			}
			if !bytes.Equal(got, body) {
				t.Fatalf("body changed: %q became %q", body, got)
			}
			r.Body = io.NopCloser(bytes.NewReader(body))
		}
	})
}

// BenchmarkValidateOrder is Go validation alone: routing, a header
// parameter and a nested JSON body with formats (uuid, date-time, email),
// enums, patterns and arrays.
func BenchmarkValidateOrder(b *testing.B) {
	for _, doc := range []string{"orders-3.0.yaml", "orders-3.1.yaml"} {
		b.Run(doc, func(b *testing.B) {
			v, err := validate.New(validate.Config{OpenAPI: "testdata/" + doc})
			if err != nil {
				b.Fatal(err)
			}
			body := []byte(goodOrder)
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				r := httptest.NewRequest("POST", "/orders", bytes.NewReader(body))
				r.Header.Set("Content-Type", "application/json")
				r.Header.Set("X-Request-Id", "7c9e6679-7425-40de-944b-e07fc1f90ae7")
				if _, err := v.Check(r); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkValidateGet is a request without a body: routing and a path
// parameter.
func BenchmarkValidateGet(b *testing.B) {
	v, err := validate.New(validate.Config{OpenAPI: "testdata/orders-3.1.yaml"})
	if err != nil {
		b.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7/items/3", nil)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Check(r); err != nil {
			b.Fatal(err)
		}
	}
}
