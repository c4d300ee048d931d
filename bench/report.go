package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// heteroGoalLoad is the load of issue 17's goal, a fraction of Node
// cluster's capacity.
const heteroGoalLoad = 0.75

// floorName is the contender that is Caddy answering by itself.
const floorName = "caddy-respond"

// ours reports whether a contender is this module.
func ours(name string) bool { return strings.HasPrefix(name, "pool-") }

// writeSuite writes the JSON, the Markdown report and its charts into
// dir as <date>-<host>.*.
func writeSuite(dir string, rep *suiteReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base := rep.Date + "-" + rep.Host
	js, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, base+".json"), append(js, '\n'), 0o644); err != nil {
		return err
	}
	return renderFiles(dir, base, rep)
}

// renderFiles writes the Markdown and SVG files of rep.
func renderFiles(dir, base string, rep *suiteReport) error {
	md, charts := renderReport(rep, base)
	for name, svg := range charts {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(svg), 0o644); err != nil {
			return err
		}
	}
	path := filepath.Join(dir, base+".md")
	if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Fprintln(os.Stderr, "wrote", path, "and", len(charts), "charts")
	return nil
}

// rerender reads a results JSON and writes its Markdown and charts again.
func rerender(jsonPath string) error {
	b, err := os.ReadFile(jsonPath)
	if err != nil {
		return err
	}
	var rep suiteReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", jsonPath, err)
	}
	return renderFiles(filepath.Dir(jsonPath), strings.TrimSuffix(filepath.Base(jsonPath), ".json"), &rep)
}

// goal is one line of the goals table.
type goal struct{ Goal, Measured, Verdict string }

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "missed"
}

