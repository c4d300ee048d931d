package main

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"
)

// The open-loop load generator. Every request has a due time, drawn
// before the run starts: Poisson arrivals (exponential gaps, the default:
// independent users) or evenly spaced ones (a constant gap, only where a
// run says so). A request goes out at its due time on a goroutine of its
// own, whatever the server is doing, and its latency is measured from
// the due time, not from when it went out: a generator that falls behind
// (its timer fires late, its goroutines wait for a CPU) cannot hide that
// wait from the figures, and each run reports how far behind it fell.

// The arrival processes.
const (
	poisson = "poisson"
	even    = "even"
)

// arrivalLabel is how reports name an arrival process; runs recorded
// before the harness had Poisson arrivals have none and were evenly
// spaced.
func arrivalLabel(process string) string {
	switch process {
	case poisson:
		return "Poisson"
	case even, "":
		return "evenly spaced"
	}
	return process
}

// arrivalTimes returns when each request of a run of length d is due, as
// offsets from its start, at rate requests per second on average. Poisson
// gaps are drawn from seed, so every contender of a run gets the same
// arrivals.
func arrivalTimes(process string, rate float64, d time.Duration, seed uint64) ([]time.Duration, error) {
	if rate <= 0 {
		return nil, fmt.Errorf("arrival rate %v/s: not positive", rate)
	}
	var out []time.Duration
	switch process {
	case poisson:
		rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
		t := 0.0
		for {
			t += rng.ExpFloat64() / rate
			at := time.Duration(t * float64(time.Second))
			if at >= d {
				return out, nil
			}
			out = append(out, at)
		}
	case even:
		for k := 0; ; k++ {
			at := time.Duration(float64(k) / rate * float64(time.Second))
			if at >= d {
				return out, nil
			}
			out = append(out, at)
		}
	}
	return nil, fmt.Errorf("arrival process %q: use %s or %s", process, poisson, even)
}

const (
	// lateAfter: a request handed to the HTTP client more than this
	// after its due time counts as sent late.
	lateAfter = time.Millisecond
	// behindShare: a run that sent more than this share of its requests
	// late says that its generator fell behind.
	behindShare = 0.01
	// openLoopTimeout bounds one request of an open-loop run.
	openLoopTimeout = 30 * time.Second
)

// outcome is what one request of an open-loop run got.
type outcome struct {
	path string
	ok   bool // a 2xx answer, read to its end
	// latency runs from the request's due time to the last byte of its
	// answer (or its error); lag from the due time to the moment it was
	// handed to the HTTP client.
	latency, lag time.Duration
}

// offer sends the k-th request of m at start+times[k], and returns what
// each got once every one is answered or has timed out. Connections are
// kept alive and opened as needed: a request never waits for another one
// to finish.
func offer(m *mix, times []time.Duration) []outcome {
	tr := &http.Transport{
		MaxIdleConnsPerHost: 10000,
		// Below Node's 5 s keepAliveTimeout: no request races a
		// connection the server is closing.
		IdleConnTimeout:    4 * time.Second,
		DisableCompression: true,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: openLoopTimeout}
	out := make([]outcome, len(times))
	var wg sync.WaitGroup
	start := time.Now()
	for k, off := range times {
		due := start.Add(off)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		wg.Go(func() {
			o := &out[k]
			o.path = m.path(uint64(k))
			o.lag = time.Since(due)
			resp, err := client.Get(m.base + o.path)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				o.ok = err == nil && resp.StatusCode/100 == 2
			}
			o.latency = time.Since(due)
		})
	}
	wg.Wait()
	return out
}

// openSpec is one open-loop run: mix at rate per second with the given
// arrivals for warm (not measured), then d (measured).
type openSpec struct {
	mix      string
	arrivals string
	seed     uint64
	rate     float64
	warm, d  time.Duration
}

// openLoop starts c, offers it spec's requests and measures what came
// back. Warm-up and measured requests are one schedule, without a pause
// between them.
func openLoop(c contender, spec openSpec) (runStats, error) {
	times, err := arrivalTimes(spec.arrivals, spec.rate, spec.warm+spec.d, spec.seed)
	if err != nil {
		return runStats{}, err
	}
	r, err := launch(c)
	if err != nil {
		return runStats{}, err
	}
	defer r.stop()
	outs := offer(&mix{base: r.url, kind: spec.mix, seed: spec.seed}, times)
	first, _ := slices.BinarySearch(times, spec.warm)
	st := summarize(outs[first:], spec.d)
	st.Contender, st.Mix, st.Rate, st.Arrivals, st.Seed = c.name, spec.mix, spec.rate, spec.arrivals, spec.seed
	return st, nil
}

// summarize computes a run's figures from the outcomes of its measured
// requests, which were due over d.
func summarize(outs []outcome, d time.Duration) runStats {
	var fast, slow, all, lags []time.Duration
	late := 0
	for _, o := range outs {
		lags = append(lags, o.lag)
		if o.lag > lateAfter {
			late++
		}
		if !o.ok {
			continue
		}
		all = append(all, o.latency)
		if o.path == slowPath {
			slow = append(slow, o.latency)
		} else {
			fast = append(fast, o.latency)
		}
	}
	st := runStats{Requests: len(outs), Errors: len(outs) - len(all), Throughput: float64(len(all)) / d.Seconds()}
	st.FastP50, st.FastP99, st.FastP999 = pct(fast, 50), pct(fast, 99), pct(fast, 99.9)
	st.SlowP50, st.SlowP99 = pct(slow, 50), pct(slow, 99)
	st.AllP50, st.AllP99, st.AllP999 = pct(all, 50), pct(all, 99), pct(all, 99.9)
	st.LagP99, st.LagMax = pct(lags, 99), pct(lags, 100)
	if len(outs) > 0 {
		st.LateShare = float64(late) / float64(len(outs))
	}
	st.Behind = st.LateShare > behindShare
	return st
}

// generatorNote says how far behind a run's generator fell, for the
// reports: empty when it kept up.
func generatorNote(st runStats) string {
	if !st.Behind {
		return ""
	}
	return fmt.Sprintf("generator behind: %.1f%% of requests sent more than %v late, at most %.1f ms",
		100*st.LateShare, lateAfter, st.LagMax)
}

// lagText is a run's generator lag for a table cell: p99 and max, and a
// warning when it fell behind.
func lagText(st runStats) string {
	if st.Arrivals == "" {
		return "not measured"
	}
	s := fmt.Sprintf("%.2f / %.1f", st.LagP99, st.LagMax)
	if st.Behind {
		s += " **behind**"
	}
	return s
}

// parseArrivals reads a comma-separated list of arrival processes.
func parseArrivals(s string) ([]string, error) {
	var out []string
	for _, p := range strings.Split(s, ",") {
		p = strings.TrimSpace(p)
		if p != poisson && p != even {
			return nil, fmt.Errorf("arrival process %q: use %s or %s", p, poisson, even)
		}
		out = append(out, p)
	}
	return out, nil
}
