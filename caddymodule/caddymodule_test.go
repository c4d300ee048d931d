package caddymodule_test

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig"
	_ "github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	_ "github.com/caddyserver/caddy/v2/modules/caddyhttp"
	_ "github.com/caddyserver/caddy/v2/modules/metrics"
	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/caddy-workerpool/caddy-workerpool/caddymodule"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	goleak.VerifyTestMain(waitDraining{m},
		// Caddy's storage keeps a lock file fresh for a while after its
		// cleaning job ran: Caddy's goroutine, not one of ours.
		goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh"))
}

// waitDraining lets the pools that reloads replaced finish stopping in
// the background before goleak looks for goroutines.
type waitDraining struct{ m *testing.M }

func (w waitDraining) Run() int {
	code := w.m.Run()
	caddymodule.WaitDraining()
	return code
}

func adapt(caddyfile string) ([]byte, error) {
	cfg, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), map[string]any{"filename": "Caddyfile"})
	return cfg, err
}

// site is a Caddyfile serving the test worker through worker_pool.
func site(port int, options string) string {
	return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	worker_pool {
		command %s
		env %s serve
		env GORACE atexit_sleep_ms=0
		health_uri /healthz
		health_interval 50ms
		%s
	}
}
`, port, testworker.Command(), testworker.ModeEnv, options)
}

func load(t *testing.T, caddyfile string) {
	t.Helper()
	cfg, err := adapt(caddyfile)
	if err != nil {
		t.Fatal(err)
	}
	if err := caddy.Load(cfg, true); err != nil {
		t.Fatal(err)
	}
}

func stop(t *testing.T) {
	if err := caddy.Stop(); err != nil {
		t.Error(err)
	}
}

var client = &http.Client{Timeout: 5 * time.Second}

// pids sends n requests through Caddy and returns the pids that answered.
func pids(t *testing.T, url string, n int) map[int]int {
	t.Helper()
	seen := map[int]int{}
	for range n {
		resp, err := client.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		var r testworker.Reply
		err = json.NewDecoder(resp.Body).Decode(&r)
		resp.Body.Close()
		if resp.StatusCode != 200 || err != nil {
			t.Fatalf("GET %s: %s %v", url, resp.Status, err)
		}
		seen[r.PID]++
	}
	return seen
}

func waitServing(t *testing.T, url string, workers int) map[int]int {
	t.Helper()
	var seen map[int]int
	testworker.Eventually(t, 15*time.Second, fmt.Sprintf("%d workers serving through Caddy", workers), func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return false
		}
		seen = pids(t, url, 20*workers)
		return len(seen) == workers
	})
	return seen
}

func TestCaddyfileServesThroughWorkersAndReloads(t *testing.T) {
	port := testworker.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	cfg := site(port, "count 3")
	load(t, cfg)
	first := waitServing(t, url, 3)

	// A reload with the pool's config unchanged keeps its workers.
	load(t, cfg)
	same := waitServing(t, url, 3)
	for pid := range first {
		if same[pid] == 0 {
			t.Fatalf("reload with an unchanged pool replaced its workers: %v, then %v", first, same)
		}
	}

	// A changed pool config starts new workers, switches only once they
	// are healthy, then stops the old ones: no request fails meanwhile.
	stopTraffic := testworker.Traffic(t, client, url, 4)
	load(t, site(port, "count 3\n\t\tenv DEPLOY 2"))
	for pid := range first {
		testworker.Eventually(t, 15*time.Second, "workers of the old config gone", func() bool { return !testworker.Alive(pid) })
	}
	now := waitServing(t, url, 3)
	// Each request that failed during the reload is an error of its own.
	if served, _ := stopTraffic(); served == 0 {
		t.Fatal("no traffic during the reload")
	}
	for pid := range now {
		if first[pid] != 0 {
			t.Fatalf("changed config still served by old worker %d", pid)
		}
	}

	groups := map[int]int{}
	for pid := range now {
		groups[pid] = testworker.PGID(pid)
	}
	stop(t)
	for pid, g := range groups {
		if testworker.Alive(pid) || len(testworker.GroupMembers(g)) > 0 {
			t.Fatalf("worker %d (group %d) survived caddy.Stop", pid, g)
		}
	}
}

func TestUnixSocketsWithLimitAndP2C(t *testing.T) {
	port := testworker.FreePort(t)
	load(t, site(port, "count 2\n\t\tlisten unix\n\t\tmax_inflight 1\n\t\tbalance p2c_ewma"))
	defer stop(t)
	waitServing(t, fmt.Sprintf("http://127.0.0.1:%d/", port), 2)
}

func TestCaddyfileErrorsNameTheLine(t *testing.T) {
	cases := []struct {
		option string
		want   string
		line   int
	}{
		{"count lots", `count: "lots" is not a number`, 0},
		{"balance fastest", `unknown policy "fastest"`, 0},
		{"listen udp", `listen: "udp"`, 0},
		{"bind_check strict", `bind_check: "strict" is not a choice; use warn`, 0},
		{"bind_check", "wrong argument count", 0},
		{"health_interval soon", `health_interval: "soon" is not a positive duration`, 0},
		{"env ONLY_NAME", "env: want a name and a value", 0},
		{"max_inflght 2", `unrecognized worker_pool option "max_inflght"`, 0},
		{"balance hash", "say what to hash", 0},
		{"balance hash header", "give the header name", 0},
		{"balance hash path", `"path" is not a key`, 0},
		{"balance p2c_ewma soon", `decay "soon"`, 0},
		{"balance hash query", "give the query name", 0},
		{"balance hash client_ip overflow", `"overflow": the only word after the key is spill`, 0},
		{"balance cookie a b", "wrong argument count", 0},
		{"balance cookie {\n\t\t\tmax_age soon\n\t\t}", `balance cookie max_age: "soon"`, 15},
		{"balance cookie {\n\t\t\tpath /app\n\t\t}", `balance cookie: unknown option "path"`, 15},
		{"park_idle never", `park_idle: "never" is not a positive duration`, 0},
		{"max_inflight -1", `max_inflight: "-1" is not a limit`, 0},
		{"queue_size many", `queue_size: "many" is not a count`, 0},
		{"retries -1", `retries: "-1" is not a count`, 0},
		{"request_timeout never", `request_timeout: "never" is not a positive duration`, 0},
		{"unhealthy_kill_after 0s", `unhealthy_kill_after: "0s"`, 0},
		{"max_consecutive_failures 0", `max_consecutive_failures: "0"`, 0},
		{"watch", "watch: give one or more file globs", 0},
		{"max_requests 0", `max_requests: "0" is not a count`, 0},
		{"max_requests 100 spread 5", "only 'jitter <n>' may follow", 0},
		{"max_memory lots", `max_memory: "lots" is not a size`, 0},
		{"max_lifetime forever", `max_lifetime: "forever"`, 0},
		{"schedule lifo", `schedule: "lifo" is not a schedule`, 0},
		{"cost_key", "wrong argument count", 0},
		// The bad value sits on the line after "breaker {".
		{"breaker {\n\t\t\tfailures 0\n\t\t}", `breaker failures: "0"`, 15},
	}
	for _, c := range cases {
		t.Run(c.option, func(t *testing.T) {
			// The option sits on line 14 of the Caddyfile site() writes.
			line := cmp.Or(c.line, 14)
			_, err := adapt(site(8080, c.option))
			if err == nil {
				t.Fatal("adapted without error")
			}
			if !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), fmt.Sprintf("Caddyfile:%d", line)) {
				t.Fatalf("error %q: want it to contain %q and the line Caddyfile:%d", err, c.want, line)
			}
		})
	}
	_, err := adapt("http://127.0.0.1:8080 {\n\tworker_pool {\n\t\tcount 2\n\t}\n}\n")
	if err == nil || !strings.Contains(err.Error(), "needs a command") {
		t.Fatalf("missing command: %v", err)
	}
}

func TestCaddyfileSchedulingOptions(t *testing.T) {
	cfg, err := adapt(site(8080, `balance hash cookie session
		max_requests 1000 jitter 100
		max_memory 512MiB
		max_lifetime 1h
		max_inflight auto
		queue_size 10
		queue_timeout 2s
		schedule fifo
		cost_key {http.request.header.X-Operation}
		retries 0
		breaker {
			failures 3
			open_for 5s
			half_open_requests 2
			statuses 502 503
		}`))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Apps struct {
			HTTP struct {
				Servers map[string]struct {
					Routes []struct {
						Handle []struct {
							Routes []struct {
								Handle []map[string]any `json:"handle"`
							} `json:"routes"`
						} `json:"handle"`
					} `json:"routes"`
				} `json:"servers"`
			} `json:"http"`
		} `json:"apps"`
	}
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	h := doc.Apps.HTTP.Servers["srv0"].Routes[0].Handle[0].Routes[0].Handle[0]
	got, _ := json.Marshal(map[string]any{
		"balance": h["balance"], "hash_on": h["hash_on"], "hash_key": h["hash_key"],
		"max_inflight": h["max_inflight"], "queue_size": h["queue_size"], "queue_timeout": h["queue_timeout"],
		"retries": h["retries"], "breaker": h["breaker"], "schedule": h["schedule"], "cost_key": h["cost_key"],
		"max_requests": h["max_requests"], "max_requests_jitter": h["max_requests_jitter"],
		"max_memory": h["max_memory"], "max_lifetime": h["max_lifetime"],
	})
	want := `{"balance":"hash","breaker":{"failures":3,"half_open_requests":2,"open_for":5000000000,"statuses":[502,503]},` +
		`"cost_key":"{http.request.header.X-Operation}","hash_key":"session","hash_on":"cookie","max_inflight":"auto","max_lifetime":3600000000000,"max_memory":536870912,` +
		`"max_requests":1000,"max_requests_jitter":100,"queue_size":10,"queue_timeout":2000000000,"retries":0,"schedule":"fifo"}`
	if string(got) != want {
		t.Fatalf("adapted handler:\n got %s\nwant %s", got, want)
	}
}

func TestCaddyfileStickyOptions(t *testing.T) {
	for _, c := range []struct {
		option string
		want   []string
	}{
		{"balance hash query sid spill\n\t\tpark_idle 20ms", []string{`"balance":"hash"`, `"hash_key":"sid","hash_on":"query","hash_spill":true`, `"park_idle":20000000`}},
		{"balance hash client_ip\n\t\tpark_idle off", []string{`"balance":"hash"`, `"hash_on":"client_ip"`, `"park_idle":-1`}},
		{"balance cookie", []string{`"balance":"cookie"`, `"cookie":{}`}},
		{"balance cookie io_node {\n\t\t\tsecret {env.AFFINITY_KEY}\n\t\t\tmax_age 24h\n\t\t\tfallback round_robin\n\t\t}", []string{`"balance":"cookie"`, `"cookie":{"fallback":"round_robin","max_age":86400000000000,"name":"io_node","secret":"{env.AFFINITY_KEY}"}`}},
	} {
		cfg, err := adapt(site(8080, c.option))
		if err != nil {
			t.Fatalf("%s: %v", c.option, err)
		}
		for _, w := range c.want {
			if !strings.Contains(string(cfg), w) {
				t.Errorf("%s: adapted to\n%s\nwant it to contain %s", c.option, cfg, w)
			}
		}
	}
}

func TestProvisionRefusesBadConfig(t *testing.T) {
	port := testworker.FreePort(t)
	handler := func(h string) []byte {
		return []byte(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{
			"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},
			"routes":[{"handle":[%s]}]}}}}}`, port, h))
	}
	cases := []struct{ handler, want string }{
		{`{"handler":"worker_pool","command":["no-such-program-xyz"]}`, `command "no-such-program-xyz": not found in PATH`},
		{`{"handler":"worker_pool"}`, "command: required"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"listen":"udp"}`, `listen: "udp" is not a mode`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"bind_check":"strict"}`, `bind_check: "strict" is not a choice: use warn`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"count":-1}`, "count: -1 is negative"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"health_uri":"healthz"}`, "health_uri"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"dir":"/no/such/dir"}`, "dir"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"balance":"hash","hash_on":"header"}`, "give the header name"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"max_inflight":"lots"}`, `neither a number nor "auto"`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"balance":"cookie","cookie":{"fallback":"hash"}}`, `cookie fallback "hash"`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"balance":"cookie","cookie":{"name":"a;b"}}`, `cookie name "a;b"`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"retries":9}`, "retries 9: give 0 for none, or a count of at most 5"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"retries":-1}`, "retries -1: give 0 for none"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"schedule":"lifo"}`, `schedule "lifo": use cost`},
		{`{"handler":"worker_pool","command":["/bin/sh"],"watch":["/no/such/dir/*.js"]}`, "watch"},
	}
	for _, c := range cases {
		err := caddy.Load(handler(c.handler), true)
		if err == nil {
			stop(t)
			t.Fatalf("%s: loaded", c.handler)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to contain %q", c.handler, err, c.want)
		}
	}
}

