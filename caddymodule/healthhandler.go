package caddymodule

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	caddy.RegisterModule(HealthHandler{})
	httpcaddyfile.RegisterHandlerDirective("worker_pool_health", parseHealthCaddyfile)
	// A terminal handler; before worker_pool so that a matcher such as
	// /healthz reaches it first in a site that also has the pool.
	httpcaddyfile.RegisterDirectiveOrder("worker_pool_health", httpcaddyfile.Before, "reverse_proxy")
}

// HealthHandler answers with the health of a worker pool, for Kubernetes
// probes and Consul checks: 200 while at least MinHealthy of its workers
// are in rotation, 503 otherwise (also while no pool of that name is
// loaded), with a JSON body
// {"pool":…,"healthy":n,"total":m,"min_healthy":k}.
type HealthHandler struct {
	// Pool is the name of the worker_pool. Default: "default".
	Pool string `json:"pool,omitempty"`
	// MinHealthy is how many workers must be in rotation. Default: 1.
	MinHealthy int `json:"min_healthy,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (HealthHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.worker_pool_health",
		New: func() caddy.Module { return new(HealthHandler) },
	}
}

// Provision sets the defaults.
func (h *HealthHandler) Provision(caddy.Context) error {
	if h.Pool == "" {
		h.Pool = "default"
	}
	if h.MinHealthy == 0 {
		h.MinHealthy = 1
	}
	return nil
}

// Validate refuses a negative min_healthy.
func (h *HealthHandler) Validate() error {
	if h.MinHealthy < 0 {
		return fmt.Errorf("worker_pool_health: min_healthy %d is negative: give a number of workers such as 1", h.MinHealthy)
	}
	return nil
}

// poolHealth is the body of a health answer.
type poolHealth struct {
	Pool       string `json:"pool"`
	Healthy    int    `json:"healthy"`
	Total      int    `json:"total"`
	MinHealthy int    `json:"min_healthy"`
}

// writePoolHealth answers with the health of the named pool.
func writePoolHealth(w http.ResponseWriter, name string, minHealthy int) error {
	ph := poolHealth{Pool: name, MinHealthy: minHealthy}
	status := http.StatusServiceUnavailable
	if p := lookup(name); p != nil {
		ph.Healthy, ph.Total = p.Healthy(), p.Count()
		if ph.Healthy >= minHealthy {
			status = http.StatusOK
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	return json.NewEncoder(w).Encode(ph)
}

// ServeHTTP answers; it never calls next.
func (h *HealthHandler) ServeHTTP(w http.ResponseWriter, _ *http.Request, _ caddyhttp.Handler) error {
	return writePoolHealth(w, h.Pool, h.MinHealthy)
}

func parseHealthCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var hh HealthHandler
	err := hh.UnmarshalCaddyfile(h.Dispenser)
	return &hh, err
}

// UnmarshalCaddyfile reads:
//
//	worker_pool_health [<matcher>] [<pool name>] {
//	    min_healthy <n>
//	}
func (h *HealthHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if d.NextArg() {
		h.Pool = d.Val()
	}
	if d.NextArg() {
		return d.Errf("worker_pool_health: unexpected argument %q; give one pool name", d.Val())
	}
	for d.NextBlock(0) {
		switch d.Val() {
		case "min_healthy":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("worker_pool_health min_healthy: %q is not a count; give a positive integer", d.Val())
			}
			h.MinHealthy = n
			if d.NextArg() {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized worker_pool_health option %q; use min_healthy", d.Val())
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*HealthHandler)(nil)
	_ caddy.Validator             = (*HealthHandler)(nil)
	_ caddyhttp.MiddlewareHandler = (*HealthHandler)(nil)
	_ caddyfile.Unmarshaler       = (*HealthHandler)(nil)
)
