// Package caddyworkerpool is the module's root package, the one that
// `xcaddy build --with github.com/caddy-workerpool/caddy-workerpool`
// imports: importing it registers the worker_pool handler, its Caddyfile
// directives and the admin API (package caddymodule).
package caddyworkerpool

import (
	// Registers the Caddy modules.
	_ "github.com/caddy-workerpool/caddy-workerpool/caddymodule"
)