func TestJSONConfig(t *testing.T) {
	port := testworker.FreePort(t)
	cfg := fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{
		"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},
		"routes":[{"handle":[{"handler":"worker_pool","command":[%q],
			"env":{%q:"serve","GORACE":"atexit_sleep_ms=0"},"count":2,"balance":"round_robin",
			"health_uri":"/healthz","health_interval":"50ms"}]}]}}}}}`,
		port, testworker.Command(), testworker.ModeEnv)
	if err := caddy.Load([]byte(cfg), true); err != nil {
		t.Fatal(err)
	}
	defer stop(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	waitServing(t, url, 2)
	for pid, n := range pids(t, url, 40) {
		// round_robin over two workers alternates exactly.
		if n != 20 {
			t.Fatalf("round_robin: pid %d served %d of 40", pid, n)
		}
	}
}

// loadWithAdmin loads caddyfile with the admin endpoint on a free port
// and returns the port and the Caddyfile loaded. The test's end stops
// Caddy and its admin endpoint, which outlives caddy.Stop.
func loadWithAdmin(t *testing.T, caddyfile string) (int, string) {
	t.Helper()
	adminPort := testworker.FreePort(t)
	cfg := strings.Replace(caddyfile, "admin off", fmt.Sprintf("admin 127.0.0.1:%d", adminPort), 1)
	load(t, cfg)
	t.Cleanup(func() {
		if err := caddy.Load([]byte(`{"admin":{"disabled":true}}`), true); err != nil {
			t.Error(err)
		}
		stop(t)
		client.CloseIdleConnections()
	})
	return adminPort, cfg
}

func TestAdminAPIStatusAndRollingRestart(t *testing.T) {
	port := testworker.FreePort(t)
	adminPort, _ := loadWithAdmin(t, site(port, "count 2\n\t\tname api"))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	admin := fmt.Sprintf("http://127.0.0.1:%d/worker_pool/", adminPort)
	served := waitServing(t, url, 2)

	status := func() []pool.Status {
		t.Helper()
		resp, err := client.Get(admin)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st []pool.Status
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil {
			t.Fatalf("GET %s: %s", admin, resp.Status)
		}
		return st
	}
	st := status()
	if len(st) != 1 || st[0].Name != "api" || st[0].Healthy != 2 || len(st[0].Workers) != 2 {
		t.Fatalf("status %+v", st)
	}
	if c := st[0].Costs; len(c) != 1 || c[0].Route != "GET /" || c[0].Samples == 0 || c[0].CostMS <= 0 {
		t.Fatalf("costs %+v, want what GET / cost", c)
	}
	for _, w := range st[0].Workers {
		if served[w.PID] == 0 {
			t.Fatalf("status lists pid %d, which served nothing; served %v", w.PID, served)
		}
		// A Go test worker holds megabytes; uptime counts from its start.
		if w.RSSBytes < 1<<20 || w.UptimeSeconds <= 0 || w.UptimeSeconds > 60 {
			t.Errorf("worker %d: rss %d bytes, uptime %.1fs", w.ID, w.RSSBytes, w.UptimeSeconds)
		}
	}

	resp, err := client.Post(admin+"nope/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("restart of an unknown pool: %s", resp.Status)
	}
	resp, err = client.Post(admin+"api/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"restarted":2`) {
		t.Fatalf("restart: %s %s", resp.Status, body)
	}
	for _, w := range status()[0].Workers {
		if served[w.PID] != 0 || !w.Healthy {
			t.Fatalf("after the restart: %+v", w)
		}
	}
}

