// Command caddy is Caddy with its standard modules and worker_pool.
// Build it with `go build ./cmd/caddy`, or add the module to any Caddy
// with `xcaddy build --with github.com/caddy-workerpool/caddy-workerpool`.
//
// Besides Caddy's own subcommands it takes the short form that the npm
// package and the release archives document:
//
//	caddy-workerpool [worker-pool options] <script.js|.mjs|.cjs> [args...]
//	caddy-workerpool [worker-pool options] -- <command> [args...]
//
// which is `caddy worker-pool` listening on $PORT (or :8080), with the
// script run by node (the one named by CADDY_WORKERPOOL_NODE, which the
// npm shim sets to the node that runs it).
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	// Caddy's standard modules.
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	// The worker_pool handler and directive.
	_ "github.com/caddy-workerpool/caddy-workerpool/caddymodule"
)

func main() {
	caddy.CustomVersion = "caddy-workerpool " + buildVersion() + ", Caddy"
	if name := strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe"); name != "caddy" && name != "" {
		// Help and completions name the binary as it was installed.
		caddy.CustomBinaryName = name
	}
	args, err := poolArgs(os.Args[1:], os.Getenv, workerPoolFlags())
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", filepath.Base(os.Args[0]), err)
		os.Exit(caddy.ExitCodeFailedStartup)
	}
	os.Args = append(os.Args[:1], args...)
	caddycmd.Main()
}
