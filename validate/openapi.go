package validate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// The OpenAPI document is used twice: kin-openapi checks that it is a
// well-formed OpenAPI 3.0/3.1 document (its messages say what is wrong
// and where), and the schemas in it are compiled once, at load, by a
// JSON Schema 2020-12 validator. kin-openapi's own request validation
// compiles a 3.1 schema again on every request, which costs about 40
// times more than a 3.0 one; compiled once, both versions are cheap.

// docURL is the base URL the document is known by to the schema
// compiler; schemas are compiled by their JSON pointer below it.
const docURL = "file:///openapi.json"

// api is a loaded OpenAPI document: its paths, fastest match first.
type api struct {
	routes      []*route
	passUnknown bool
}

// route is one path template of the document.
type route struct {
	template string
	segs     []segment
	// loose is segs without a trailing empty segment (the template's
	// trailing slash), for matching route variants.
	loose []segment
	ops   map[string]*operation
	allow string
}

// segment is one part of a path template between slashes: a literal, or
// a parameter with an optional literal prefix and suffix ("{id}.json").
type segment struct {
	lit            string
	param          string
	prefix, suffix string
}

// operation is one method of a route: what to check.
type operation struct {
	params []*param
	body   *requestBody
}

// loadAPI reads, checks and compiles the document at path.
func loadAPI(path string) (*api, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read the document: %w", err)
	}
	loader := openapi3.NewLoader()
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("%s is not an OpenAPI document (single file, local $refs only): %w", path, err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.0") && !strings.HasPrefix(doc.OpenAPI, "3.1") {
		return nil, fmt.Errorf("%s: openapi version %q is not supported; use 3.0.x or 3.1.x", path, doc.OpenAPI)
	}
	if err := doc.Validate(context.Background(), openapi3.DisableExamplesValidation()); err != nil {
		return nil, fmt.Errorf("%s is not a valid OpenAPI %s document: %w", path, doc.OpenAPI, err)
	}
	var raw any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	root, ok := plain(raw).(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%s: the document is not an object", path)
	}
	if strings.HasPrefix(doc.OpenAPI, "3.0") {
		from30(root)
	}
	b := &builder{root: root, compiler: jsonschema.NewCompiler()}
	b.compiler.DefaultDraft(jsonschema.Draft2020)
	b.compiler.AssertFormat()
	for _, f := range extraFormats {
		b.compiler.RegisterFormat(f)
	}
	if err := b.compiler.AddResource(docURL, root); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	a, err := b.build()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// plain turns what the YAML decoder gives into JSON values: string map
// keys, timestamps as the strings they were written as.
func plain(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			v[k] = plain(x)
		}
		return v
	case map[any]any:
		m := make(map[string]any, len(v))
		for k, x := range v {
			m[fmt.Sprint(k)] = plain(x)
		}
		return m
	case []any:
		for i, x := range v {
			v[i] = plain(x)
		}
		return v
	case time.Time:
		return v.Format(time.RFC3339Nano)
	default:
		return v
	}
}

// from30 rewrites the OpenAPI 3.0 schema forms that JSON Schema 2020-12
// reads differently: nullable, and boolean exclusive bounds.
func from30(v any) {
	switch v := v.(type) {
	case map[string]any:
		if n, _ := v["nullable"].(bool); n {
			if t, ok := v["type"].(string); ok {
				v["type"] = []any{t, "null"}
			}
			if e, ok := v["enum"].([]any); ok && !slices.Contains(e, nil) {
				v["enum"] = append(e, nil)
			}
		}
		for _, b := range [][2]string{{"exclusiveMinimum", "minimum"}, {"exclusiveMaximum", "maximum"}} {
			if x, ok := v[b[0]].(bool); ok {
				if bound, has := v[b[1]]; x && has {
					v[b[0]] = bound
					delete(v, b[1])
				} else {
					delete(v, b[0])
				}
			}
		}
		for _, x := range v {
			from30(x)
		}
	case []any:
		for _, x := range v {
			from30(x)
		}
	}
}

