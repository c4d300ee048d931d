package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"
)

// suiteOptions are the flags of `bench suite`.
type suiteOptions struct {
	quick     bool
	workers   int
	scenarios string
	only      string
	caddy     string
	out       string
	keep      bool
	idleConns int
	seed      uint64
}

// The scenarios of the suite, in the order they run.
var allScenarios = []string{"proxy", "cost", "scaling", "hetero", "failure", "memory", "overload", "autoscale"}

// notQuick are the scenarios that --quick leaves out unless -scenarios
// names them.
var notQuick = []string{"autoscale"}

// suiteReport is everything one run of the suite measured; it is written
// as results/<date>-<host>.json and rendered from there.
type suiteReport struct {
	Date       string            `json:"date"`
	Host       string            `json:"host"`
	CPUs       int               `json:"cpus"`
	Workers    int               `json:"workers"`
	Quick      bool              `json:"quick"`
	LoadStart  string            `json:"loadavg_start"`
	LoadEnd    string            `json:"loadavg_end"`
	Loadgen    string            `json:"load_generator"`
	NoFile     uint64            `json:"rlimit_nofile"`
	Versions   map[string]string `json:"versions"`
	Skipped    map[string]string `json:"skipped,omitempty"`
	TunedNotes map[string]string `json:"tuned_options"`
	Scenarios  []string          `json:"scenarios"`

	ProxyCost []proxyCostRun  `json:"proxy_cost,omitempty"`
	Cost      []costRun       `json:"throughput_by_cost,omitempty"`
	CostFloor []costFloorRun  `json:"cost_floor,omitempty"`
	Scaling   []scalingRun    `json:"scaling,omitempty"`
	Hetero    *heteroResult   `json:"heterogeneous,omitempty"`
	Failure   []failureRun    `json:"failure,omitempty"`
	Memory    []memoryRun     `json:"memory,omitempty"`
	Overload  []overloadRun   `json:"overload,omitempty"`
	Autoscale *autoscaling    `json:"autoscale,omitempty"`
	Errors    []contenderFail `json:"errors,omitempty"`
}

// contenderFail is a contender that could not be measured in a scenario.
type contenderFail struct {
	Scenario  string `json:"scenario"`
	Contender string `json:"contender"`
	Error     string `json:"error"`
}

type proxyCostRun struct {
	Contender string     `json:"contender"`
	Load      loadResult `json:"load"`
	// ProxyCPUms is the CPU time of the proxy's processes per 10,000
	// answered requests, in milliseconds; NaN-free: -1 when there is no
	// proxy (one Node process alone).
	ProxyCPUms float64 `json:"proxy_cpu_ms_per_10k"`
	// AllCPUms is the same for every process of the contender (proxy and
	// workers), the load generator excluded.
	AllCPUms   float64 `json:"all_cpu_ms_per_10k"`
	ProxyProcs int     `json:"proxy_processes"`
}

type scalingRun struct {
	Contender  string     `json:"contender"`
	Workers    int        `json:"workers"`
	Load       loadResult `json:"load"`
	Throughput float64    `json:"throughput_per_s"`
	Efficiency float64    `json:"efficiency"`
}

type heteroResult struct {
	// CapacityPS is Node cluster's closed-loop throughput with the CPU
	// mix, SingleCapacityPS with the single cost class, both measured in
	// this run: the loads are fractions of them.
	CapacityPS       float64 `json:"capacity_per_s"`
	SingleCapacityPS float64 `json:"single_capacity_per_s,omitempty"`
	CapacityOf       string  `json:"capacity_of,omitempty"`
	Duration         string  `json:"duration"`
	// Seed draws the arrivals and which requests are slow (the same for
	// every contender).
	Seed uint64     `json:"seed"`
	Runs []runStats `json:"runs"`
}

