package caddymodule

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
)

// costKey is the balancer's CostKey: what names a request's route, whose
// cost the pool learns. The OpenAPI route that validation matched comes
// first, then the cost_key placeholder's value; "" leaves it to the
// balancer (the first path segment).
func (h *Handler) costKey() func(*http.Request) string {
	tmpl := h.CostKey
	return func(r *http.Request) string {
		if route := matchedRoute(r); route != "" {
			return route
		}
		if tmpl == "" {
			return ""
		}
		repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
		if repl == nil {
			return ""
		}
		return repl.ReplaceKnown(tmpl, "")
	}
}

// parseScheduling reads "schedule fifo|cost" and "cost_key <placeholder>".
func (h *Handler) parseScheduling(d *caddyfile.Dispenser, opt string) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	if opt == "cost_key" {
		h.CostKey = d.Val()
		return nil
	}
	switch d.Val() {
	case balancer.ScheduleCost, balancer.ScheduleFIFO:
		h.Schedule = d.Val()
		return nil
	}
	return d.Errf("schedule: %q is not a schedule; use cost (the cheapest expected request first) or fifo (first come, first served)", d.Val())
}
