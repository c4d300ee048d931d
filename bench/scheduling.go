package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

const (
	defaultDuration = 20 * time.Second
	benchWorkers    = 2
	fastPath        = "/work?ms=1"
	// The slow requests are another route of the app, as an expensive
	// endpoint is beside cheap ones: the pool learns costs by route.
	slowPath   = "/report?ms=50"
	ioPath     = "/sleep?ms=20"
	singlePath = "/work?ms=2"
	// slowShare: each request of the CPU mix is slow with this
	// probability (5%).
	slowShare = 0.05
)

type schedulingOptions struct {
	mix      string
	ioRate   float64
	duration time.Duration
	loads    string
	arrivals string
	only     string
	caddy    string
	out      string
	keep     bool
	seed     uint64
}

// runStats are the figures of one contender at one load, from requests
// whose answer was a 2xx; latency runs from each request's due time.
type runStats struct {
	Contender string  `json:"contender"`
	Mix       string  `json:"mix,omitempty"`
	Load      float64 `json:"load"`
	Rate      float64 `json:"rate_per_s"`
	// Arrivals is the arrival process: poisson or even; empty in runs
	// recorded before the harness had a choice (they were even).
	Arrivals   string  `json:"arrivals,omitempty"`
	Seed       uint64  `json:"seed,omitempty"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Throughput float64 `json:"throughput_per_s"`
	FastP50    float64 `json:"fast_p50_ms"`
	FastP99    float64 `json:"fast_p99_ms"`
	FastP999   float64 `json:"fast_p999_ms"`
	SlowP50    float64 `json:"slow_p50_ms,omitempty"`
	SlowP99    float64 `json:"slow_p99_ms,omitempty"`
	AllP50     float64 `json:"all_p50_ms"`
	AllP99     float64 `json:"all_p99_ms"`
	AllP999    float64 `json:"all_p999_ms"`
	// The generator's lag: from a request's due time to the moment it
	// went to the HTTP client (p99 and max), the share of requests that
	// went out more than lateAfter late, and whether that share says the
	// generator fell behind.
	LagP99    float64 `json:"generator_lag_p99_ms"`
	LagMax    float64 `json:"generator_lag_max_ms"`
	LateShare float64 `json:"generator_late_share"`
	Behind    bool    `json:"generator_behind"`
}

type schedulingReport struct {
	Date       string  `json:"date"`
	Host       string  `json:"host"`
	CPUs       int     `json:"cpus"`
	Workers    int     `json:"workers"`
	Mix        string  `json:"mix"`
	Duration   string  `json:"duration"`
	Scenario   string  `json:"scenario"`
	CapacityPS float64 `json:"capacity_per_s"`
	// CapacityOf is the contender whose closed-loop throughput is the
	// capacity the loads are fractions of.
	CapacityOf string `json:"capacity_of,omitempty"`
	// Arrivals are the arrival processes of the runs, in the order run.
	Arrivals []string `json:"arrivals"`
	// Seed draws the Poisson arrivals and which requests of the CPU mix
	// are slow; every contender gets the same.
	Seed   uint64     `json:"seed"`
	Runs   []runStats `json:"runs"`
	Errors []string   `json:"errors,omitempty"`
}

func runScheduling(o schedulingOptions) error {
	var loads []float64
	for _, s := range strings.Split(o.loads, ",") {
		f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil || f <= 0 {
			return fmt.Errorf("-loads: %q is not a fraction", s)
		}
		loads = append(loads, f)
	}
	if !slices.Contains([]string{"cpu", "single", "io"}, o.mix) {
		return fmt.Errorf("-mix %q: use cpu, single or io", o.mix)
	}
	arrivals, err := parseArrivals(o.arrivals)
	if err != nil {
		return fmt.Errorf("-arrivals: %w", err)
	}
	raiseNoFile(0)
	tmp, err := os.MkdirTemp("", "workerpool-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "configs and logs in", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	caddy := o.caddy
	if caddy == "" {
		if caddy, err = buildCaddy(tmp); err != nil {
			return err
		}
	}
	contenders := []contender{
		nodeCluster(benchWorkers, tmp),
		workerPool("pool-unlimited", caddy, benchWorkers, "max_inflight 0", tmp),
		workerPool("pool-max1", caddy, benchWorkers, "max_inflight 1", tmp),
		workerPool("pool-max2", caddy, benchWorkers, "max_inflight 2", tmp),
		// The defaults: least_inflight, max_inflight auto.
		workerPool("pool-default-auto", caddy, benchWorkers, "", tmp),
		workerPool("pool-p2c-max1", caddy, benchWorkers, "max_inflight 1\n\t\tbalance p2c_ewma", tmp),
		workerPool("pool-rr-unlimited", caddy, benchWorkers, "balance round_robin\n\t\tmax_inflight 0", tmp),
	}
	if o.only != "" {
		keep := strings.Split(o.only, ",")
		contenders = slices.DeleteFunc(contenders, func(c contender) bool { return !slices.Contains(keep, c.name) })
	}

	host, _ := os.Hostname()
	rep := schedulingReport{
		Date: time.Now().UTC().Format("2006-01-02"), Host: host, CPUs: cpuCount(), Workers: benchWorkers,
		Mix: "95% GET /work?ms=1, 5% GET /report?ms=50", Duration: o.duration.String(), Scenario: o.mix,
		Arrivals: arrivals, Seed: o.seed,
	}
	if o.mix == "io" {
		rep.Mix = "100% GET /sleep?ms=20 (waits without CPU)"
		// One load: a fixed rate, far beyond what one request per
		// worker at a time can carry (2 workers / 20 ms = 100/s).
		loads = []float64{1}
		rep.CapacityPS = o.ioRate
	} else {
		if o.mix == "single" {
			rep.Mix = "100% GET /work?ms=2 (one cost class)"
		}
		// Capacity: Node cluster, closed loop, as fast as it goes.
		rep.CapacityOf = "node-cluster"
		rep.CapacityPS, err = measureCapacity(nodeCluster(benchWorkers, tmp), 8, 5*time.Second, o.mix, o.seed)
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "capacity: %.0f requests/s (node-cluster, %d workers)\n", rep.CapacityPS, benchWorkers)
	}
	rep.Runs = openLoopRuns(contenders, o.mix, rep.CapacityPS, loads, arrivals, o.seed, 2*time.Second, o.duration,
		func(name string, err error) { rep.Errors = append(rep.Errors, name+": "+err.Error()) })
	return writeScheduling(o.out, rep)
}

// openLoopRuns runs every contender with mixKind at every load (a
// fraction of capacity) and arrival process, in that order; a contender
// that cannot run is reported to fail and left out.
func openLoopRuns(cs []contender, mixKind string, capacity float64, loads []float64, arrivals []string, seed uint64,
	warm, d time.Duration, fail func(name string, err error)) []runStats {
	var runs []runStats
	for _, load := range loads {
		for _, process := range arrivals {
			for _, c := range cs {
				st, err := openLoop(c, openSpec{mix: mixKind, arrivals: process, seed: seed, rate: load * capacity, warm: warm, d: d})
				if err != nil {
					fmt.Fprintf(os.Stderr, "%s: %v\n", c.name, err)
					fail(c.name, err)
					continue
				}
				st.Load = load
				fmt.Fprintf(os.Stderr, "%-18s %s load %.0f%% (%.0f/s, %s): fast p50 %.1f p99 %.1f p99.9 %.1f ms, slow p99 %.1f ms, %.0f/s, %d errors; generator lag p99 %.2f ms %s\n",
					c.name, mixKind, load*100, st.Rate, arrivalLabel(process), st.FastP50, st.FastP99, st.FastP999, st.SlowP99,
					st.Throughput, st.Errors, st.LagP99, generatorNote(st))
				runs = append(runs, st)
			}
		}
	}
	return runs
}

// mix is the request sequence: the k-th request's path depends only on
// the seed and k, so every contender of a run gets the same sequence.
type mix struct {
	base string
	// kind is cpu (the 95/5 mix), single (every request 2 ms of CPU) or
	// io (every request waits); root is GET / (the cost scenario's floor).
	kind string
	seed uint64
	n    atomic.Uint64
}

// next is the path of the next request in the sequence, with base.
func (m *mix) next() string {
	return m.base + m.path(m.n.Add(1)-1)
}

// path is the k-th request's path. In the CPU mix each request is slow
// with probability slowShare, drawn independently per request from the
// seed: slow requests fall on odd and even positions alike, and come in
// runs as often as chance makes them.
func (m *mix) path(k uint64) string {
	switch m.kind {
	case "io":
		return ioPath
	case "autoscale":
		return autoscalePath
	case "single":
		return singlePath
	case "root":
		return "/"
	}
	if unit(m.seed, k) < slowShare {
		return slowPath
	}
	return fastPath
}

// unit is a number in [0, 1) that depends only on seed and k: SplitMix64's
// output function over seed + (k+1)·2⁶⁴/φ, a seeded random draw per
// request that needs no shared generator.
func unit(seed, k uint64) float64 {
	z := seed + (k+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11) / (1 << 53)
}

// measureCapacity drives c with concurrency clients back to back and
// returns the completed requests per second.
func measureCapacity(c contender, concurrency int, d time.Duration, scenario string, seed uint64) (float64, error) {
	r, err := launch(c)
	if err != nil {
		return 0, err
	}
	defer r.stop()
	m := &mix{base: r.url, kind: scenario, seed: seed}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: concurrency}}
	var done atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				resp, err := client.Get(m.next())
				if err != nil {
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 200 {
					done.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds(), nil
}

// pct is the p-th percentile in milliseconds (nearest rank).
func pct(xs []time.Duration, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	slices.Sort(xs)
	i := int(float64(len(xs))*p/100+0.5) - 1
	i = min(max(i, 0), len(xs)-1)
	return float64(xs[i].Microseconds()) / 1000
}

func cpuCount() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}

func writeScheduling(dir string, rep schedulingReport) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base := filepath.Join(dir, rep.Date+"-"+rep.Host+"-scheduling-"+rep.Scenario)
	js, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(base+".json", append(js, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Scheduling (%s mix), open loop\n\n", rep.Scenario)
	fmt.Fprintf(&b, "%s on %s (%d CPUs), %d workers of examples/node, %s; ", rep.Date, rep.Host, rep.CPUs, rep.Workers, rep.Mix)
	if rep.Scenario == "io" {
		fmt.Fprintf(&b, "offered %.0f requests/s; ", rep.CapacityPS)
	} else {
		fmt.Fprintf(&b, "capacity %.0f requests/s (%s, closed loop, 8 clients, measured in this run), loads are fractions of it; ",
			rep.CapacityPS, cmp.Or(rep.CapacityOf, "our pool at max_inflight 1"))
	}
	fmt.Fprintf(&b, "%s per run after a 2 s warm-up. \"fast\" are the 1 ms requests (all requests in the single and io mixes), \"slow\" the 50 ms ones; × cluster is a p99 over Node cluster's at the same load and arrivals. ", rep.Duration)
	fmt.Fprintf(&b, "%s\n\n", openLoopText(rep.Runs, rep.Seed))
	b.WriteString(openLoopTable(rep.Runs))
	for _, e := range rep.Errors {
		fmt.Fprintf(&b, "\n- failed: %s\n", e)
	}
	if err := os.WriteFile(base+".md", []byte(b.String()), 0o644); err != nil {
		return err
	}
	fmt.Print(b.String())
	fmt.Fprintf(os.Stderr, "wrote %s.json and %s.md\n", base, base)
	return nil
}