// renderReport returns the Markdown report and the charts (file name →
// SVG) it links to, named after base.
func renderReport(rep *suiteReport, base string) (string, map[string]string) {
	charts := map[string]string{}
	var b strings.Builder
	mode := "full"
	if rep.Quick {
		mode = "--quick"
	}
	fmt.Fprintf(&b, "# caddy-workerpool against its alternatives\n\n")
	fmt.Fprintf(&b, "%s on `%s`: %d CPUs, %d workers per contender, %s run; load average %s at the start, %s at the end. ",
		rep.Date, rep.Host, rep.CPUs, rep.Workers, mode, rep.LoadStart, rep.LoadEnd)
	fmt.Fprintf(&b, "Load generator: %s. Open files: %d. The load generator, the proxy and the workers share the machine's CPUs.\n\n", rep.Loadgen, rep.NoFile)
	var names []string
	for k := range rep.Versions {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(&b, "- %s: `%s`\n", k, rep.Versions[k])
	}
	skipped := mapKeys(rep.Skipped)
	for _, k := range skipped {
		fmt.Fprintf(&b, "- **%s** %s\n", k, rep.Skipped[k])
	}
	for _, e := range rep.Errors {
		fmt.Fprintf(&b, "- **%s** failed in %s: %s\n", e.Contender, e.Scenario, e.Error)
	}
	fmt.Fprintf(&b, "\nContenders (configurations in bench/README.md): `node-single` (one Node process, no proxy), "+
		"`caddy-respond` (our Caddy answering `GET /` itself with a static `respond`: the floor of Caddy's own server, proxy and memory only), "+
		"`node-cluster` (Node's `cluster`, `bench/peers/node-cluster.js`), "+
		"`pm2` (`pm2 start server.js -i N`), `nginx` (`least_conn`, upstream keep-alive, its default failover), `haproxy` (`balance leastconn`, `http-reuse always`, `retries 2`, `option redispatch`), "+
		"`caddy-rp` (stock `reverse_proxy`, `lb_policy least_conn`, our Caddy binary), in the failure scenario also `haproxy-tuned` and `caddy-rp-tuned` "+
		"(the failover options their documentation gives), `pool-default` (`worker_pool` with no options) and "+
		"`pool-tuned` (`worker_pool` with the option the README recommends for the workload: %s), in the hetero scenario also `pool-fifo` (the defaults with `schedule fifo`).\n\n", tunedText(rep.TunedNotes))

	goals := renderGoals(rep)
	if len(goals) > 0 {
		fmt.Fprintf(&b, "## Goals\n\n| goal | measured | |\n|---|---|---|\n")
		for _, g := range goals {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", g.Goal, g.Measured, g.Verdict)
		}
		b.WriteString("\n")
	}

	section := 0
	next := func() int { section++; return section }
	if len(rep.ProxyCost) > 0 {
		fmt.Fprintf(&b, "## %d. Proxy cost: `GET /` (a 30-byte JSON answer), closed loop, 64 connections\n\n", next())
		b.WriteString("Proxy CPU is utime+stime from `/proc/<pid>/stat` of the proxy's processes, read before and after the measured run, " +
			"per 10,000 answered requests: nginx's master and workers; HAProxy's one process; Caddy's process and, for `worker_pool`, " +
			"the small reaper process per worker (Caddy's binary) that waits on its worker; Node cluster's primary; PM2's God daemon " +
			"(the cluster primary of its workers). Node's cluster and PM2 hand each connection to a worker, which then reads it itself, " +
			"so their primary's cost is per connection, not per request. \"All\" adds the Node workers' CPU. " +
			"\"× floor\" is the proxy CPU over that of `caddy-respond`, Caddy answering by itself: what Caddy's own server costs " +
			"under any module, so the part above 1 is the proxying.\n\n")
		b.WriteString("| contender | req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | errors | proxy CPU ms / 10k req | × floor | all CPU ms / 10k req |\n|---|---|---|---|---|---|---|---|---|---|\n")
		floor := math.NaN()
		for _, r := range rep.ProxyCost {
			if r.Contender == floorName && r.ProxyCPUms > 0 {
				floor = r.ProxyCPUms
			}
		}
		var cpu, rps []bar
		for _, r := range rep.ProxyCost {
			p, ratio := "— (no proxy)", "—"
			v := math.NaN()
			if r.ProxyCPUms >= 0 {
				p, v = fmt.Sprintf("%.0f", r.ProxyCPUms), r.ProxyCPUms
				if !math.IsNaN(floor) {
					ratio = fmt.Sprintf("%.2f", r.ProxyCPUms/floor)
				}
			}
			fmt.Fprintf(&b, "| %s | %.0f | %.2f | %.2f | %.2f | %.2f | %d | %s | %s | %.0f |\n", r.Contender, r.Load.RPS,
				r.Load.P50, r.Load.P90, r.Load.P99, r.Load.P999, r.Load.errors(), p, ratio, r.AllCPUms)
			cpu = append(cpu, bar{Label: r.Contender, Value: v, Text: "no proxy", Ours: ours(r.Contender)})
			rps = append(rps, bar{Label: r.Contender, Value: r.Load.RPS, Ours: ours(r.Contender)})
		}
		charts[base+"-proxy-cpu.svg"] = barChart("Proxy CPU per 10,000 requests (GET /, lower is better)", "ms", cpu)
		charts[base+"-proxy-rps.svg"] = barChart("Throughput, GET / closed loop (higher is better)", "req/s", rps)
		fmt.Fprintf(&b, "\n![proxy CPU](%s-proxy-cpu.svg)\n![throughput](%s-proxy-rps.svg)\n\n", base, base)
	}

	if len(rep.Cost) > 0 {
		renderCost(&b, rep.Cost, next(), base, charts)
		renderCostFloor(&b, rep.CostFloor, rep.Workers)
	}

	if len(rep.Scaling) > 0 {
		fmt.Fprintf(&b, "## %d. CPU-bound scaling: `GET /work?ms=2`, closed loop, 4 connections per worker\n\n", next())
		b.WriteString("Efficiency = throughput / (N × one Node process's throughput without a proxy).\n\n")
		b.WriteString("| contender | N | req/s | efficiency | p99 ms | errors |\n|---|---|---|---|---|---|\n")
		maxN := 0
		for _, r := range rep.Scaling {
			fmt.Fprintf(&b, "| %s | %d | %.0f | %.2f | %.2f | %d |\n", r.Contender, r.Workers, r.Throughput, r.Efficiency, r.Load.P99, r.Load.errors())
			maxN = max(maxN, r.Workers)
		}
		var bars []bar
		for _, r := range rep.Scaling {
			if r.Workers == maxN && r.Contender != "node-single" {
				bars = append(bars, bar{Label: r.Contender, Value: r.Efficiency, Ours: ours(r.Contender)})
			}
		}
		charts[base+"-scaling.svg"] = barChart(fmt.Sprintf("Scaling efficiency at N = %d workers (GET /work?ms=2, 1.0 = perfect)", maxN), "", bars)
		fmt.Fprintf(&b, "\n![scaling](%s-scaling.svg)\n\n", base)
	}

	if h := rep.Hetero; h != nil && len(h.Runs) > 0 {
		fmt.Fprintf(&b, "## %d. Heterogeneous load: 95%% `GET /work?ms=1`, 5%% `GET /report?ms=50` (the same work on another route), open loop\n\n", next())
		capacity := fmt.Sprintf("the capacity of our pool at `max_inflight 1` (%.0f requests/s, closed loop)", h.CapacityPS)
		if h.CapacityOf != "" {
			capacity = fmt.Sprintf("the capacity of %s measured in this run (closed loop: %.0f requests/s with this mix, %.0f with one cost class)",
				h.CapacityOf, h.CapacityPS, h.SingleCapacityPS)
		}
		fmt.Fprintf(&b, "The `scheduling` scenario's CPU mix (`go run . scheduling`), and one cost class (`single`: every request `GET /work?ms=2`), "+
			"at fractions of %s; %s per run after a warm-up. \"fast\" are the 1 ms requests (every request of the single class), \"slow\" the 50 ms ones; "+
			"× cluster is a p99 over Node cluster's at the same mix, load and arrivals. %s\n\n",
			capacity, h.Duration, openLoopText(h.Runs, h.Seed))
		b.WriteString(openLoopTable(h.Runs))
		chartLoad := heteroGoalLoad
		if h.CapacityOf == "" {
			chartLoad = 0.8 // runs recorded before issue 17's loads
		}
		var bars []bar
		for _, r := range h.Runs {
			if r.Load == chartLoad && cmp.Or(r.Mix, "cpu") == "cpu" {
				bars = append(bars, bar{Label: r.Contender, Value: r.FastP99, Ours: ours(r.Contender)})
			}
		}
		charts[base+"-hetero-p99.svg"] = barChart(fmt.Sprintf("p99 of the 1 ms requests at %.0f%% load (lower is better)", 100*chartLoad), "ms", bars)
		fmt.Fprintf(&b, "\n![heterogeneous p99](%s-hetero-p99.svg)\n\n", base)
	}

	if len(rep.Failure) > 0 {
		fmt.Fprintf(&b, "## %d. Failure: SIGKILL of one worker under load\n\n", next())
		b.WriteString("`GET /work?ms=2` (idempotent), closed loop, 4 connections per worker, with the harness's own HTTP/1.1 client, which never " +
			"resends a request by itself (like wrk). Failed = transport errors plus non-2xx answers. Back = time from the kill until a " +
			"500 ms window reaches 90% of the throughput before it. nginx, HAProxy and stock `reverse_proxy` have no process manager: " +
			"nothing restarts their killed Node process (in production systemd or a container runtime would, in a second or more).\n\n")
		b.WriteString("| contender | requests | failed | throughput before/s | killed at s | back after s | workers at the end |\n|---|---|---|---|---|---|---|\n")
		var bars []bar
		for _, r := range rep.Failure {
			back := "not within the run"
			if r.RecoveryS >= 0 {
				back = fmt.Sprintf("%.1f", r.RecoveryS)
			}
			fmt.Fprintf(&b, "| %s | %d | %d | %.0f | %.1f | %s | %d |\n", r.Contender, r.Requests, r.Failed, r.BaselinePS, r.KilledAtS, back, r.WorkersAfter)
			bars = append(bars, bar{Label: r.Contender, Value: float64(r.Failed), Ours: ours(r.Contender)})
		}
		charts[base+"-failure.svg"] = barChart("Failed requests when a worker is killed (lower is better)", "", bars)
		fmt.Fprintf(&b, "\n![failed requests](%s-failure.svg)\n\n", base)
	}

	if len(rep.Memory) > 0 {
		fmt.Fprintf(&b, "## %d. Memory: the proxy's resident set\n\n", next())
		b.WriteString("VmRSS from `/proc/<pid>/status`, summed over the proxy's processes (as in scenario 1); pages that several " +
			"processes share (nginx's master and workers, Caddy and its reapers, which are Caddy's binary) count once per process, so " +
			"PSS (`/proc/<pid>/smaps_rollup`, shared pages divided among their users) is given beside it. Idle: after start-up and the " +
			"readiness check. Under load: the peak during scenario 1's load (64 connections, `GET /`). Idle connections: after the load, " +
			"that many keep-alive client connections are opened, one `GET /` answered on each, then left idle; per connection = (RSS " +
			"with them − RSS just before) / connections still open when measured. Node closes a connection idle for 5 s " +
			"(`keepAliveTimeout`), so where Node holds the client connections (node-single, cluster, PM2) only those opened in the last " +
			"5 s are still open and the figure per connection is rough. For Node cluster and PM2 the client connections live in the " +
			"workers: \"all\" counts every process of the contender.\n\n")
		b.WriteString("| contender | RSS idle MiB | PSS idle MiB | RSS under load MiB | RSS with idle conns MiB | conns open / opened / wanted | bytes per conn (proxy) | bytes per conn (all processes) |\n|---|---|---|---|---|---|---|---|\n")
		var per, idle []bar
		for _, r := range rep.Memory {
			fmt.Fprintf(&b, "| %s | %.1f | %.1f | %.1f | %.1f | %d / %d / %d | %d | %d |\n", r.Contender, mib(r.ProxyIdle), mib(r.ProxyIdlePSS), mib(r.ProxyLoad), mib(r.ProxyConns),
				r.ConnsOpen, r.ConnsOpened, r.ConnsWanted, r.ProxyPerConn, r.AllPerConn)
			per = append(per, bar{Label: r.Contender, Value: float64(r.AllPerConn), Ours: ours(r.Contender)})
			if r.Contender != "node-single" {
				idle = append(idle, bar{Label: r.Contender, Value: mib(r.ProxyIdlePSS), Ours: ours(r.Contender)})
			}
		}
		charts[base+"-memory-conn.svg"] = barChart("Memory per idle keep-alive connection, all processes (lower is better)", "B", per)
		charts[base+"-memory-idle.svg"] = barChart("Proxy memory when idle, PSS (lower is better)", "MiB", idle)
		fmt.Fprintf(&b, "\n![memory per connection](%s-memory-conn.svg)\n![idle RSS](%s-memory-idle.svg)\n\n", base, base)
	}
	if len(rep.Overload) > 0 {
		renderOverload(&b, rep.Overload, next(), base, charts)
	}
	if a := rep.Autoscale; a != nil && len(a.Runs) > 0 {
		renderAutoscale(&b, a, next(), base, charts)
	}
	b.WriteString("Reproduce: `cd bench && go run . suite")
	if rep.Quick {
		b.WriteString(" --quick")
	}
	if all, _ := suiteScenarios(rep.Quick, ""); len(rep.Scenarios) > 0 && !slices.Equal(rep.Scenarios, all) {
		b.WriteString(" --scenarios " + strings.Join(rep.Scenarios, ","))
	}
	fmt.Fprintf(&b, " --workers %d` (see bench/README.md).\n", rep.Workers)
	return b.String(), charts
}

