package main

import (
	"encoding/xml"
	"math"
	"strings"
	"testing"
)

func TestConfigs(t *testing.T) {
	ports := []int{4001, 4002}
	n := nginxConf("/tmp/x", 8080, ports, 20000)
	for _, want := range []string{"listen 127.0.0.1:8080;", "least_conn;", "server 127.0.0.1:4001 max_fails=1", "server 127.0.0.1:4002 max_fails=1",
		"keepalive 64;", "proxy_http_version 1.1;", `proxy_set_header Connection "";`, "worker_rlimit_nofile 20000;",
		"max_fails=1 fail_timeout=10s;", "proxy_next_upstream error timeout;",
		"worker_connections 10000;", "pid /tmp/x/nginx.pid;", "daemon off;"} {
		if !strings.Contains(n, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, n)
		}
	}
	if strings.Count(n, "{") != strings.Count(n, "}") {
		t.Error("nginx.conf braces do not balance")
	}
	h := haproxyConf(8080, ports, 20000, haproxyExtra{})
	for _, want := range []string{"bind 127.0.0.1:8080", "balance leastconn", "server w1 127.0.0.1:4001\n", "server w2 127.0.0.1:4002\n",
		"http-reuse always", "option http-keep-alive", "maxconn 9900", "retries 2", "option redispatch"} {
		if !strings.Contains(h, want) {
			t.Errorf("haproxy.cfg lacks %q:\n%s", want, h)
		}
	}
	h = haproxyConf(8080, ports, 20000, haproxyFailover)
	for _, want := range []string{"balance leastconn\n\tretries 3\n", "option redispatch 1", "retry-on all-retryable-errors",
		"option httpchk GET /healthz", "server w1 127.0.0.1:4001 check\n", "server w2 127.0.0.1:4002 check\n"} {
		if !strings.Contains(h, want) {
			t.Errorf("tuned haproxy.cfg lacks %q:\n%s", want, h)
		}
	}
	c := caddyRPConf(8080, ports, "")
	if !strings.Contains(c, "reverse_proxy 127.0.0.1:4001 127.0.0.1:4002 {") || !strings.Contains(c, "lb_policy least_conn") ||
		!strings.Contains(c, "http://127.0.0.1:8080 {") || !strings.Contains(c, "admin off") || strings.Contains(c, "fail_duration") {
		t.Errorf("Caddyfile for reverse_proxy:\n%s", c)
	}
	c = caddyRPConf(8080, ports, caddyRPFailover)
	for _, want := range []string{"lb_try_duration 5s", "lb_try_interval 250ms", "fail_duration 30s", "max_fails 1"} {
		if !strings.Contains(c, want) {
			t.Errorf("tuned Caddyfile for reverse_proxy lacks %q:\n%s", want, c)
		}
	}
	w := workerPoolConf(8080, "/usr/bin/node", "/app/server.js", 3, "max_inflight 1")
	if !strings.Contains(w, "command /usr/bin/node /app/server.js") || !strings.Contains(w, "count 3") || !strings.Contains(w, "max_inflight 1") {
		t.Errorf("Caddyfile for worker_pool:\n%s", w)
	}
}

func TestBarChartIsWellFormedSVG(t *testing.T) {
	svg := barChart(`CPU <per> "10k" & more`, "ms", []bar{
		{Label: "nginx", Value: 120},
		{Label: "pool-default", Value: 60, Ours: true},
		{Label: "node-single", Value: math.NaN(), Text: "no proxy"},
	})
	elements := svgElements(t, svg)
	rects, texts := elements["rect"], elements["text"]
	// Background plus two bars; title, three labels, two values, one note.
	if rects != 3 || texts != 7 {
		t.Errorf("%d rects and %d texts, want 3 and 7:\n%s", rects, texts, svg)
	}
	if !strings.Contains(svg, `width="460.0"`) || !strings.Contains(svg, `width="230.0"`) {
		t.Errorf("bars not scaled to the largest value (460 px and half of it):\n%s", svg)
	}
	if !strings.Contains(svg, "#1f77b4") || !strings.Contains(svg, "120 ms") || !strings.Contains(svg, "no proxy") {
		t.Errorf("colour, value or note missing:\n%s", svg)
	}
}

// svgElements counts the elements of svg by name, failing the test if it
// is not well-formed XML.
func svgElements(t *testing.T, svg string) map[string]int {
	t.Helper()
	n := map[string]int{}
	d := xml.NewDecoder(strings.NewReader(svg))
	for {
		tok, err := d.Token()
		if err != nil {
			if err.Error() != "EOF" {
				t.Fatalf("not well-formed XML: %v\n%s", err, svg)
			}
			return n
		}
		if se, ok := tok.(xml.StartElement); ok {
			n[se.Name.Local]++
		}
	}
}

