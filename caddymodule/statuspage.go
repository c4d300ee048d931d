package caddymodule

import (
	"crypto/sha256"
	"embed"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

func init() {
	caddy.RegisterModule(StatusPage{})
	httpcaddyfile.RegisterHandlerDirective("worker_pool_status", parseStatusPage)
	httpcaddyfile.RegisterDirectiveOrder("worker_pool_status", httpcaddyfile.Before, "reverse_proxy")
}

// StatusPage serves a live status page of the worker pools, and the
// JSON it polls (the same as the admin API's GET /worker_pool/) at the
// same path with ?format=json. The page is one self-contained HTML
// document with no external assets.
//
// It lives in a site rather than on Caddy's admin endpoint because the
// admin endpoint refuses browser navigation: a browser that opens a URL
// sends Sec-Fetch-Mode without Origin or Referer, which the admin
// endpoint's cross-site protection answers with 403.
//
// By default it answers only clients on this machine: the connection's
// peer must be on a loopback address (and so must the client that a
// trusted proxy forwarded the request for, if any). Put it behind
// authentication (basic_auth, forward_auth) and set AllowRemote to show
// it to others.
type StatusPage struct {
	// Pools lists the pools to show by name; empty shows every pool.
	Pools []string `json:"pools,omitempty"`
	// AllowRemote serves clients that are not on a loopback address.
	AllowRemote bool `json:"allow_remote,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (StatusPage) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.worker_pool_status",
		New: func() caddy.Module { return new(StatusPage) },
	}
}

//go:embed statuspage
var statusFiles embed.FS

// statusHTML is the page, and statusCSP the Content-Security-Policy that
// allows exactly its own inline style and script and nothing else.
var statusHTML, statusCSP = buildStatusPage()

func buildStatusPage() ([]byte, string) {
	read := func(name string) string {
		b, err := statusFiles.ReadFile("statuspage/" + name)
		if err != nil {
			panic(err) // embedded at build time
		}
		return string(b)
	}
	css, js := read("page.css"), read("page.js")
	page := strings.Replace(read("page.html"), "/*STYLE*/", css, 1)
	page = strings.Replace(page, "/*SCRIPT*/", js, 1)
	hash := func(s string) string {
		sum := sha256.Sum256([]byte(s))
		return "'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
	}
	csp := "default-src 'none'; script-src " + hash(js) + "; style-src " + hash(css) +
		"; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
	return []byte(page), csp
}

// ServeHTTP answers GET and HEAD with the page, or with ?format=json
// the status of the pools.
func (s *StatusPage) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if !s.AllowRemote && !loopbackClient(r) {
		problem.Write(w, problem.Details{Status: http.StatusForbidden,
			Detail: "the worker pool status answers loopback clients only; put it behind authentication and set allow_remote"})
		return nil
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		problem.Write(w, problem.Details{Status: http.StatusMethodNotAllowed, Detail: "use GET"})
		return nil
	}
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	if r.URL.Query().Get("format") == "json" {
		h.Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(s.statuses())
	}
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", statusCSP)
	h.Set("Referrer-Policy", "same-origin")
	_, err := w.Write(statusHTML)
	return err
}

// statuses are the pools to show, by name.
func (s *StatusPage) statuses() []pool.Status {
	out := []pool.Status{}
	for _, p := range registered() {
		if len(s.Pools) == 0 || slices.Contains(s.Pools, p.Name()) {
			out = append(out, p.Status())
		}
	}
	return out
}

// loopbackClient reports whether the request comes from this machine:
// its connection's peer is on a loopback address, as Caddy's remote_ip
// matcher judges, and so is the client that a trusted proxy forwarded it
// for, if any. The peer is what a client cannot forge: Caddy's client IP
// comes from X-Forwarded-For when the peer is one of trusted_proxies, so
// a remote client behind a trusted load balancer could claim 127.0.0.1.
// The forwarded address is checked too so that a trusted proxy on this
// host (a service mesh's sidecar) does not open the page to everyone it
// forwards.
func loopbackClient(r *http.Request) bool {
	peer, _, err := net.SplitHostPort(r.RemoteAddr)
	return err == nil && isLoopback(peer) && isLoopback(clientIP(r))
}

func isLoopback(ip string) bool {
	addr, err := netip.ParseAddr(ip)
	return err == nil && addr.Unmap().IsLoopback()
}

func parseStatusPage(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	var s StatusPage
	err := s.UnmarshalCaddyfile(h.Dispenser)
	return &s, err
}

// UnmarshalCaddyfile sets up the status page from Caddyfile tokens:
//
//	worker_pool_status [<matcher>] [<pool names...>] {
//	    allow_remote
//	}
func (s *StatusPage) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // directive name
	s.Pools = d.RemainingArgs()
	for d.NextBlock(0) {
		switch d.Val() {
		case "allow_remote":
			if d.NextArg() {
				return d.ArgErr()
			}
			s.AllowRemote = true
		default:
			return d.Errf("unrecognized worker_pool_status option %q; use allow_remote", d.Val())
		}
	}
	return nil
}

// Interface guards.
var (
	_ caddyhttp.MiddlewareHandler = (*StatusPage)(nil)
	_ caddyfile.Unmarshaler       = (*StatusPage)(nil)
)