// renderCostFloor writes what Caddy's own server costs at the rates of
// the cost scenario, and the ceiling that puts on any Caddy handler.
func renderCostFloor(b *strings.Builder, floors []costFloorRun, workers int) {
	if len(floors) == 0 {
		return
	}
	fmt.Fprintf(b, "### Caddy's own floor at those rates\n\n"+
		"Caddy answering a static `respond` (caddy-respond), offered `GET /` at the rate pool-default reached at each cost "+
		"(with wrk: the same %d connections, each pausing between an answer and its next request; without: Poisson arrivals), "+
		"while %d busy processes (`node -e 'for(;;){}'`, one per worker) keep the cores as busy as the pool's workers do. "+
		"Its CPU per answer is what any handler inside Caddy pays at that rate on those cores before it does any work of its own; "+
		"it grows as the rate falls (fewer requests share each wake-up, and each finds the caches cold). "+
		"Node cluster spends the machine's CPUs over its throughput per request; the ceiling is the share of cluster's throughput "+
		"a Caddy handler that cost nothing beyond that floor could reach: cluster's CPU per request over it plus the floor.\n\n", costConns, workers)
	b.WriteString("| CPU per request | offered /s | answers | caddy-respond CPU µs / req | cluster: machine CPU µs / req | ceiling × cluster | pool-default proxy CPU µs / req | × floor |\n|---|---|---|---|---|---|---|---|\n")
	for _, f := range floors {
		behind := ""
		if f.Behind {
			behind = " (generator behind)"
		}
		fmt.Fprintf(b, "| %g ms | %.0f | %d%s | %.1f | %.1f | %.2f× | %.1f | %s |\n", f.CostMS, f.RatePS, f.Answers, behind, f.FloorUS, f.ClusterMachineUS, f.Ceiling,
			f.PoolUS, ratioText(ratio(f.PoolUS, f.FloorUS)))
	}
	b.WriteString("\n")
}

