package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	// The caddyfile adapter and Caddy's standard directives (handle,
	// respond, metrics, tracing), as in our Caddy.
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/standard"

	"github.com/caddy-workerpool/caddy-workerpool/caddymodule"
)

// adapted is the part of a Caddyfile's JSON that the checks read.
type adapted struct {
	Admin struct {
		Disabled bool `json:"disabled"`
	} `json:"admin"`
	Apps struct {
		HTTP struct {
			GracePeriod time.Duration     `json:"grace_period"`
			Servers     map[string]server `json:"servers"`
		} `json:"http"`
	} `json:"apps"`
}

type server struct {
	Listen            []string        `json:"listen"`
	Routes            []route         `json:"routes"`
	ReadHeaderTimeout time.Duration   `json:"read_header_timeout"`
	ListenerWrappers  []listenWrapper `json:"listener_wrappers"`
}

type listenWrapper struct {
	Wrapper string `json:"wrapper"`
}

// guarded reports what the server lacks of the protections against
// hostile clients that every shipped config sets: a short time for
// request headers (Caddy's default is a minute) and the refusal of
// requests that declare their body's length twice.
func (s server) guarded() []string {
	var missing []string
	if s.ReadHeaderTimeout <= 0 || s.ReadHeaderTimeout > 30*time.Second {
		missing = append(missing, fmt.Sprintf("read_header_timeout %v (want at most 30s)", s.ReadHeaderTimeout))
	}
	if !slices.ContainsFunc(s.ListenerWrappers, func(w listenWrapper) bool { return w.Wrapper == "worker_pool_framing" }) {
		missing = append(missing, "the worker_pool_framing listener wrapper")
	}
	return missing
}

type route struct {
	Match []struct {
		Path []string `json:"path"`
	} `json:"match"`
	Handle []json.RawMessage `json:"handle"`
}

// adaptCaddyfile adapts a Caddyfile with our module registered, as our
// Caddy does at start. Warnings fail too: Caddy prints them for a
// Caddyfile that `caddy fmt` would change, among others.
func adaptCaddyfile(t *testing.T, what, caddyfile string) adapted {
	t.Helper()
	out, warnings, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": what})
	if err != nil {
		t.Fatalf("%s: the Caddyfile does not adapt: %v\n%s", what, err, caddyfile)
	}
	for _, w := range warnings {
		t.Errorf("%s: Caddyfile warning: %s", what, w.String())
	}
	var a adapted
	if err := json.Unmarshal(out, &a); err != nil {
		t.Fatal(err)
	}
	return a
}

// ports are the TCP ports Caddy's servers listen on.
func (a adapted) ports(t *testing.T) []int {
	t.Helper()
	var ports []int
	for _, s := range a.Apps.HTTP.Servers {
		for _, l := range s.Listen {
			_, p, err := net.SplitHostPort(l)
			if err != nil {
				t.Fatalf("listener %q: %v", l, err)
			}
			n, err := strconv.Atoi(p)
			if err != nil {
				t.Fatalf("listener %q: %v", l, err)
			}
			ports = append(ports, n)
		}
	}
	slices.Sort(ports)
	return ports
}

// server returns the server that listens on port.
func (a adapted) server(port int) (server, bool) {
	for _, s := range a.Apps.HTTP.Servers {
		for _, l := range s.Listen {
			if strings.HasSuffix(l, ":"+strconv.Itoa(port)) {
				return s, true
			}
		}
	}
	return server{}, false
}

// serves reports whether a request for path on port reaches the handler
// named handler: the first route whose matchers take the path decides,
// as in a Caddyfile of handle blocks.
func (a adapted) serves(port int, path, handler string) bool {
	s, ok := a.server(port)
	return ok && routesServe(s.Routes, path, handler)
}

func routesServe(routes []route, path, handler string) bool {
	for _, r := range routes {
		if !r.matches(path) {
			continue
		}
		for _, h := range r.Handle {
			var hd struct {
				Handler string  `json:"handler"`
				Routes  []route `json:"routes"`
			}
			if err := json.Unmarshal(h, &hd); err != nil {
				return false
			}
			if hd.Handler == "subroute" {
				return routesServe(hd.Routes, path, handler)
			}
			if hd.Handler == handler {
				return true
			}
		}
		return false
	}
	return false
}

func (r route) matches(path string) bool {
	if len(r.Match) == 0 {
		return true
	}
	for _, m := range r.Match {
		for _, p := range m.Path {
			if p == path || (strings.HasSuffix(p, "*") && strings.HasPrefix(path, strings.TrimSuffix(p, "*"))) {
				return true
			}
		}
	}
	return false
}

// pools returns every worker_pool handler of the config, decoded
// strictly into our module's type.
func (a adapted) pools(t *testing.T) []caddymodule.Handler {
	t.Helper()
	var pools []caddymodule.Handler
	var walk func([]route)
	walk = func(routes []route) {
		for _, r := range routes {
			for _, h := range r.Handle {
				var m map[string]json.RawMessage
				if err := json.Unmarshal(h, &m); err != nil {
					t.Fatal(err)
				}
				var name string
				_ = json.Unmarshal(m["handler"], &name)
				switch name {
				case "subroute":
					var sub []route
					if err := json.Unmarshal(m["routes"], &sub); err != nil {
						t.Fatal(err)
					}
					walk(sub)
				case "worker_pool":
					delete(m, "handler")
					raw, _ := json.Marshal(m)
					dec := json.NewDecoder(bytes.NewReader(raw))
					dec.DisallowUnknownFields()
					var p caddymodule.Handler
					if err := dec.Decode(&p); err != nil {
						t.Fatalf("worker_pool %s: %v", raw, err)
					}
					pools = append(pools, p)
				}
			}
		}
	}
	for _, s := range a.Apps.HTTP.Servers {
		walk(s.Routes)
	}
	return pools
}

// discoverPorts expands the pool's discover addresses (host:port and
// host:first-last) into loopback ports.
func discoverPorts(t *testing.T, p caddymodule.Handler) []int {
	t.Helper()
	var ports []int
	for _, d := range p.Discover {
		host, ps, err := net.SplitHostPort(d)
		if err != nil {
			t.Fatalf("discover %q: %v", d, err)
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			t.Errorf("discover %q: not a loopback address", d)
		}
		first, last, isRange := strings.Cut(ps, "-")
		lo, err1 := strconv.Atoi(first)
		hi := lo
		var err2 error
		if isRange {
			hi, err2 = strconv.Atoi(last)
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("discover %q: bad port", d)
		}
		for p := lo; p <= hi; p++ {
			ports = append(ports, p)
		}
	}
	return ports
}

func TestCaddyfileChecksSeeWhatIsServed(t *testing.T) {
	// The checks below must tell a served path from one that is not.
	a := adaptCaddyfile(t, "test", "{\n\tadmin off\n}\n\n:9000 {\n\thandle /healthz {\n\t\tworker_pool_health app\n\t}\n\thandle {\n\t\trespond 404\n\t}\n}\n")
	if !a.serves(9000, "/healthz", "worker_pool_health") {
		t.Error("/healthz on :9000 not seen as served by worker_pool_health")
	}
	if a.serves(9000, "/livez", "worker_pool_health") || a.serves(9001, "/healthz", "worker_pool_health") {
		t.Error("a path or port that is not served seen as served")
	}
	if got := a.ports(t); !slices.Equal(got, []int{9000}) {
		t.Errorf("ports %v, want [9000]", got)
	}
}
