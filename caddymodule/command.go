package caddymodule

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/spf13/cobra"
	"go.uber.org/zap"
)

func init() {
	caddycmd.RegisterCommand(caddycmd.Command{
		Name:  "worker-pool",
		Usage: `[--listen <addr>] [--workers <n>] [--max-workers <n>|auto] [--health-uri <path>] [--max-inflight <n>|auto] [--access-log] [--admin <addr>|off] -- <command> [<args...>]`,
		Short: "Serves an app through a pool of worker processes",
		Long: `
Runs <command> as a pool of worker processes (one per CPU by default) and
serves plain HTTP on --listen, balancing each request to a healthy worker
that is free. Each worker gets PORT (and HOST=127.0.0.1), WORKER_ID and
WORKER_COUNT in its environment. Stop with Ctrl-C: the workers stop too.

  caddy worker-pool --listen :8080 --health-uri /healthz -- node server.js

With --max-workers above --workers the pool starts more workers while
requests keep waiting for a free one, and stops them again once they
have not been needed for 30s.

For TLS, more sites or any other option, write a Caddyfile with the
worker_pool directive instead.
`,
		CobraFunc: func(cmd *cobra.Command) {
			cmd.Flags().StringP("listen", "l", ":8080", "Address to serve HTTP on")
			cmd.Flags().IntP("workers", "w", 0, "Number of workers (default: one per CPU); with --max-workers, the number always running")
			cmd.Flags().String("max-workers", "", "Most workers while requests queue: a number at least --workers, or auto for four per CPU (default: --workers, no scaling)")
			cmd.Flags().String("health-uri", "", "Path a worker must answer with 2xx to be in rotation (default: a connect check)")
			cmd.Flags().String("max-inflight", "auto", "Requests one worker may hold at once: a number (0 for no limit) or auto")
			cmd.Flags().Bool("access-log", false, "Log every request")
			cmd.Flags().String("admin", caddy.DefaultAdminListen, "Admin endpoint address (the pool's status and restart API), or off")
			cmd.RunE = caddycmd.WrapCommandFuncForCobra(cmdWorkerPool)
		},
	})
}

func cmdWorkerPool(fs caddycmd.Flags) (int, error) {
	caddy.TrapSignals()
	command := fs.Args()
	if len(command) == 0 {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("give the command to run after --, e.g. caddy worker-pool -- node server.js")
	}
	listen := fs.String("listen")
	if _, err := caddy.ParseNetworkAddress(listen); err != nil || !strings.Contains(listen, ":") {
		return caddy.ExitCodeFailedStartup, fmt.Errorf("--listen %q: give an address such as :8080 or 127.0.0.1:8080", listen)
	}
	h := Handler{Name: "default", Command: command, Count: fs.Int("workers"), HealthURI: fs.String("health-uri")}
	switch v := fs.String("max-inflight"); v {
	case "auto":
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--max-inflight %q: give a number (0 for no limit) or auto", v)
		}
		h.MaxInflight = &Limit{N: n}
	}
	switch v := fs.String("max-workers"); v {
	case "":
	case "auto":
		h.MaxCount = &WorkerCeiling{Auto: true}
	default:
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return caddy.ExitCodeFailedStartup, fmt.Errorf("--max-workers %q: give a number of workers at least --workers, or auto", v)
		}
		h.MaxCount = &WorkerCeiling{N: n}
	}
	if err := h.Validate(); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	cfg := workerPoolConfig(h, listen, fs.String("admin"), fs.Bool("access-log"))
	if err := caddy.Run(cfg); err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	if !caddy.Exiting() {
		caddy.Log().Info("worker pool serving", zap.String("listen", listen), zap.Strings("command", command))
		fmt.Printf("worker pool serving on %s: %s\n", listen, strings.Join(command, " "))
	}
	select {}
}

// commandReadHeaderTimeout is the time a client of caddy worker-pool has
// to send a request's headers: Caddy's default is a minute, for which
// connections that trickle their headers stay open.
const commandReadHeaderTimeout = 10 * time.Second

// workerPoolConfig is the config that caddy worker-pool runs: h on one
// plain-HTTP server, with the framing wrapper and a short header timeout
// for slow clients.
func workerPoolConfig(h Handler, listen, admin string, accessLog bool) *caddy.Config {
	server := &caddyhttp.Server{
		Listen:              []string{listen},
		AutoHTTPS:           &caddyhttp.AutoHTTPSConfig{Disabled: true},
		Routes:              caddyhttp.RouteList{{HandlersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(h, "handler", "worker_pool", nil)}}},
		ReadHeaderTimeout:   caddy.Duration(commandReadHeaderTimeout),
		ListenerWrappersRaw: []json.RawMessage{caddyconfig.JSONModuleObject(StrictFraming{}, "wrapper", "worker_pool_framing", nil)},
	}
	if accessLog {
		server.Logs = &caddyhttp.ServerLogConfig{}
	}
	httpApp := caddyhttp.App{Servers: map[string]*caddyhttp.Server{"worker_pool": server}}
	cfg := &caddy.Config{
		Admin:   &caddy.AdminConfig{Listen: admin},
		AppsRaw: caddy.ModuleMap{"http": caddyconfig.JSON(httpApp, nil)},
	}
	if admin == "off" {
		cfg.Admin = &caddy.AdminConfig{Disabled: true}
	}
	persist := false
	cfg.Admin.Config = &caddy.ConfigSettings{Persist: &persist}
	return cfg
}
