package caddymodule

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Without request_timeout a worker's answer must start within a minute;
// off (a negative duration in JSON) takes the limit away.
func TestRequestTimeoutDefault(t *testing.T) {
	for _, c := range []struct {
		caddyfile string
		want      time.Duration
	}{
		{"worker_pool node app.js", DefaultRequestTimeout},
		{"worker_pool node app.js {\n request_timeout 2s\n}", 2 * time.Second},
		{"worker_pool node app.js {\n request_timeout off\n}", 0},
	} {
		var h Handler
		if err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser(c.caddyfile)); err != nil {
			t.Fatal(err)
		}
		if err := h.Validate(); err != nil {
			t.Fatalf("%q: %v", c.caddyfile, err)
		}
		if got := h.balancerConfig(nil).RequestTimeout; got != c.want {
			t.Errorf("%q: the balancer's request timeout is %v, want %v", c.caddyfile, got, c.want)
		}
	}
	if DefaultRequestTimeout != 60*time.Second {
		t.Errorf("DefaultRequestTimeout %v, want nginx's 60s", DefaultRequestTimeout)
	}
	off := Handler{Command: []string{"node", "app.js"}, RequestTimeout: caddy.Duration(-time.Second)}
	if err := off.Validate(); err != nil || off.balancerConfig(nil).RequestTimeout != 0 {
		t.Errorf("a negative request_timeout in JSON: %v, timeout %v", err, off.balancerConfig(nil).RequestTimeout)
	}
	var h Handler
	err := h.UnmarshalCaddyfile(caddyfile.NewTestDispenser("worker_pool node app.js {\n request_timeout 0\n}"))
	if err == nil || !strings.Contains(err.Error(), "off") {
		t.Errorf("request_timeout 0: %v; want an error that offers off", err)
	}
}

// caddy worker-pool gives clients 10 s for their headers and refuses
// requests that declare their body's length twice.
func TestWorkerPoolCommandBoundsSlowClients(t *testing.T) {
	cfg := workerPoolConfig(Handler{Name: "default", Command: []string{"node", "app.js"}}, ":8080", "off", false)
	var app struct {
		Servers map[string]struct {
			ReadHeaderTimeout time.Duration `json:"read_header_timeout"`
			ListenerWrappers  []struct {
				Wrapper string `json:"wrapper"`
			} `json:"listener_wrappers"`
		} `json:"servers"`
	}
	if err := json.Unmarshal(cfg.AppsRaw["http"], &app); err != nil {
		t.Fatal(err)
	}
	s := app.Servers["worker_pool"]
	if s.ReadHeaderTimeout != 10*time.Second || len(s.ListenerWrappers) != 1 || s.ListenerWrappers[0].Wrapper != "worker_pool_framing" {
		t.Fatalf("server %+v; want read_header_timeout 10s and the worker_pool_framing wrapper", s)
	}
}
