package caddymodule

import (
	"net"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/framing"
)

func init() {
	caddy.RegisterModule(StrictFraming{})
}

// StrictFraming is a listener wrapper that refuses requests which
// declare their body's length twice — Content-Length and
// Transfer-Encoding, or Transfer-Encoding in HTTP/1.0 — with 400 and a
// closed connection, as nginx does, so that a proxy in front of Caddy
// and Caddy can never disagree on where a request ends (request
// smuggling). Go's server, and so Caddy, would serve them, taking
// Transfer-Encoding, and keep the connection open; no handler can tell,
// because the server removes Content-Length before handlers run. See
// framing.StrictFraming.
//
//	{
//	    servers {
//	        listener_wrappers {
//	            worker_pool_framing
//	        }
//	    }
//	}
//
// Listed alone it comes after TLS, where it must be; with other
// wrappers, put it after tls.
type StrictFraming struct {
	server *caddyhttp.Server
}

// CaddyModule returns the Caddy module information.
func (StrictFraming) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "caddy.listeners.worker_pool_framing",
		New: func() caddy.Module { return new(StrictFraming) },
	}
}

// framingServers are the servers of loaded configs that have the
// wrapper: validating handlers of other servers say in the log that
// ambiguous requests reach them.
var framingServers sync.Map // *caddyhttp.Server → struct{}

// Provision notes the server it wraps.
func (f *StrictFraming) Provision(ctx caddy.Context) error {
	if srv := configServer(ctx); srv != nil {
		f.server = srv
		framingServers.Store(srv, struct{}{})
	}
	return nil
}

// Cleanup forgets the server.
func (f *StrictFraming) Cleanup() error {
	if f.server != nil {
		framingServers.Delete(f.server)
	}
	return nil
}

// WrapListener wraps ln.
func (*StrictFraming) WrapListener(ln net.Listener) net.Listener {
	return framing.StrictFraming(ln)
}

// UnmarshalCaddyfile reads "worker_pool_framing", which takes no options.
func (*StrictFraming) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the wrapper's name
	if d.NextArg() || d.NextBlock(0) {
		return d.Errf("worker_pool_framing takes no options")
	}
	return nil
}

// warnWithoutStrictFraming says, when a validating handler is set up in
// a server without the wrapper, that requests with ambiguous framing
// reach it.
func warnWithoutStrictFraming(ctx caddy.Context, log *zap.Logger) {
	srv := configServer(ctx)
	if srv == nil {
		return
	}
	if _, ok := framingServers.Load(srv); ok {
		return
	}
	log.Warn("requests with both Content-Length and Transfer-Encoding are served on this server; "+
		"to refuse them, add the worker_pool_framing listener wrapper",
		zap.String("server", srv.Name()),
		zap.String("caddyfile", "servers { listener_wrappers { worker_pool_framing } }"))
}

// Interface guards.
var (
	_ caddy.ListenerWrapper = (*StrictFraming)(nil)
	_ caddy.Provisioner     = (*StrictFraming)(nil)
	_ caddy.CleanerUpper    = (*StrictFraming)(nil)
	_ caddyfile.Unmarshaler = (*StrictFraming)(nil)
)
