package deploy

import (
	"strings"
	"testing"
)

func TestChartSidecar(t *testing.T) {
	o := mustHelmTemplate(t, nil)
	if o.hpa == nil || o.pdb == nil {
		t.Error("the chart's defaults render no autoscaler or no disruption budget")
	}
	p := inspect(t, o)
	checkSidecar(t, p)

	// Six workers from port 4001: the app and the Caddyfile follow.
	o = mustHelmTemplate(t, map[string]any{
		"workers": 6, "portBase": 4001,
		"app": map[string]any{"resources": map[string]any{"limits": map[string]any{"cpu": "6"}}},
	})
	p = inspect(t, o)
	checkSidecar(t, p)
	if !strings.Contains(p.caddyfile, "discover 127.0.0.1:4001-4006") {
		t.Errorf("workers 6 from 4001: Caddyfile\n%s", p.caddyfile)
	}
}

func TestChartSpawn(t *testing.T) {
	for _, workers := range []int{3, 0} {
		o := mustHelmTemplate(t, map[string]any{"mode": "spawn", "workers": workers})
		p := inspect(t, o)
		checkSpawn(t, p)
		pools := p.config.pools(t)
		if workers > 0 && pools[0].Count != workers {
			t.Errorf("workers %d: the pool's count is %d", workers, pools[0].Count)
		}
		if p.caddy.LivenessProbe == nil {
			t.Errorf("spawn mode: no liveness probe on the container that runs the workers")
		}
	}
}

func TestChartConsul(t *testing.T) {
	o := mustHelmTemplate(t, map[string]any{
		"mode":   "consul",
		"consul": map[string]any{"tokenSecret": "consul-token", "source": map[string]any{"service": "api", "tags": []any{"v2"}}},
	})
	p := inspect(t, o)
	pools := p.config.pools(t)
	if len(pools) != 1 || pools[0].Consul == nil || pools[0].Consul.Service != "api" || len(pools[0].Consul.Tags) != 1 {
		t.Fatalf("consul mode: pools %+v", pools)
	}
	if p.app != nil || p.sidecar {
		t.Error("consul mode: want Caddy alone")
	}
	if p.caddy.LivenessProbe != nil {
		t.Error("consul mode: a liveness probe on remote workers' health restarts a Caddy that cannot fix them")
	}
	if v, _ := env(p.caddy, "CONSUL_HTTP_ADDR"); v != "$(HOST_IP):8500" {
		t.Errorf("consul mode: CONSUL_HTTP_ADDR %q, want the node's agent", v)
	}
	if v, _ := env(p.caddy, "CONSUL_HTTP_TOKEN_FILE"); v == "" {
		t.Error("consul mode with tokenSecret: no CONSUL_HTTP_TOKEN_FILE")
	}

	// Refused without a service.
	if _, err := helmTemplate(t, "v1.30.0", map[string]any{"mode": "consul"}); err == nil || !strings.Contains(err.Error(), "consul.source.service") {
		t.Errorf("consul mode without a service: %v", err)
	}
}

func TestChartConsulRegisterAndOpenTelemetry(t *testing.T) {
	o := mustHelmTemplate(t, map[string]any{
		"mode": "spawn",
		"otel": map[string]any{"endpoint": "http://otel-collector:4317"},
		"consul": map[string]any{"register": map[string]any{
			"enabled": true, "name": "web", "tags": []any{"blue"},
		}},
	})
	t.Setenv("POD_IP", "10.1.2.3") // as the downward API sets it
	p := inspect(t, o)
	checkSpawn(t, p)
	pools := p.config.pools(t)
	r := pools[0].ConsulRegister
	if r == nil || r.Name != "web" || r.Address != "10.1.2.3" || r.Port != 8080 || r.CheckURL != "http://10.1.2.3:8081/healthz" {
		t.Fatalf("consul_register: %+v", r)
	}
	if !p.config.serves(8081, "/healthz", "worker_pool_health") {
		t.Error("the registration's check URL is not the health endpoint")
	}
	var podIP bool
	for _, e := range p.caddy.Env {
		if e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP" {
			podIP = true
		}
	}
	if !podIP {
		t.Error("consul_register: POD_IP does not come from status.podIP")
	}
	if v, _ := env(p.caddy, "OTEL_EXPORTER_OTLP_ENDPOINT"); v != "http://otel-collector:4317" {
		t.Errorf("OTEL_EXPORTER_OTLP_ENDPOINT %q", v)
	}
	if !p.config.serves(8080, "/", "tracing") {
		t.Error("with an OpenTelemetry endpoint the site does not trace")
	}

	// In sidecar mode the app gets the OpenTelemetry settings too.
	p = inspect(t, mustHelmTemplate(t, map[string]any{"otel": map[string]any{"endpoint": "http://otel-collector:4317"}}))
	if v, _ := env(*p.app, "OTEL_EXPORTER_OTLP_ENDPOINT"); v == "" {
		t.Error("sidecar mode: the app has no OTEL_EXPORTER_OTLP_ENDPOINT")
	}
}

func TestChartRefusesWhatCannotWork(t *testing.T) {
	for _, c := range []struct {
		values map[string]any
		kube   string
		want   string
	}{
		{map[string]any{"mode": "daemon"}, "v1.30.0", "use sidecar, spawn or consul"},
		{map[string]any{"workers": 0}, "v1.30.0", "sidecar mode needs a number of workers"},
		// Native sidecars and the preStop sleep action.
		{nil, "v1.29.0", "kubeVersion"},
	} {
		_, err := helmTemplate(t, c.kube, c.values)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("values %v on %s: err %v, want one that says %q", c.values, c.kube, err, c.want)
		}
	}
}

func TestChartOptionalObjects(t *testing.T) {
	o := mustHelmTemplate(t, map[string]any{
		"autoscaling":         map[string]any{"enabled": false, "minReplicas": 3},
		"podDisruptionBudget": map[string]any{"enabled": false},
		"pool":                map[string]any{"options": "queue_size 64\nretries 2"},
	})
	if o.hpa != nil || o.pdb != nil {
		t.Error("autoscaling and the disruption budget disabled, but rendered")
	}
	if r := o.deployment.Spec.Replicas; r == nil || *r != 3 {
		t.Errorf("without the autoscaler replicas is %v, want minReplicas 3", r)
	}
	p := inspect(t, o)
	pools := p.config.pools(t)
	if pools[0].QueueSize != 64 || pools[0].Retries == nil || *pools[0].Retries != 2 {
		t.Errorf("pool.options not in the pool: %+v", pools[0])
	}
}
