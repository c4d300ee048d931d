package consul_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/health/consul"
	"github.com/caddy-workerpool/caddy-workerpool/internal/consultest"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	goleak.VerifyTestMain(m)
}

// client returns an API client of the agent whose idle connections close
// when the test ends.
func client(t *testing.T, a *consultest.Agent) *api.Client {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = a.Addr
	tr := cfg.Transport
	t.Cleanup(tr.CloseIdleConnections)
	c, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// registerTTL registers p as an instance of service with a TTL check
// that starts passing; the check's id is "service:<id>".
func registerTTL(t *testing.T, c *api.Client, service, id string, p *testworker.Proc) {
	t.Helper()
	host, port, _ := net.SplitHostPort(p.Address)
	n, _ := strconv.Atoi(port)
	err := c.Agent().ServiceRegister(&api.AgentServiceRegistration{
		ID: id, Name: service, Address: host, Port: n, Tags: []string{"web"},
		Check: &api.AgentServiceCheck{TTL: "10m", Status: api.HealthPassing},
	})
	if err != nil {
		t.Fatal(err)
	}
}

func setTTL(t *testing.T, c *api.Client, id, status string) {
	t.Helper()
	if err := c.Agent().UpdateTTL("service:"+id, "", status); err != nil {
		t.Fatal(err)
	}
}

func TestWatcherFollowsPassingInstances(t *testing.T) {
	agent := consultest.Start(t)
	c := client(t, agent)
	var procs []*testworker.Proc
	var all []health.Target
	for i := range 3 {
		p := testworker.Start(t, "serve")
		procs = append(procs, p)
		registerTTL(t, c, "app", fmt.Sprintf("app-%d", i), p)
		all = append(all, health.Target{Network: "tcp", Address: p.Address})
	}
	// Another service and an instance without the tag are not ours.
	registerTTL(t, c, "other", "other-1", testworker.Start(t, "serve"))
	slices.SortFunc(all, func(a, b health.Target) int {
		if a.Address < b.Address {
			return -1
		}
		return 1
	})

	core, logs := observer.New(zap.InfoLevel)
	w, err := consul.NewWatcher(consul.Service{
		Agent: consul.Agent{Address: agent.Addr}, Name: "app", Tags: []string{"web"},
		MinInterval: 10 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
	}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	updates := make(chan []health.Target, 100)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx, func(ts []health.Target) { updates <- ts })
	}()
	defer func() {
		cancel()
		<-done
	}()
	expect := func(want []health.Target) {
		t.Helper()
		timeout := time.After(10 * time.Second)
		for {
			select {
			case got := <-updates:
				if slices.Equal(got, want) {
					return
				}
			case <-timeout:
				t.Fatalf("no update to %v", want)
			}
		}
	}
	expect(all)

	setTTL(t, c, "app-1", api.HealthCritical)
	without := slices.DeleteFunc(slices.Clone(all), func(tg health.Target) bool { return tg.Address == procs[1].Address })
	expect(without)
	setTTL(t, c, "app-1", api.HealthPassing)
	expect(all)

	agent.Stop()
	testworker.Eventually(t, 10*time.Second, "the watcher noticing that consul is gone", func() bool {
		return logs.FilterMessageSnippet("consul unreachable").Len() == 1
	})
	if len(updates) != 0 {
		t.Fatalf("an unreachable consul changed the set: %v", <-updates)
	}
	agent.Restart()
	defer func() {
		if t.Failed() {
			for _, e := range logs.All() {
				t.Logf("%s %v", e.Message, e.ContextMap())
			}
		}
	}()
	testworker.Eventually(t, 10*time.Second, "the watcher noticing that consul is back", func() bool {
		return logs.FilterMessageSnippet("consul reachable again").Len() == 1
	})
	// The restarted -dev agent has forgotten the instances: none passes.
	expect([]health.Target{})
	if n := logs.FilterMessageSnippet("consul unreachable").Len(); n != 1 {
		t.Fatalf("the outage was logged %d times, want once", n)
	}
}

func TestRegistrarKeepsTheServiceRegistered(t *testing.T) {
	agent := consultest.Start(t)
	c := client(t, agent)
	health := http.NewServeMux()
	health.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: health}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	port := ln.Addr().(*net.TCPAddr).Port

	r, err := consul.NewRegistrar(consul.Registration{
		Agent: consul.Agent{Address: agent.Addr},
		ID:    "caddy-1", Name: "edge", Address: "127.0.0.1", Port: port,
		Tags: []string{"caddy"}, Meta: map[string]string{"pool": "app"},
		CheckURL:      fmt.Sprintf("http://127.0.0.1:%d/healthz", port),
		CheckInterval: 100 * time.Millisecond,
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r.Start()
	stopped := false
	defer func() {
		if !stopped {
			r.Stop(time.Second)
		}
	}()
	passing := func() bool {
		entries, _, err := c.Health().Service("edge", "caddy", true, nil)
		return err == nil && len(entries) == 1 && entries[0].Service.ID == "caddy-1" &&
			entries[0].Service.Meta["pool"] == "app"
	}
	testworker.Eventually(t, 10*time.Second, "the registration passing its check", passing)

	agent.Restart()
	testworker.Eventually(t, 10*time.Second, "the registration back after the agent restarted", passing)

	r.Stop(5 * time.Second)
	stopped = true
	services, err := c.Agent().Services()
	if err != nil {
		t.Fatal(err)
	}
	if services["caddy-1"] != nil {
		t.Fatal("still registered after Stop")
	}
}

func TestValidation(t *testing.T) {
	if _, err := consul.NewWatcher(consul.Service{}, nil); err == nil {
		t.Fatal("a watcher without a service name")
	}
	if _, err := consul.NewWatcher(consul.Service{Name: "x", Agent: consul.Agent{Token: "a", TokenFile: "/b"}}, nil); err == nil {
		t.Fatal("token and token_file together")
	}
	if _, err := consul.NewRegistrar(consul.Registration{Name: "x", ID: "x", Port: 80, CheckURL: "localhost/healthz"}, nil); err == nil {
		t.Fatal("a check URL without scheme")
	}
	if _, err := consul.NewRegistrar(consul.Registration{Name: "x", ID: "x", Port: 0, CheckURL: "http://h/"}, nil); err == nil {
		t.Fatal("no port")
	}
}
