package validate

import (
	"bytes"
	"reflect"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// fastOrder is a valid order of testdata/orders-3.1.yaml.
const fastOrder = `{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","createdAt":"2026-11-20T10:00:00Z","status":"paid",
"customer":{"email":"a@example.com","name":"Ann","address":{"street":"Main 1","city":"Oslo","zip":"0150","country":"NO"}},
"items":[{"sku":"ABC-1234","qty":2,"price":9.5,"note":null},{"sku":"XYZ-0001","qty":1,"price":100}],"tags":["a","b"]}`

// The example documents' order schemas compile to the fast form; without
// it every valid order would pay for the general validator.
func TestOrderSchemasHaveAFastForm(t *testing.T) {
	for _, doc := range []string{"testdata/orders-3.0.yaml", "testdata/orders-3.1.yaml", "../examples/node/openapi.json"} {
		v, err := New(Config{OpenAPI: doc})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, r := range v.api.routes {
			for method, op := range r.ops {
				if op.body == nil {
					continue
				}
				for _, mt := range op.body.media {
					if mt.schema != nil {
						n++
						if mt.fast == nil {
							t.Errorf("%s: %s %s %s: no fast form", doc, method, r.template, mt.pattern)
						}
					}
				}
			}
		}
		if n == 0 {
			t.Errorf("%s: no body schema", doc)
		}
	}
}

// BenchmarkBodySchema compares, in one run, the general validator and
// the fast form on the decoded valid order, and the decoding itself.
func BenchmarkBodySchema(b *testing.B) {
	v, err := New(Config{OpenAPI: "testdata/orders-3.1.yaml"})
	if err != nil {
		b.Fatal(err)
	}
	var media *mediaType
	for _, r := range v.api.routes {
		if op := r.ops["POST"]; op != nil && op.body != nil && r.template == "/orders" {
			media = &op.body.media[0]
		}
	}
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(fastOrder))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("decode-encoding-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = jsonschema.UnmarshalJSON(strings.NewReader(fastOrder))
		}
	})
	body := []byte(fastOrder)
	b.Run("decode-fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := decodeFast(body); !ok {
				b.Fatal("handed over")
			}
		}
	})
	b.Run("general", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := media.schema.Validate(doc); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !media.fast.valid(doc) {
				b.Fatal("refused")
			}
		}
	})
}

// FuzzFastAgrees holds the fast form to the general validator: whatever
// the fast form accepts, the general validator must accept too (the
// reverse may differ: a refusal goes to the general validator anyway).
func FuzzFastAgrees(f *testing.F) {
	var media []*mediaType
	for _, doc := range []string{"testdata/orders-3.0.yaml", "testdata/orders-3.1.yaml", "../examples/node/openapi.json"} {
		v, err := New(Config{OpenAPI: doc})
		if err != nil {
			f.Fatal(err)
		}
		for _, r := range v.api.routes {
			for _, op := range r.ops {
				if op.body == nil {
					continue
				}
				for i := range op.body.media {
					if op.body.media[i].fast != nil {
						media = append(media, &op.body.media[i])
					}
				}
			}
		}
	}
	f.Add([]byte(fastOrder))
	for _, edit := range [][2]string{
		{`"qty":2`, `"qty":2.0`}, {`"qty":2`, `"qty":2.5`}, {`"qty":2`, `"qty":0`}, {`"qty":2`, `"qty":1e400`},
		{`"qty":2`, `"qty":-0`}, {`"price":9.5`, `"price":0`}, {`"price":9.5`, `"price":-1e-30`},
		{`"tags":["a","b"]`, `"tags":["a","a"]`}, {`"tags":["a","b"]`, `"tags":[1,1.0]`}, {`"tags":["a","b"]`, `"tags":[]`},
		{`"note":null`, `"note":7`}, {`"status":"paid"`, `"status":"lost"`}, {`"status":"paid"`, `"status":null`},
		{`"email":"a@example.com"`, `"email":"not an address"`}, {`"createdAt":"2026-11-20T10:00:00Z"`, `"createdAt":"2026-13-40"`},
		{`"id":"7c9e6679`, `"id":"zz9e6679`}, {`"name":"Ann"`, `"name":""`}, {`"name":"Ann"`, `"name":"Ann","extra":1`},
		{`"zip":"0150"`, `"zip":"01"`}, {`"country":"NO"`, `"country":"Norway"`}, {`"sku":"ABC-1234"`, `"sku":"abc"`},
	} {
		f.Add([]byte(strings.Replace(fastOrder, edit[0], edit[1], 1)))
	}
	f.Add([]byte(`{"kind":"percent","value":10}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(string(body)))
		if err != nil {
			return
		}
		for _, m := range media {
			if m.fast.valid(v) {
				if err := m.schema.Validate(v); err != nil {
					t.Fatalf("%s: the fast form accepted what the schema refuses: %v\nbody: %s", m.schema.Location, err, body)
				}
			}
		}
	})
}

// FuzzDecodeJSON holds the reflection-free decoder to the standard one:
// what it decodes, the standard decoder decodes to the same value.
func FuzzDecodeJSON(f *testing.F) {
	f.Add([]byte(fastOrder))
	for _, s := range []string{
		`{}`, `[]`, `""`, `0`, `-0`, `-0.5e+3`, `1E9`, `01`, `1.`, `.5`, `-`, `1e`, `true`, `tru`, `nullx`,
		`{"a":1,"a":2}`, `{"a" : [ 1 , 2 ] }`, "\t[\n]\r ", `["\"\\\/\b\f\n\r\t"]`, `["\u00e9"]`, `["\ud800"]`,
		"[\"\xff\"]", "[\"é\"]", "[\"\x01\"]", `[1,]`, `{"a":1,}`, `{"a"}`, `[1 2]`, `[] []`, `{"a":{"b":{"c":[[[]]]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, ok := decodeFast(body)
		if !ok {
			return
		}
		want, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
		if err != nil {
			t.Fatalf("decoded %q, which encoding/json refuses: %v", body, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q: decoded %#v, encoding/json %#v", body, got, want)
		}
	})
}

// BenchmarkDecodeHugeNumber is what the decoder spends on a body of one
// number of 900,000 digits once it is in memory: it stops at the first
// digit past the limit.
func BenchmarkDecodeHugeNumber(b *testing.B) {
	body := []byte(strings.Replace(fastOrder, `"qty":2`, `"qty":1`+strings.Repeat("0", 900_000), 1))
	for b.Loop() {
		if _, err := decodeJSON(body); err == nil {
			b.Fatal("accepted")
		}
	}
}
