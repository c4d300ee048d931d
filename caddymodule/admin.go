package caddymodule

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

func init() {
	caddy.RegisterModule(AdminAPI{})
}

// AdminAPI serves the worker pools on Caddy's admin endpoint (and only
// there):
//
//	GET  /worker_pool/                 every pool and worker, as JSON
//	POST /worker_pool/<name>/restart   rolling restart of one pool
//	GET  /worker_pool/<name>/health    200 or 503, as worker_pool_health
type AdminAPI struct{}

// CaddyModule returns the Caddy module information.
func (AdminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.worker_pool",
		New: func() caddy.Module { return new(AdminAPI) },
	}
}

// Routes returns the admin routes.
func (a AdminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/worker_pool/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func (AdminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/worker_pool/")
	switch {
	case rest == "":
		if r.Method != http.MethodGet {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET")}
		}
		statuses := []pool.Status{}
		for _, p := range registered() {
			statuses = append(statuses, p.Status())
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(statuses)
	case strings.HasSuffix(rest, "/restart"):
		if r.Method != http.MethodPost {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use POST")}
		}
		name := strings.TrimSuffix(rest, "/restart")
		p := lookup(name)
		if p == nil {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no worker pool named %q", name)}
		}
		n, err := p.RollingRestart(r.Context())
		if errors.Is(err, pool.ErrNotSpawned) {
			return caddy.APIError{HTTPStatus: http.StatusConflict, Err: fmt.Errorf("pool %q: %w", name, err)}
		}
		if err != nil {
			return caddy.APIError{HTTPStatus: http.StatusInternalServerError,
				Err: fmt.Errorf("pool %q: rolling restart stopped after %d workers: %w", name, n, err)}
		}
		w.Header().Set("Content-Type", "application/json")
		return json.NewEncoder(w).Encode(map[string]any{"pool": name, "restarted": n})
	case strings.HasSuffix(rest, "/health"):
		// What worker_pool_health answers, for probes that reach the
		// admin endpoint; ?min_healthy=n, default 1.
		if r.Method != http.MethodGet {
			return caddy.APIError{HTTPStatus: http.StatusMethodNotAllowed, Err: fmt.Errorf("use GET")}
		}
		name := strings.TrimSuffix(rest, "/health")
		if lookup(name) == nil {
			return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("no worker pool named %q", name)}
		}
		minHealthy := 1
		if v := r.URL.Query().Get("min_healthy"); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return caddy.APIError{HTTPStatus: http.StatusBadRequest, Err: fmt.Errorf("min_healthy %q: give a positive integer", v)}
			}
			minHealthy = n
		}
		return writePoolHealth(w, name, minHealthy)
	}
	return caddy.APIError{HTTPStatus: http.StatusNotFound, Err: fmt.Errorf("unknown path %q", r.URL.Path)}
}

// The running pools by name, for the admin API. A reload that changes a
// pool registers its new pool under the same name before the old one
// is destroyed, so unregister removes a name only if it still points at
// the pool being destroyed.
var (
	registryMu sync.Mutex
	registry   = map[string]*pool.Pool{}
)

func register(p *pool.Pool) {
	registryMu.Lock()
	registry[p.Name()] = p
	registryMu.Unlock()
}

func unregister(p *pool.Pool) {
	registryMu.Lock()
	if registry[p.Name()] == p {
		delete(registry, p.Name())
	}
	registryMu.Unlock()
}

func lookup(name string) *pool.Pool {
	registryMu.Lock()
	defer registryMu.Unlock()
	return registry[name]
}

func registered() []*pool.Pool {
	registryMu.Lock()
	defer registryMu.Unlock()
	ps := make([]*pool.Pool, 0, len(registry))
	for _, p := range registry {
		ps = append(ps, p)
	}
	slices.SortFunc(ps, func(a, b *pool.Pool) int { return strings.Compare(a.Name(), b.Name()) })
	return ps
}

// Interface guard.
var _ caddy.AdminRouter = AdminAPI{}
