// Package validate checks HTTP requests before a worker sees them: size
// and shape limits (body, query, header count, methods, content types)
// and, optionally, an OpenAPI 3.0 or 3.1 document (route, parameters,
// JSON bodies). A refused request gets an RFC 9457 problem+json answer
// that names the failing part of the request with a pointer such as
// /body/items/0/qty, /query/limit or /path/orderId; a refused gRPC call
// gets a gRPC status (trailers-only) that says the same.
//
// It does not import Caddy: caddymodule adapts it, and any Go program
// can use it in front of an http.Handler.
package validate

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// DefaultSchemaBodyLimit bounds a body that is read into memory to be
// checked against a schema when Config.MaxBody is not set.
const DefaultSchemaBodyLimit = 1 << 20

// Config is what to check. The zero value checks nothing. It is the JSON
// config of the worker_pool handler's "validate" field and of the
// worker_pool_validate handler.
type Config struct {
	// MaxBody is the largest request body in bytes, whatever its media
	// type. A larger declared Content-Length gets 413 at once; a streamed
	// (chunked) body is cut off with 413 as it passes the limit, without
	// being buffered. A body checked against an OpenAPI schema is read
	// into memory, up to MaxBody or, if unset, 1 MiB.
	MaxBody int64 `json:"max_body,omitempty"`

	// MaxQuery is the longest raw query string in bytes; longer gets 414.
	MaxQuery int `json:"max_query,omitempty"`

	// MaxHeaders is the most header fields a request may carry; more
	// gets 431. Caddy's server already bounds their total size
	// (max_header_size).
	MaxHeaders int `json:"max_headers,omitempty"`

	// Methods are the methods allowed; others get 405 with Allow. HEAD
	// is allowed with GET.
	Methods []string `json:"methods,omitempty"`

	// ContentTypes are the media types a request body may have, compared
	// without parameters (charset …); "type/*" matches a whole type.
	// Others get 415.
	ContentTypes []string `json:"content_types,omitempty"`

	// OpenAPI is the path of an OpenAPI 3.0 or 3.1 document (YAML or
	// JSON, one file: only local $refs). Requests are matched to its
	// paths and operations; path, query and header parameters and JSON
	// bodies are checked against their schemas.
	OpenAPI string `json:"openapi,omitempty"`

	// UnknownRoutes is what happens to a request whose path matches no
	// path of the OpenAPI document: "reject" (the default, 404) or
	// "pass" (it goes on, with the limits checked). A known path with an
	// undeclared method always gets 405 with Allow. With "reject", a
	// body sent to an operation that declares no requestBody gets 400.
	UnknownRoutes string `json:"unknown_routes,omitempty"`
}

// Validator checks requests against a Config. It is safe for concurrent
// use.
type Validator struct {
	cfg          Config
	methods      []string
	allow        string
	contentTypes []string
	api          *api
}

// New checks cfg and loads its OpenAPI document. Errors name the field
// and what to change.
func New(cfg Config) (*Validator, error) {
	v := &Validator{cfg: cfg}
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("validate: %s: %s", field, fmt.Sprintf(format, a...)))
	}
	if cfg.MaxBody < 0 {
		bad("max_body", "%d is negative: give a size such as 1MiB", cfg.MaxBody)
	}
	if cfg.MaxQuery < 0 {
		bad("max_query", "%d is negative: give a length in bytes such as 2048", cfg.MaxQuery)
	}
	if cfg.MaxHeaders < 0 {
		bad("max_headers", "%d is negative: give a count such as 100", cfg.MaxHeaders)
	}
	for _, m := range cfg.Methods {
		if m == "" || strings.ContainsFunc(m, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
			bad("methods", "%q is not a method: give names such as GET POST", m)
			continue
		}
		v.methods = append(v.methods, strings.ToUpper(m))
	}
	if slices.Contains(v.methods, http.MethodGet) && !slices.Contains(v.methods, http.MethodHead) {
		v.methods = append(v.methods, http.MethodHead)
	}
	v.allow = strings.Join(v.methods, ", ")
	for _, ct := range cfg.ContentTypes {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || !strings.Contains(mt, "/") {
			bad("content_types", "%q is not a media type: give e.g. application/json or text/*", ct)
			continue
		}
		v.contentTypes = append(v.contentTypes, mt)
	}
	switch cfg.UnknownRoutes {
	case "", "reject", "pass":
	default:
		bad("unknown_routes", "%q is not a choice: use reject (404 for paths the OpenAPI document lacks) or pass", cfg.UnknownRoutes)
	}
	if cfg.UnknownRoutes != "" && cfg.OpenAPI == "" {
		bad("unknown_routes", "needs an OpenAPI document: set openapi <file>, or leave unknown_routes out")
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if cfg.OpenAPI != "" {
		a, err := loadAPI(cfg.OpenAPI)
		if err != nil {
			return nil, fmt.Errorf("validate: openapi: %w", err)
		}
		a.passUnknown = cfg.UnknownRoutes == "pass"
		v.api = a
	}
	return v, nil
}

