// Package caddymodule is the Caddy glue of caddy-workerpool: the
// http.handlers.worker_pool module, its Caddyfile directive, and its
// provisioning and cleanup. Everything it runs lives in the packages
// worker, health, balancer and pool, which do not import Caddy.
package caddymodule

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/tracing"
	"github.com/caddy-workerpool/caddy-workerpool/validate"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

func init() {
	caddy.RegisterModule(Handler{})
}

// Handler runs a pool of worker processes (for example one Node.js
// process per CPU) and proxies each request to a healthy worker that is
// least busy. Workers are started when the config loads and stopped when
// it unloads.
type Handler struct {
	// Name identifies the pool in logs, status, metrics and the admin
	// API. Two different pools of one config may not have the same name
	// (the config is refused); handlers with the very same pool config
	// share one pool. Default: "default".
	Name string `json:"name,omitempty"`

	// Command is the program to run and its arguments, e.g.
	// ["node", "server.js"]. A program name without a slash is looked up
	// in PATH; a relative path is relative to Dir. Global placeholders
	// such as {env.HOME} are replaced.
	Command []string `json:"command,omitempty"`

	// Dir is the workers' working directory. Default: Caddy's own.
	Dir string `json:"dir,omitempty"`

	// Env is added to the environment the workers inherit from Caddy.
	// Each worker also gets WORKER_ID (1..count), WORKER_COUNT, and
	// PORT and HOST (listen "tcp") or SOCKET_PATH (listen "unix").
	Env map[string]string `json:"env,omitempty"`

	// Count is the number of workers. Default (0): one per usable CPU.
	Count int `json:"count,omitempty"`

	// Listen is how workers listen: "tcp" (a free loopback port each,
	// the default) or "unix" (a socket each in a directory only Caddy's
	// user can enter).
	Listen string `json:"listen,omitempty"`

	// BindCheck says what to do with a worker that listens beyond
	// loopback (on 0.0.0.0, ::, or a network address), found when it
	// becomes ready, on Linux: "warn" (the default) logs an error that
	// names the fix and shows the addresses in the status; "refuse" also
	// keeps the worker out of rotation; "off" does not look. Such a
	// worker can be reached on its port past the pool, as one written
	// `app.listen(process.env.PORT)` is.
	BindCheck string `json:"bind_check,omitempty"`

	// StartupTimeout is how long a new worker may take to pass its first
	// health check before it is killed and restarted. Default: 30s.
	StartupTimeout caddy.Duration `json:"startup_timeout,omitempty"`

	// StopTimeout is how long a worker may take to exit after SIGTERM
	// before its process group is killed. Default: 10s.
	StopTimeout caddy.Duration `json:"stop_timeout,omitempty"`

	// UnhealthyKillAfter is how long a worker that was healthy may fail
	// its health check while its process lives (a hung event loop)
	// before it is killed and restarted. Default: 10s.
	UnhealthyKillAfter caddy.Duration `json:"unhealthy_kill_after,omitempty"`

	// MaxConsecutiveFailures is how many exits in a row mark a worker
	// failed (logged at error level, shown in status); it is then
	// restarted only every 10s. Default: 5.
	MaxConsecutiveFailures int `json:"max_consecutive_failures,omitempty"`

	// RequestTimeout bounds the time a worker may take to start its
	// answer to one request (its response headers; a stream, a long
	// download or a WebSocket that has started is never cut by it); past
	// it the client gets 504, the request is not retried, and the worker
	// is treated as hung (out of rotation, killed after
	// UnhealthyKillAfter unless its health check passes). Default: 60s,
	// as nginx's proxy_read_timeout. A negative value turns it off
	// (Caddyfile: request_timeout off).
	RequestTimeout caddy.Duration `json:"request_timeout,omitempty"`

	// MaxRequests recycles a worker after this many requests, plus a
	// random number up to MaxRequestsJitter so that workers do not
	// recycle together. The worker leaves rotation, finishes its
	// requests and is replaced; one worker at a time, and only while all
	// others are healthy.
	MaxRequests       uint64 `json:"max_requests,omitempty"`
	MaxRequestsJitter uint64 `json:"max_requests_jitter,omitempty"`

	// MaxMemory recycles a worker whose process group (the worker and
	// its children) holds more resident memory than this many bytes.
	MaxMemory int64 `json:"max_memory,omitempty"`

	// MaxLifetime recycles a worker after it has run this long (plus up
	// to a tenth at random).
	MaxLifetime caddy.Duration `json:"max_lifetime,omitempty"`

	// Watch lists file globs (relative to Dir) whose change restarts the
	// workers one at a time, after half a second without further change
	// (a deploy writes many files).
	Watch []string `json:"watch,omitempty"`

	// HealthURI is the path of an HTTP GET that a worker must answer with
	// 2xx to be in rotation. Without it, accepting a connection is enough.
	HealthURI string `json:"health_uri,omitempty"`

	// HealthGRPC probes workers with the standard gRPC health protocol
	// over h2c (grpc.health.v1.Health/Check must answer SERVING), for
	// HTTP/2-only workers such as grpc-js servers; instead of health_uri.
	HealthGRPC bool `json:"health_grpc,omitempty"`

	// HealthGRPCService is the service health_grpc asks about; empty
	// means the server as a whole.
	HealthGRPCService string `json:"health_grpc_service,omitempty"`

	// HealthInterval is the time between health checks. Default: 1s.
	HealthInterval caddy.Duration `json:"health_interval,omitempty"`

	// HealthTimeout bounds one health check. Default: 1s.
	HealthTimeout caddy.Duration `json:"health_timeout,omitempty"`

	// HealthPasses is how many consecutive passes put a worker in
	// rotation. Default: 1.
	HealthPasses int `json:"health_passes,omitempty"`

	// HealthFails is how many consecutive failures take it out. Default: 2.
	HealthFails int `json:"health_fails,omitempty"`

	// Balance is the policy that picks a worker among those that may take
	// the request: "least_inflight" (the default: fewest requests in
	// flight, ties broken at random), "p2c_ewma" (the better of two random
	// workers by peak-EWMA latency × (in flight + 1)), "round_robin",
	// "random", "first" (the lowest-numbered free worker), "hash"
	// (sticky on a request key, see HashOn) or "cookie" (sticky on an
	// affinity cookie the pool sets itself, see Cookie).
	Balance string `json:"balance,omitempty"`

	// HashOn is what "hash" hashes: "header", "cookie" or "query"
	// (named by HashKey) or "client_ip". Rendezvous hashing: when a
	// worker leaves rotation, only its keys move, to the next worker in
	// their ranking; a key whose worker is at its limit waits for it
	// (see HashSpill); a request without the key is balanced by
	// least_inflight.
	HashOn string `json:"hash_on,omitempty"`

	// HashKey is the header, cookie or query parameter name for HashOn.
	HashKey string `json:"hash_key,omitempty"`

	// HashSpill sends a hashed request whose worker is at its limit to
	// the next worker in its key's ranking instead of waiting for it:
	// for keys that only find a warm cache, never for sessions.
	HashSpill bool `json:"hash_spill,omitempty"`

	// Cookie sets up the affinity cookie of "balance cookie".
	Cookie *AffinityCookie `json:"cookie,omitempty"`

	// ParkIdle is how long a worker must hold requests at its
	// max_inflight limit without computing (its main thread wanting no
	// CPU) before those requests stop counting toward the limit: long
	// polls, and requests that wait on something else, no longer keep
	// others from an idle worker. Default: 50ms; "off" (-1 in JSON)
	// never parks.
	ParkIdle caddy.Duration `json:"park_idle,omitempty"`

	// EWMADecay is the time constant of p2c_ewma's latency average.
	// Default: 10s.
	EWMADecay caddy.Duration `json:"ewma_decay,omitempty"`

	// MaxInflight limits the requests each worker holds at once; a
	// request that finds every worker at its limit waits in the queue, in
	// Go, until one frees up. "auto" (the default) adapts each worker's
	// limit: 1 for a worker that computes (judged from its CPU time, or
	// by probing where the pid is unknown), growing for one that waits on
	// I/O. A number fixes it; 0 means no limit.
	MaxInflight *Limit `json:"max_inflight,omitempty"`

	// QueueSize bounds the requests waiting for a free worker, as a
	// memory guard: more get 503. Admission is by deadline: a request
	// that the requests before it would keep waiting past QueueTimeout
	// gets 503 at once. Default: 50000.
	QueueSize int `json:"queue_size,omitempty"`

	// QueueTimeout bounds how long a request waits for a free worker
	// before it gets 503. Default: 10s.
	QueueTimeout caddy.Duration `json:"queue_timeout,omitempty"`

	// UpstreamProtocol is what the workers speak: "http1" (HTTP/1.1),
	// "h2c" (HTTP/2 with prior knowledge, over cleartext: grpc-js
	// servers, node:http2 servers) or "auto" (the default), which sends
	// gRPC calls over h2c and everything else over HTTP/1.1.
	UpstreamProtocol string `json:"upstream_protocol,omitempty"`

	// Schedule orders the requests that wait: "cost" (the default) serves
	// the cheapest expected request first, with aging, and keeps a
	// worker for cheap requests while expensive ones can wait; "fifo"
	// serves them first come, first served.
	Schedule string `json:"schedule,omitempty"`

	// CostKey names a request's route, whose cost the pool learns, when
	// validation matched no OpenAPI route: a placeholder such as
	// {http.request.uri.path} or {http.request.header.X-Operation}.
	// Default: the method and the first segment of the path.
	CostKey string `json:"cost_key,omitempty"`

	// Retries is how many times a failed attempt is sent to another
	// worker: only if the request never reached a worker, or, for
	// idempotent methods, if the connection broke before any response
	// byte; never after a byte went to the client; bodies up to 64 KiB
	// only; at most 20% of requests over 10 s. Default: 1; 0 disables.
	Retries *int `json:"retries,omitempty"`

	// Breaker configures each worker's circuit breaker.
	Breaker *Breaker `json:"breaker,omitempty"`

	// Tracing turns OpenTelemetry tracing on or off for this handler.
	// Default: on when the environment names an exporter
	// (OTEL_TRACES_EXPORTER or OTEL_EXPORTER_OTLP_ENDPOINT), else off.
	// It is not part of the pool: changing it keeps the workers.
	Tracing *Tracing `json:"tracing,omitempty"`

	// Validation checks requests before they reach a worker: limits and
	// an optional OpenAPI document (see validate.Config). It is not part
	// of the pool's identity: changing it on reload keeps the workers.
	Validation *validate.Config `json:"validate,omitempty"`

	// Discovery: workers found rather than spawned (discover, consul),
	// and registration in Consul (consul_register).
	Discovery

	// Scaling: more workers than Count while requests queue (max_count,
	// scale_idle, max_total_memory).
	Scaling

	pool      *pool.Pool
	key       string
	logger    *zap.Logger
	tracer    *tracing.Tracer // nil when tracing is off
	validator *validate.Validator
	// errorRoutes: the server has handle_errors routes, which render the
	// errors the pool makes itself instead of its problem+json.
	errorRoutes bool
}

