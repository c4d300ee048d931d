package caddymodule

import (
	"strconv"
	"testing"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"

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