type failureRun struct {
	Contender string `json:"contender"`
	Requests  int    `json:"requests"`
	Failed    int    `json:"failed"`
	// BaselinePS is the throughput before the kill, per second.
	BaselinePS float64 `json:"baseline_per_s"`
	KilledAtS  float64 `json:"killed_at_s"`
	// RecoveryS is the time from the kill until a 500 ms window reaches
	// 90% of the baseline again; -1 if it did not before the run ended.
	RecoveryS float64 `json:"recovery_s"`
	// WorkersAfter are the app processes alive at the end.
	WorkersAfter int   `json:"workers_after"`
	PerSlotOK    []int `json:"ok_per_100ms"`
	PerSlotBad   []int `json:"failed_per_100ms"`
}

type memoryRun struct {
	Contender    string `json:"contender"`
	ProxyIdle    int64  `json:"proxy_rss_idle_bytes"`
	ProxyIdlePSS int64  `json:"proxy_pss_idle_bytes"`
	ProxyLoad    int64  `json:"proxy_rss_load_bytes"`
	ProxyBefore  int64  `json:"proxy_rss_before_conns_bytes"`
	ProxyConns   int64  `json:"proxy_rss_idle_conns_bytes"`
	AllIdle      int64  `json:"all_rss_idle_bytes"`
	AllBefore    int64  `json:"all_rss_before_conns_bytes"`
	AllConns     int64  `json:"all_rss_idle_conns_bytes"`
	ConnsWanted  int    `json:"idle_conns_wanted"`
	ConnsOpened  int    `json:"idle_conns_opened"`
	ConnsOpen    int    `json:"idle_conns_still_open"`
	ProxyPerConn int64  `json:"proxy_bytes_per_idle_conn"`
	AllPerConn   int64  `json:"all_bytes_per_idle_conn"`
}

// scenario lengths: quick fits the whole suite in under 10 minutes on 2
// cores; full gives steadier figures.
type lengths struct {
	closed, warm, hetero, failure, killAt, capacity time.Duration
	// step is each step of the autoscale scenario's load, scaleIdle its
	// scaling pool's scale_idle.
	step, scaleIdle time.Duration
}

func suiteLengths(quick bool) lengths {
	if quick {
		return lengths{closed: 4 * time.Second, warm: time.Second, hetero: 4 * time.Second,
			failure: 8 * time.Second, killAt: 3 * time.Second, capacity: 3 * time.Second,
			step: 8 * time.Second, scaleIdle: 4 * time.Second}
	}
	return lengths{closed: 15 * time.Second, warm: 2 * time.Second, hetero: 20 * time.Second,
		failure: 15 * time.Second, killAt: 5 * time.Second, capacity: 5 * time.Second,
		step: 20 * time.Second, scaleIdle: 10 * time.Second}
}

// pool-tuned's options per scenario: what the README's "Choosing
// max_inflight" recommends for that workload.
var tunedOptions = map[string]string{
	"proxy":    "max_inflight 0",
	"cost":     "max_inflight 0",
	"memory":   "max_inflight 0",
	"overload": "max_inflight 0",
	"scaling":  "max_inflight 1",
	"hetero":   "max_inflight 1",
	"failure":  "max_inflight 1",
}

// suiteContenders returns the suite's contenders with workers app
// processes each, for scenario. Where the request is GET / (proxy,
// memory), Caddy answering by itself (caddy-respond) is the floor of
// Caddy's own server. In the failure scenario stock
// reverse_proxy and HAProxy also run with the failover options their
// documentation gives (a row beside the plain one: they change the
// result a lot).
func suiteContenders(scenario, caddy string, workers int, dir string) []contender {
	cs := []contender{nodeSingle(dir)}
	if scenario == "proxy" || scenario == "memory" {
		cs = append(cs, caddyRespond(caddy, dir))
	}
	cs = append(cs,
		nodeCluster(workers, dir),
		pm2Cluster(workers, dir),
		nginxLeastConn(workers, dir),
		haproxyLeastConn("haproxy", workers, dir, haproxyExtra{}),
	)
	if scenario == "failure" {
		cs = append(cs, haproxyLeastConn("haproxy-tuned", workers, dir, haproxyFailover))
	}
	cs = append(cs, caddyReverseProxy("caddy-rp", caddy, workers, "", dir))
	if scenario == "failure" {
		cs = append(cs, caddyReverseProxy("caddy-rp-tuned", caddy, workers, caddyRPFailover, dir))
	}
	cs = append(cs,
		workerPool("pool-default", caddy, workers, "", dir),
		workerPool("pool-tuned", caddy, workers, tunedOptions[scenario], dir))
	if scenario == "hetero" {
		// The defaults with a first-come-first-served queue: what cost
		// scheduling changes, and that it changes nothing for one cost
		// class.
		cs = append(cs, workerPool("pool-fifo", caddy, workers, "schedule fifo", dir))
	}
	return cs
}