// builder walks the document and compiles its schemas.
type builder struct {
	root     map[string]any
	compiler *jsonschema.Compiler
}

// resolve follows local $refs from node (at pointer ptr).
func (b *builder) resolve(node any, ptr string) (map[string]any, string, error) {
	for range 32 {
		m, ok := node.(map[string]any)
		if !ok {
			return nil, ptr, fmt.Errorf("%s: want an object", ptr)
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return m, ptr, nil
		}
		if !strings.HasPrefix(ref, "#/") {
			return nil, ptr, fmt.Errorf("%s: $ref %q: only references within the document (#/...) are supported; bundle the document into one file", ptr, ref)
		}
		node, ptr = b.lookup(ref[1:]), ref[1:]
		if node == nil {
			return nil, ptr, fmt.Errorf("$ref %q points at nothing", ref)
		}
	}
	return nil, ptr, fmt.Errorf("%s: $ref chain too long", ptr)
}

// lookup finds the value at JSON pointer ptr.
func (b *builder) lookup(ptr string) any {
	var node any = b.root
	for _, tok := range strings.Split(ptr, "/")[1:] {
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		switch n := node.(type) {
		case map[string]any:
			node = n[tok]
		case []any:
			i, err := strconv.Atoi(tok)
			if err != nil || i < 0 || i >= len(n) {
				return nil
			}
			node = n[i]
		default:
			return nil
		}
	}
	return node
}

// schema compiles the schema at ptr; nil if it accepts everything.
func (b *builder) schema(node any, ptr string) (*jsonschema.Schema, error) {
	if m, ok := node.(map[string]any); ok && len(m) == 0 {
		return nil, nil
	}
	if t, ok := node.(bool); ok && t {
		return nil, nil
	}
	s, err := b.compiler.Compile(docURL + "#" + ptr)
	if err != nil {
		return nil, fmt.Errorf("%s: the schema does not compile: %w", ptr, err)
	}
	return s, nil
}

func escape(tok string) string {
	return strings.ReplaceAll(strings.ReplaceAll(tok, "~", "~0"), "/", "~1")
}

var methods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

func (b *builder) build() (*api, error) {
	paths, _ := b.root["paths"].(map[string]any)
	a := &api{}
	for tmpl, item := range paths {
		r := &route{template: tmpl, ops: map[string]*operation{}}
		segs, err := parseTemplate(tmpl)
		if err != nil {
			return nil, err
		}
		r.segs, r.loose = segs, segs
		if n := len(segs); n > 1 && segs[n-1] == (segment{}) {
			r.loose = segs[:n-1]
		}
		itemPtr := "/paths/" + escape(tmpl)
		pi, itemPtr, err := b.resolve(item, itemPtr)
		if err != nil {
			return nil, err
		}
		shared, err := b.params(pi["parameters"], itemPtr+"/parameters")
		if err != nil {
			return nil, err
		}
		var allow []string
		for _, m := range methods {
			node, ok := pi[m]
			if !ok {
				continue
			}
			opPtr := itemPtr + "/" + m
			opNode, ok := node.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%s: want an operation object", opPtr)
			}
			own, err := b.params(opNode["parameters"], opPtr+"/parameters")
			if err != nil {
				return nil, err
			}
			op := &operation{params: mergeParams(shared, own)}
			if rb, ok := opNode["requestBody"]; ok {
				if op.body, err = b.requestBody(rb, opPtr+"/requestBody"); err != nil {
					return nil, err
				}
			}
			method := strings.ToUpper(m)
			r.ops[method] = op
			allow = append(allow, method)
		}
		if r.ops[http.MethodGet] != nil && r.ops[http.MethodHead] == nil {
			r.ops[http.MethodHead] = r.ops[http.MethodGet]
			allow = append(allow, http.MethodHead)
		}
		r.allow = strings.Join(allow, ", ")
		a.routes = append(a.routes, r)
	}
	// Literal segments win over parameters (RFC-less, but what every
	// OpenAPI router does: /orders/new before /orders/{id}).
	sort.SliceStable(a.routes, func(i, j int) bool {
		si, sj := a.routes[i].segs, a.routes[j].segs
		for k := range min(len(si), len(sj)) {
			li, lj := si[k].param == "", sj[k].param == ""
			if li != lj {
				return li
			}
		}
		if len(si) != len(sj) {
			return len(si) < len(sj)
		}
		return a.routes[i].template < a.routes[j].template
	})
	return a, nil
}

