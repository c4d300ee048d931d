package caddymodule

import (
	"fmt"
	"strconv"

	"github.com/dustin/go-humanize"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("worker_pool", parseCaddyfile)
	// A terminal handler like reverse_proxy: no global "order" needed.
	httpcaddyfile.RegisterDirectiveOrder("worker_pool", httpcaddyfile.After, "reverse_proxy")
}

func parseCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var handler Handler
	if err := handler.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return &handler, handler.claimNameInCaddyfile(h)
}

// claimNameInCaddyfile refuses a name that a different pool of the same
// Caddyfile has (see names.go), naming both lines. Named routes are
// adapted with a State of their own; provisioning checks those.
func (h *Handler) claimNameInCaddyfile(helper httpcaddyfile.Helper) error {
	if helper.IsNamedRoute() {
		return nil
	}
	named := *h
	if named.Name == "" {
		named.Name = "default"
	}
	key, err := named.poolKey()
	if err != nil {
		return err
	}
	names, _ := helper.State["worker_pool_names"].(poolNames)
	if names == nil {
		names = poolNames{}
		helper.State["worker_pool_names"] = names
	}
	helper.Reset()
	helper.Next()
	return names.claim(named.Name, key, fmt.Sprintf("at %s:%d", helper.File(), helper.Line()))
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	worker_pool [<matcher>] [<program> [<args...>]] {
//	    name            <name>
//	    command         <program> [<args...>]
//	    dir             <path>
//	    env             <key> <value>
//	    count           <n>|auto
//	    max_count       <n>|auto
//	    scale_idle      <duration>
//	    max_total_memory <size>
//	    listen          tcp|unix
//	    bind_check      warn|refuse|off
//	    startup_timeout <duration>
//	    stop_timeout    <duration>
//	    unhealthy_kill_after <duration>
//	    max_consecutive_failures <n>
//	    request_timeout <duration>|off
//	    watch           <glob...>
//	    max_requests    <n> [jitter <n>]
//	    max_memory      <size>
//	    max_lifetime    <duration>
//	    health_uri      <path>
//	    health_interval <duration>
//	    health_timeout  <duration>
//	    health_passes   <n>
//	    health_fails    <n>
//	    balance         least_inflight|p2c_ewma [<decay>]|round_robin|random|first
//	                    |hash header|cookie|query <name> [spill]|hash client_ip [spill]
//	                    |cookie [<name>] { secret … max_age … fallback … }
//	    park_idle       <duration>|off
//	    max_inflight    <n>|auto
//	    schedule        cost|fifo
//	    cost_key        <placeholder>
//	    queue_size      <n>
//	    queue_timeout   <duration>
//	    retries         <n>
//	    breaker {
//	        failures           <n>
//	        open_for           <duration>
//	        half_open_requests <n>
//	        statuses           <code...>
//	    }
//	    discover        <host:port|host:first-last|unix/<glob>>...
//	    consul          <service> { tags … datacenter … address … token … token_file … }
//	    consul_register { name … id … address … port … tags … meta <k> <v> check_url … check_interval … agent … token … token_file … }
//	    tracing [on|off] {
//	        route <name>
//	    }
//	    validate {
//	        max_body       <size>
//	        max_query      <bytes>
//	        max_headers    <n>
//	        methods        <method...>
//	        content_types  <media type...>
//	        openapi        <file>
//	        unknown_routes reject|pass
//	    }
//	}
func (h *Handler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	if args := d.RemainingArgs(); len(args) > 0 {
		h.Command = args
	}
	for d.NextBlock(0) {
		opt := d.Val()
		switch opt {
		case "name":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Name = d.Val()
		case "command":
			args := d.RemainingArgs()
			if len(args) == 0 {
				return d.Errf("command: give the program to run and its arguments, e.g. 'command node server.js'")
			}
			h.Command = args
		case "dir":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.Dir = d.Val()
		case "env":
			args := d.RemainingArgs()
			if len(args) != 2 {
				return d.Errf("env: want a name and a value, e.g. 'env NODE_ENV production'; got %d arguments", len(args))
			}
			if h.Env == nil {
				h.Env = map[string]string{}
			}
			h.Env[args[0]] = args[1]
		case "count":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "auto" {
				h.Count = 0
				break
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("count: %q is not a number of workers; give a positive integer, or auto for one per CPU", d.Val())
			}
			h.Count = n
		case "upstream_protocol":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch v := d.Val(); v {
			case balancer.UpstreamHTTP1, balancer.UpstreamH2C, balancer.UpstreamAuto:
				h.UpstreamProtocol = v
			default:
				return d.Errf("upstream_protocol: %q is not a protocol; use http1, h2c (HTTP/2-only workers such as grpc-js servers) or auto (gRPC calls over h2c, the rest over HTTP/1.1)", v)
			}
		case "listen":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if v := d.Val(); v != "tcp" && v != "unix" {
				return d.Errf("listen: %q is not a mode; use tcp or unix", v)
			}
			h.Listen = d.Val()
		case "bind_check":
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch v := pool.BindCheck(d.Val()); v {
			case pool.BindWarn, pool.BindRefuse, pool.BindOff:
			default:
				return d.Errf("bind_check: %q is not a choice; use warn (log workers that listen beyond loopback), refuse (keep them out of rotation) or off", d.Val())
			}
			h.BindCheck = d.Val()
			if d.NextArg() {
				return d.ArgErr()
			}
		case "park_idle":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.ParkIdle = -1
			} else {
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur <= 0 {
					return d.Errf("park_idle: %q is not a positive duration; write e.g. 50ms, or off to never park", d.Val())
				}
				h.ParkIdle = caddy.Duration(dur)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		case "request_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "off" {
				h.RequestTimeout = -1
				break
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("request_timeout: %q is not a positive duration; write e.g. 30s or 2m, or off for no limit", d.Val())
			}
			h.RequestTimeout = caddy.Duration(dur)
		case "startup_timeout", "stop_timeout", "health_interval", "health_timeout", "unhealthy_kill_after":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("%s: %q is not a positive duration; write e.g. 500ms, 5s or 1m", opt, d.Val())
			}
			switch opt {
			case "startup_timeout":
				h.StartupTimeout = caddy.Duration(dur)
			case "stop_timeout":
				h.StopTimeout = caddy.Duration(dur)
			case "health_interval":
				h.HealthInterval = caddy.Duration(dur)
			case "health_timeout":
				h.HealthTimeout = caddy.Duration(dur)
			case "unhealthy_kill_after":
				h.UnhealthyKillAfter = caddy.Duration(dur)
			}
		case "health_uri":
			if !d.NextArg() {
				return d.ArgErr()
			}
			h.HealthURI = d.Val()
		case "health_grpc":
			h.HealthGRPC = true
			if d.NextArg() {
				h.HealthGRPCService = d.Val()
			}
			if d.NextArg() {
				return d.Errf("health_grpc: one service name at most, e.g. 'health_grpc pool.example.Demo'")
			}
		case "health_passes", "health_fails":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("%s: %q is not a count; give a positive integer", opt, d.Val())
			}
			if opt == "health_passes" {
				h.HealthPasses = n
			} else {
				h.HealthFails = n
			}
		case "balance":
			if err := h.parseBalance(d); err != nil {
				return err
			}
		case "max_inflight":
			if !d.NextArg() {
				return d.ArgErr()
			}
			if d.Val() == "auto" {
				h.MaxInflight = &Limit{Auto: true}
				break
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("max_inflight: %q is not a limit; give a number of requests per worker (0 for none) or auto", d.Val())
			}
			h.MaxInflight = &Limit{N: n}
		case "max_requests":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.ParseUint(d.Val(), 10, 64)
			if err != nil || n == 0 {
				return d.Errf("max_requests: %q is not a count; give a positive integer, optionally followed by 'jitter <n>'", d.Val())
			}
			h.MaxRequests = n
			if d.NextArg() {
				if d.Val() != "jitter" || !d.NextArg() {
					return d.Errf("max_requests: after the count only 'jitter <n>' may follow")
				}
				j, err := strconv.ParseUint(d.Val(), 10, 64)
				if err != nil {
					return d.Errf("max_requests jitter: %q is not a count", d.Val())
				}
				h.MaxRequestsJitter = j
			}
		case "max_memory":
			if !d.NextArg() {
				return d.ArgErr()
			}
			size, err := humanize.ParseBytes(d.Val())
			if err != nil || size == 0 {
				return d.Errf("max_memory: %q is not a size; write e.g. 512MiB or 1GB", d.Val())
			}
			h.MaxMemory = int64(size)
		case "max_lifetime":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("max_lifetime: %q is not a positive duration; write e.g. 1h or 30m", d.Val())
			}
			h.MaxLifetime = caddy.Duration(dur)
		case "watch":
			globs := d.RemainingArgs()
			if len(globs) == 0 {
				return d.Errf("watch: give one or more file globs, e.g. 'watch src/*.js'")
			}
			h.Watch = append(h.Watch, globs...)
		case "max_consecutive_failures":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("max_consecutive_failures: %q is not a count; give a positive integer", d.Val())
			}
			h.MaxConsecutiveFailures = n
		case "queue_size", "retries":
			if !d.NextArg() {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 0 {
				return d.Errf("%s: %q is not a count; give a non-negative integer", opt, d.Val())
			}
			if opt == "queue_size" {
				h.QueueSize = n
			} else {
				h.Retries = &n
			}
		case "queue_timeout":
			if !d.NextArg() {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("queue_timeout: %q is not a positive duration; write e.g. 500ms, 5s or 1m", d.Val())
			}
			h.QueueTimeout = caddy.Duration(dur)
		case "schedule", "cost_key":
			if err := h.parseScheduling(d, opt); err != nil {
				return err
			}
		case "tracing":
			if err := h.parseTracing(d); err != nil {
				return err
			}
		case "breaker":
			if err := h.parseBreaker(d); err != nil {
				return err
			}
		case "validate":
			v, err := parseValidateBlock(d)
			if err != nil {
				return err
			}
			h.Validation = v
		default:
			if ok, err := h.unmarshalScaling(d, opt); ok {
				if err != nil {
					return err
				}
				break
			}
			if ok, err := h.unmarshalDiscovery(d, opt); err != nil {
				return err
			} else if !ok {
				return d.Errf("unrecognized worker_pool option %q; see docs/configuration.md for the options", opt)
			}
		}
		if d.NextArg() {
			return d.Errf("%s: unexpected extra argument %q", opt, d.Val())
		}
	}
	if len(h.Command) == 0 && h.spawns() {
		return d.Err("worker_pool needs a command: 'command <program> [<args...>]', e.g. 'command node server.js'; or, for workers started elsewhere, 'discover <addresses>' or 'consul <service>'")
	}
	return nil
}