// Error is a refused request: an HTTP status and the problem details
// that explain it to the client.
type Error struct {
	Status int
	Detail string
	Allow  string // for 405
	Errors []problem.FieldError

	// unreadable: the body could not be read (the client's connection
	// failed), rather than read and refused.
	unreadable bool
}

// unreadableBody is the Error of a body that could not be read.
func unreadableBody(detail string) *Error {
	return &Error{Status: http.StatusBadRequest, Detail: detail, unreadable: true}
}

func (e *Error) Error() string {
	if len(e.Errors) > 0 {
		return fmt.Sprintf("%d %s: %s: %s", e.Status, e.Detail, e.Errors[0].Pointer, e.Errors[0].Detail)
	}
	return fmt.Sprintf("%d %s", e.Status, e.Detail)
}

// Write sends e as application/problem+json.
func (e *Error) Write(w http.ResponseWriter) {
	if e.Allow != "" {
		w.Header().Set("Allow", e.Allow)
	}
	problem.Write(w, problem.Details{Status: e.Status, Detail: e.Detail, Errors: e.Errors})
}

// WriteGRPC sends e to a gRPC client in gRPC's terms: HTTP 200,
// trailers-only, with the grpc-status that fits (see GRPCCode) and a
// grpc-message that says what was refused, naming the failing fields.
func (e *Error) WriteGRPC(w http.ResponseWriter) {
	msg := e.Detail
	for _, f := range e.Errors {
		msg += "; " + f.Pointer + ": " + f.Detail
	}
	grpcstatus.Write(w, e.GRPCCode(), msg)
}

// GRPCCode is the gRPC status of the refusal: RESOURCE_EXHAUSTED for a
// size limit (body, query, header fields), UNIMPLEMENTED for a route or
// method the API does not serve, INTERNAL for a body that could not be
// read, INVALID_ARGUMENT for the rest (parameters, body, media type).
func (e *Error) GRPCCode() int {
	switch e.Status {
	case http.StatusRequestEntityTooLarge, http.StatusRequestURITooLong, http.StatusRequestHeaderFieldsTooLarge:
		return grpcstatus.ResourceExhausted
	case http.StatusNotFound, http.StatusMethodNotAllowed:
		return grpcstatus.Unimplemented
	}
	if e.unreadable {
		return grpcstatus.Internal
	}
	return grpcstatus.InvalidArgument
}

// routeKey is the type of RouteKey.
type routeKey struct{}

// RouteKey is the request context key under which a checked request
// carries its OpenAPI path template (a string such as "/orders/{id}").
var RouteKey = routeKey{}

// Route is the OpenAPI path template that r matched, or "" when it
// matched none (no document, or unknown_routes pass). Use it to name
// spans and label metrics without the cardinality of raw paths.
func Route(r *http.Request) string {
	s, _ := r.Context().Value(RouteKey).(string)
	return s
}

// Check validates r. It returns the request to pass on, which carries
// the matched route in its context (see Route) and, when the body was
// checked against a schema, a body with the same bytes; or an *Error.
// A streamed body with MaxBody set is limited as it is read: use Serve,
// which also turns a body cut off later into a 413 answer.
func (v *Validator) Check(r *http.Request) (*http.Request, error) {
	r, _, err := v.check(nil, r)
	return r, err
}

// Serve validates r. If r is refused it writes the problem to w and
// returns ok false; otherwise it returns the writer and request to pass
// on to the next handler. A gRPC call (content type application/grpc…)
// is answered in gRPC's terms instead (see Error.WriteGRPC), also when
// its streamed body passes MaxBody later.
func (v *Validator) Serve(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, bool) {
	grpc := grpcstatus.IsCall(r)
	r, lb, err := v.check(w, r)
	if err != nil {
		var e *Error
		if !errors.As(err, &e) {
			e = unreadableBody("the request could not be read")
		}
		if grpc {
			e.WriteGRPC(w)
		} else {
			e.Write(w)
		}
		return w, r, false
	}
	if lb != nil {
		w = &limitWriter{ResponseWriter: w, body: lb, grpc: grpc}
	}
	return w, r, true
}