// parseTemplate splits "/orders/{id}/items" into segments.
func parseTemplate(tmpl string) ([]segment, error) {
	if !strings.HasPrefix(tmpl, "/") {
		return nil, fmt.Errorf("path %q must start with /", tmpl)
	}
	var segs []segment
	for _, part := range strings.Split(tmpl[1:], "/") {
		open := strings.IndexByte(part, '{')
		if open < 0 {
			segs = append(segs, segment{lit: part})
			continue
		}
		end := strings.IndexByte(part, '}')
		if end < open || strings.IndexByte(part[end+1:], '{') >= 0 {
			return nil, fmt.Errorf("path %q: segment %q: want at most one {parameter} per segment", tmpl, part)
		}
		segs = append(segs, segment{param: part[open+1 : end], prefix: part[:open], suffix: part[end+1:]})
	}
	return segs, nil
}

// match finds the route of r. It returns the operation to check (nil
// when the path is unknown and unknown routes pass), the route template
// and the path parameters' values, or a 404/405 *Error. A path that
// matches no template as it is sent is matched once more as the common
// frameworks route it (see matchVariant).
func (a *api) match(r *http.Request) (*operation, string, map[string]string, error) {
	path := r.URL.EscapedPath()
	if why := ambiguousPath(path); why != "" {
		return nil, "", nil, ambiguous(why)
	}
	var parts []string
	if strings.HasPrefix(path, "/") {
		parts = strings.Split(path[1:], "/")
	}
	for i, rt := range a.routes {
		params, ok := rt.match(parts, false)
		if !ok {
			continue
		}
		// A literal beats a parameter: Express routes /orders/NEW to
		// /orders/new when both exist (new is registered first, or it
		// would never be reached), not to /orders/{id}.
		if len(params) > 0 && mayVary(path) {
			if j, vparams, err := a.matchVariant(path); err == nil && j >= 0 && j < i {
				return a.routes[j].operation(r.Method, vparams)
			}
		}
		return rt.operation(r.Method, params)
	}
	j, params, err := a.matchVariant(path)
	switch {
	case err != nil:
		return nil, "", nil, err
	case j >= 0:
		return a.routes[j].operation(r.Method, params)
	case a.passUnknown:
		return nil, "", nil, nil
	}
	return nil, "", nil, &Error{Status: http.StatusNotFound, Detail: "no route of the API matches this path"}
}

// mayVary reports whether an escaped path could match a template only
// as a variant: it has an upper-case letter, a percent-escape (%2F
// among them) or a trailing slash.
func mayVary(path string) bool {
	if len(path) > 1 && path[len(path)-1] == '/' {
		return true
	}
	for i := 0; i < len(path); i++ {
		if c := path[i]; 'A' <= c && c <= 'Z' || c == '%' {
			return true
		}
	}
	return false
}

// operation returns the route's operation for method, or a 405 *Error.
func (rt *route) operation(method string, params map[string]string) (*operation, string, map[string]string, error) {
	op := rt.ops[method]
	if op == nil {
		return nil, "", nil, &Error{Status: http.StatusMethodNotAllowed, Allow: rt.allow,
			Detail: fmt.Sprintf("method %s is not allowed on %s", method, rt.template)}
	}
	return op, rt.template, params, nil
}

func ambiguous(why string) *Error {
	return &Error{Status: http.StatusBadRequest, Detail: "the request's path is ambiguous",
		Errors: []problem.FieldError{{Pointer: "/path", Detail: why}}}
}

