package main

import (
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// The first things a user measures (issue 16): how many requests each
// contender serves as the work per request shrinks, and what happens
// with far more client connections than workers can serve.

// costsMS are the CPU times per request of the cost scenario, in ms; the
// example app's /work takes fractions.
var costsMS = []float64{0, 0.2, 1}

// costConns are the cost scenario's client connections (wrk -c64).
const costConns = 64

type costRun struct {
	Contender string     `json:"contender"`
	CostMS    float64    `json:"cost_ms"`
	Load      loadResult `json:"load"`
	// Throughput are the 2xx answers per second.
	Throughput float64 `json:"throughput_per_s"`
	// ProxyCPUus is the CPU time of the proxy's processes per 2xx
	// answer, in µs (-1: no proxy); AllCPUus adds the workers'.
	ProxyCPUus float64 `json:"proxy_cpu_us_per_request"`
	AllCPUus   float64 `json:"all_cpu_us_per_request"`
}

func costPath(ms float64) string {
	return "/work?ms=" + strconv.FormatFloat(ms, 'f', -1, 64)
}

// throughputByCost drives GET /work?ms=<cost> for each cost in turn,
// closed loop, costConns connections, after a warm-up at that cost; c
// starts once for all costs.
func throughputByCost(c contender, l lengths, tmp string) ([]costRun, error) {
	r, err := launch(c)
	if err != nil {
		return nil, err
	}
	defer r.stop()
	var runs []costRun
	for _, ms := range costsMS {
		path := costPath(ms)
		if _, err := closedLoop(r.url+path, costConns, l.warm, tmp); err != nil {
			return runs, err
		}
		m, err := measureClosed(r, path, costConns, l.closed, tmp)
		if err != nil {
			return runs, err
		}
		run := costRun{Contender: c.name, CostMS: ms, Load: m.load, ProxyCPUus: m.proxyCPUus(), AllCPUus: m.perGood(m.allCPU)}
		if m.load.DurationS > 0 {
			run.Throughput = float64(m.load.good()) / m.load.DurationS
		}
		fmt.Fprintf(os.Stderr, "cost %-14s %4.1f ms %8.0f req/s  p99 %.2f ms  proxy CPU %.0f µs/req  all %.0f µs/req  errors %d\n",
			c.name, ms, run.Throughput, m.load.P99, run.ProxyCPUus, run.AllCPUus, m.load.errors())
		runs = append(runs, run)
	}
	return runs, nil
}

const (
	// overloadConns against the suite's workers, for overloadTime; the
	// reference run has overloadBase connections.
	overloadConns = 2000
	overloadBase  = 200
	overloadTime  = 10 * time.Second
	// overloadPath is the cheapest request: where answering "no" costs
	// the most compared with answering.
	overloadPath = "/"
)

type overloadRun struct {
	Contender string `json:"contender"`
	// Base is the closed loop with overloadBase connections, Over the
	// one with overloadConns right after it.
	Base        loadResult `json:"base"`
	Over        loadResult `json:"over"`
	GoodputBase float64    `json:"goodput_base_per_s"`
	GoodputOver float64    `json:"goodput_over_per_s"`
	// Non2xxShare is the share of the answers with overloadConns
	// connections that were not 2xx.
	Non2xxShare float64 `json:"non_2xx_share"`
	// RSS of the proxy's processes idle and at its peak during Over, and
	// of all the contender's processes at their peak (Node cluster and
	// PM2 keep the client connections in the workers).
	ProxyRSSIdle int64 `json:"proxy_rss_idle_bytes"`
	ProxyRSSPeak int64 `json:"proxy_rss_peak_bytes"`
	AllRSSPeak   int64 `json:"all_rss_peak_bytes"`
}

// overloadFiles is the open-file limit the overload scenario needs: the
// load generator's connections and, in a proxy, a client and an upstream
// side for each, with room for the rest.
const overloadFiles = 2*overloadConns + 1024

// overload: GET / closed loop, first overloadBase connections for
// l.closed, then overloadConns for overloadTime.
func overload(c contender, l lengths, tmp string) (overloadRun, error) {
	if openFiles < overloadFiles {
		return overloadRun{}, fmt.Errorf("open-file limit %d, %d connections need %d: raise the hard limit (ulimit -Hn, as root)",
			openFiles, overloadConns, overloadFiles)
	}
	r, err := launch(c)
	if err != nil {
		return overloadRun{}, err
	}
	defer r.stop()
	proxy, _ := r.split()
	run := overloadRun{Contender: c.name, ProxyRSSIdle: rssBytes(proxy)}
	if _, err := closedLoop(r.url+overloadPath, overloadBase, l.warm, tmp); err != nil {
		return run, err
	}
	base, err := measureClosed(r, overloadPath, overloadBase, l.closed, tmp)
	if err != nil {
		return run, err
	}
	over, err := measureClosed(r, overloadPath, overloadConns, overloadTime, tmp)
	if err != nil {
		return run, err
	}
	run.Base, run.Over = base.load, over.load
	run.GoodputBase, run.GoodputOver = goodput(base.load), goodput(over.load)
	if over.load.Requests > 0 {
		run.Non2xxShare = float64(over.load.Non2xx) / float64(over.load.Requests)
	}
	run.ProxyRSSPeak, run.AllRSSPeak = over.proxyPeak, over.allPeak
	fmt.Fprintf(os.Stderr, "overload %-13s %d conns %7.0f 2xx/s, %d conns %7.0f 2xx/s (%.2f×), non-2xx %.1f%%, socket errors %d, proxy RSS %.1f → %.1f MiB\n",
		c.name, overloadBase, run.GoodputBase, overloadConns, run.GoodputOver, ratio(run.GoodputOver, run.GoodputBase),
		100*run.Non2xxShare, over.load.SocketErrors, mib(run.ProxyRSSIdle), mib(run.ProxyRSSPeak))
	return run, nil
}

// goodput are the 2xx answers per second of a run.
func goodput(l loadResult) float64 {
	if l.DurationS <= 0 {
		return 0
	}
	return float64(l.good()) / l.DurationS
}

// ratio is a/b, or NaN when b is not positive.
func ratio(a, b float64) float64 {
	if b <= 0 {
		return math.NaN()
	}
	return a / b
}

// costFloorRun is Caddy's own floor at one cost of the cost scenario:
// Caddy answering a static respond (caddy-respond), offered GET / at the
// rate pool-default reached at that cost, while one busy
// process per worker keeps the cores as busy as the pool's workers kept
// them. Its CPU per answer is what any handler inside Caddy pays at that
// rate on those cores before it does anything; Ceiling is the share of
// Node cluster's throughput that such a handler could reach if it cost
// nothing more: cluster spends ClusterMachineUS of the machine's CPU per
// request (CPUs over its throughput), a Caddy handler at least that
// plus FloorUS.
type costFloorRun struct {
	CostMS  float64 `json:"cost_ms"`
	RatePS  float64 `json:"offered_per_s"`
	Answers int     `json:"answers"`
	Errors  int     `json:"errors"`
	// FloorUS is caddy-respond's CPU (utime+stime) per 2xx answer, µs.
	FloorUS          float64 `json:"caddy_respond_cpu_us_per_request"`
	ClusterMachineUS float64 `json:"cluster_machine_cpu_us_per_request"`
	Ceiling          float64 `json:"ceiling_x_cluster"`
	// PoolUS is pool-default's proxy CPU per request at this cost, µs.
	PoolUS float64 `json:"pool_default_proxy_cpu_us_per_request"`
	// Load is how it was offered: wrk (costConns connections, each
	// pausing between requests) or poisson (the open-loop generator).
	Load string `json:"load"`
	// Behind: the Poisson generator sent more than behindShare late.
	Behind bool `json:"generator_behind,omitempty"`
}

// busyScript is a process that spins for ever: a worker that never waits.
const busyScript = "for(;;){}"

// costFloors measures costFloorRun for each cost at which both
// pool-default and node-cluster ran.
func costFloors(caddy string, workers, cpus int, runs []costRun, l lengths, seed uint64, tmp string) ([]costFloorRun, error) {
	var out []costFloorRun
	for _, ms := range costsMS {
		var pool, cluster, poolUS float64
		for _, r := range runs {
			if r.CostMS != ms {
				continue
			}
			switch r.Contender {
			case "pool-default":
				pool, poolUS = r.Throughput, r.ProxyCPUus
			case "node-cluster":
				cluster = r.Throughput
			}
		}
		if pool <= 0 || cluster <= 0 {
			continue
		}
		f, err := costFloor(caddy, workers, pool, l, seed, tmp)
		if err != nil {
			return out, err
		}
		f.CostMS, f.PoolUS = ms, poolUS
		f.ClusterMachineUS = float64(cpus) * 1e6 / cluster
		if f.FloorUS > 0 {
			f.Ceiling = f.ClusterMachineUS / (f.ClusterMachineUS + f.FloorUS)
		}
		fmt.Fprintf(os.Stderr, "cost floor %4.1f ms: caddy-respond at %.0f/s beside %d busy processes: %.0f µs/req; ceiling %.2f× cluster\n",
			ms, pool, workers, f.FloorUS, f.Ceiling)
		out = append(out, f)
	}
	return out, nil
}

// costFloor runs caddy-respond with workers busy processes beside it and
// offers it GET / at rate for l.closed (measured) after a warm-up. With
// wrk, the load is the cost scenario's own: costConns connections, each
// pausing between an answer and its next request so that together they
// send rate requests per second (one warm-up run measures the answer
// time to take off the pause). Without wrk it is the open-loop
// generator's Poisson arrivals at rate.
func costFloor(caddy string, workers int, rate float64, l lengths, seed uint64, tmp string) (costFloorRun, error) {
	run := costFloorRun{RatePS: rate}
	r, err := launch(caddyRespond(caddy, tmp))
	if err != nil {
		return run, err
	}
	defer r.stop()
	for i := range workers {
		stop, err := startProcess(exec.Command(nodeBin, "-e", busyScript), filepath.Join(tmp, fmt.Sprintf("busy-%d.log", i)))
		if err != nil {
			return run, err
		}
		defer stop()
	}
	proxy, _ := r.split()
	c0 := cpuSeconds(proxy)
	if haveWrk() {
		err = floorByWrk(r.url+"/", rate, l, tmp, &run, func() { c0 = cpuSeconds(proxy) })
	} else {
		err = floorByPoisson(r.url, rate, l, seed, &run, func() { c0 = cpuSeconds(proxy) })
	}
	if err != nil {
		return run, err
	}
	if run.Answers > 0 {
		run.FloorUS = (cpuSeconds(proxy) - c0) * 1e6 / float64(run.Answers)
	}
	return run, nil
}

// floorByWrk offers url rate requests per second from costConns wrk
// connections that pause between requests: a warm-up, then measured
// calls as the measured run starts.
func floorByWrk(url string, rate float64, l lengths, tmp string, run *costFloorRun, measured func()) error {
	run.Load = "wrk"
	pause := float64(costConns) / rate * 1000 // ms between a connection's requests
	warm, err := pacedLoop(url, costConns, pause, l.warm, tmp)
	if err != nil {
		return err
	}
	if warm.DurationS > 0 && warm.Requests > 0 {
		// Take the answer time off the pause.
		got := float64(warm.Requests) / warm.DurationS
		pause -= float64(costConns)/got*1000 - pause
	}
	measured()
	res, err := pacedLoop(url, costConns, max(pause, 0), l.closed, tmp)
	if err != nil {
		return err
	}
	run.Answers, run.Errors = res.good(), res.errors()
	if res.DurationS > 0 {
		run.RatePS = float64(res.Requests) / res.DurationS
	}
	return nil
}

// floorByPoisson offers GET / at base rate requests per second with the
// open-loop generator's Poisson arrivals: a warm-up, then measured calls
// as the measured run starts.
func floorByPoisson(base string, rate float64, l lengths, seed uint64, run *costFloorRun, measured func()) error {
	run.Load = "poisson"
	m := &mix{base: base, kind: "root", seed: seed}
	warm, err := arrivalTimes(poisson, rate, l.warm, seed)
	if err != nil {
		return err
	}
	offer(m, warm)
	times, err := arrivalTimes(poisson, rate, l.closed, seed+1)
	if err != nil {
		return err
	}
	measured()
	st := summarize(offer(m, times), l.closed)
	run.Answers, run.Errors, run.Behind = st.Requests-st.Errors, st.Errors, st.Behind
	return nil
}