// noFileFor is the open-file limit that scenarios need at least.
func noFileFor(scenarios []string) uint64 {
	if slices.Contains(scenarios, "overload") {
		return overloadFiles
	}
	return 0
}

// suiteScenarios are the scenarios that -scenarios names, in their
// order; without it, all of them, less notQuick with --quick.
func suiteScenarios(quick bool, list string) ([]string, error) {
	if list == "" {
		if quick {
			return slices.DeleteFunc(slices.Clone(allScenarios), func(s string) bool { return slices.Contains(notQuick, s) }), nil
		}
		return allScenarios, nil
	}
	scenarios := strings.Split(list, ",")
	for _, s := range scenarios {
		if !slices.Contains(allScenarios, s) {
			return nil, fmt.Errorf("-scenarios: %q is none of %s", s, strings.Join(allScenarios, ","))
		}
	}
	return scenarios, nil
}

func runSuite(o suiteOptions) error {
	tmp, err := os.MkdirTemp("", "workerpool-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "configs and logs in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	scenarios, err := suiteScenarios(o.quick, o.scenarios)
	if err != nil {
		return err
	}
	if o.workers <= 0 {
		o.workers = cpuCount()
	}
	caddy := o.caddy
	if caddy == "" {
		if caddy, err = buildCaddy(tmp); err != nil {
			return err
		}
	}
	host, _ := os.Hostname()
	rep := &suiteReport{
		Date: time.Now().UTC().Format("2006-01-02"), Host: host, CPUs: cpuCount(), Workers: o.workers,
		Quick: o.quick, LoadStart: loadAvg(), NoFile: raiseNoFile(noFileFor(scenarios)), Scenarios: scenarios,
		Versions: toolVersions(caddy), Skipped: map[string]string{}, TunedNotes: tunedOptions,
		Loadgen: "wrk (closed loop), the harness's Go client for the failure scenario, its open-loop generator (Poisson arrivals) for hetero",
	}
	if !haveWrk() {
		rep.Loadgen = "the harness's Go client (wrk not installed: `apt-get install wrk`), its open-loop generator (Poisson arrivals) for hetero"
	}
	fmt.Fprintf(os.Stderr, "bench: %d CPUs, %d workers, load %s, open files %d\n", rep.CPUs, o.workers, rep.LoadStart, rep.NoFile)
	l := suiteLengths(o.quick)
	keep := func(cs []contender) []contender {
		if o.only != "" {
			names := strings.Split(o.only, ",")
			cs = slices.DeleteFunc(cs, func(c contender) bool { return !slices.Contains(names, c.name) })
		}
		for _, c := range cs {
			if c.skip != "" {
				rep.Skipped[c.name] = c.skip
			}
		}
		return slices.DeleteFunc(cs, func(c contender) bool { return c.skip != "" })
	}
	fail := func(scenario, name string, err error) {
		fmt.Fprintf(os.Stderr, "%s %s: %v\n", scenario, name, err)
		rep.Errors = append(rep.Errors, contenderFail{scenario, name, err.Error()})
	}
	for _, sc := range scenarios {
		start := time.Now()
		switch sc {
		case "proxy":
			for _, c := range keep(suiteContenders(sc, caddy, o.workers, tmp)) {
				run, err := proxyCost(c, l, tmp)
				if err != nil {
					fail(sc, c.name, err)
					continue
				}
				rep.ProxyCost = append(rep.ProxyCost, run)
			}
		case "cost":
			for _, c := range keep(suiteContenders(sc, caddy, o.workers, tmp)) {
				runs, err := throughputByCost(c, l, tmp)
				if err != nil {
					fail(sc, c.name, err)
				}
				rep.Cost = append(rep.Cost, runs...)
			}
			if o.only == "" || slices.Contains(strings.Split(o.only, ","), "caddy-respond") {
				floors, err := costFloors(caddy, o.workers, rep.CPUs, rep.Cost, l, o.seed, tmp)
				if err != nil {
					fail(sc, "caddy-respond", err)
				}
				rep.CostFloor = floors
			}
		case "scaling":
			rep.Scaling = scaling(o.workers, l, tmp, func(n int) []contender {
				return keep(suiteContenders(sc, caddy, n, tmp))
			}, fail)
		case "hetero":
			rep.Hetero = hetero(keep(suiteContenders(sc, caddy, o.workers, tmp)), o.workers, l, o.seed, tmp, fail)
		case "failure":
			for _, c := range keep(suiteContenders(sc, caddy, o.workers, tmp)) {
				if c.name == "node-single" {
					continue // nothing to fail over to
				}
				run, err := failure(c, l)
				if err != nil {
					fail(sc, c.name, err)
					continue
				}
				rep.Failure = append(rep.Failure, run)
			}
		case "memory":
			for _, c := range keep(suiteContenders(sc, caddy, o.workers, tmp)) {
				run, err := memory(c, o.idleConns, l, tmp)
				if err != nil {
					fail(sc, c.name, err)
					continue
				}
				rep.Memory = append(rep.Memory, run)
			}
		case "overload":
			for _, c := range keep(suiteContenders(sc, caddy, o.workers, tmp)) {
				if c.name == "node-single" {
					continue // one worker: not the pool size under test
				}
				run, err := overload(c, l, tmp)
				if err != nil {
					fail(sc, c.name, err)
					continue
				}
				rep.Overload = append(rep.Overload, run)
			}
		case "autoscale":
			rep.Autoscale = autoscale(keep(autoscaleContenders(caddy, l, tmp)), l, o.seed, func(name string, err error) { fail(sc, name, err) })
		}
		fmt.Fprintf(os.Stderr, "bench: %s done in %s\n", sc, time.Since(start).Round(time.Second))
	}
	rep.LoadEnd = loadAvg()
	return writeSuite(o.out, rep)
}

// proxyCost: GET / (a few dozen bytes), closed loop, 64 connections.
func proxyCost(c contender, l lengths, tmp string) (proxyCostRun, error) {
	r, err := launch(c)
	if err != nil {
		return proxyCostRun{}, err
	}
	defer r.stop()
	if _, err := closedLoop(r.url+"/", 64, l.warm, tmp); err != nil {
		return proxyCostRun{}, err
	}
	m, err := measureClosed(r, "/", 64, l.closed, tmp)
	if err != nil {
		return proxyCostRun{}, err
	}
	// µs per request × 10,000 / 1,000 = ms per 10,000 requests.
	run := proxyCostRun{Contender: c.name, Load: m.load, ProxyProcs: m.proxyProcs,
		ProxyCPUms: m.proxyCPUus() * 10, AllCPUms: m.perGood(m.allCPU) * 10}
	if run.ProxyCPUms < 0 {
		run.ProxyCPUms = -1
	}
	fmt.Fprintf(os.Stderr, "proxy %-13s %7.0f req/s  p50 %.2f p99 %.2f ms  proxy CPU %.0f ms/10k (%d procs)  all %.0f ms/10k  errors %d\n",
		c.name, m.load.RPS, m.load.P50, m.load.P99, run.ProxyCPUms, m.proxyProcs, run.AllCPUms, m.load.errors())
	return run, nil
}

// closedRun is a closed-loop run and what the contender's processes used
// during it.
type closedRun struct {
	load       loadResult
	proxyProcs int
	// proxyCPU and allCPU are the CPU seconds of the proxy's processes
	// and of all the contender's processes during the run.
	proxyCPU, allCPU float64
	// proxyPeak and allPeak are the largest RSS sums sampled during it.
	proxyPeak, allPeak int64
}

// measureClosed drives r's path with conns connections for d and reads
// the CPU time (utime+stime from /proc) and RSS of its processes.
func measureClosed(r *running, path string, conns int, d time.Duration, tmp string) (closedRun, error) {
	proxy, workers := r.split()
	all := append(slices.Clone(proxy), workers...)
	p0, a0 := cpuSeconds(proxy), cpuSeconds(all)
	peaks := sampleRSS(proxy, all)
	res, err := closedLoop(r.url+path, conns, d, tmp)
	m := closedRun{load: res, proxyProcs: len(proxy)}
	m.proxyPeak, m.allPeak = peaks()
	m.proxyCPU, m.allCPU = cpuSeconds(proxy)-p0, cpuSeconds(all)-a0
	return m, err
}

// perGood is CPU seconds per 2xx answer of the run, in µs.
func (m closedRun) perGood(cpu float64) float64 {
	if good := m.load.good(); good > 0 {
		return cpu * 1e6 / float64(good)
	}
	return 0
}

// proxyCPUus is the proxy's CPU per 2xx answer in µs, or -1 when the
// contender has no proxy process.
func (m closedRun) proxyCPUus() float64 {
	if m.proxyProcs == 0 {
		return -1
	}
	return m.perGood(m.proxyCPU)
}

// sampleRSS samples the RSS sums of proxy and all every 200 ms until the
// function it returns is called, which returns the largest of each.
func sampleRSS(proxy, all []int) func() (proxyPeak, allPeak int64) {
	stop := make(chan struct{})
	type peaks struct{ proxy, all int64 }
	done := make(chan peaks)
	go func() {
		var p peaks
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				done <- p
				return
			case <-t.C:
				p.proxy, p.all = max(p.proxy, rssBytes(proxy)), max(p.all, rssBytes(all))
			}
		}
	}()
	return func() (int64, int64) {
		close(stop)
		p := <-done
		return p.proxy, p.all
	}
}

