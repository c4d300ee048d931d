package balancer

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// Policy picks the endpoint for a request. It chooses among the
// endpoints for which pick.Usable is true (healthy, breaker closed or
// probing, below its in-flight limit, not yet tried by this request) and
// returns nil if there is none. It must be safe for concurrent use and
// should not allocate.
type Policy interface {
	Select(eps []*Endpoint, pick *Pick) *Endpoint
}

// Policy names accepted by NewPolicy.
const (
	LeastInflight = "least_inflight"
	P2CEWMA       = "p2c_ewma"
	RoundRobin    = "round_robin"
	Random        = "random"
	First         = "first"
	Hash          = "hash"
	// Cookie places a client's first request by the Fallback policy and
	// pins the client to that worker with a cookie of the pool's own.
	Cookie = "cookie"
)

// DefaultCookieName is the affinity cookie's name when none is given.
const DefaultCookieName = "wp_affinity"

// Hash key sources.
const (
	HashHeader   = "header"
	HashCookie   = "cookie"
	HashQuery    = "query"
	HashClientIP = "client_ip"
)

// PolicyConfig names a policy and its parameters.
type PolicyConfig struct {
	// Name is one of the policy names; empty means least_inflight.
	Name string
	// HashOn is header, cookie, query or client_ip (for hash).
	HashOn string
	// HashKey is the header, cookie or query parameter name (for hash).
	HashKey string
	// Spill lets a hashed request whose worker is at its limit go to
	// the next worker in its key's ranking (for hash): right where the
	// key only finds a warm cache. Without it the request waits for its
	// worker while that worker is in rotation, since the worker may hold
	// the key's session.
	Spill bool
	// CookieName, CookieSecret and CookieMaxAge set up the affinity
	// cookie (for cookie): its name (empty: DefaultCookieName), the key
	// that signs it (empty: a random one, which this balancer alone
	// knows) and its lifetime (0: the browser session).
	CookieName   string
	CookieSecret string
	CookieMaxAge time.Duration
	// Fallback places the requests that carry no valid affinity cookie
	// (for cookie): any policy but hash and cookie; empty means
	// least_inflight.
	Fallback string
	// Decay is the time constant of p2c_ewma's latency average; zero
	// means 10s.
	Decay time.Duration
}

// DefaultDecay is p2c_ewma's default time constant.
const DefaultDecay = 10 * time.Second

// NewPolicy returns the policy cfg describes, or an error that names
// what to change.
func NewPolicy(cfg PolicyConfig) (Policy, error) {
	switch cfg.Name {
	case "", LeastInflight:
		return leastInflight{}, nil
	case P2CEWMA:
		return p2cEWMA{}, nil
	case RoundRobin:
		return &roundRobin{}, nil
	case Random:
		return random{}, nil
	case First:
		return first{}, nil
	case Hash:
		switch cfg.HashOn {
		case HashHeader, HashCookie, HashQuery:
			if cfg.HashKey == "" {
				return nil, fmt.Errorf("hash %s: give the %s name to hash, e.g. 'hash %s %s'", cfg.HashOn, cfg.HashOn, cfg.HashOn, map[string]string{HashHeader: "X-User-ID", HashCookie: "session", HashQuery: "room"}[cfg.HashOn])
			}
		case HashClientIP:
		default:
			return nil, fmt.Errorf("hash %q: hash on header <name>, cookie <name>, query <name> or client_ip", cfg.HashOn)
		}
		return &rendezvous{on: cfg.HashOn, key: cfg.HashKey, spill: cfg.Spill}, nil
	case Cookie:
		switch cfg.Fallback {
		case Hash, Cookie:
			return nil, fmt.Errorf("cookie fallback %q: the first request of a client is placed by load; use least_inflight, p2c_ewma, round_robin, random or first", cfg.Fallback)
		}
		fallback, err := NewPolicy(PolicyConfig{Name: cfg.Fallback, Decay: cfg.Decay})
		if err != nil {
			return nil, fmt.Errorf("cookie fallback: %w", err)
		}
		name := cfg.CookieName
		if name == "" {
			name = DefaultCookieName
		}
		if !validCookieName(name) {
			return nil, fmt.Errorf("cookie name %q: use letters, digits and - _ . only", name)
		}
		if cfg.CookieMaxAge < 0 {
			return nil, fmt.Errorf("cookie max_age %v: must not be negative (0 is a session cookie)", cfg.CookieMaxAge)
		}
		secret := []byte(cfg.CookieSecret)
		if len(secret) == 0 {
			secret = make([]byte, 32)
			rand.Read(secret)
		}
		return &cookiePolicy{
			cookie:   affinityCookie{name: name, secret: secret, maxAge: cfg.CookieMaxAge},
			fallback: fallback,
		}, nil
	}
	return nil, fmt.Errorf("unknown policy %q: use least_inflight, p2c_ewma, round_robin, random, first, hash or cookie", cfg.Name)
}

