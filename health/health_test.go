package health_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/caddy-workerpool/caddy-workerpool/health"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// verdicts applies a Config's thresholds to a checker's results, as
// the owner of an endpoint's state does, and records each change.
type verdicts struct {
	cfg     health.Config
	streak  health.Streak
	healthy bool
	lastErr atomic.Value
	changes chan bool
}

func newVerdicts(cfg health.Config) *verdicts {
	return &verdicts{cfg: cfg, changes: make(chan bool, 10)}
}

func (v *verdicts) onProbe(_ time.Time, err error) {
	v.streak.Add(err)
	if err != nil {
		v.lastErr.Store(err)
	}
	switch {
	case !v.healthy && v.cfg.Rose(v.streak):
		v.healthy = true
		v.changes <- true
	case v.healthy && v.cfg.Fell(v.streak):
		v.healthy = false
		v.changes <- false
	}
}

func (v *verdicts) expect(t *testing.T, want bool) {
	t.Helper()
	select {
	case got := <-v.changes:
		if got != want {
			t.Fatalf("state changed to healthy=%v, want %v", got, want)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("no change to healthy=%v", want)
	}
}

func TestHTTPProbeThresholds(t *testing.T) {
	var status atomic.Int32
	status.Store(200)
	var probes atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/healthz" {
			http.NotFound(w, r)
			return
		}
		probes.Add(1)
		w.WriteHeader(int(status.Load()))
	}))
	defer srv.Close()

	cfg := health.Config{URI: "/healthz", Interval: 10 * time.Millisecond, Passes: 2, Fails: 3}
	tr := newVerdicts(cfg)
	c := health.NewChecker(cfg, health.Target{Network: "tcp", Address: srv.Listener.Addr().String()}, tr.onProbe)
	c.Start()
	defer c.Stop()

	tr.expect(t, true)
	if n := probes.Load(); n < 2 {
		t.Fatalf("healthy after %d probes, passes threshold is 2", n)
	}
	before := probes.Load()
	status.Store(503)
	tr.expect(t, false)
	if n := probes.Load() - before; n < 3 {
		t.Fatalf("unhealthy after %d failed probes, fails threshold is 3", n)
	}
	if err, _ := tr.lastErr.Load().(error); err == nil || !strings.Contains(err.Error(), "503") {
		t.Fatalf("last probe error %v, want one naming the 503", err)
	}
	status.Store(204)
	tr.expect(t, true)
}

func TestConnectProbe(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "s.sock")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
			cfg := health.Config{Interval: 10 * time.Millisecond, Fails: 1}
			tr := newVerdicts(cfg)
			c := health.NewChecker(cfg, health.Target{Network: network, Address: ln.Addr().String()}, tr.onProbe)
			c.Start()
			defer c.Stop()
			tr.expect(t, true)
			ln.Close()
			tr.expect(t, false)
		})
	}
}

func TestProbeTimeout(t *testing.T) {
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-hang:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(hang)
	p := health.NewProber(health.Config{URI: "/", Timeout: 50 * time.Millisecond}.WithDefaults(),
		health.Target{Network: "tcp", Address: srv.Listener.Addr().String()})
	if err := p.Probe(context.Background()); err == nil {
		t.Fatal("probe of a hung endpoint passed")
	}
}

func TestValidate(t *testing.T) {
	if err := (health.Config{URI: "healthz"}).Validate(); err == nil || !strings.Contains(err.Error(), "health_uri") {
		t.Fatalf("Validate() = %v, want an error naming health_uri", err)
	}
}
