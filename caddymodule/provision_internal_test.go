package caddymodule

import (
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// A Provision that fails after it took the pool (here: a tracing
// exporter that does not exist) must let go of it: Caddy calls Cleanup
// on a failed Provision, and the workers must not run on until Caddy
// exits.
func TestFailedProvisionReleasesThePool(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "bogus")
	port := testworker.FreePort(t)
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(`{
	admin off
	persist_config off
	auto_https off
}
http://127.0.0.1:`+strconv.Itoa(port)+` {
	worker_pool {
		command `+testworker.Command()+`
		env `+testworker.ModeEnv+` serve
		count 1
		startup_timeout 2s
	}
}
`), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err == nil {
		_ = caddy.Stop()
		t.Fatal("a config with a bogus trace exporter loaded")
	}
	held := 0
	pools.Range(func(_, _ any) bool { held++; return true })
	if held != 0 {
		t.Fatalf("%d pools still held after the failed load", held)
	}
}

// Found workers are probed as spawned ones are: every health option
// reaches the pool's config whatever the workers' source.
func TestHealthOptionsOfFoundWorkers(t *testing.T) {
	base := Handler{HealthGRPC: true, HealthGRPCService: "pool.example.Demo", HealthInterval: caddy.Duration(time.Second), HealthPasses: 2, HealthFails: 3}
	spawned, found := base, base
	spawned.Command = []string{"node", "server.js"}
	found.Discover = []string{"127.0.0.1:3001-3002"}
	for name, h := range map[string]Handler{"spawned": spawned, "discover": found} {
		cfg, err := h.poolConfig(zap.NewNop())
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if want := base.healthConfig(); cfg.Health != want {
			t.Errorf("%s: health %+v, want %+v", name, cfg.Health, want)
		}
		if !cfg.Health.GRPC || cfg.Health.GRPCService != "pool.example.Demo" {
			t.Errorf("%s: health_grpc lost: %+v", name, cfg.Health)
		}
	}
}