// parseBalance reads "balance <policy> [<args>]".
func (h *Handler) parseBalance(d *caddyfile.Dispenser) error {
	if !d.NextArg() {
		return d.ArgErr()
	}
	h.Balance = d.Val()
	switch h.Balance {
	case "least_inflight", "round_robin", "random", "first":
	case "p2c_ewma":
		if d.NextArg() {
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("balance p2c_ewma: decay %q is not a positive duration; write e.g. 10s", d.Val())
			}
			h.EWMADecay = caddy.Duration(dur)
		}
	case "hash":
		if !d.NextArg() {
			return d.Err("balance hash: say what to hash: 'hash header <name>', 'hash cookie <name>', 'hash query <name>' or 'hash client_ip'")
		}
		h.HashOn = d.Val()
		switch h.HashOn {
		case "header", "cookie", "query":
			if !d.NextArg() {
				return d.Errf("balance hash %s: give the %s name, e.g. 'hash %s %s'", h.HashOn, h.HashOn, h.HashOn, map[string]string{"header": "X-User-ID", "cookie": "session", "query": "room"}[h.HashOn])
			}
			h.HashKey = d.Val()
		case "client_ip":
		default:
			return d.Errf("balance hash: %q is not a key; use header <name>, cookie <name>, query <name> or client_ip", h.HashOn)
		}
		if d.NextArg() {
			if d.Val() != "spill" {
				return d.Errf("balance hash: %q: the only word after the key is spill (a busy worker's keys go to the next worker, for cache affinity)", d.Val())
			}
			h.HashSpill = true
		}
	case "cookie":
		c := &AffinityCookie{}
		h.Cookie = c
		if d.NextArg() {
			c.Name = d.Val()
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		for nesting := d.Nesting(); d.NextBlock(nesting); {
			opt := d.Val()
			if !d.NextArg() {
				return d.ArgErr()
			}
			switch opt {
			case "secret":
				c.Secret = d.Val()
			case "max_age":
				dur, err := caddy.ParseDuration(d.Val())
				if err != nil || dur < 0 {
					return d.Errf("balance cookie max_age: %q is not a duration; write e.g. 24h, or leave it out for a browser-session cookie", d.Val())
				}
				c.MaxAge = caddy.Duration(dur)
			case "fallback":
				c.Fallback = d.Val()
			default:
				return d.Errf("balance cookie: unknown option %q; use secret, max_age or fallback", opt)
			}
			if d.NextArg() {
				return d.ArgErr()
			}
		}
	default:
		return d.Errf("balance: unknown policy %q; use least_inflight, p2c_ewma, round_robin, random, first, hash or cookie", h.Balance)
	}
	if d.NextArg() {
		return d.ArgErr()
	}
	return nil
}