// CaddyModule returns the Caddy module information.
func (Handler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.worker_pool",
		New: func() caddy.Module { return new(Handler) },
	}
}

// pools holds the running pools across config reloads, keyed by their
// whole configuration: a reload that leaves a pool's config unchanged
// keeps its workers (same processes); a changed one starts a new pool.
var pools = caddy.NewUsagePool()

// runningPool is a pool as the usage pool holds it, with its metrics.
type runningPool struct {
	*pool.Pool
	metrics *poolMetrics
}

// Destruct stops the workers once no loaded config uses the pool. On a
// reload that replaced the pool it returns at once: the old workers
// finish their requests and open streams in the background (bounded by
// stop_timeout) while the new ones serve. When Caddy stops, or the
// process exits, they stop before it returns.
func (p runningPool) Destruct() error {
	unregister(p.Pool)
	switch {
	case caddy.Exiting():
		p.Close()
		return nil
	case caddy.ActiveContext().Context == nil:
		// Caddy stopped without a config to replace this one.
		p.Stop()
		return nil
	}
	draining.Add(1)
	go func() {
		defer draining.Done()
		p.Stop()
	}()
	return nil
}

// draining counts the pools that stop in the background after a reload.
var draining sync.WaitGroup

// Provision checks the config, sets defaults and starts the workers, or
// takes over the running ones if an earlier config had the same pool.
// A pool that nothing serves yet (the first load) returns at once, so
// that Caddy listens at once: its requests wait in the queue for the
// first healthy worker. A pool that replaces a running one of the same
// name (a reload that changed it) is given until its startup_timeout to
// become healthy before Provision returns, so a reload switches traffic
// only to workers that answer (blue/green); the old config keeps
// serving meanwhile, and the process beginning to exit ends the wait.
func (h *Handler) Provision(ctx caddy.Context) error {
	h.logger = ctx.Logger()
	if h.Name == "" {
		h.Name = "default"
	}
	if err := h.Validate(); err != nil {
		return err
	}
	if err := h.provisionValidation(ctx); err != nil {
		return err
	}
	key, err := h.poolKey()
	if err != nil {
		return err
	}
	if err := h.claimName(ctx, key); err != nil {
		return err
	}
	// A pool of this name that a running config serves from: the one a
	// changed pool replaces.
	replacing := lookup(h.Name) != nil
	val, loaded, err := pools.LoadOrNew(key, func() (caddy.Destructor, error) {
		// The pool outlives this config, so it logs through Caddy's
		// process-wide logger rather than this config's.
		log := caddy.Log().Named("http.handlers.worker_pool").With(zap.String("pool", h.Name))
		cfg, err := h.poolConfig(log)
		if err != nil {
			return nil, err
		}
		metrics := newPoolMetrics(h.Name)
		cfg.Balancer.OnResult = metrics.observe
		p, err := pool.New(cfg, log)
		if err != nil {
			return nil, fmt.Errorf("worker_pool %q: %w", h.Name, err)
		}
		metrics.pool = p
		p.Start()
		register(p)
		return runningPool{p, metrics}, nil
	})
	if err != nil {
		return err
	}
	// From here on the pool is this handler's to release: Caddy calls
	// Cleanup when Provision fails, and Cleanup lets go of it.
	rp := val.(runningPool)
	h.key, h.pool = key, rp.Pool
	if srv, ok := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server); ok {
		h.errorRoutes = srv.Errors != nil && len(srv.Errors.Routes) > 0
		// When the process exits, the server waits for its requests
		// before the pool is cleaned up: requests that wait for a worker
		// to start must get their 503 now, and the workers their SIGTERM,
		// so that they end their streams.
		p := rp.Pool
		srv.RegisterOnShutdown(func() {
			if caddy.Exiting() {
				p.Close()
			}
		})
	}
	if err := h.provisionTracing(ctx); err != nil {
		return fmt.Errorf("worker_pool %q: %w", h.Name, err)
	}
	// Each config has a registry of its own; the pool's collector joins
	// every one that uses it. Two handlers sharing a pool share it too.
	if reg := ctx.GetMetricsRegistry(); reg != nil {
		var already prometheus.AlreadyRegisteredError
		if err := reg.Register(rp.metrics); err != nil && !errors.As(err, &already) {
			return fmt.Errorf("worker_pool %q: metrics: %w", h.Name, err)
		}
	}
	if err := h.provisionRegistration(); err != nil {
		return err
	}
	switch {
	case loaded:
		h.logger.Info("keeping the running workers: pool config unchanged", zap.String("pool", h.Name))
		return nil
	case !replacing:
		// Nothing serves this pool yet (the first load, or a new pool):
		// Caddy listens at once, and the pool's requests wait in its
		// queue for the first healthy worker.
		h.logger.Info("starting workers; requests wait for the first healthy one", zap.String("pool", h.Name))
		return nil
	}
	// A changed pool replaces a running one: the old config serves until
	// the new workers are healthy, then traffic switches (blue/green).
	wait := time.Duration(h.StartupTimeout)
	if wait <= 0 {
		wait = pool.DefaultStartupTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	if err := h.pool.WaitReady(exitAware(wctx)); err != nil {
		h.logger.Warn("serving before every worker is healthy", zap.String("pool", h.Name), zap.Error(err))
	}
	return nil
}

