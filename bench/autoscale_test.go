package main

import (
	"slices"
	"strings"
	"testing"
)

func TestSuiteScenarios(t *testing.T) {
	quick, err := suiteScenarios(true, "")
	if err != nil || slices.Contains(quick, "autoscale") || len(quick) != len(allScenarios)-1 {
		t.Fatalf("--quick runs %v, %v; want every scenario but autoscale", quick, err)
	}
	full, _ := suiteScenarios(false, "")
	if !slices.Contains(full, "autoscale") {
		t.Fatalf("a full run leaves out autoscale: %v", full)
	}
	named, err := suiteScenarios(true, "autoscale,proxy")
	if err != nil || !slices.Equal(named, []string{"autoscale", "proxy"}) {
		t.Fatalf("-scenarios autoscale,proxy with --quick: %v, %v", named, err)
	}
	if _, err := suiteScenarios(false, "autoscale,fast"); err == nil || !strings.Contains(err.Error(), `"fast"`) {
		t.Fatalf("unknown scenario: %v", err)
	}
	if p := (&mix{kind: "autoscale"}).path(3); p != autoscalePath {
		t.Fatalf("autoscale mix path %q", p)
	}
}

func TestLineChartIsWellFormedSVG(t *testing.T) {
	svg := lineChart(`Workers <over> "time" & load`, "seconds", "workers", []series{
		{Label: "pool-scale", Step: 0.5, Y: []float64{1, 1, 2, 3, 3, 2, 1}, Ours: true},
		{Label: "pool-count-8", Step: 0.5, Y: []float64{8, 8, 8, 8, 8, 8, 8}},
	}, []mark{{X: 0, Label: "20/s"}, {X: 2, Label: "300/s"}})
	paths := svgElements(t, svg)["path"]
	// Axes, 8 grid lines (0…8), 2 marks, 2 lines and 2 legend swatches.
	if paths != 1+9+2+2+2 {
		t.Errorf("%d paths:\n%s", paths, svg)
	}
	for _, want := range []string{"#1f77b4", "#d62728", "pool-scale", "300/s", "&lt;over&gt;", "H"} {
		if !strings.Contains(svg, want) {
			t.Errorf("lacks %q:\n%s", want, svg)
		}
	}
}

func TestRenderAutoscale(t *testing.T) {
	rep := &suiteReport{Date: "2026-11-27", Host: "vm", Quick: true, Workers: 2, Scenarios: []string{"autoscale"}, Autoscale: &autoscaling{
		StepS: 8, Steps: []float64{20, 300}, ScaleIdle: "4s", Seed: 5,
		Runs: []autoscaleRun{
			{Contender: "pool-scale-1-8", Throughput: 150, P50: 51, P99: 80, StepP99: []float64{55, 90}, StepErrors: []int{0, 0},
				SampleS: 0.5, Workers: []int{1, 1, 2, 3, 2}, MaxWorkers: 3, WorkerSeconds: 4.5},
			{Contender: "pool-count-1", Throughput: 120, P99: 900, Errors: 3, StepP99: []float64{52, 1200}, StepErrors: []int{0, 3},
				SampleS: 0.5, Workers: []int{1, 1, 1, 1, 1}, MaxWorkers: 1, WorkerSeconds: 2.5},
		},
	}}
	md, charts := renderReport(rep, "2026-11-27-vm")
	for _, want := range []string{
		"Autoscaling: an I/O-bound app", "20/s, 300/s for 8s each", "`scale_idle 4s`",
		"| contender | 2xx/s | p50 ms | p99 ms | errors | max workers | worker-seconds | p99 at 20/s | p99 at 300/s |",
		"| pool-scale-1-8 | 150 | 51.0 | 80.0 | 0 | 3 | 4 | 55.0 (0 errors) | 90.0 (0 errors) |",
		"| pool-count-1 | 120 | 0.0 | 900.0 | 3 | 1 | 2 | 52.0 (0 errors) | 1200.0 (3 errors) |",
		"![workers over time](2026-11-27-vm-autoscale-workers.svg)",
		"Reproduce: `cd bench && go run . suite --quick --scenarios autoscale --workers 2`",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
	for _, name := range []string{"autoscale-workers", "autoscale-p99"} {
		if _, ok := charts["2026-11-27-vm-"+name+".svg"]; !ok {
			t.Errorf("no %s chart", name)
		}
	}
}