// renderCost writes the throughput-by-cost section and its chart.
func renderCost(b *strings.Builder, runs []costRun, n int, base string, charts map[string]string) {
	fmt.Fprintf(b, "## %d. Throughput by request cost: `GET /work?ms=0`, `0.2`, `1`, closed loop, %d connections\n\n", n, costConns)
	b.WriteString("The same CPU time per request in every worker (the example app spins until it has used that much CPU time), as fast as each contender answers. " +
		"× cluster is the 2xx answers per second over Node cluster's at the same cost. Proxy CPU per request as in the proxy-cost " +
		"scenario (utime+stime of the proxy's processes from `/proc/<pid>/stat`, per 2xx answer); \"all\" adds the workers.\n\n")
	b.WriteString("| contender | CPU per request | 2xx/s | × cluster | p50 ms | p99 ms | errors | proxy CPU µs / req | all CPU µs / req |\n|---|---|---|---|---|---|---|---|---|\n")
	cluster := map[float64]float64{}
	for _, r := range runs {
		if r.Contender == "node-cluster" {
			cluster[r.CostMS] = r.Throughput
		}
	}
	var bars []bar
	for _, r := range runs {
		x := ratio(r.Throughput, cluster[r.CostMS])
		proxy := "— (no proxy)"
		if r.ProxyCPUus >= 0 {
			proxy = fmt.Sprintf("%.1f", r.ProxyCPUus)
		}
		fmt.Fprintf(b, "| %s | %g ms | %.0f | %s | %.2f | %.2f | %d | %s | %.1f |\n", r.Contender, r.CostMS, r.Throughput, ratioText(x),
			r.Load.P50, r.Load.P99, r.Load.errors(), proxy, r.AllCPUus)
		bars = append(bars, bar{Label: fmt.Sprintf("%s %g ms", r.Contender, r.CostMS), Value: x, Text: "no cluster run", Ours: ours(r.Contender)})
	}
	charts[base+"-cost.svg"] = barChart("Throughput over Node cluster's, by CPU per request (higher is better)", "×", bars)
	fmt.Fprintf(b, "\n![throughput by cost](%s-cost.svg)\n\n", base)
}