// scalingPath is the CPU-bound request of the scaling scenario.
const scalingPath = "/work?ms=2"

// workerCounts are the pool sizes the scaling scenario measures: powers
// of two up to max, and max itself.
func workerCounts(maxN int) []int {
	var ns []int
	for n := 1; n < maxN; n *= 2 {
		ns = append(ns, n)
	}
	return append(ns, maxN)
}

// scaling: GET /work?ms=2 as fast as the contender answers with 1..N
// workers, 4 connections per worker; efficiency is throughput over N
// times one Node process's.
func scaling(maxN int, l lengths, tmp string, contenders func(n int) []contender, fail func(string, string, error)) []scalingRun {
	var runs []scalingRun
	single := math.NaN()
	for _, n := range workerCounts(maxN) {
		for _, c := range contenders(n) {
			if c.name == "node-single" && n != 1 {
				continue
			}
			r, err := launch(c)
			if err != nil {
				fail("scaling", c.name, err)
				continue
			}
			res, err := func() (loadResult, error) {
				defer r.stop()
				if _, err := closedLoop(r.url+scalingPath, 4*n, l.warm, tmp); err != nil {
					return loadResult{}, err
				}
				return closedLoop(r.url+scalingPath, 4*n, l.closed, tmp)
			}()
			if err != nil {
				fail("scaling", c.name, err)
				continue
			}
			run := scalingRun{Contender: c.name, Workers: n, Load: res, Throughput: float64(res.good()) / res.DurationS}
			if c.name == "node-single" {
				single = run.Throughput
			}
			run.Efficiency = run.Throughput / (float64(n) * single)
			if math.IsNaN(run.Efficiency) {
				run.Efficiency = 0
			}
			fmt.Fprintf(os.Stderr, "scaling %-13s N=%-3d %7.0f req/s  efficiency %.2f  errors %d\n", c.name, n, run.Throughput, run.Efficiency, res.errors())
			runs = append(runs, run)
		}
	}
	return runs
}

