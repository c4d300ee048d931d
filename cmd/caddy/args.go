package main

import (
	"fmt"
	"os"
	"strings"

	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// nodeEnv names the node that runs a script given in the short form; the
// npm shim sets it to its own process.execPath, so that the workers run
// on the node that ran `npx caddy-workerpool`. Without it, node is looked
// up in PATH.
const nodeEnv = "CADDY_WORKERPOOL_NODE"

// scriptExtensions are the file names that the short form runs with node.
var scriptExtensions = []string{".js", ".mjs", ".cjs"}

// workerPoolFlags is the flag set of `caddy worker-pool`, taken from the
// registered command itself so that the short form knows every option it
// has, and which of them take a value.
func workerPoolFlags() *pflag.FlagSet {
	c, ok := caddycmd.Commands()["worker-pool"]
	if !ok {
		return pflag.NewFlagSet("worker-pool", pflag.ContinueOnError)
	}
	cmd := &cobra.Command{Use: c.Name}
	c.CobraFunc(cmd)
	return cmd.Flags()
}

// poolArgs rewrites the short form into the arguments of
// `caddy worker-pool`:
//
//	[options] app.js [args...]    worker-pool [options] --listen :$PORT -- node app.js [args...]
//	[options] -- cmd [args...]    worker-pool [options] --listen :$PORT -- cmd [args...]
//
// Options are worker-pool's own; --listen given wins over $PORT, and
// without either the pool listens on :8080. $PORT is read here, before
// the pool starts, because the pool sets each worker's PORT to that
// worker's own port. Anything else — a Caddy subcommand, --help, no
// arguments, an option worker-pool does not have — is returned as it is,
// for Caddy's command line to handle.
func poolArgs(args []string, getenv func(string) string, flags *pflag.FlagSet) ([]string, error) {
	if len(args) == 0 {
		return args, nil
	}
	var options, command []string
	listen := false
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			command = args[i+1:]
			if len(command) == 0 {
				return nil, fmt.Errorf("give the command to run after --, e.g. -- node server.js")
			}
			break
		}
		if strings.HasPrefix(a, "-") && len(a) > 1 {
			f, inline := lookupFlag(flags, a)
			if f == nil {
				return args, nil
			}
			options = append(options, a)
			if f.Name == "listen" {
				listen = true
			}
			if !inline && f.NoOptDefVal == "" {
				if i+1 == len(args) {
					return nil, fmt.Errorf("option %s needs a value", a)
				}
				i++
				options = append(options, args[i])
			}
			continue
		}
		if !isScript(a) {
			return args, nil
		}
		if _, err := os.Stat(a); err != nil {
			return nil, fmt.Errorf("script %s: %w", a, err)
		}
		node := getenv(nodeEnv)
		if node == "" {
			node = "node"
		}
		command = append([]string{node, a}, args[i+1:]...)
		break
	}
	if command == nil && len(options) == 0 {
		return args, nil
	}
	out := append([]string{"worker-pool"}, options...)
	if !listen {
		out = append(out, "--listen", defaultListen(getenv("PORT")))
	}
	if command != nil {
		out = append(out, "--")
		out = append(out, command...)
	}
	return out, nil
}

// lookupFlag finds the flag that a (--name, --name=value, -n, -n=value)
// names, and says whether its value is inline.
func lookupFlag(flags *pflag.FlagSet, a string) (f *pflag.Flag, inline bool) {
	name, _, inline := strings.Cut(strings.TrimLeft(a, "-"), "=")
	if strings.HasPrefix(a, "--") {
		return flags.Lookup(name), inline
	}
	if len(name) != 1 {
		return nil, false
	}
	return flags.ShorthandLookup(name), inline
}

func isScript(a string) bool {
	for _, ext := range scriptExtensions {
		if strings.HasSuffix(a, ext) && len(a) > len(ext) {
			return true
		}
	}
	return false
}

// defaultListen is the address the short form serves on: $PORT as PaaS
// platforms set it (a port number, or an address with a colon), else
// :8080.
func defaultListen(port string) string {
	switch {
	case port == "":
		return ":8080"
	case strings.Contains(port, ":"):
		return port
	default:
		return ":" + port
	}
}