// check validates r; w, if not nil, is the writer of its answer.
func (v *Validator) check(w http.ResponseWriter, r *http.Request) (*http.Request, *limitedBody, error) {
	if v.cfg.MaxQuery > 0 && len(r.URL.RawQuery) > v.cfg.MaxQuery {
		return r, nil, &Error{Status: http.StatusRequestURITooLong,
			Detail: fmt.Sprintf("the query string is longer than %d bytes", v.cfg.MaxQuery)}
	}
	if v.cfg.MaxHeaders > 0 {
		n := 0
		for _, vs := range r.Header {
			n += len(vs)
		}
		if n > v.cfg.MaxHeaders {
			return r, nil, &Error{Status: http.StatusRequestHeaderFieldsTooLarge,
				Detail: fmt.Sprintf("the request has %d header fields; at most %d are allowed", n, v.cfg.MaxHeaders)}
		}
	}
	if len(v.methods) > 0 && !slices.Contains(v.methods, r.Method) {
		return r, nil, &Error{Status: http.StatusMethodNotAllowed, Allow: v.allow,
			Detail: fmt.Sprintf("method %s is not allowed here", r.Method)}
	}
	var op *operation
	var path map[string]string
	route := ""
	if v.api != nil {
		var err error
		if op, route, path, err = v.api.match(r); err != nil {
			return r, nil, err
		}
	}
	hasBody := r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
	var mediaType string
	if hasBody {
		mediaType = requestMediaType(r)
		if len(v.contentTypes) > 0 && !matchMediaType(v.contentTypes, mediaType) {
			return r, nil, unsupported(mediaType, v.contentTypes)
		}
		if v.cfg.MaxBody > 0 && r.ContentLength > v.cfg.MaxBody {
			return r, nil, tooLarge(v.cfg.MaxBody)
		}
	}
	if op != nil {
		if errs := op.checkParams(r, path); len(errs) > 0 {
			return r, nil, &Error{Status: http.StatusBadRequest, Detail: "the request's parameters do not match the API", Errors: errs}
		}
		if op.body == nil && hasBody && !v.api.passUnknown {
			// The document says what the operation takes; with reject,
			// what it does not declare does not reach the worker.
			if err := noBody(r); err != nil {
				return r, nil, err
			}
			hasBody = false
		}
	}
	var ctx context.Context
	if route != "" {
		ctx = context.WithValue(r.Context(), RouteKey, route)
	}
	if op != nil && op.body != nil {
		body, err := op.body.check(r, hasBody, mediaType, v.schemaLimit())
		if err != nil {
			return r, nil, err
		}
		if body != nil {
			return withBody(r, ctx, body), nil, nil
		}
	}
	// Every body not read above (any media type, declared or not) that
	// streams is counted as the worker reads it, never held whole; one
	// with a Content-Length was refused above if too large.
	if hasBody && v.cfg.MaxBody > 0 && r.ContentLength < 0 {
		if ctx == nil {
			ctx = r.Context()
		}
		var cancel context.CancelFunc
		ctx, cancel = context.WithCancel(ctx)
		lb := newLimitedBody(w, r.Body, v.cfg.MaxBody, cancel)
		r = r.WithContext(ctx)
		r.Body = lb
		return r, lb, nil
	}
	if ctx != nil {
		r = r.WithContext(ctx)
	}
	return r, nil, nil
}

// noBody refuses r's body unless it is empty: a streamed body is read
// for its first byte to tell.
func noBody(r *http.Request) error {
	if r.ContentLength < 0 {
		var one [1]byte
		switch _, err := io.ReadFull(r.Body, one[:]); err {
		case io.EOF:
			return nil
		case nil:
		default:
			return unreadableBody("the request body could not be read")
		}
	}
	return &Error{Status: http.StatusBadRequest, Detail: "the request's body does not match the API",
		Errors: []problem.FieldError{{Pointer: "/body", Detail: "this operation takes no request body"}}}
}

// schemaLimit bounds a body read into memory for a schema check.
func (v *Validator) schemaLimit() int64 {
	if v.cfg.MaxBody > 0 {
		return v.cfg.MaxBody
	}
	return DefaultSchemaBodyLimit
}

func unsupported(mt string, accepted []string) *Error {
	if mt == "" {
		return &Error{Status: http.StatusUnsupportedMediaType,
			Detail: "the request body has no Content-Type; use " + strings.Join(accepted, ", ")}
	}
	return &Error{Status: http.StatusUnsupportedMediaType,
		Detail: fmt.Sprintf("content type %q is not accepted; use %s", mt, strings.Join(accepted, ", "))}
}

func tooLarge(limit int64) *Error {
	return &Error{Status: http.StatusRequestEntityTooLarge,
		Detail: fmt.Sprintf("the request body is larger than %d bytes", limit)}
}

// requestMediaType is r's Content-Type without parameters, lower case;
// "" when absent or unparsable.
func requestMediaType(r *http.Request) string {
	ct := r.Header.Get("Content-Type")
	if ct == "" {
		return ""
	}
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return ""
	}
	return mt
}

// matchMediaType reports whether mt matches one of the patterns: equal,
// "type/*", or "*/*".
func matchMediaType(patterns []string, mt string) bool {
	if mt == "" {
		return false
	}
	for _, p := range patterns {
		if p == mt || p == "*/*" {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "/*"); ok && strings.HasPrefix(mt, prefix+"/") {
			return true
		}
	}
	return false
}