// heteroLoads are the loads of the CPU mix, as fractions of Node
// cluster's capacity (issue 17); the single cost class runs at the last.
var heteroLoads = []float64{0.5, heteroGoalLoad}

// hetero is the scheduling scenario's CPU mix (95% 1 ms, 5% 50 ms) at
// heteroLoads of Node cluster's closed-loop capacity, and one cost class
// (every request 2 ms) at the highest of them, open loop with Poisson
// arrivals; both capacities are measured first, in this run.
func hetero(cs []contender, workers int, l lengths, seed uint64, tmp string, fail func(string, string, error)) *heteroResult {
	res := &heteroResult{CapacityOf: "node-cluster", Duration: l.hetero.String(), Seed: seed}
	var err error
	for _, m := range []struct {
		kind string
		into *float64
	}{{"cpu", &res.CapacityPS}, {"single", &res.SingleCapacityPS}} {
		if *m.into, err = measureCapacity(nodeCluster(workers, tmp), 4*workers, l.capacity, m.kind, seed); err != nil {
			fail("hetero", "capacity", err)
			return nil
		}
		fmt.Fprintf(os.Stderr, "hetero capacity (%s mix, node-cluster) %.0f req/s\n", m.kind, *m.into)
	}
	cs = slices.DeleteFunc(cs, func(c contender) bool { return c.name == "node-single" })
	failed := func(name string, err error) { fail("hetero", name, err) }
	res.Runs = openLoopRuns(cs, "cpu", res.CapacityPS, heteroLoads, []string{poisson}, seed, l.warm, l.hetero, failed)
	res.Runs = append(res.Runs, openLoopRuns(cs, "single", res.SingleCapacityPS, heteroLoads[len(heteroLoads)-1:], []string{poisson},
		seed, l.warm, l.hetero, failed)...)
	return res
}