// renderOverload writes the overload section and its chart.
func renderOverload(b *strings.Builder, runs []overloadRun, n int, base string, charts map[string]string) {
	fmt.Fprintf(b, "## %d. Overload: `GET /`, closed loop, %d connections, then %d\n\n", n, overloadBase, overloadConns)
	fmt.Fprintf(b, "Each contender first serves %d connections back to back, then %d for %s. Goodput = 2xx answers per second; "+
		"ratio = goodput with %d connections over goodput with %d. Non-2xx share of the answers with %d connections; socket "+
		"errors are attempts that got no answer (refused, reset, timed out after 10 s). RSS from `/proc/<pid>/status`: the "+
		"proxy's processes idle and at their peak during the %d-connection run, and all processes' peak (Node cluster and PM2 "+
		"hold the client connections in their workers).\n\n",
		overloadBase, overloadConns, overloadTime, overloadConns, overloadBase, overloadConns, overloadConns)
	fmt.Fprintf(b, "| contender | goodput %d conns /s | goodput %d conns /s | ratio | non-2xx | socket errors | p99 ms (%d) | proxy RSS idle MiB | proxy RSS peak MiB | all RSS peak MiB |\n|---|---|---|---|---|---|---|---|---|---|\n",
		overloadBase, overloadConns, overloadConns)
	var bars []bar
	for _, r := range runs {
		x := ratio(r.GoodputOver, r.GoodputBase)
		fmt.Fprintf(b, "| %s | %.0f | %.0f | %s | %.1f%% | %d | %.1f | %.1f | %.1f | %.1f |\n", r.Contender, r.GoodputBase, r.GoodputOver,
			ratioText(x), 100*r.Non2xxShare, r.Over.SocketErrors, r.Over.P99, mib(r.ProxyRSSIdle), mib(r.ProxyRSSPeak), mib(r.AllRSSPeak))
		bars = append(bars, bar{Label: r.Contender, Value: x, Text: "no answers", Ours: ours(r.Contender)})
	}
	charts[base+"-overload.svg"] = barChart(fmt.Sprintf("Goodput with %d connections over %d (higher is better)", overloadConns, overloadBase), "×", bars)
	fmt.Fprintf(b, "\n![overload](%s-overload.svg)\n\n", base)
}

// ratioText is a ratio for a table cell.
func ratioText(x float64) string {
	if math.IsNaN(x) {
		return "—"
	}
	return fmt.Sprintf("%.2f", x)
}

