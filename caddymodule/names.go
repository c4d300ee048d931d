package caddymodule

import (
	"fmt"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"
)

// A pool's name is how the admin API, the status page, the health
// handler, metrics and reverse_proxy's dynamic upstreams find it, so two
// different pools of one config must not share one: one of them would
// vanish from all of these. Two handlers with the very same pool config
// share one pool (and its name), which is fine.
//
// What makes this subtle is reloads. Pools outlive configs in the usage
// pool, keyed by their whole config, and a reload provisions the new
// config while the old one still runs: the old config's pool "app" and
// the new config's changed pool "app" rightly exist side by side for a
// while. So names are claimed per config load, never globally.
//
// A config load is told apart by its context: Caddy provisions every
// module of one config with copies of one root context (the http app
// adds values to it, not cancel scopes), so they share its Done
// channel, and each load has a root of its own, cancelled when that
// config stops or fails to load. Claims of a config whose context is
// done are dropped at the next claim; no goroutine watches them.
//
// The Caddyfile adapter checks the same rule first, with its State
// shared by all site blocks, so that a Caddyfile's error names the lines
// of both pools; the check at provisioning covers JSON configs and names
// each pool by its server and source.

// poolNames maps each pool name of one config to the pool that claimed
// it.
type poolNames map[string]nameClaim

type nameClaim struct {
	key   string // the pool's key in pools
	where string // how to find it in the config
}

// claim records that the pool with key is called name and is found at
// where; it refuses a name that a different pool has.
func (n poolNames) claim(name, key, where string) error {
	if c, ok := n[name]; ok && c.key != key {
		return fmt.Errorf("worker_pool: name: %q is the name of two different pools, %s and %s; "+
			"give each its own name (the admin API, the status page and metrics find pools by name), "+
			"or make their options the same to share one pool", name, c.where, where)
	}
	n[name] = nameClaim{key: key, where: where}
	return nil
}

var (
	claimsMu sync.Mutex
	claims   = map[<-chan struct{}]poolNames{}
)

// claimName claims name for the pool with key in the config that ctx
// provisions.
func (h *Handler) claimName(ctx caddy.Context, key string) error {
	if ctx.Context == nil {
		return nil // not provisioned by Caddy: no config to be unique in
	}
	done := ctx.Done()
	if done == nil {
		return nil
	}
	claimsMu.Lock()
	defer claimsMu.Unlock()
	for d := range claims {
		select {
		case <-d:
			delete(claims, d)
		default:
		}
	}
	names := claims[done]
	if names == nil {
		names = poolNames{}
		claims[done] = names
	}
	return names.claim(h.Name, key, h.site(ctx))
}

// site describes where the pool is in a config: its source, and the
// server that runs the handler.
func (h *Handler) site(ctx caddy.Context) string {
	var src string
	switch {
	case len(h.Discover) > 0:
		src = "the pool discovering " + strings.Join(h.Discover, " ")
	case h.Consul != nil:
		src = "the pool of Consul service " + h.Consul.Service
	default:
		src = "the pool running " + strings.Join(h.Command, " ")
	}
	if srv := configServer(ctx); srv != nil {
		return fmt.Sprintf("%s (server %s on %s)", src, srv.Name(), strings.Join(srv.Listen, ", "))
	}
	return src
}
