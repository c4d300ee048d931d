package caddymodule

import (
	"fmt"
	"net/http"
	"sync/atomic"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams is a dynamic upstream source for Caddy's stock reverse_proxy:
// the workers of a named worker_pool that are in rotation now. The pool
// spawns (or finds) and health-checks them; reverse_proxy balances over
// them with its own policies. The pool's queue, per-worker limits,
// breakers and retries apply only through the worker_pool handler.
//
//	reverse_proxy {
//	    dynamic worker_pool <pool name>
//	}
//
// The pool must be defined by a worker_pool with that name somewhere in
// the config; it is looked up at each request, so the order in which
// the two are provisioned does not matter.
type Upstreams struct {
	// Pool is the name of the worker_pool. Default: "default".
	Pool string `json:"pool,omitempty"`

	logger  *zap.Logger
	missing *atomic.Bool // the pool was unknown at the last request
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.worker_pool",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// Provision sets the default pool name.
func (u *Upstreams) Provision(ctx caddy.Context) error {
	u.logger = ctx.Logger()
	u.missing = new(atomic.Bool)
	if u.Pool == "" {
		u.Pool = "default"
	}
	return nil
}

// GetUpstreams returns the pool's workers in rotation; none while no
// worker is healthy. An unknown pool is an error, logged once until the
// pool appears.
func (u *Upstreams) GetUpstreams(*http.Request) ([]*reverseproxy.Upstream, error) {
	p := lookup(u.Pool)
	if p == nil {
		err := fmt.Errorf("no worker_pool named %q is loaded: define one with 'name %s', or fix the name after 'dynamic worker_pool'", u.Pool, u.Pool)
		if !u.missing.Swap(true) {
			u.logger.Error("dynamic upstreams", zap.Error(err))
		}
		return nil, err
	}
	u.missing.Store(false)
	eps := p.Endpoints()
	ups := make([]*reverseproxy.Upstream, len(eps))
	for i, e := range eps {
		dial := e.Address
		if e.Network == "unix" {
			dial = "unix/" + e.Address
		}
		ups[i] = &reverseproxy.Upstream{Dial: dial}
	}
	return ups, nil
}

// UnmarshalCaddyfile reads "dynamic worker_pool [<pool name>]".
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the source's name
	if d.NextArg() {
		u.Pool = d.Val()
	}
	if d.NextArg() {
		return d.Errf("dynamic worker_pool: unexpected argument %q; give one pool name", d.Val())
	}
	if d.NextBlock(0) {
		return d.Errf("dynamic worker_pool: takes no options; the pool's own options are set on its worker_pool")
	}
	return nil
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource = (*Upstreams)(nil)
	_ caddyfile.Unmarshaler       = (*Upstreams)(nil)
)