func tunedText(m map[string]string) string {
	var parts []string
	for _, k := range mapKeys(m) {
		parts = append(parts, fmt.Sprintf("%s `%s`", k, m[k]))
	}
	return strings.Join(parts, ", ")
}

func mapKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// renderGoals compares the figures the issue set goals for; a goal whose
// figures are missing is left out.
func renderGoals(rep *suiteReport) []goal {
	var gs []goal
	pc := map[string]proxyCostRun{}
	for _, r := range rep.ProxyCost {
		pc[r.Contender] = r
	}
	// The verdict is the defaults'; pool-tuned's figure is given beside.
	tuned := func(ref float64) string {
		if t, ok := pc["pool-tuned"]; ok && ref > 0 {
			return fmt.Sprintf(" (pool-tuned %.0f: %.2f×)", t.ProxyCPUms, t.ProxyCPUms/ref)
		}
		return ""
	}
	if p, ok := pc["pool-default"]; ok {
		if f, ok := pc[floorName]; ok && f.ProxyCPUms > 0 {
			ratio := p.ProxyCPUms / f.ProxyCPUms
			gs = append(gs, goal{"Proxy CPU per request ≤ 1.6× Caddy's static `respond` (issue 16)",
				fmt.Sprintf("pool-default %.0f ms / 10k, caddy-respond %.0f: %.2f×%s", p.ProxyCPUms, f.ProxyCPUms, ratio, tuned(f.ProxyCPUms)), verdict(ratio <= 1.6)})
		}
		if n, ok := pc["nginx"]; ok && n.ProxyCPUms > 0 {
			ratio := p.ProxyCPUms / n.ProxyCPUms
			gs = append(gs, goal{"Proxy CPU per request within 1.5× of nginx's",
				fmt.Sprintf("pool-default %.0f ms / 10k, nginx %.0f: %.2f×%s", p.ProxyCPUms, n.ProxyCPUms, ratio, tuned(n.ProxyCPUms)), verdict(ratio <= 1.5)})
		}
		if c, ok := pc["caddy-rp"]; ok && c.ProxyCPUms > 0 {
			gs = append(gs, goal{"Proxy CPU per request below stock reverse_proxy's",
				fmt.Sprintf("pool-default %.0f ms / 10k, caddy-rp %.0f: %.2f×%s", p.ProxyCPUms, c.ProxyCPUms, p.ProxyCPUms/c.ProxyCPUms, tuned(c.ProxyCPUms)),
				verdict(p.ProxyCPUms < c.ProxyCPUms)})
		}
	}
	costGoals := map[float64]float64{0: 0.35, 0.2: 0.80, 1: 0.95}
	costOf := func(name string, ms float64) (costRun, bool) {
		for _, r := range rep.Cost {
			if r.Contender == name && r.CostMS == ms {
				return r, true
			}
		}
		return costRun{}, false
	}
	for _, ms := range costsMS {
		p, ok1 := costOf("pool-default", ms)
		c, ok2 := costOf("node-cluster", ms)
		if !ok1 || !ok2 || c.Throughput <= 0 {
			continue
		}
		x := p.Throughput / c.Throughput
		text := fmt.Sprintf("pool-default %.0f/s, node-cluster %.0f/s: %.2f×", p.Throughput, c.Throughput, x)
		if t, ok := costOf("pool-tuned", ms); ok {
			text += fmt.Sprintf(" (pool-tuned %.2f×)", t.Throughput/c.Throughput)
		}
		for _, f := range rep.CostFloor {
			if f.CostMS == ms && f.Ceiling > 0 {
				text += fmt.Sprintf("; ceiling for any Caddy handler at this rate %.2f× (caddy-respond %.0f µs/req beside busy workers)", f.Ceiling, f.FloorUS)
			}
		}
		gs = append(gs, goal{fmt.Sprintf("Throughput at %g ms of CPU per request ≥ %.2f× Node cluster's (issue 16)", ms, costGoals[ms]),
			text, verdict(x >= costGoals[ms])})
	}
	for _, f := range rep.CostFloor {
		if f.CostMS != 0 || f.FloorUS <= 0 {
			continue
		}
		x := f.PoolUS / f.FloorUS
		gs = append(gs, goal{"Proxy CPU per request ≤ 1.6× Caddy's static `respond` at the same rate, beside busy workers (`GET /work?ms=0`)",
			fmt.Sprintf("pool-default %.0f µs/req at %.0f/s, caddy-respond %.0f: %.2f×", f.PoolUS, f.RatePS, f.FloorUS, x), verdict(x <= 1.6)})
	}
	for _, r := range rep.Overload {
		if r.Contender != "pool-default" {
			continue
		}
		x := ratio(r.GoodputOver, r.GoodputBase)
		gs = append(gs, goal{fmt.Sprintf("%d connections: ≤ 1%% non-2xx, goodput ≥ 90%% of %d connections' (issue 16)", overloadConns, overloadBase),
			fmt.Sprintf("pool-default %.1f%% non-2xx, %.0f vs %.0f 2xx/s: %s", 100*r.Non2xxShare, r.GoodputOver, r.GoodputBase, ratioText(x)),
			verdict(r.Non2xxShare <= 0.01 && x >= 0.9)})
	}
	if len(rep.Scaling) > 0 {
		eff := map[string]map[int]float64{}
		maxN := 0
		for _, r := range rep.Scaling {
			if eff[r.Contender] == nil {
				eff[r.Contender] = map[int]float64{}
			}
			eff[r.Contender][r.Workers] = r.Efficiency
			maxN = max(maxN, r.Workers)
		}
		target := max(rep.CPUs-1, 1)
		if e, ok := eff["pool-default"][target]; ok {
			gs = append(gs, goal{fmt.Sprintf("Scaling efficiency ≥ 0.9 at N = cores − 1 = %d", target),
				fmt.Sprintf("pool-default %.2f", e), verdict(e >= 0.9)})
		}
		if e, ok := eff["pool-default"][maxN]; ok {
			var others []string
			ahead := true
			for _, peer := range []string{"node-cluster", "pm2"} {
				if pe, ok := eff[peer][maxN]; ok {
					others = append(others, fmt.Sprintf("%s %.2f", peer, pe))
					ahead = ahead && e > pe
				}
			}
			if len(others) > 0 {
				gs = append(gs, goal{fmt.Sprintf("Scaling efficiency ahead of Node cluster and PM2 (N = %d)", maxN),
					fmt.Sprintf("pool-default %.2f, %s", e, strings.Join(others, ", ")), verdict(ahead)})
			}
		}
	}
	if h := rep.Hetero; h != nil {
		// Issue 17's goals, with Poisson arrivals only: a goal met only
		// under evenly spaced arrivals is not met.
		run := func(contender, mix string, load float64) *runStats {
			for i, r := range h.Runs {
				if r.Contender == contender && r.Mix == mix && r.Load == load && r.Arrivals == poisson {
					return &h.Runs[i]
				}
			}
			return nil
		}
		for _, load := range heteroLoads {
			pool, cluster := run("pool-default", "cpu", load), run("node-cluster", "cpu", load)
			if pool == nil || cluster == nil || cluster.FastP99 <= 0 || cluster.SlowP99 <= 0 {
				continue
			}
			fast, slow := pool.FastP99/cluster.FastP99, pool.SlowP99/cluster.SlowP99
			gs = append(gs, goal{fmt.Sprintf("At %.0f%% of Node cluster's capacity, Poisson arrivals: fast p99 ≤ 0.25× and slow p99 ≤ 1.25× of cluster's, no errors (issue 17)", 100*load),
				fmt.Sprintf("pool-default fast %.1f ms vs %.1f: %.2f×, slow %.1f ms vs %.1f: %.2f×, %d errors",
					pool.FastP99, cluster.FastP99, fast, pool.SlowP99, cluster.SlowP99, slow, pool.Errors),
				verdict(fast <= 0.25 && slow <= 1.25 && pool.Errors == 0)})
		}
		// One cost class: cost scheduling must be FIFO. Within noise is
		// taken as ±20% of the p99, the spread of repeated runs on a
		// shared 2-CPU machine.
		if pool, fifo := run("pool-default", "single", heteroGoalLoad), run("pool-fifo", "single", heteroGoalLoad); pool != nil && fifo != nil && fifo.FastP99 > 0 {
			x := pool.FastP99 / fifo.FastP99
			gs = append(gs, goal{fmt.Sprintf("One cost class (every request 2 ms) at %.0f%%, Poisson arrivals: p99 of schedule cost within ±20%% of schedule fifo's (issue 17)", 100*heteroGoalLoad),
				fmt.Sprintf("pool-default %.1f ms, pool-fifo %.1f ms: %.2f×", pool.FastP99, fifo.FastP99, x),
				verdict(x >= 0.8 && x <= 1.2)})
		}
	}
	for _, r := range rep.Failure {
		if r.Contender != "pool-default" {
			continue
		}
		var peers []string
		for _, p := range rep.Failure {
			if p.Contender == "node-cluster" || p.Contender == "pm2" {
				peers = append(peers, fmt.Sprintf("%s %d", p.Contender, p.Failed))
			}
		}
		gs = append(gs, goal{"Zero failed idempotent requests when a worker is killed",
			fmt.Sprintf("pool-default %d failed of %d; %s", r.Failed, r.Requests, strings.Join(peers, ", ")), verdict(r.Failed == 0)})
	}
	mem := map[string]memoryRun{}
	for _, r := range rep.Memory {
		mem[r.Contender] = r
	}
	if p, ok := mem["pool-default"]; ok {
		// Caddy's own server is the floor (Caddy answering by itself) when
		// it ran, else stock reverse_proxy.
		ref, refOK := mem[floorName]
		if !refOK {
			ref, refOK = mem["caddy-rp"]
		}
		if refOK {
			text := fmt.Sprintf("pool-default %d B per idle connection", p.ProxyPerConn)
			for _, name := range []string{floorName, "caddy-rp", "nginx"} {
				if r, ok := mem[name]; ok {
					text += fmt.Sprintf(", %s %d B", name, r.ProxyPerConn)
				}
			}
			// Within 10% (or 200 B) of Caddy's own counts as nothing added:
			// that is the noise of two RSS readings of a Go heap.
			gs = append(gs, goal{"Nothing per idle client connection beyond Caddy's own server", text,
				verdict(float64(p.ProxyPerConn) <= math.Max(float64(ref.ProxyPerConn)*1.1, float64(ref.ProxyPerConn+200)))})
		}
	}
	return gs
}