// leastInflight picks the usable endpoint serving the fewest requests.
// Ties are broken uniformly at random, so idle workers share light
// traffic rather than the first one taking all of it.
type leastInflight struct{}

func (leastInflight) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	var best *Endpoint
	var load int64
	ties := 0
	for _, e := range eps {
		if !pick.Usable(e) {
			continue
		}
		l := e.Inflight()
		switch {
		case best == nil || l < load:
			best, load, ties = e, l, 1
		case l == load:
			// Reservoir sampling: the k-th tie replaces with chance 1/k.
			ties++
			if mrand.N(ties) == 0 {
				best = e
			}
		}
	}
	return best
}

// p2cEWMA draws two usable endpoints at random and takes the one whose
// peak-EWMA latency × (in flight + 1) is lower: the "power of two
// choices", which avoids herding onto one endpoint that looks best.
type p2cEWMA struct{}

func (p2cEWMA) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	if n > 1 {
		i := mrand.N(n)
		j := mrand.N(n - 1)
		if j >= i {
			j++
		}
		a, b := eps[i], eps[j]
		if pick.Usable(a) && pick.Usable(b) {
			if b.cost() < a.cost() {
				return b
			}
			return a
		}
	}
	// Few usable endpoints: take the cheapest of those.
	var best *Endpoint
	bestCost := math.Inf(1)
	for _, e := range eps {
		if pick.Usable(e) {
			if c := e.cost(); best == nil || c < bestCost {
				best, bestCost = e, c
			}
		}
	}
	return best
}

// roundRobin takes the usable endpoints in turn.
type roundRobin struct{ next atomic.Uint64 }

func (p *roundRobin) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := uint64(len(eps))
	start := p.next.Add(1) - 1
	for i := range n {
		if e := eps[(start+i)%n]; pick.Usable(e) {
			return e
		}
	}
	return nil
}

// random picks a usable endpoint uniformly at random.
type random struct{}

func (random) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	n := len(eps)
	if n == 0 {
		return nil
	}
	start := mrand.N(n)
	for i := range n {
		if e := eps[(start+i)%n]; pick.Usable(e) {
			return e
		}
	}
	return nil
}

// first picks the first usable endpoint in worker order: traffic packs
// onto the lowest-numbered workers, which suits max_inflight limits.
type first struct{}

func (first) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	for _, e := range eps {
		if pick.Usable(e) {
			return e
		}
	}
	return nil
}

// rendezvous is highest-random-weight hashing on a request key: each
// endpoint scores hash(key, endpoint) and the best one wins. When an
// endpoint leaves rotation, only its keys move, to the next in their own
// ranking; so does a key whose endpoint failed this request. A key whose
// endpoint is at its limit waits for it, or with spill goes to the next
// in its ranking. A request without the key is balanced by
// least_inflight.
type rendezvous struct {
	on, key string
	spill   bool
}

func (p *rendezvous) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	k, ok := p.keyOf(pick)
	if !ok {
		return leastInflight{}.Select(eps, pick)
	}
	h := hashString(k)
	var best *Endpoint
	var bestScore uint64
	for _, e := range eps {
		if p.spill && !pick.Usable(e) || !p.spill && pick.hasTried(e) {
			continue
		}
		if s := mix64(h ^ e.seed); best == nil || s > bestScore {
			best, bestScore = e, s
		}
	}
	if best != nil && !p.spill && !best.available() {
		return nil // it waits for its worker
	}
	return best
}

