package main

import (
	"fmt"
	"os"
	"strings"
	"time"
)

// The autoscale scenario (issue 20): an I/O-bound app, every request
// waiting 50 ms on a timer (the example app's GET /sleep?ms=50), offered
// open-loop load that steps up and down, served by a pool that scales
// between 1 and 8 workers and by fixed pools of 1 and of 8.

// autoscalePath is the I/O-bound request.
const autoscalePath = "/sleep?ms=50"

// autoscaleSteps are the offered loads, requests per second, one step
// after another.
var autoscaleSteps = []float64{20, 100, 300, 100, 20}

// autoscaleSample is how often the workers are counted.
const autoscaleSample = 500 * time.Millisecond

type autoscaling struct {
	// StepS is each step's length; Steps the offered load of each.
	StepS     float64        `json:"step_s"`
	Steps     []float64      `json:"steps_per_s"`
	ScaleIdle string         `json:"scale_idle"`
	Seed      uint64         `json:"seed"`
	Runs      []autoscaleRun `json:"runs"`
}

type autoscaleRun struct {
	Contender  string  `json:"contender"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	Throughput float64 `json:"throughput_per_s"`
	P50        float64 `json:"p50_ms"`
	P99        float64 `json:"p99_ms"`
	// StepP99 and StepErrors are per step of the offered load.
	StepP99    []float64 `json:"step_p99_ms"`
	StepErrors []int     `json:"step_errors"`
	// Workers counts the app's processes every SampleS from the start
	// of the load; WorkerSeconds is their sum over time, what the
	// contender held.
	SampleS       float64 `json:"sample_s"`
	Workers       []int   `json:"workers"`
	MaxWorkers    int     `json:"max_workers"`
	WorkerSeconds float64 `json:"worker_seconds"`
	LagP99        float64 `json:"generator_lag_p99_ms"`
	Behind        bool    `json:"generator_behind"`
}

// autoscaleContenders are our Caddy scaling from 1 to 8 workers, and
// fixed at 1 and at 8, all with max_inflight auto (the default).
func autoscaleContenders(caddy string, l lengths, dir string) []contender {
	return []contender{
		workerPool("pool-scale-1-8", caddy, 1, "max_count 8\n\t\tscale_idle "+l.scaleIdle.String(), dir),
		workerPool("pool-count-1", caddy, 1, "", dir),
		workerPool("pool-count-8", caddy, 8, "", dir),
	}
}

// autoscale offers each contender the same stepped Poisson arrivals.
func autoscale(cs []contender, l lengths, seed uint64, fail func(string, error)) *autoscaling {
	res := &autoscaling{StepS: l.step.Seconds(), Steps: autoscaleSteps, ScaleIdle: l.scaleIdle.String(), Seed: seed}
	var times []time.Duration
	var step []int // the step of each arrival
	for i, rate := range autoscaleSteps {
		at, err := arrivalTimes(poisson, rate, l.step, seed+uint64(i))
		if err != nil {
			fail("arrivals", err)
			return nil
		}
		for _, t := range at {
			times = append(times, time.Duration(i)*l.step+t)
			step = append(step, i)
		}
	}
	for _, c := range cs {
		run, err := autoscaleRunOf(c, times, step, l.step)
		if err != nil {
			fail(c.name, err)
			continue
		}
		fmt.Fprintf(os.Stderr, "autoscale %-15s %.0f/s  p50 %.1f p99 %.1f ms  errors %d  workers max %d, %.0f worker-seconds  step p99 %v\n",
			c.name, run.Throughput, run.P50, run.P99, run.Errors, run.MaxWorkers, run.WorkerSeconds, run.StepP99)
		res.Runs = append(res.Runs, run)
	}
	return res
}

func autoscaleRunOf(c contender, times []time.Duration, step []int, stepLen time.Duration) (autoscaleRun, error) {
	r, err := launch(c)
	if err != nil {
		return autoscaleRun{}, err
	}
	defer r.stop()
	run := autoscaleRun{Contender: c.name, SampleS: autoscaleSample.Seconds()}
	stop := make(chan struct{})
	counted := make(chan []int)
	go func() {
		var n []int
		t := time.NewTicker(autoscaleSample)
		defer t.Stop()
		for {
			_, workers := r.split()
			n = append(n, len(workers))
			select {
			case <-stop:
				counted <- n
				return
			case <-t.C:
			}
		}
	}()
	outs := offer(&mix{base: r.url, kind: "autoscale"}, times)
	close(stop)
	run.Workers = <-counted

	st := summarize(outs, time.Duration(len(autoscaleSteps))*stepLen)
	run.Requests, run.Errors, run.Throughput = st.Requests, st.Errors, st.Throughput
	run.P50, run.P99, run.LagP99, run.Behind = st.AllP50, st.AllP99, st.LagP99, st.Behind
	perStep := make([][]time.Duration, len(autoscaleSteps))
	run.StepErrors = make([]int, len(autoscaleSteps))
	for k, o := range outs {
		if o.ok {
			perStep[step[k]] = append(perStep[step[k]], o.latency)
		} else {
			run.StepErrors[step[k]]++
		}
	}
	for _, ls := range perStep {
		run.StepP99 = append(run.StepP99, pct(ls, 99))
	}
	for _, n := range run.Workers {
		run.MaxWorkers = max(run.MaxWorkers, n)
		run.WorkerSeconds += float64(n) * run.SampleS
	}
	return run, nil
}

// renderAutoscale writes the autoscale section and its charts.
func renderAutoscale(b *strings.Builder, a *autoscaling, n int, base string, charts map[string]string) {
	steps := make([]string, len(a.Steps))
	for i, r := range a.Steps {
		steps[i] = fmt.Sprintf("%g/s", r)
	}
	fmt.Fprintf(b, "## %d. Autoscaling: an I/O-bound app, load stepping up and down\n\n", n)
	fmt.Fprintf(b, "Every request `GET %s` (the worker waits 50 ms on a timer, no CPU). Open loop, Poisson arrivals (seed %d), "+
		"%s for %gs each. `pool-scale-1-8`: `count 1`, `max_count 8`, `scale_idle %s`; `pool-count-1` and `pool-count-8`: fixed. "+
		"All at `max_inflight auto`, so an I/O-bound worker's limit also grows with the load. Workers are the app's processes, "+
		"counted every %gs; worker-seconds is their sum over the run, what each contender held. Errors are non-2xx answers "+
		"and transport errors; latency runs from each request's due time.\n\n",
		autoscalePath, a.Seed, strings.Join(steps, ", "), a.StepS, a.ScaleIdle, autoscaleSample.Seconds())
	b.WriteString("| contender | 2xx/s | p50 ms | p99 ms | errors | max workers | worker-seconds |")
	sep := "|---|---|---|---|---|---|---|"
	for _, s := range steps {
		fmt.Fprintf(b, " p99 at %s |", s)
		sep += "---|"
	}
	b.WriteString("\n" + sep + "\n")
	var lines []series
	var p99 []bar
	for _, r := range a.Runs {
		fmt.Fprintf(b, "| %s | %.0f | %.1f | %.1f | %d | %d | %.0f |", r.Contender, r.Throughput, r.P50, r.P99, r.Errors, r.MaxWorkers, r.WorkerSeconds)
		for i, p := range r.StepP99 {
			fmt.Fprintf(b, " %.1f (%d errors) |", p, r.StepErrors[i])
		}
		b.WriteString("\n")
		ys := make([]float64, len(r.Workers))
		for i, w := range r.Workers {
			ys[i] = float64(w)
		}
		lines = append(lines, series{Label: r.Contender, Step: r.SampleS, Y: ys, Ours: r.Contender == "pool-scale-1-8"})
		p99 = append(p99, bar{Label: r.Contender, Value: r.P99, Ours: r.Contender == "pool-scale-1-8"})
	}
	var marks []mark
	for i, s := range steps {
		marks = append(marks, mark{X: float64(i) * a.StepS, Label: s})
	}
	charts[base+"-autoscale-workers.svg"] = lineChart("Workers over time, offered load stepping up and down", "seconds", "workers", lines, marks)
	charts[base+"-autoscale-p99.svg"] = barChart("p99 latency over the whole run (lower is better)", "ms", p99)
	fmt.Fprintf(b, "\n![workers over time](%s-autoscale-workers.svg)\n![p99](%s-autoscale-p99.svg)\n\n", base, base)
}
