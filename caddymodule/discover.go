package caddymodule

import (
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/health/consul"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Discovery holds the sources of workers other than spawning, and the
// pool's registration in Consul. Handler embeds it: its fields are
// options of worker_pool. A pool has exactly one source: command,
// discover or consul.
type Discovery struct {
	// Discover lists where a sidecar finds workers that something else
	// started (the app container of the pod): "127.0.0.1:3001",
	// port ranges "127.0.0.1:3001-3016", and unix sockets
	// "unix//run/app/*.sock" (globs are expanded again every
	// health_interval). Hosts must be loopback. Every candidate is
	// health-checked all the time; those that pass serve.
	Discover []string `json:"discover,omitempty"`

	// Consul finds workers as the passing instances of a Consul service.
	// Each is also health-checked by the pool before it serves.
	Consul *ConsulSource `json:"consul,omitempty"`

	// ConsulRegister registers this Caddy with the local Consul agent,
	// with an HTTP check on the pool's health endpoint (see the
	// worker_pool_health handler), for as long as the config is loaded.
	ConsulRegister *ConsulRegister `json:"consul_register,omitempty"`

	registrationKey string // in registrations; empty without ConsulRegister
}

// ConsulSource says which Consul service's passing instances serve.
type ConsulSource struct {
	// Service is the Consul service name.
	Service string `json:"service,omitempty"`
	// Tags an instance must all have.
	Tags []string `json:"tags,omitempty"`
	// Datacenter to query. Default: the agent's.
	Datacenter string `json:"datacenter,omitempty"`
	// Address of the Consul HTTP API (host:port or URL). Default:
	// CONSUL_HTTP_ADDR, else 127.0.0.1:8500.
	Address string `json:"address,omitempty"`
	// Token is an ACL token, TokenFile a file that holds one (at most one
	// of them). Default: CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE.
	// Placeholders such as {env.CONSUL_TOKEN} are replaced. Never logged.
	Token     string `json:"token,omitempty"`
	TokenFile string `json:"token_file,omitempty"`
}

// spawns reports whether the pool spawns its workers (command).
func (h *Handler) spawns() bool { return len(h.Discover) == 0 && h.Consul == nil }

// spawnOnly are the options that only mean something for spawned
// workers, with whether they are set.
func (h *Handler) spawnOnly() map[string]bool {
	return map[string]bool{
		"count": h.Count != 0, "dir": h.Dir != "", "env": len(h.Env) > 0, "listen": h.Listen != "", "bind_check": h.BindCheck != "",
		"unhealthy_kill_after":     h.UnhealthyKillAfter != 0,
		"max_consecutive_failures": h.MaxConsecutiveFailures != 0,
		"max_requests":             h.MaxRequests != 0 || h.MaxRequestsJitter != 0,
		"max_memory":               h.MaxMemory != 0, "max_lifetime": h.MaxLifetime != 0, "watch": len(h.Watch) > 0,
	}
}

// validateSource checks that exactly one source is set, and its options.
func (h *Handler) validateSource(bad func(field, format string, a ...any)) {
	var set []string
	if len(h.Command) > 0 {
		set = append(set, "command")
	}
	if len(h.Discover) > 0 {
		set = append(set, "discover")
	}
	if h.Consul != nil {
		set = append(set, "consul")
	}
	switch {
	case len(set) == 0:
		bad("command", `required: set the program to run, e.g. "command node server.js"; or find workers started elsewhere with discover or consul`)
		return
	case len(set) > 1:
		bad(strings.Join(set, ", "), "a pool has one source of workers: keep one of command, discover and consul")
		return
	case set[0] == "command":
		if strings.TrimSpace(h.Command[0]) == "" {
			bad("command", `required: set the program to run, e.g. "command node server.js"`)
		}
		return
	}
	for opt, isSet := range h.spawnOnly() {
		if isSet {
			bad(opt, "applies to spawned workers only; remove it, %s finds workers that something else runs", set[0])
		}
	}
	if len(h.Discover) > 0 {
		if _, err := health.ParseCandidates(h.Discover); err != nil {
			bad("discover", "%v", err)
		}
	}
	if c := h.Consul; c != nil {
		if err := h.consulService(caddy.NewReplacer()).Validate(); err != nil {
			bad("consul", "%v", err)
		}
	}
}

func (h *Handler) consulService(repl *caddy.Replacer) consul.Service {
	c := h.Consul
	return consul.Service{
		Agent: consul.Agent{
			Address: repl.ReplaceKnown(c.Address, ""), Datacenter: c.Datacenter,
			Token: repl.ReplaceKnown(c.Token, ""), TokenFile: repl.ReplaceKnown(c.TokenFile, ""),
		},
		Name: c.Service, Tags: c.Tags,
	}
}

// discoveryConfig is poolConfig for a pool whose workers are found.
func (h *Handler) discoveryConfig(log *zap.Logger) (pool.Config, error) {
	hc := h.healthConfig()
	var src pool.Source
	if len(h.Discover) > 0 {
		cands, err := health.ParseCandidates(h.Discover)
		if err != nil {
			return pool.Config{}, fmt.Errorf("worker_pool %q: %w", h.Name, err)
		}
		cands.Rescan = hc.WithDefaults().Interval
		src = cands
	} else {
		w, err := consul.NewWatcher(h.consulService(caddy.NewReplacer()), log)
		if err != nil {
			return pool.Config{}, fmt.Errorf("worker_pool %q: consul: %w", h.Name, err)
		}
		src = w
	}
	return pool.Config{
		Name:           h.Name,
		Source:         src,
		Workers:        worker.Spec{StopTimeout: time.Duration(h.StopTimeout)},
		Health:         hc,
		StartupTimeout: time.Duration(h.StartupTimeout),
		Balancer:       h.balancerConfig(log),
	}, nil
}

// unmarshalDiscovery reads the options discover, consul and
// consul_register; it reports false for any other option.
func (h *Handler) unmarshalDiscovery(d *caddyfile.Dispenser, opt string) (bool, error) {
	switch opt {
	case "discover":
		args := d.RemainingArgs()
		if len(args) == 0 {
			return true, d.Errf("discover: give addresses, port ranges or unix socket globs, e.g. 'discover 127.0.0.1:3001-3004 unix//run/app/*.sock'")
		}
		if _, err := health.ParseCandidates(args); err != nil {
			return true, d.Errf("%v", err)
		}
		h.Discover = append(h.Discover, args...)
	case "consul":
		if !d.NextArg() {
			return true, d.Errf("consul: give the service name, e.g. 'consul app { tags web }'")
		}
		c := &ConsulSource{Service: d.Val()}
		if d.NextArg() {
			return true, d.Errf("consul: unexpected argument %q after the service name; options go in a block", d.Val())
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			sub := d.Val()
			args := d.RemainingArgs()
			if len(args) == 0 {
				return true, d.Errf("consul %s: give a value", sub)
			}
			if sub != "tags" && len(args) != 1 {
				return true, d.Errf("consul %s: want one value, got %d", sub, len(args))
			}
			switch sub {
			case "tags":
				c.Tags = append(c.Tags, args...)
			case "datacenter":
				c.Datacenter = args[0]
			case "address":
				c.Address = args[0]
			case "token":
				c.Token = args[0]
			case "token_file":
				c.TokenFile = args[0]
			default:
				return true, d.Errf("unrecognized consul option %q; use tags, datacenter, address, token or token_file", sub)
			}
		}
		h.Consul = c
	case "consul_register":
		r, err := unmarshalRegister(d)
		if err != nil {
			return true, err
		}
		h.ConsulRegister = r
	default:
		return false, nil
	}
	return true, nil
}