// matchVariant finds the route (its index in a.routes, -1 for none)
// that a path which matches no template exactly reaches in the common
// frameworks' default routing, so that it is checked against that
// route's operation rather than passed as unknown (the path itself is
// forwarded unchanged). The union of their
// defaults: literal segments compare without regard to case (Express
// and Koa's router are case-insensitive), one trailing slash is
// optional (Express and Koa are not strict), and an encoded slash
// (%2F) counts as a slash (servers that route on the decoded path, as
// WSGI's PATH_INFO and Go's URL.Path are, see one). Fastify is
// case-sensitive and strict by default: matching more than it routes
// only checks a request that it would answer with 404. A variant whose
// decoded slashes make empty or dot segments is refused as ambiguous.
func (a *api) matchVariant(path string) (int, map[string]string, error) {
	if !strings.HasPrefix(path, "/") {
		return -1, nil, nil
	}
	v := path
	if strings.Contains(v, "%2") {
		v = strings.ReplaceAll(strings.ReplaceAll(v, "%2F", "/"), "%2f", "/")
		if why := ambiguousPath(v); why != "" {
			return -1, nil, ambiguous(why + " (an encoded slash, %2F, counts as a slash)")
		}
	}
	if len(v) > 1 && v[len(v)-1] == '/' {
		v = v[:len(v)-1]
	}
	parts := strings.Split(v[1:], "/")
	for j, rt := range a.routes {
		if params, ok := rt.match(parts, true); ok {
			return j, params, nil
		}
	}
	return -1, nil, nil
}

// ambiguousPath says what makes the escaped path mean different paths
// to different URL parsers, or "" when nothing does. The path is matched
// as it is sent to the worker, but a worker's parser may resolve dot
// segments first (WHATWG URL, Node's new URL(), resolves "/x/../orders",
// "%2e%2e" included, to "/orders") or merge empty segments ("//"); a
// path that the document does not know could then reach a route it
// knows, unchecked. Such paths are refused rather than normalised, so
// that no worker, whatever its parser, routes a path other than the one
// checked. A trailing slash is an ordinary path.
func ambiguousPath(path string) string {
	if !strings.HasPrefix(path, "/") {
		return ""
	}
	for rest, more := path[1:], true; more; {
		var seg string
		seg, rest, more = strings.Cut(rest, "/")
		switch {
		case seg == "" && more:
			return "has an empty segment (//): send the path without it"
		case isDotSegment(seg):
			return "has a dot segment (. or .., also as %2e): send the path with dot segments removed"
		}
	}
	return ""
}

// isDotSegment reports whether an escaped segment is "." or "..", with
// any of the dots written as %2e or %2E (RFC 3986 §2.3, §5.2.4).
func isDotSegment(seg string) bool {
	if len(seg) > 6 {
		return false
	}
	seg = strings.ReplaceAll(strings.ReplaceAll(seg, "%2e", "."), "%2E", ".")
	return seg == "." || seg == ".."
}

// match reports whether the escaped path parts fit the route, and the
// path parameters' (unescaped) values. loose matches a variant: the
// template without its trailing slash, literals without regard to case.
func (rt *route) match(parts []string, loose bool) (map[string]string, bool) {
	segs := rt.segs
	if loose {
		segs = rt.loose
	}
	if len(parts) != len(segs) {
		return nil, false
	}
	var params map[string]string
	for i, s := range segs {
		p := parts[i]
		if s.param == "" {
			if !same(p, s.lit, loose) {
				if u, err := url.PathUnescape(p); err != nil || !same(u, s.lit, loose) {
					return nil, false
				}
			}
			continue
		}
		if len(p) < len(s.prefix)+len(s.suffix)+1 || !same(p[:len(s.prefix)], s.prefix, loose) || !same(p[len(p)-len(s.suffix):], s.suffix, loose) {
			return nil, false
		}
		v, err := url.PathUnescape(p[len(s.prefix) : len(p)-len(s.suffix)])
		if err != nil {
			return nil, false
		}
		if params == nil {
			params = make(map[string]string, len(segs))
		}
		params[s.param] = v
	}
	return params, true
}

// same compares a path's text with a template's, with fold without
// regard to case.
func same(a, b string, fold bool) bool { return a == b || fold && strings.EqualFold(a, b) }

