package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// Two different pools with one name are refused at load: one of them
// would vanish from the admin API, the status page and metrics. The
// Caddyfile names the lines of both, a JSON config their servers and
// commands.
func TestTwoPoolsWithOneName(t *testing.T) {
	pool := func(name, extra string) string {
		return fmt.Sprintf("worker_pool {\n\t\t%s\n\t\tcommand %s\n\t\tenv %s serve\n\t\t%s\n\t}", name, testworker.Command(), testworker.ModeEnv, extra)
	}
	caddyfile := func(a, b string) string {
		return fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n}\n\nhttp://127.0.0.1:%d {\n\t%s\n}\n\nhttp://127.0.0.1:%d {\n\t%s\n}\n",
			testworker.FreePort(t), a, testworker.FreePort(t), b)
	}
	for _, c := range []struct {
		name, a, b, want string
	}{
		{"named", pool("name app", "count 1"), pool("name app", "count 2"), `name: "app"`},
		{"unnamed", pool("", "count 1"), pool("", "count 2"), `name: "default"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := adapt(caddyfile(c.a, c.b))
			if err == nil || !strings.Contains(err.Error(), c.want) ||
				!strings.Contains(err.Error(), "at Caddyfile:7") || !strings.Contains(err.Error(), "at Caddyfile:16") {
				t.Fatalf("adapt: %v; want an error about %s at Caddyfile:7 and Caddyfile:16", err, c.want)
			}
		})
	}
	// The very same pool twice is one pool, shared.
	if _, err := adapt(caddyfile(pool("name app", "count 1"), pool("name app", "count 1"))); err != nil {
		t.Fatalf("one pool in two sites: %v", err)
	}

	// JSON is checked when the config is provisioned.
	server := func(port int, env string) string {
		return fmt.Sprintf(`{"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},"routes":[{"handle":[
			{"handler":"worker_pool","name":"app","command":[%q],"count":1,"health_interval":"50ms",
			 "env":{%q:"serve","GORACE":"atexit_sleep_ms=0","V":%q}}]}]}`, port, testworker.Command(), testworker.ModeEnv, env)
	}
	config := func(envs ...string) []byte {
		servers := map[string]json.RawMessage{}
		for i, env := range envs {
			servers[string(rune('a'+i))] = json.RawMessage(server(testworker.FreePort(t), env))
		}
		b, _ := json.Marshal(map[string]any{"admin": map[string]any{"disabled": true},
			"apps": map[string]any{"http": map[string]any{"servers": servers}}})
		return b
	}
	err := caddy.Load(config("1", "2"), true)
	if err == nil {
		stop(t)
		t.Fatal("two pools named app loaded")
	}
	for _, want := range []string{`name: "app"`, "(server a on 127.0.0.1:", "(server b on 127.0.0.1:", "the pool running " + testworker.Command()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}

	// A reload may change the pool that has a name: the old config's
	// pool and the new one's coexist until the old config stops.
	if err := caddy.Load(config("1"), true); err != nil {
		t.Fatal(err)
	}
	defer stop(t)
	if err := caddy.Load(config("2"), true); err != nil {
		t.Fatalf("reload with a changed pool of the same name: %v", err)
	}
}