// failure: GET /work?ms=2 from 4 connections per worker, closed loop;
// one app process gets SIGKILL at l.killAt.
func failure(c contender, l lengths) (failureRun, error) {
	r, err := launch(c)
	if err != nil {
		return failureRun{}, err
	}
	defer r.stop()
	tl := &timeline{start: time.Now()}
	type result struct {
		res loadResult
		err error
	}
	done := make(chan result, 1)
	go func() {
		res, err := goClosedLoop(r.url+scalingPath, 4*c.workers, l.failure, tl)
		done <- result{res, err}
	}()
	time.Sleep(l.killAt)
	_, workers := r.split()
	if len(workers) == 0 {
		<-done
		return failureRun{}, fmt.Errorf("no worker process found to kill")
	}
	killedAt := time.Since(tl.start).Seconds()
	_ = syscall.Kill(slices.Min(workers), syscall.SIGKILL)
	out := <-done
	if out.err != nil {
		return failureRun{}, out.err
	}
	_, after := r.split()
	run := failureRun{
		Contender: c.name, Requests: out.res.Requests, Failed: out.res.errors(), KilledAtS: killedAt,
		WorkersAfter: len(after), PerSlotOK: tl.ok, PerSlotBad: tl.bad,
	}
	run.BaselinePS, run.RecoveryS = recovery(tl.ok, killedAt)
	fmt.Fprintf(os.Stderr, "failure %-13s %d requests, %d failed, baseline %.0f/s, back in %.1f s, %d workers after\n",
		c.name, run.Requests, run.Failed, run.BaselinePS, run.RecoveryS, run.WorkersAfter)
	return run, nil
}