// requestBody is an operation's declared body.
type requestBody struct {
	required bool
	media    []mediaType
	types    []string // the declared media types, for 415's detail
}

// mediaType is one declared content type; schema is nil unless the body
// is JSON with a schema to check.
type mediaType struct {
	pattern string
	schema  *jsonschema.Schema
	fast    *fastSchema // nil when the schema needs the general validator
}

func (b *builder) requestBody(node any, ptr string) (*requestBody, error) {
	m, ptr, err := b.resolve(node, ptr)
	if err != nil {
		return nil, err
	}
	rb := &requestBody{}
	rb.required, _ = m["required"].(bool)
	content, _ := m["content"].(map[string]any)
	for key, mtNode := range content {
		pattern := strings.ToLower(strings.TrimSpace(strings.Split(key, ";")[0]))
		mt := mediaType{pattern: pattern}
		mtMap, _ := mtNode.(map[string]any)
		if sch, ok := mtMap["schema"]; ok && isJSON(pattern) {
			if mt.schema, err = b.schema(sch, ptr+"/content/"+escape(key)+"/schema"); err != nil {
				return nil, err
			}
			mt.fast = compileFast(mt.schema)
		}
		rb.media = append(rb.media, mt)
		rb.types = append(rb.types, pattern)
	}
	// Exact types before type/* before */*.
	sort.SliceStable(rb.media, func(i, j int) bool {
		return strings.Count(rb.media[i].pattern, "*") < strings.Count(rb.media[j].pattern, "*")
	})
	sort.Strings(rb.types)
	return rb, nil
}

// isJSON reports whether a media type (or pattern) is JSON.
func isJSON(mt string) bool {
	return mt == "application/json" || strings.HasSuffix(mt, "+json") || mt == "*/*" || mt == "application/*"
}

// check checks the body of r against the declaration. It returns the
// body it read to check, or nil if it left the body alone.
func (rb *requestBody) check(r *http.Request, hasBody bool, mt string, limit int64) ([]byte, error) {
	if !hasBody {
		if rb.required {
			return nil, &Error{Status: http.StatusBadRequest, Detail: "the request's body does not match the API",
				Errors: []problem.FieldError{{Pointer: "/body", Detail: "a request body is required"}}}
		}
		return nil, nil
	}
	if len(rb.media) == 0 {
		return nil, nil
	}
	var media *mediaType
	for i := range rb.media {
		if matchMediaType([]string{rb.media[i].pattern}, mt) {
			media = &rb.media[i]
			break
		}
	}
	if media == nil {
		return nil, unsupported(mt, rb.types)
	}
	if media.schema == nil || !isJSON(mt) {
		return nil, nil
	}
	body, err := readBounded(r, limit)
	if err != nil {
		return nil, err
	}
	if errs := checkJSON(media.schema, media.fast, body, "/body"); len(errs) > 0 {
		return nil, &Error{Status: http.StatusBadRequest, Detail: "the request's body does not match the API", Errors: errs}
	}
	return body, nil
}

// checkJSON parses body as JSON and checks it against s: against its
// fast form if it has one, and against s itself, for the errors, when
// that refuses the body (or there is none).
func checkJSON(s *jsonschema.Schema, fast *fastSchema, body []byte, prefix string) []problem.FieldError {
	v, err := decodeJSON(body)
	var ne *numberError
	switch {
	case errors.As(err, &ne):
		return []problem.FieldError{ne.field(prefix)}
	case err != nil:
		return []problem.FieldError{{Pointer: prefix, Detail: jsonSyntaxDetail(err)}}
	}
	if fast != nil && fast.valid(v) {
		return nil
	}
	return schemaErrors(s.Validate(v), prefix)
}

// jsonSyntaxDetail says what is wrong with a body that is not JSON,
// without Go's type names.
func jsonSyntaxDetail(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("not valid JSON: %s (at byte %d)", se.Error(), se.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF):
		return "not valid JSON: the body ends too early"
	case strings.Contains(err.Error(), "after top-level value"):
		return "not valid JSON: more than one value"
	default:
		return "not valid JSON"
	}
}
