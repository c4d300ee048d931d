package pool_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/health"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Requests that keep queueing start a worker, which serves once
// healthy; when they stop, it drains and stops after scale_idle. Each
// decision is in the status and logged at info; a rolling restart
// meanwhile replaces the added worker too.
func TestPoolScalesUpAndDown(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	p, srv := newPool(t, pool.Config{
		Workers:  worker.Spec{Env: testworker.Env("serve"), Count: 1},
		Health:   health.Config{URI: "/healthz"},
		Balancer: balancer.Config{MaxInflight: 1},
		Scale:    pool.Scale{MaxCount: 2, Idle: time.Second},
	}, zap.New(core))
	waitHealthy(t, p, 1)
	if st := p.Status().Scaling; st == nil || st.Floor != 1 || st.Ceiling != 2 || st.Workers != 1 || len(st.Decisions) != 0 {
		t.Fatalf("scaling status before any load: %+v", st)
	}

	stop := testworker.Traffic(t, srv.Client(), srv.URL+"/sleep?ms=50", 4)
	testworker.Eventually(t, 15*time.Second, "a second worker serving", func() bool { return p.Healthy() == 2 })
	if n, err := p.RollingRestart(context.Background()); err != nil || n != 2 {
		t.Fatalf("rolling restart of a scaled pool: %d replaced, %v", n, err)
	}
	added := p.Status().Workers[1]
	ok, failed := stop()
	if failed > 0 || ok == 0 {
		t.Fatalf("%d requests answered, %d failed", ok, failed)
	}
	testworker.Eventually(t, 15*time.Second, "back to one worker", func() bool {
		st := p.Status()
		return len(st.Workers) == 1 && st.Scaling.Workers == 1
	})
	if testworker.Alive(added.PID) {
		t.Fatalf("pid %d of the removed worker still runs", added.PID)
	}

	st := p.Status().Scaling
	var up, down bool
	for _, d := range st.Decisions {
		up = up || d.Direction == pool.ScaleUp && d.Reason == pool.ReasonQueueWait && d.From == 1 && d.To == 2 && d.QueueWaitMS > 0
		down = down || d.Direction == pool.ScaleDown && d.Reason == pool.ReasonIdle && d.From == 2 && d.To == 1
	}
	if !up || !down {
		t.Fatalf("decisions %+v", st.Decisions)
	}
	for _, c := range st.Totals {
		if c.Direction == pool.ScaleUp && c.Count < 1 {
			t.Fatalf("totals %+v", st.Totals)
		}
	}
	for _, msg := range []string{"scaling up", "scaling down"} {
		found := false
		for _, e := range logs.All() {
			if e.Level == zap.InfoLevel && len(e.Message) >= len(msg) && e.Message[:len(msg)] == msg && e.ContextMap()["reason"] != "" {
				found = true
			}
		}
		if !found {
			t.Fatalf("no info log %q with a reason", msg)
		}
	}
}