func (p *rendezvous) keyOf(pick *Pick) (string, bool) {
	r := pick.Request
	switch p.on {
	case HashHeader:
		v := r.Header.Get(p.key)
		return v, v != ""
	case HashCookie:
		c, err := r.Cookie(p.key)
		if err != nil || c.Value == "" {
			return "", false
		}
		return c.Value, true
	case HashQuery:
		v := queryValue(r.URL.RawQuery, p.key)
		return v, v != ""
	default:
		if pick.ClientIP != nil {
			ip := pick.ClientIP(r)
			return ip, ip != ""
		}
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		return host, host != ""
	}
}

// queryValue is the first value of the query parameter name in raw,
// decoded, or "" if there is none; it allocates only to decode.
func queryValue(raw, name string) string {
	for raw != "" {
		var kv string
		kv, raw, _ = strings.Cut(raw, "&")
		k, v, _ := strings.Cut(kv, "=")
		if k != name {
			if !strings.ContainsAny(k, "%+") {
				continue
			}
			if uk, err := url.QueryUnescape(k); err != nil || uk != name {
				continue
			}
		}
		if strings.ContainsAny(v, "%+") {
			uv, err := url.QueryUnescape(v)
			if err != nil {
				return ""
			}
			return uv
		}
		return v
	}
	return ""
}

// cookiePolicy pins each client to a worker with an affinity cookie
// that the balancer sets itself: a request without a valid one (none
// yet, tampered with, or naming a worker that is no longer in rotation)
// is placed by the fallback policy, and the answer carries a cookie that
// names the worker it went to. A request whose worker is at its limit
// waits for it: a sticky session never leaves a worker in rotation. One
// that its worker failed is placed anew, as after that worker leaves.
type cookiePolicy struct {
	cookie   affinityCookie
	fallback Policy
}

func (p *cookiePolicy) Select(eps []*Endpoint, pick *Pick) *Endpoint {
	if t := pick.cookie; t != "" {
		for _, e := range eps {
			if e.token != t {
				continue
			}
			switch {
			case pick.hasTried(e):
			case e.available():
				return e
			default:
				return nil // it waits for its worker
			}
			break
		}
	}
	return p.fallback.Select(eps, pick)
}

// affinityCookie is the cookie balance cookie sets: its value names an
// endpoint by an HMAC of the endpoint's identity (worker slot, pid and
// address) under a secret, so that it cannot be forged to pick a worker,
// and a restarted worker's cookie names nothing.
type affinityCookie struct {
	name   string
	secret []byte
	maxAge time.Duration
}

// token is the cookie value that names the endpoint.
func (c *affinityCookie) token(worker, pid int, network, address string) string {
	m := hmac.New(sha256.New, c.secret)
	m.Write([]byte(strconv.Itoa(worker) + "\x00" + strconv.Itoa(pid) + "\x00" + network + "\x00" + address))
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil)[:18])
}

// read returns r's affinity cookie value, "" if none.
func (c *affinityCookie) read(r *http.Request) string {
	k, err := r.Cookie(c.name)
	if err != nil {
		return ""
	}
	return k.Value
}

// header is the Set-Cookie value that pins a client to the endpoint
// with token: HttpOnly, SameSite=Lax, Secure when the client came over
// TLS.
func (c *affinityCookie) header(token string, tls bool) string {
	k := http.Cookie{Name: c.name, Value: token, Path: "/", HttpOnly: true, Secure: tls, SameSite: http.SameSiteLaxMode}
	if c.maxAge > 0 {
		k.MaxAge = max(1, int(c.maxAge.Seconds()))
	}
	return k.String()
}

// validCookieName reports whether name is a cookie name every browser
// takes as it is.
func validCookieName(name string) bool {
	for i := 0; i < len(name); i++ {
		switch ch := name[i]; {
		case 'a' <= ch && ch <= 'z', 'A' <= ch && ch <= 'Z', '0' <= ch && ch <= '9', ch == '-', ch == '_', ch == '.':
		default:
			return false
		}
	}
	return name != ""
}

// hashString is 64-bit FNV-1a.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}

// mix64 is the splitmix64 finaliser: it spreads the bits of a combined
// key and endpoint hash so scores of different endpoints are independent.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// endpointSeed identifies an endpoint for hashing: the worker slot for
// spawned workers (stable across restarts), the address otherwise.
func endpointSeed(worker int, address string) uint64 {
	if worker > 0 {
		return mix64(uint64(worker) * 0x9e3779b97f4a7c15)
	}
	return hashString(strings.ToLower(address))
}