func TestFormatValue(t *testing.T) {
	for v, want := range map[float64]string{12345: "12345", 12.345: "12.3", 1.234: "1.23", 0.01234: "0.0123", 0: "0", 4: "4"} {
		if got := formatValue(v); got != want {
			t.Errorf("formatValue(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestRenderReport(t *testing.T) {
	rep := &suiteReport{
		Date: "2026-11-26", Host: "vm", CPUs: 2, Workers: 2, Quick: true, LoadStart: "0.5 0.4 0.3", LoadEnd: "1.9 1.0 0.5",
		Versions: map[string]string{"nginx": "nginx/1.22.1"}, Skipped: map[string]string{"pm2": "skipped: install with `npm install -g pm2`"},
		TunedNotes: map[string]string{"proxy": "max_inflight 0"},
		ProxyCost: []proxyCostRun{
			{Contender: "node-single", Load: loadResult{RPS: 30000}, ProxyCPUms: -1, AllCPUms: 100},
			{Contender: "nginx", Load: loadResult{RPS: 28000}, ProxyCPUms: 100, AllCPUms: 250},
			{Contender: "caddy-rp", Load: loadResult{RPS: 9000}, ProxyCPUms: 600},
			{Contender: "pool-default", Load: loadResult{RPS: 10000}, ProxyCPUms: 500},
			{Contender: "caddy-respond", Load: loadResult{RPS: 20000}, ProxyCPUms: 250},
		},
		Scaling: []scalingRun{
			{Contender: "node-single", Workers: 1, Throughput: 450, Efficiency: 1},
			{Contender: "pool-default", Workers: 1, Throughput: 430, Efficiency: 0.955},
			{Contender: "node-cluster", Workers: 2, Throughput: 700, Efficiency: 0.78},
			{Contender: "pool-default", Workers: 2, Throughput: 720, Efficiency: 0.8},
		},
		Hetero: &heteroResult{CapacityPS: 500, SingleCapacityPS: 900, CapacityOf: "node-cluster", Duration: "4s", Seed: 9, Runs: []runStats{
			{Contender: "node-cluster", Mix: "cpu", Arrivals: poisson, Load: 0.75, FastP99: 40, SlowP99: 100},
			{Contender: "pool-default", Mix: "cpu", Arrivals: poisson, Load: 0.75, FastP99: 8, SlowP99: 120, LagP99: 0.3, LagMax: 2},
			// Evenly spaced runs do not count for the goal.
			{Contender: "node-cluster", Mix: "cpu", Arrivals: even, Load: 0.75, FastP99: 40, SlowP99: 100},
			{Contender: "pool-default", Mix: "cpu", Arrivals: even, Load: 0.75, FastP99: 4, SlowP99: 90},
			{Contender: "node-cluster", Mix: "single", Arrivals: poisson, Load: 0.75, FastP99: 10},
			{Contender: "pool-default", Mix: "single", Arrivals: poisson, Load: 0.75, FastP99: 11, LateShare: 0.02, Behind: true},
		}},
		Failure: []failureRun{{Contender: "pool-default", Requests: 3000}, {Contender: "node-cluster", Requests: 3000, Failed: 4, RecoveryS: -1}},
		Cost: []costRun{
			{Contender: "node-cluster", CostMS: 0, Throughput: 60000, ProxyCPUus: 0.5},
			{Contender: "node-cluster", CostMS: 1, Throughput: 1800, ProxyCPUus: 0.5},
			{Contender: "pool-default", CostMS: 0, Throughput: 24000, ProxyCPUus: 40},
			{Contender: "pool-default", CostMS: 1, Throughput: 1782, ProxyCPUus: 60},
			{Contender: "node-single", CostMS: 1, Throughput: 950, ProxyCPUus: -1},
		},
		CostFloor: []costFloorRun{
			{CostMS: 0, RatePS: 24000, Answers: 360000, FloorUS: 30, ClusterMachineUS: 33.3, Ceiling: 0.53, PoolUS: 40, Load: "wrk"},
			{CostMS: 1, RatePS: 1780, Answers: 26700, FloorUS: 90, ClusterMachineUS: 1111.1, Ceiling: 0.925, PoolUS: 60, Load: "wrk"},
		},
		Overload: []overloadRun{
			{Contender: "pool-default", GoodputBase: 10000, GoodputOver: 9500, Non2xxShare: 0.002},
			{Contender: "node-cluster", GoodputBase: 20000, GoodputOver: 0},
		},
		Memory: []memoryRun{
			{Contender: "caddy-rp", ProxyPerConn: 4000, ConnsOpen: 10000},
			{Contender: "pool-default", ProxyPerConn: 4100, ConnsOpen: 10000},
			{Contender: "nginx", ProxyPerConn: 700},
		},
	}
	md, charts := renderReport(rep, "2026-11-26-vm")
	for _, want := range []string{
		"| Proxy CPU per request within 1.5× of nginx's | pool-default 500 ms / 10k, nginx 100: 5.00× | missed |",
		"| Proxy CPU per request below stock reverse_proxy's | pool-default 500 ms / 10k, caddy-rp 600: 0.83× | met |",
		"| Scaling efficiency ≥ 0.9 at N = cores − 1 = 1 | pool-default 0.95 | met |",
		"| Scaling efficiency ahead of Node cluster and PM2 (N = 2) | pool-default 0.80, node-cluster 0.78 | met |",
		"| At 75% of Node cluster's capacity, Poisson arrivals: fast p99 ≤ 0.25× and slow p99 ≤ 1.25× of cluster's, no errors (issue 17) | pool-default fast 8.0 ms vs 40.0: 0.20×, slow 120.0 ms vs 100.0: 1.20×, 0 errors | met |",
		"| pool-default | cpu | Poisson | 75% | 0 | 0 | 0 | 0.0 | 8.0 | 0.0 | 120.0 | 0.20 | 1.20 | 0.30 / 2.0 |",
		"| pool-default | cpu | evenly spaced | 75% | 0 | 0 | 0 | 0.0 | 4.0 | 0.0 | 90.0 | 0.10 | 0.90 |",
		"| pool-default | single | Poisson | 75% | 0 | 0 | 0 | 0.0 | 11.0 | 0.0 | — | 1.10 | — | 0.00 / 0.0 **behind** |",
		"Poisson (exponential gaps) and evenly spaced (one gap), seed 9",
		"| Zero failed idempotent requests when a worker is killed | pool-default 0 failed of 3000; node-cluster 4 | met |",
		"pool-default 4100 B per idle connection, caddy-rp 4000 B, nginx 700 B | met |",
		"| Proxy CPU per request ≤ 1.6× Caddy's static `respond` (issue 16) | pool-default 500 ms / 10k, caddy-respond 250: 2.00× | missed |",
		"| pool-default | 10000 | 0.00 | 0.00 | 0.00 | 0.00 | 0 | 500 | 2.00 | 0 |",
		"| node-single | 30000 |", "— (no proxy)", "not within the run",
		"**pm2** skipped: install with `npm install -g pm2`", "load average 0.5 0.4 0.3 at the start",
		"![proxy CPU](2026-11-26-vm-proxy-cpu.svg)",
		"| Throughput at 0 ms of CPU per request ≥ 0.35× Node cluster's (issue 16) | pool-default 24000/s, node-cluster 60000/s: 0.40×; ceiling for any Caddy handler at this rate 0.53× (caddy-respond 30 µs/req beside busy workers) | met |",
		"| Throughput at 1 ms of CPU per request ≥ 0.95× Node cluster's (issue 16) | pool-default 1782/s, node-cluster 1800/s: 0.99×; ceiling for any Caddy handler at this rate 0.93× (caddy-respond 90 µs/req beside busy workers) | met |",
		"### Caddy's own floor at those rates", "| 1 ms | 1780 | 26700 | 90.0 | 1111.1 | 0.93× | 60.0 | 0.67 |",
		"| Proxy CPU per request ≤ 1.6× Caddy's static `respond` at the same rate, beside busy workers (`GET /work?ms=0`) | pool-default 40 µs/req at 24000/s, caddy-respond 30: 1.33× | met |",
		"| 2000 connections: ≤ 1% non-2xx, goodput ≥ 90% of 200 connections' (issue 16) | pool-default 0.2% non-2xx, 9500 vs 10000 2xx/s: 0.95 | met |",
		"| pool-default | 0 ms | 24000 | 0.40 | ", "| node-single | 1 ms | 950 | 0.53 | 0.00 | 0.00 | 0 | — (no proxy) |",
		"## 2. Throughput by request cost", "## 7. Overload", "| node-cluster | 20000 | 0 | 0.00 | 0.0% |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, name := range []string{"proxy-cpu", "proxy-rps", "cost", "scaling", "hetero-p99", "failure", "memory-conn", "memory-idle", "overload"} {
		if _, ok := charts["2026-11-26-vm-"+name+".svg"]; !ok {
			t.Errorf("no %s chart", name)
		}
	}
}