// exitAware returns a context that also ends when the process begins to
// exit (Ctrl-C, SIGTERM): a reload that waits for new workers must not
// hold the exit up, and Caddy has no earlier notice of it than
// caddy.Exiting, so it is polled. The polling ends with ctx.
func exitAware(ctx context.Context) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if caddy.Exiting() {
					cancel()
					return
				}
			}
		}
	}()
	return ctx
}

// poolKey identifies the pool's configuration: all of the handler's but
// what applies to requests before they reach the pool (tracing,
// validation), which changes nothing about the workers.
func (h *Handler) poolKey() (string, error) {
	poolOnly := *h
	poolOnly.Tracing = nil
	poolOnly.Validation = nil
	b, err := json.Marshal(&poolOnly)
	if err != nil {
		return "", fmt.Errorf("worker_pool: %w", err)
	}
	sum := sha256.Sum256(b)
	return "worker_pool:" + hex.EncodeToString(sum[:]), nil
}

// Validate refuses a config that cannot work, naming the field and the fix.
func (h *Handler) Validate() error {
	var errs []error
	bad := func(field, format string, a ...any) {
		errs = append(errs, fmt.Errorf("worker_pool: %s: %s", field, fmt.Sprintf(format, a...)))
	}
	h.validateSource(bad)
	h.validateRegistration(bad)
	h.validateScaling(bad)
	if h.Count < 0 {
		bad("count", "%d is negative: give a number of workers, or leave it out (auto) for one per CPU", h.Count)
	}
	switch h.Listen {
	case "", worker.ListenTCP, worker.ListenUnix:
	default:
		bad("listen", "%q is not a mode: use tcp or unix", h.Listen)
	}
	if pool.BindCheck(h.BindCheck).Validate() != nil {
		bad("bind_check", "%q is not a choice: use warn (log workers that listen beyond loopback), refuse (keep them out of rotation) or off", h.BindCheck)
	}
	if err := h.balancerConfig(nil).Validate(); err != nil {
		bad("balancing", "%v", err)
	}
	if b := h.Breaker; b != nil && (b.Failures < 0 || b.HalfOpenRequests < 0 || b.OpenFor < 0) {
		bad("breaker", "failures, open_for and half_open_requests must not be negative")
	}
	if h.HealthURI != "" && !strings.HasPrefix(h.HealthURI, "/") {
		bad("health_uri", "%q must be a path starting with /, e.g. /healthz", h.HealthURI)
	}
	if h.HealthURI != "" && h.HealthGRPC {
		bad("health_grpc", "give health_uri or health_grpc, not both: health_grpc probes gRPC workers, which cannot answer an HTTP GET")
	}
	for field, d := range map[string]caddy.Duration{
		"startup_timeout": h.StartupTimeout, "stop_timeout": h.StopTimeout,
		"unhealthy_kill_after": h.UnhealthyKillAfter, "max_lifetime": h.MaxLifetime,
		"health_interval": h.HealthInterval, "health_timeout": h.HealthTimeout,
	} {
		if d < 0 {
			bad(field, "%v is negative: give a positive duration such as 5s", time.Duration(d))
		}
	}
	if h.MaxMemory < 0 {
		bad("max_memory", "%d is negative: give a size such as 512MiB", h.MaxMemory)
	}
	if h.MaxConsecutiveFailures < 0 {
		bad("max_consecutive_failures", "%d is negative: give a count such as 5", h.MaxConsecutiveFailures)
	}
	if h.HealthPasses < 0 || h.HealthFails < 0 {
		bad("health_passes/health_fails", "must be positive counts")
	}
	return errors.Join(errs...)
}