// openLoopText says how runs were offered and measured: their arrival
// processes, the seed and where latency starts.
func openLoopText(runs []runStats, seed uint64) string {
	var arrivals []string
	for _, r := range runs {
		if !slices.Contains(arrivals, r.Arrivals) {
			arrivals = append(arrivals, r.Arrivals)
		}
	}
	if slices.Contains(arrivals, "") {
		return "Arrivals: evenly spaced (vegeta's constant pacer, before the harness had its own generator), latency from when each " +
			"request was sent, and the slow requests at fixed positions of the sequence (all on even ones)."
	}
	var names []string
	for _, p := range arrivals {
		switch p {
		case poisson:
			names = append(names, "Poisson (exponential gaps)")
		default:
			names = append(names, arrivalLabel(p)+" (one gap)")
		}
	}
	return fmt.Sprintf("Arrivals: %s, seed %d (the same arrivals and mix for every contender). "+
		"Latency runs from each request's due time, not from when the generator sent it, so a generator that "+
		"falls behind adds its delay to the figures instead of hiding it; \"generator lag\" is due time to send (p99 / max), "+
		"and **behind** marks a run that sent more than 1%% of its requests over 1 ms late.", strings.Join(names, " and "), seed)
}

// openLoopTable is the Markdown table of open-loop runs; × cluster is a
// p99 over Node cluster's in the run with the same mix, load and
// arrivals.
func openLoopTable(runs []runStats) string {
	var b strings.Builder
	b.WriteString("| contender | mix | arrivals | load | rate/s | throughput/s | errors | fast p50 ms | fast p99 ms | fast p99.9 ms | slow p99 ms | fast p99 × cluster | slow p99 × cluster | generator lag p99 / max ms |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		fast, slow := clusterRatios(runs, r)
		slowP99 := "—"
		if r.SlowP99 > 0 {
			slowP99 = fmt.Sprintf("%.1f", r.SlowP99)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %.0f%% | %.0f | %.0f | %d | %.1f | %.1f | %.1f | %s | %s | %s | %s |\n",
			r.Contender, cmp.Or(r.Mix, "cpu"), arrivalLabel(r.Arrivals), r.Load*100, r.Rate, r.Throughput, r.Errors,
			r.FastP50, r.FastP99, r.FastP999, slowP99, ratioText(fast), ratioText(slow), lagText(r))
	}
	return b.String()
}

// clusterRatios are r's fast and slow p99 over Node cluster's in the run
// with the same mix, load and arrivals (NaN where there is none).
func clusterRatios(runs []runStats, r runStats) (fast, slow float64) {
	for _, c := range runs {
		if c.Contender == "node-cluster" && c.Mix == r.Mix && c.Load == r.Load && c.Arrivals == r.Arrivals {
			return ratio(r.FastP99, c.FastP99), ratio(r.SlowP99, c.SlowP99)
		}
	}
	return math.NaN(), math.NaN()
}
