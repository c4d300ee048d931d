// Command caddy is Caddy with its standard modules and worker_pool.
// Build it with `go build ./cmd/caddy`, or add the module to any Caddy
// with `xcaddy build --with github.com/caddy-workerpool/caddy-workerpool`.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The worker_pool handler and directive.
	_ "github.com/caddy-workerpool/caddy-workerpool/caddymodule"
)

func main() {
	caddycmd.Main()
}