// ServeHTTP proxies the request to a worker. It never calls next: the
// pool answers every request it gets. What it answers itself (400 for a
// request body that could not be read, 502, 503 with Retry-After, 504)
// is problem+json, or, where the server has handle_errors routes, a
// caddyhttp.Error for them to render, as reverse_proxy does; a gRPC call
// always gets a gRPC status instead, from validation too.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	if h.tracer != nil {
		var end func()
		w, r, end = h.startTrace(w, r)
		defer end()
	}
	if h.validator != nil {
		var ok bool
		start := time.Now()
		if w, r, ok = serveValidation(h.validator, w, r); !ok {
			// A refused gRPC call counts among the pool's calls with the
			// status it got.
			if code, answered := grpcstatus.FromHeader(w.Header()); answered && grpcstatus.IsCall(r) {
				h.pool.ObserveGRPC(r, code, time.Since(start))
			}
			return nil
		}
	}
	if err := h.pool.Serve(w, r); err != nil {
		// A gRPC client understands only gRPC's answer, whatever the
		// server's error routes would render.
		if !h.errorRoutes || err.GRPC {
			err.Write(w)
			return nil
		}
		// The server's handle_errors routes answer; {err.status_code}
		// and {err.message} say what happened.
		if err.RetryAfter > 0 {
			w.Header().Set("Retry-After", strconv.Itoa(err.RetryAfter))
		}
		return caddyhttp.Error(err.Status, err)
	}
	return nil
}

// Cleanup lets go of the pool; its workers stop (gracefully, bounded by
// stop_timeout) unless the config that replaces this one kept them.
func (h *Handler) Cleanup() error {
	var errs []error
	errs = append(errs, h.cleanupRegistration())
	if h.pool != nil {
		_, err := pools.Delete(h.key)
		errs = append(errs, err)
	}
	errs = append(errs, h.cleanupTracing())
	return errors.Join(errs...)
}

// configServer is the server whose handlers (or listener wrappers) ctx
// provisions, or nil.
func configServer(ctx caddy.Context) *caddyhttp.Server {
	srv, _ := ctx.Value(caddyhttp.ServerCtxKey).(*caddyhttp.Server)
	return srv
}

// Interface guards.
var (
	_ caddy.Provisioner           = (*Handler)(nil)
	_ caddy.Validator             = (*Handler)(nil)
	_ caddy.CleanerUpper          = (*Handler)(nil)
	_ caddyhttp.MiddlewareHandler = (*Handler)(nil)
)
