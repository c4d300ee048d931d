package caddymodule

import (
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/tracing"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// healthConfig is the active health check of the pool's workers, the
// same for spawned and found ones.
func (h *Handler) healthConfig() health.Config {
	return health.Config{
		URI:         h.HealthURI,
		GRPC:        h.HealthGRPC,
		GRPCService: h.HealthGRPCService,
		Interval:    time.Duration(h.HealthInterval),
		Timeout:     time.Duration(h.HealthTimeout),
		Passes:      h.HealthPasses,
		Fails:       h.HealthFails,
	}
}

// poolConfig translates the JSON config into the library's.
func (h *Handler) poolConfig(log *zap.Logger) (pool.Config, error) {
	if !h.spawns() {
		return h.discoveryConfig(log)
	}
	repl := caddy.NewReplacer()
	expand := func(s string) string { return repl.ReplaceKnown(s, "") }
	args := make([]string, len(h.Command))
	for i, a := range h.Command {
		args[i] = expand(a)
	}
	env := make(map[string]string, len(h.Env))
	for k, v := range h.Env {
		env[k] = expand(v)
	}
	spec := worker.Spec{
		Command:                args[0],
		Args:                   args[1:],
		Dir:                    expand(h.Dir),
		Env:                    env,
		Count:                  h.Count,
		Listen:                 h.Listen,
		StopTimeout:            time.Duration(h.StopTimeout),
		MaxConsecutiveFailures: h.MaxConsecutiveFailures,
	}
	return pool.Config{
		Name:               h.Name,
		Workers:            spec,
		Health:             h.healthConfig(),
		StartupTimeout:     time.Duration(h.StartupTimeout),
		UnhealthyKillAfter: time.Duration(h.UnhealthyKillAfter),
		Watch:              h.Watch,
		Recycle: pool.Recycle{
			MaxRequests: h.MaxRequests,
			Jitter:      h.MaxRequestsJitter,
			MaxMemory:   h.MaxMemory,
			MaxLifetime: time.Duration(h.MaxLifetime),
		},
		Balancer:  h.balancerConfig(log),
		BindCheck: pool.BindCheck(h.BindCheck),
		Scale:     h.scaleConfig(),
	}, nil
}

// balancerConfig translates the balancing options into the balancer's
// config; log is only used once the balancer runs.
func (h *Handler) balancerConfig(log *zap.Logger) balancer.Config {
	cfg := balancer.Config{
		Policy: balancer.PolicyConfig{
			Name: h.Balance, HashOn: h.HashOn, HashKey: h.HashKey, Spill: h.HashSpill,
			Decay: time.Duration(h.EWMADecay),
		},
		ParkIdle:         time.Duration(h.ParkIdle),
		MaxInflight:      h.maxInflight().N,
		AdaptiveLimit:    h.maxInflight().Auto,
		QueueSize:        h.QueueSize,
		QueueTimeout:     time.Duration(h.QueueTimeout),
		Schedule:         h.Schedule,
		UpstreamProtocol: h.UpstreamProtocol,
		CostKey:          h.costKey(),
		RequestTimeout:   h.requestTimeout(),
		TrustForwarded:   trustedProxy,
		ClientIP:         clientIP,
		// Traces the attempts of the requests that a handler with
		// tracing on started; costs nothing for the others.
		OnAttempt: tracing.Attempt,
		OnError: func(e *balancer.Endpoint, r *http.Request, err error) {
			// Without the query string, which may carry secrets.
			// The error says what failed, and for a protocol mismatch
			// which upstream_protocol to set.
			log.Error("request to worker failed",
				zap.Int("worker", e.Worker), zap.Int("pid", e.PID), zap.String("address", e.Address),
				zap.String("method", r.Method), zap.String("path", r.URL.Path), zap.Error(err))
		},
	}
	if c := h.Cookie; c != nil {
		cfg.Policy.CookieName, cfg.Policy.CookieMaxAge, cfg.Policy.Fallback = c.Name, time.Duration(c.MaxAge), c.Fallback
		cfg.Policy.CookieSecret = caddy.NewReplacer().ReplaceKnown(c.Secret, "")
	}
	cfg.Retries = h.Retries
	if b := h.Breaker; b != nil {
		cfg.Breaker = balancer.BreakerConfig{
			Failures:         uint32(b.Failures),
			OpenFor:          time.Duration(b.OpenFor),
			HalfOpenRequests: uint32(b.HalfOpenRequests),
			Statuses:         b.Statuses,
		}
	}
	return cfg
}

// AffinityCookie configures "balance cookie": a client's first request
// is placed by Fallback, and the answer sets a cookie that names the
// worker (an HMAC of its identity, so it cannot be forged); later
// requests with the cookie go to that worker, waiting for it while it is
// busy, and are placed anew once it leaves rotation.
type AffinityCookie struct {
	// Name of the cookie. Default: wp_affinity.
	Name string `json:"name,omitempty"`
	// Secret signs the cookie; placeholders such as {env.AFFINITY_KEY}
	// are replaced. Default: a random key of this Caddy, which is
	// enough for spawned workers (a Caddy restart restarts them, and
	// their sessions are gone anyway); set one for found workers that
	// outlive Caddy or are shared by several Caddy instances.
	Secret string `json:"secret,omitempty"`
	// MaxAge of the cookie. Default: none (a browser-session cookie).
	MaxAge caddy.Duration `json:"max_age,omitempty"`
	// Fallback places the requests without a valid cookie: any policy
	// but hash and cookie. Default: least_inflight.
	Fallback string `json:"fallback,omitempty"`
}

// Breaker configures the circuit breaker that each worker has. Failing
// responses and transport errors count; clients that go away do not. An
// open breaker takes its worker out of rotation for OpenFor, then lets
// HalfOpenRequests probe requests through: if they succeed it closes.
type Breaker struct {
	// Failures in a row that open the breaker. Default: 5.
	Failures int `json:"failures,omitempty"`
	// OpenFor is how long the breaker stays open. Default: 10s.
	OpenFor caddy.Duration `json:"open_for,omitempty"`
	// HalfOpenRequests is the number of probes. Default: 1.
	HalfOpenRequests int `json:"half_open_requests,omitempty"`
	// Statuses are the response codes that count as failures. Default:
	// every 5xx.
	Statuses []int `json:"statuses,omitempty"`
}

// DefaultRequestTimeout is RequestTimeout when it is not set: without a
// limit, requests to a worker that never answers would hold its slots,
// and a pool of single-threaded workers, until their clients give up.
const DefaultRequestTimeout = 60 * time.Second

// requestTimeout is the balancer's request timeout: 0 for none.
func (h *Handler) requestTimeout() time.Duration {
	switch {
	case h.RequestTimeout == 0:
		return DefaultRequestTimeout
	case h.RequestTimeout < 0:
		return 0
	}
	return time.Duration(h.RequestTimeout)
}

// maxInflight is the configured limit, auto unless set.
func (h *Handler) maxInflight() Limit {
	if h.MaxInflight == nil {
		return Limit{Auto: true}
	}
	return *h.MaxInflight
}

// Limit is a number of requests, or "auto" for an adaptive limit. In
// JSON it is a number or the string "auto".
type Limit struct {
	N    int
	Auto bool
}

// MarshalJSON writes a number, or "auto".
func (l Limit) MarshalJSON() ([]byte, error) { return marshalNumberOrAuto(l.N, l.Auto) }

// UnmarshalJSON reads a number, or "auto".
func (l *Limit) UnmarshalJSON(b []byte) (err error) {
	l.N, l.Auto, err = unmarshalNumberOrAuto(b, "max_inflight")
	return err
}

// trustedProxy reports whether Caddy's server found the client to be one
// of its trusted_proxies.
func trustedProxy(r *http.Request) bool {
	v, _ := caddyhttp.GetVar(r.Context(), caddyhttp.TrustedProxyVarKey).(bool)
	return v
}

// clientIP is the client address Caddy's server determined, which honours
// trusted_proxies; it falls back to the connection's address.
func clientIP(r *http.Request) string {
	if ip, ok := caddyhttp.GetVar(r.Context(), caddyhttp.ClientIPVarKey).(string); ok {
		return ip
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