// metric returns the value of the series name whose labels include all
// of labels (`key="value"`), summed over the series that match; -1 if
// none does.
func metric(text, name string, labels ...string) float64 {
	sum, found := 0.0, false
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			ok = ok && strings.Contains(line, l)
		}
		if !ok {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err == nil {
			sum, found = sum+v, true
		}
	}
	if !found {
		return -1
	}
	return sum
}

func TestMetrics(t *testing.T) {
	port := testworker.FreePort(t)
	adminPort, cfg := loadWithAdmin(t, site(port, "count 2\n\t\tname m"))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	scrape := func() string {
		t.Helper()
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	served := waitServing(t, url, 2)
	total := 0
	for _, n := range served {
		total += n
	}
	text := scrape()
	if got := metric(text, "caddy_worker_pool_requests_total", `pool="m"`, `code="2xx"`); got < float64(total) {
		t.Fatalf("requests_total 2xx = %v, want at least %d\n%s", got, total, text)
	}
	for _, w := range []string{`worker="1"`, `worker="2"`} {
		if metric(text, "caddy_worker_pool_requests_total", `pool="m"`, w) <= 0 {
			t.Fatalf("no requests counted for %s", w)
		}
		if metric(text, "caddy_worker_pool_worker_healthy", w) != 1 {
			t.Fatalf("%s not healthy in the metrics", w)
		}
	}
	if metric(text, "caddy_worker_pool_workers", `state="running"`) != 2 || metric(text, "caddy_worker_pool_queue_depth", `pool="m"`) != 0 {
		t.Fatalf("workers/queue gauges:\n%s", text)
	}
	if metric(text, "caddy_worker_pool_request_duration_seconds_count", `pool="m"`) < float64(total) {
		t.Fatal("request durations not observed")
	}
	if metric(text, "caddy_worker_pool_route_cost_seconds", `pool="m"`, `route="GET /"`) <= 0 {
		t.Fatalf("no cost learned for GET /:\n%s", text)
	}
	// Kill a worker: a crash restart is counted.
	var victim int
	for pid := range served {
		victim = pid
		break
	}
	if err := testworker.Kill(victim); err != nil {
		t.Fatal(err)
	}
	testworker.Eventually(t, 10*time.Second, "the crash counted", func() bool {
		return metric(scrape(), "caddy_worker_pool_worker_restarts_total", `reason="crash"`) == 1
	})
	// A reload registers the pool in the new config's registry: no
	// duplicate registration error, and the counters go on.
	load(t, cfg)
	// The reload replaced the admin server, which closed our idle
	// keep-alive connection to it.
	client.CloseIdleConnections()
	if got := metric(scrape(), "caddy_worker_pool_requests_total", `pool="m"`, `code="2xx"`); got < float64(total) {
		t.Fatalf("requests_total after a reload = %v", got)
	}
}

// The errors the pool makes itself go to the server's handle_errors
// routes when it has some, as reverse_proxy's do; without them they are
// problem+json. Either way a 503 says when to retry.
func TestPoolErrorsReachHandleErrors(t *testing.T) {
	port, plain := testworker.FreePort(t), testworker.FreePort(t)
	// The worker never listens: every request gets 503.
	pool := fmt.Sprintf(`worker_pool {
		command %s
		env %s sleep
		count 1
		startup_timeout 300ms
		queue_timeout 100ms
	}`, testworker.Command(), testworker.ModeEnv)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}
http://127.0.0.1:%d {
	%s
	handle_errors {
		respond "custom {err.status_code}: {err.message}" {err.status_code}
	}
}
http://127.0.0.1:%d {
	%s
}
`, port, pool, plain, pool))
	defer stop(t)
	for _, c := range []struct {
		port         int
		contentType  string
		bodyContains string
	}{
		{port, "text/plain", "custom 503: "},
		{plain, "application/problem+json", `"status":503`},
	} {
		resp, err := client.Get(fmt.Sprintf("http://127.0.0.1:%d/", c.port))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 503 || !strings.HasPrefix(resp.Header.Get("Content-Type"), c.contentType) ||
			!strings.Contains(string(body), c.bodyContains) || resp.Header.Get("Retry-After") == "" {
			t.Errorf("port %d: %s %q Retry-After %q: %s; want 503 %s containing %q",
				c.port, resp.Status, resp.Header.Get("Content-Type"), resp.Header.Get("Retry-After"), body, c.contentType, c.bodyContains)
		}
	}
}

// A reload that changes the pool returns as soon as the new workers
// serve; WebSockets open on the old workers go on echoing until their
// clients close them (or stop_timeout passes), and only then do the old
// workers stop.
func TestChangedReloadReturnsPromptlyAndKeepsWebSockets(t *testing.T) {
	port := testworker.FreePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	load(t, site(port, "count 2\n\t\tstop_timeout 30s"))
	defer stop(t)
	old := waitServing(t, url, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var socks []*websocket.Conn
	for range 6 {
		c, _, err := websocket.Dial(ctx, fmt.Sprintf("ws://127.0.0.1:%d/ws", port), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		socks = append(socks, c)
	}
	echo := func(when string) {
		t.Helper()
		for i, c := range socks {
			if err := c.Write(ctx, websocket.MessageText, []byte("hi")); err != nil {
				t.Fatalf("%s: socket %d: write: %v", when, i, err)
			}
			if _, msg, err := c.Read(ctx); err != nil || string(msg) != "echo:hi" {
				t.Fatalf("%s: socket %d: %q, %v", when, i, msg, err)
			}
		}
	}
	echo("before the reload")

	began := time.Now()
	load(t, site(port, "count 2\n\t\tstop_timeout 30s\n\t\tenv DEPLOY 2"))
	// The reload waits for the new workers (about 0.4s here, seconds
	// with the race detector on a busy machine), never for the old ones
	// to drain, which would take the sockets' lifetime or stop_timeout.
	took := time.Since(began)
	t.Logf("the reload took %v with 6 open WebSockets", took)
	if took > 15*time.Second {
		t.Errorf("the reload took %v with open WebSockets: it waited for the old workers to drain", took)
	}
	now := waitServing(t, url, 2)
	for pid := range now {
		if old[pid] != 0 {
			t.Fatalf("new config served by old worker %d", pid)
		}
	}
	echo("after the reload")
	for pid := range old {
		if !testworker.Alive(pid) {
			t.Fatalf("old worker %d stopped while its WebSockets were open", pid)
		}
	}
	for i, c := range socks {
		if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
			t.Errorf("socket %d: close: %v", i, err)
		}
	}
	for pid := range old {
		testworker.Eventually(t, 10*time.Second, "old worker gone once its sockets closed", func() bool { return !testworker.Alive(pid) })
	}
}