// parseBreaker reads the breaker block.
func (h *Handler) parseBreaker(d *caddyfile.Dispenser) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	h.Breaker = &Breaker{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		opt := d.Val()
		if !d.NextArg() {
			return d.ArgErr()
		}
		switch opt {
		case "failures", "half_open_requests":
			n, err := strconv.Atoi(d.Val())
			if err != nil || n < 1 {
				return d.Errf("breaker %s: %q is not a count; give a positive integer", opt, d.Val())
			}
			if opt == "failures" {
				h.Breaker.Failures = n
			} else {
				h.Breaker.HalfOpenRequests = n
			}
		case "open_for":
			dur, err := caddy.ParseDuration(d.Val())
			if err != nil || dur <= 0 {
				return d.Errf("breaker open_for: %q is not a positive duration; write e.g. 10s", d.Val())
			}
			h.Breaker.OpenFor = caddy.Duration(dur)
		case "statuses":
			for ok := true; ok; ok = d.NextArg() {
				code, err := strconv.Atoi(d.Val())
				if err != nil || code < 100 || code > 599 {
					return d.Errf("breaker statuses: %q is not an HTTP status code", d.Val())
				}
				h.Breaker.Statuses = append(h.Breaker.Statuses, code)
			}
			continue
		default:
			return d.Errf("unrecognized breaker option %q; use failures, open_for, half_open_requests or statuses", opt)
		}
		if d.NextArg() {
			return d.Errf("breaker %s: unexpected extra argument %q", opt, d.Val())
		}
	}
	return nil
}

// Interface guard.
var _ caddyfile.Unmarshaler = (*Handler)(nil)