// recovery returns the throughput per second from 1 s after the start to
// the kill, and the seconds from the kill until the first 500 ms window
// that reaches 90% of it (-1: never). The last slot, cut short by the end
// of the run, is left out.
func recovery(ok []int, killedAt float64) (baseline, back float64) {
	perS := float64(time.Second / slot)
	k := int(killedAt * perS)
	from := min(int(perS), k)
	if k <= from || k > len(ok) {
		return 0, -1
	}
	sum := 0
	for _, n := range ok[from:k] {
		sum += n
	}
	baseline = float64(sum) / float64(k-from) * perS
	const window = 5
	for i := k; i+window <= len(ok)-1; i++ {
		w := 0
		for _, n := range ok[i : i+window] {
			w += n
		}
		if float64(w)*perS/window >= 0.9*baseline {
			return baseline, math.Max(float64(i+window)/perS-killedAt, 0)
		}
	}
	return baseline, -1
}

// memory: the RSS of the proxy's processes idle, under the proxy-cost
// load, and with conns idle keep-alive client connections open (measured
// against the RSS just before they opened, after the load).
func memory(c contender, conns int, l lengths, tmp string) (memoryRun, error) {
	r, err := launch(c)
	if err != nil {
		return memoryRun{}, err
	}
	defer r.stop()
	time.Sleep(time.Second)
	proxy, workers := r.split()
	all := append(slices.Clone(proxy), workers...)
	m := memoryRun{Contender: c.name, ConnsWanted: conns, ProxyIdle: rssBytes(proxy), ProxyIdlePSS: pssBytes(proxy), AllIdle: rssBytes(all)}
	peaks := sampleRSS(proxy, nil)
	_, err = closedLoop(r.url+"/", 64, l.closed, tmp)
	m.ProxyLoad, _ = peaks()
	if err != nil {
		return m, err
	}
	time.Sleep(time.Second)
	m.ProxyBefore, m.AllBefore = rssBytes(proxy), rssBytes(all)
	open, _ := idleConns(r.url+"/", conns)
	m.ConnsOpened = len(open)
	time.Sleep(500 * time.Millisecond)
	m.ProxyConns, m.AllConns = rssBytes(proxy), rssBytes(all)
	m.ConnsOpen = stillOpen(open)
	for _, c := range open {
		c.Close()
	}
	if m.ConnsOpen > 0 {
		m.ProxyPerConn = (m.ProxyConns - m.ProxyBefore) / int64(m.ConnsOpen)
		m.AllPerConn = (m.AllConns - m.AllBefore) / int64(m.ConnsOpen)
	}
	fmt.Fprintf(os.Stderr, "memory %-13s proxy RSS idle %.1f MiB (PSS %.1f), load %.1f MiB, %d conns %.1f MiB (%d B/conn; all processes %d B/conn), %d of %d open\n",
		c.name, mib(m.ProxyIdle), mib(m.ProxyIdlePSS), mib(m.ProxyLoad), m.ConnsOpened, mib(m.ProxyConns), m.ProxyPerConn, m.AllPerConn, m.ConnsOpen, conns)
	return m, nil
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:min(3, len(f))], " ")
}

// toolVersions asks each tool its version; a missing one is left out.
func toolVersions(caddy string) map[string]string {
	v := map[string]string{}
	for name, argv := range map[string][]string{
		"node":    {nodeBin, "--version"},
		"nginx":   {"nginx", "-v"},
		"haproxy": {"haproxy", "-v"},
		"pm2":     {"pm2", "--version", "--no-daemon"},
		"wrk":     {"wrk", "--version"},
		"caddy":   {caddy, "version"},
	} {
		if name == "pm2" {
			// `pm2 --version` starts PM2's daemon; read its package.json
			// instead.
			if ver := pm2Version(); ver != "" {
				v[name] = ver
			}
			continue
		}
		out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		if line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n"); line != "" && !strings.Contains(line, "not found") {
			v[name] = line
		}
	}
	return v
}
