package caddymodule

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// A request's route, for its cost: the OpenAPI route that validation
// matched, else the cost_key placeholder's value, else none (the
// balancer then takes the first path segment).
func TestCostKey(t *testing.T) {
	for _, c := range []struct {
		costKey, route, want string
	}{
		{"", "", ""},
		{"{http.request.header.X-Operation}", "", "report"},
		{"{http.request.header.X-Operation}", "/orders/{id}", "/orders/{id}"},
		{"", "/orders/{id}", "/orders/{id}"},
	} {
		r := httptest.NewRequest("GET", "/orders/42?x=1", nil)
		r.Header.Set("X-Operation", "report")
		repl := caddy.NewReplacer()
		r = r.WithContext(context.WithValue(r.Context(), caddy.ReplacerCtxKey, repl))
		repl.Set("http.request.header.X-Operation", r.Header.Get("X-Operation"))
		if c.route != "" {
			repl.Set(RoutePlaceholder, c.route)
		}
		h := &Handler{CostKey: c.costKey}
		if got := h.costKey()(r); got != c.want {
			t.Errorf("cost_key %q, route %q: key %q, want %q", c.costKey, c.route, got, c.want)
		}
	}
}
