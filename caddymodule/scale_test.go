package caddymodule_test

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
)

// Through a real Caddy: six clients of 100 ms requests for one worker
// bring a second within a few seconds; an unchanged reload keeps the
// workers above the floor; a few seconds after the load stops the pool
// is back to one worker; no request fails. The admin JSON and the
// metrics show the floor, the ceiling and the decisions.
func TestCaddyScalesWorkersWithTheLoad(t *testing.T) {
	port := testworker.FreePort(t)
	adminPort, cfg := loadWithAdmin(t, site(port, "name scaled\n\t\tcount 1\n\t\tmax_count 3\n\t\tscale_idle 2s"))
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	admin := fmt.Sprintf("http://127.0.0.1:%d", adminPort)
	waitServing(t, url, 1)
	status := func() pool.Status {
		t.Helper()
		resp, err := client.Get(admin + "/worker_pool/")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var st []pool.Status
		if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&st) != nil || len(st) != 1 {
			t.Fatalf("GET /worker_pool/: %s", resp.Status)
		}
		return st[0]
	}
	if sc := status().Scaling; sc == nil || sc.Floor != 1 || sc.Ceiling != 3 || sc.Workers != 1 {
		t.Fatalf("scaling status before the load: %+v", sc)
	}

	stopLoad := testworker.Traffic(t, client, url+"sleep?ms=100", 6)
	loadStarted := time.Now()
	testworker.Eventually(t, 15*time.Second, "a second worker serving", func() bool { return status().Healthy >= 2 })
	t.Logf("second worker serving %v after the load started", time.Since(loadStarted).Round(100*time.Millisecond))

	// An unchanged reload keeps the pool, the added worker included.
	before := map[int]bool{}
	for _, w := range status().Workers {
		before[w.PID] = true
	}
	load(t, cfg)
	client.CloseIdleConnections() // the reload replaced the admin server
	kept := 0
	for _, w := range status().Workers {
		if before[w.PID] {
			kept++
		}
	}
	if kept < 2 {
		t.Fatalf("the unchanged reload kept %d of the workers %v", kept, before)
	}

	served, failed := stopLoad()
	stopped := time.Now()
	testworker.Eventually(t, 20*time.Second, "back to one worker", func() bool {
		st := status()
		return st.Total == 1 && st.Healthy == 1
	})
	t.Logf("back to one worker %v after the load stopped", time.Since(stopped).Round(100*time.Millisecond))
	if failed > 0 || served == 0 {
		t.Fatalf("%d requests served, %d failed", served, failed)
	}

	sc := status().Scaling
	var up, down bool
	for _, d := range sc.Decisions {
		up = up || d.Direction == pool.ScaleUp && d.Reason == pool.ReasonQueueWait
		down = down || d.Direction == pool.ScaleDown && d.Reason == pool.ReasonIdle && d.To == 1
	}
	if !up || !down || sc.Workers != 1 {
		t.Fatalf("scaling status after the load: %+v", sc)
	}
	resp, err := client.Get(admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	text, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, dir := range []string{"up", "down"} {
		if metric(string(text), "caddy_worker_pool_scaling_decisions_total", `pool="scaled"`, `direction="`+dir+`"`) < 1 {
			t.Fatalf("no %s decision counted:\n%s", dir, text)
		}
	}
}

func TestCaddyfileScalingOptions(t *testing.T) {
	cfg, err := adapt(site(8080, "count 2\n\t\tmax_count auto\n\t\tscale_idle 45s\n\t\tmax_total_memory 2GiB"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"count":2`, `"max_count":"auto"`, `"scale_idle":45000000000`, `"max_total_memory":2147483648`} {
		if !strings.Contains(string(cfg), want) {
			t.Errorf("adapted config lacks %s:\n%s", want, cfg)
		}
	}
	cfg, err = adapt(site(8080, "max_count 6"))
	if err != nil || !strings.Contains(string(cfg), `"max_count":6`) {
		t.Fatalf("max_count 6: %v\n%s", err, cfg)
	}
	for _, c := range []struct{ option, want string }{
		{"max_count lots", `max_count: "lots" is not a number of workers`},
		{"max_count 0", `max_count: "0"`},
		{"scale_idle soon", `scale_idle: "soon" is not a positive duration`},
		{"max_total_memory lots", `max_total_memory: "lots" is not a size`},
		{"max_count 3 4", `max_count: unexpected extra argument "4"`},
	} {
		_, err := adapt(site(8080, c.option))
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), "Caddyfile:14") {
			t.Errorf("%s: error %v, want it to contain %q and the line Caddyfile:14", c.option, err, c.want)
		}
	}
}

func TestProvisionRefusesBadScaling(t *testing.T) {
	port := testworker.FreePort(t)
	for _, c := range []struct{ handler, want string }{
		{`"command":["/bin/sh"],"count":4,"max_count":2`, "max_count: 2 is below count 4"},
		{`"command":["/bin/sh"],"max_count":3,"max_inflight":0`, "max_count: requests never wait for a worker with max_inflight 0"},
		{`"command":["/bin/sh"],"scale_idle":"10s"`, "add max_count"},
		{`"discover":["127.0.0.1:1"],"max_count":3`, "only a pool that spawns its workers"},
		{`"command":["/bin/sh"],"max_count":"many"`, `max_count: "many" is neither a number nor "auto"`},
	} {
		cfg := fmt.Sprintf(`{"admin":{"disabled":true},"apps":{"http":{"servers":{"s":{
			"listen":["127.0.0.1:%d"],"automatic_https":{"disable":true},
			"routes":[{"handle":[{"handler":"worker_pool",%s}]}]}}}}}`, port, c.handler)
		err := caddy.Load([]byte(cfg), true)
		if err == nil {
			stop(t)
			t.Fatalf("%s: loaded", c.handler)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q, want it to contain %q", c.handler, err, c.want)
		}
	}
}
