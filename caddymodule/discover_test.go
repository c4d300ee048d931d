package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/hashicorp/consul/api"

	"github.com/caddy-workerpool/caddy-workerpool/internal/consultest"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// servedBy waits until the pids answering url are exactly want.
func servedBy(t *testing.T, url string, want ...int) {
	t.Helper()
	slices.Sort(want)
	var got []int
	testworker.Eventually(t, 15*time.Second, fmt.Sprintf("pids %v serving", want), func() bool {
		got = got[:0]
		seen := map[int]bool{}
		for range 10 * len(want) {
			resp, err := client.Get(url)
			if err != nil {
				return false
			}
			var r testworker.Reply
			err = json.NewDecoder(resp.Body).Decode(&r)
			resp.Body.Close()
			if resp.StatusCode != 200 || err != nil {
				return false
			}
			if !seen[r.PID] {
				seen[r.PID] = true
				got = append(got, r.PID)
			}
		}
		slices.Sort(got)
		return slices.Equal(got, want)
	})
}

// poolHealth GETs a worker_pool_health endpoint.
func poolHealth(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %s, body not JSON: %v", url, resp.Status, err)
	}
	return resp.StatusCode, body
}

func TestSidecarDiscoveryThroughCaddy(t *testing.T) {
	first := testworker.FreePortRange(t, 3)
	addr := func(i int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(first+i)) }
	a := testworker.StartAt(t, "serve", "tcp", addr(0))
	port := testworker.FreePort(t)
	adminPort, _ := loadWithAdmin(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%d {
	handle /pool-health {
		worker_pool_health side {
			min_healthy 2
		}
	}
	handle {
		worker_pool {
			name side
			discover 127.0.0.1:%d-%d
			health_uri /healthz
			health_interval 50ms
		}
	}
}
`, port, first, first+2))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	healthURL := url + "pool-health"

	// Provisioning waited for every candidate's first probe: the live
	// one serves at once.
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("first request after load: %s", resp.Status)
	}
	servedBy(t, url, a.PID)
	code, body := poolHealth(t, healthURL)
	if code != 503 || body["pool"] != "side" || body["healthy"] != 1.0 || body["total"] != 3.0 || body["min_healthy"] != 2.0 {
		t.Fatalf("health with 1 of 2 needed: %d %v", code, body)
	}

	// A worker that starts after Caddy joins without a reload.
	c := testworker.StartAt(t, "serve", "tcp", addr(2))
	servedBy(t, url, a.PID, c.PID)
	if code, body := poolHealth(t, healthURL); code != 200 || body["healthy"] != 2.0 {
		t.Fatalf("health with 2 healthy: %d %v", code, body)
	}

	// One that dies leaves.
	a.Kill()
	servedBy(t, url, c.PID)
	testworker.Eventually(t, 5*time.Second, "health 503 after a worker died", func() bool {
		code, _ := poolHealth(t, healthURL)
		return code == 503
	})

	// The admin API cannot restart what the pool did not start.
	admin := fmt.Sprintf("http://127.0.0.1:%d/worker_pool/", adminPort)
	resp, err = client.Post(admin+"side/restart", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("restart of a discovered pool: %s, want 409", resp.Status)
	}
	// Candidates are numbered workers in the metrics: one series each.
	resp, err = client.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", adminPort))
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || metric(string(text), "caddy_worker_pool_worker_healthy", `pool="side"`, `worker="3"`) != 1 ||
		metric(string(text), "caddy_worker_pool_worker_healthy", `pool="side"`) != 1 {
		t.Fatalf("metrics of discovered workers: %s\n%s", resp.Status, text)
	}
	resp, err = client.Get(admin + "side/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("admin health with min_healthy 1: %s", resp.Status)
	}
}

func TestHealthOfAnUnknownPool(t *testing.T) {
	port := testworker.FreePort(t)
	load(t, fmt.Sprintf("{\n\tadmin off\n\tpersist_config off\n}\nhttp://127.0.0.1:%d {\n\tworker_pool_health nope\n}\n", port))
	defer stop(t)
	code, body := poolHealth(t, fmt.Sprintf("http://127.0.0.1:%d/", port))
	if code != 503 || body["pool"] != "nope" || body["total"] != 0.0 {
		t.Fatalf("%d %v", code, body)
	}
}

func TestSourceConfigErrors(t *testing.T) {
	port := testworker.FreePort(t)
	handler := func(h string) []byte {
		return []byte(fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{
			"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},
			"routes":[{"handle":[%s]}]}}}}}`, port, h))
	}
	cases := []struct{ handler, want string }{
		{`{"handler":"worker_pool","discover":[]}`, "command: required"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"discover":["127.0.0.1:3000"]}`, "command, discover: a pool has one source"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:3000"],"consul":{"service":"app"}}`, "discover, consul: a pool has one source"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:3010-3001"]}`, "runs backwards"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:65000-65536"]}`, "from 1 to 65535"},
		{`{"handler":"worker_pool","discover":["10.1.2.3:3000"]}`, "not a loopback address"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:3000"],"count":2}`, "count: applies to spawned workers only"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:3000"],"max_requests":100}`, "max_requests: applies to spawned workers only"},
		{`{"handler":"worker_pool","discover":["127.0.0.1:3000"],"bind_check":"refuse"}`, "bind_check: applies to spawned workers only"},
		{`{"handler":"worker_pool","consul":{}}`, "consul: service: give the name"},
		{`{"handler":"worker_pool","consul":{"service":"a","token":"x","token_file":"/y"}}`, "token and token_file: set only one"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"consul_register":{"port":0}}`, "consul_register: port 0"},
		{`{"handler":"worker_pool","command":["/bin/sh"],"consul_register":{"port":80,"check_url":"healthz"}}`, "check_url"},
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

	for _, c := range []struct{ option, want string }{
		{"discover", "discover: give addresses"},
		{"discover 192.168.1.10:3000", "not a loopback address"},
		{"discover 127.0.0.1:3000-99999", "from 1 to 65535"},
		{"consul", "consul: give the service name"},
		{"consul app {\n\t\t\tzone eu\n\t\t}", `unrecognized consul option "zone"`},
		{"consul_register {\n\t\t\tname x\n\t\t}", "give the port"},
		{"consul_register {\n\t\t\tport 99999\n\t\t}", `port: "99999" is not a port`},
		{"consul_register {\n\t\t\tport 80\n\t\t\tmeta k\n\t\t}", "want a key and a value"},
	} {
		caddyfile := fmt.Sprintf("http://127.0.0.1:8080 {\n\tworker_pool {\n\t\t%s\n\t}\n}\n", c.option)
		if _, err := adapt(caddyfile); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want it to contain %q", c.option, err, c.want)
		}
	}
	if _, err := adapt("http://127.0.0.1:8080 {\n\tworker_pool {\n\t\tdiscover 127.0.0.1:3000\n\t\tcount 2\n\t}\n}\n"); err != nil {
		t.Fatalf("adapting is not where spawn-only options are refused: %v", err)
	}
}

// consulClient is an API client of the agent whose idle connections close
// when the test ends.
func consulClient(t *testing.T, a *consultest.Agent) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	t.Cleanup(cfg.Transport.CloseIdleConnections)
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConsulDiscoveryAndRegistrationThroughCaddy(t *testing.T) {
	agent := consultest.Start(t)
	c := consulClient(t, agent)
	var pids []int
	var procs []*testworker.Proc
	for range 3 {
		p := testworker.Start(t, "serve")
		pids = append(pids, p.PID)
		procs = append(procs, p)
	}
	// Each worker registers itself, as an app would, with a TTL check.
	registerWorkers := func() {
		t.Helper()
		for i, p := range procs {
			host, port, _ := net.SplitHostPort(p.Address)
			n, _ := strconv.Atoi(port)
			err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
				ID: fmt.Sprintf("app-%d", i), Name: "app", Address: host, Port: n,
				Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	registerWorkers()
	setTTL := func(id, status string) {
		t.Helper()
		if err := c.Agent().UpdateTTL("service:"+id, "", status); err != nil {
			t.Fatal(err)
		}
	}

	port := testworker.FreePort(t)
	load(t, fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
}

http://127.0.0.1:%[1]d {
	handle /healthz {
		worker_pool_health app
	}
	handle {
		worker_pool {
			name app
			consul app {
				address %[2]s
			}
			health_uri /healthz
			health_interval 50ms
			consul_register {
				name edge
				id edge-1
				address 127.0.0.1
				port %[1]d
				tags caddy
				check_interval 200ms
				agent %[2]s
			}
		}
	}
}
`, port, agent.Addr))
	stopped := false
	defer func() {
		if !stopped {
			stop(t)
		}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	servedBy(t, url, pids...)

	// A check turned critical: that worker leaves; passing: it returns.
	setTTL("app-1", api.HealthCritical)
	servedBy(t, url, pids[0], pids[2])
	setTTL("app-1", api.HealthPassing)
	servedBy(t, url, pids...)

	// Our own registration passes its HTTP check on /healthz.
	registered := func() bool {
		entries, _, err := c.Health().Service("edge", "caddy", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == "edge-1" && entries[0].Service.Port == port
	}
	testworker.Eventually(t, 10*time.Second, "this Caddy registered and passing in Consul", registered)

	// Consul gone: traffic goes on over the last known set.
	agent.Stop()
	servedBy(t, url, pids...)

	// Consul back (same ports, its state forgotten): our registration
	// is renewed, and passes once the workers have registered again.
	agent.Restart()
	testworker.Eventually(t, 10*time.Second, "the registration back after the agent restarted", func() bool {
		services, err := c.Agent().Services()
		return err == nil && services["edge-1"] != nil
	})
	registerWorkers()
	servedBy(t, url, pids...)
	testworker.Eventually(t, 10*time.Second, "the renewed registration passing", registered)

	// Unloading the config deregisters.
	stop(t)
	stopped = true
	services, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if services["edge-1"] != nil {
		t.Fatal("still registered after Caddy stopped")
	}
}
