package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// Stock reverse_proxy with "dynamic worker_pool": the pool (on unix
// sockets here) spawns and health-checks the Node workers, and
// reverse_proxy balances over them.
func TestDynamicUpstreamsFromAPool(t *testing.T) {
	app, err := filepath.Abs("../../examples/node/server.js")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	poolPort, proxyPort, unknownPort := testworker.FreePort(t), testworker.FreePort(t), testworker.FreePort(t)
	caddyfile := fmt.Sprintf(`{
	admin off
	auto_https off
	persist_config off
}

http://127.0.0.1:%d {
	reverse_proxy {
		dynamic worker_pool app
	}
}

http://127.0.0.1:%d {
	worker_pool {
		name app
		command node %s
		count 2
		listen unix
		health_uri /healthz
		health_interval 100ms
		stop_timeout 5s
	}
}

http://127.0.0.1:%d {
	reverse_proxy {
		dynamic worker_pool nope
	}
}
`, proxyPort, poolPort, app, unknownPort)
	path := filepath.Join(dir, "Caddyfile")
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	c := runCaddy(t, dir, proxyPort, path, nil)
	// The pool's own site and reverse_proxy reach the same two workers.
	viaProxy := waitPIDs(t, c, 2)
	direct := &caddyProc{url: fmt.Sprintf("http://127.0.0.1:%d", poolPort)}
	for pid := range waitPIDs(t, direct, 2) {
		if !viaProxy[pid] {
			t.Fatalf("pid %d serves the pool but not reverse_proxy (%v)", pid, viaProxy)
		}
	}

	// A pool that does not exist: reverse_proxy has no upstream, and the
	// log says why.
	_, code, _ := get(fmt.Sprintf("http://127.0.0.1:%d/", unknownPort))
	if code < 500 {
		t.Fatalf("dynamic worker_pool of an unknown pool answered %d", code)
	}
	testworker.Eventually(t, 5*time.Second, "a log line naming the unknown pool", func() bool {
		return strings.Contains(c.log.String(), `no worker_pool named \"nope\"`)
	})
}
