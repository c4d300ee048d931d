package caddymodule

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/dustin/go-humanize"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-workerpool/caddy-workerpool/validate"
)

// RoutePlaceholder names the placeholder that holds the OpenAPI path
// template a request matched, e.g. "/orders/{id}": for access logs
// (log_append), spans and metric labels.
const RoutePlaceholder = "http.worker_pool.route"

func init() {
	caddy.RegisterModule(ValidateHandler{})
	httpcaddyfile.RegisterHandlerDirective("worker_pool_validate", parseValidateDirective)
	// After authentication and request rewriting (it sees what the
	// upstream will see), before anything that answers: respond,
	// reverse_proxy, worker_pool, file_server.
	httpcaddyfile.RegisterDirectiveOrder("worker_pool_validate", httpcaddyfile.After, "request_header")
}

// provisionValidation loads the validate block, if any. A broken OpenAPI
// document refuses the config before any worker starts.
func (h *Handler) provisionValidation(ctx caddy.Context) error {
	if h.Validation == nil {
		return nil
	}
	v, err := validate.New(*h.Validation)
	if err != nil {
		return fmt.Errorf("worker_pool %q: %w", h.Name, err)
	}
	h.validator = v
	warnWithoutStrictFraming(ctx, h.logger)
	return nil
}

// serveValidation checks r; a refused request has its answer written.
// A request that passes carries its route in the placeholder.
func serveValidation(v *validate.Validator, w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request, bool) {
	w, r, ok := v.Serve(w, r)
	if !ok {
		return w, r, false
	}
	if route := validate.Route(r); route != "" {
		if repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); repl != nil {
			repl.Set(RoutePlaceholder, route)
		}
	}
	return w, r, true
}

// matchedRoute is the OpenAPI route that validation matched for r, or "".
func matchedRoute(r *http.Request) string {
	if repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer); ok {
		if v, ok := repl.Get(RoutePlaceholder); ok {
			if s, ok := v.(string); ok {
				return s
			}
		}
	}
	return ""
}

// ValidateHandler checks requests as worker_pool's validate block does,
// in front of any handler (reverse_proxy, file_server, …): limits and an
// optional OpenAPI document. Refused requests get problem+json (a gRPC
// call a gRPC status: INVALID_ARGUMENT, RESOURCE_EXHAUSTED for a size
// limit, …) and never reach the next handler.
type ValidateHandler struct {
	validate.Config

	validator *validate.Validator
}

// CaddyModule returns the Caddy module information.
func (ValidateHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.worker_pool_validate",
		New: func() caddy.Module { return new(ValidateHandler) },
	}
}

// Provision loads the config and its OpenAPI document.
func (vh *ValidateHandler) Provision(ctx caddy.Context) error {
	v, err := validate.New(vh.Config)
	if err != nil {
		return fmt.Errorf("worker_pool_validate: %w", err)
	}
	vh.validator = v
	warnWithoutStrictFraming(ctx, ctx.Logger())
	return nil
}

// ServeHTTP checks r and hands it to next, or answers it.
func (vh *ValidateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request, next caddyhttp.Handler) error {
	w, r, ok := serveValidation(vh.validator, w, r)
	if !ok {
		return nil
	}
	return next.ServeHTTP(w, r)
}

func parseValidateDirective(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var vh ValidateHandler
	err := vh.UnmarshalCaddyfile(h.Dispenser)
	return &vh, err
}

// UnmarshalCaddyfile reads
//
//	worker_pool_validate [<matcher>] {
//	    max_body       <size>
//	    max_query      <bytes>
//	    max_headers    <n>
//	    methods        <method...>
//	    content_types  <media type...>
//	    openapi        <file>
//	    unknown_routes reject|pass
//	}
func (vh *ValidateHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	cfg, err := parseValidateBlock(d)
	if err != nil {
		return err
	}
	vh.Config = *cfg
	return nil
}

// parseValidateBlock reads a validate { … } block; the dispenser is on
// the token that opens it.
func parseValidateBlock(d *caddyfile.Dispenser) (*validate.Config, error) {
	if d.NextArg() {
		return nil, d.Errf("validate: unexpected argument %q; the options go in a block: validate { max_body 1MiB … }", d.Val())
	}
	cfg := &validate.Config{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		args := d.RemainingArgs()
		one := func() (string, error) {
			if len(args) != 1 {
				return "", d.Errf("validate %s: want one value, got %d", opt, len(args))
			}
			return args[0], nil
		}
		switch opt {
		case "max_body":
			v, err := one()
			if err != nil {
				return nil, err
			}
			size, err := humanize.ParseBytes(v)
			if err != nil || size == 0 {
				return nil, d.Errf("validate max_body: %q is not a size; write e.g. 1MiB or 512KB", v)
			}
			cfg.MaxBody = int64(size)
		case "max_query", "max_headers":
			v, err := one()
			if err != nil {
				return nil, err
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return nil, d.Errf("validate %s: %q is not a positive integer", opt, v)
			}
			if opt == "max_query" {
				cfg.MaxQuery = n
			} else {
				cfg.MaxHeaders = n
			}
		case "methods":
			if len(args) == 0 {
				return nil, d.Errf("validate methods: give one or more methods, e.g. 'methods GET POST'")
			}
			for _, m := range args {
				cfg.Methods = append(cfg.Methods, strings.ToUpper(m))
			}
		case "content_types":
			if len(args) == 0 {
				return nil, d.Errf("validate content_types: give one or more media types, e.g. 'content_types application/json'")
			}
			cfg.ContentTypes = append(cfg.ContentTypes, args...)
		case "openapi":
			v, err := one()
			if err != nil {
				return nil, err
			}
			cfg.OpenAPI = v
		case "unknown_routes":
			v, err := one()
			if err != nil {
				return nil, err
			}
			if v != "reject" && v != "pass" {
				return nil, d.Errf("validate unknown_routes: %q is not a choice; use reject or pass", v)
			}
			cfg.UnknownRoutes = v
		default:
			return nil, d.Errf("unrecognized validate option %q; use max_body, max_query, max_headers, methods, content_types, openapi or unknown_routes", opt)
		}
	}
	return cfg, nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*ValidateHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*ValidateHandler)(nil)
	_ caddyfile.Unmarshaler       = (*ValidateHandler)(nil)
)
