package caddymodule

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestTracingCaddyfile(t *testing.T) {
	for _, c := range []struct {
		in   string
		want *Tracing
		err  string
	}{
		{in: "tracing", want: &Tracing{}},
		{in: "tracing on", want: &Tracing{}},
		{in: "tracing off", want: &Tracing{Off: true}},
		{in: "tracing {\n route /api/*\n}", want: &Tracing{Route: "/api/*"}},
		{in: "tracing maybe", err: `tracing: "maybe" is not a setting`},
		{in: "tracing {\n sampler always\n}", err: `unrecognized tracing option "sampler"`},
		{in: "tracing {\n route\n}", err: "give the route's name"},
	} {
		t.Run(c.in, func(t *testing.T) {
			var h Handler
			err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("worker_pool node app.js {\n" + c.in + "\n}"))
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if *h.Tracing != *c.want {
				t.Fatalf("got %+v, want %+v", *h.Tracing, *c.want)
			}
		})
	}
}

// Tracing applies to requests before they reach the pool: changing it
// must keep the running workers.
func TestTracingIsNotPartOfThePool(t *testing.T) {
	a := Handler{Command: []string{"node", "app.js"}}
	b := a
	b.Tracing = &Tracing{Route: "/x"}
	ka, _ := a.poolKey()
	kb, _ := b.poolKey()
	if ka != kb {
		t.Fatal("turning tracing on changes the pool key: a reload would restart the workers")
	}
	if b.Tracing == nil {
		t.Fatal("poolKey changed the handler")
	}
}

func TestTracingDefaultFollowsTheEnvironment(t *testing.T) {
	for _, c := range []struct {
		env     map[string]string
		tracing *Tracing
		on      bool
	}{
		{env: nil, on: false},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "console"}, on: true},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://x"}, on: false},
		{env: map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, on: false},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, tracing: &Tracing{Off: true}, on: false},
		{env: nil, tracing: &Tracing{}, on: true},
	} {
		for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_TRACES_EXPORTER", "OTEL_SDK_DISABLED"} {
			t.Setenv(k, c.env[k])
		}
		h := Handler{Tracing: c.tracing}
		if got := h.tracingOn(); got != c.on {
			t.Errorf("env %v, tracing %+v: on = %v, want %v", c.env, c.tracing, got, c.on)
		}
	}
}
