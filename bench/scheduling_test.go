package main

import (
	"strings"
	"testing"
	"time"
)

func TestMixIsFivePercentSlow(t *testing.T) {
	m := &mix{base: "http://x"}
	slow := 0
	for range 20000 {
		if strings.HasSuffix(m.next(), slowPath) {
			slow++
		}
	}
	if slow != 1000 {
		t.Fatalf("%d of 20000 requests slow, want 1000 (5%%)", slow)
	}
}

func TestPercentile(t *testing.T) {
	var xs []time.Duration
	for i := 1; i <= 1000; i++ {
		xs = append(xs, time.Duration(i)*time.Millisecond)
	}
	for p, want := range map[float64]float64{50: 500, 99: 990, 99.9: 999, 100: 1000} {
		if got := pct(xs, p); got != want {
			t.Errorf("p%v = %v ms, want %v", p, got, want)
		}
	}
	if pct(nil, 99) != 0 {
		t.Error("percentile of nothing is not 0")
	}
}

func TestMedian(t *testing.T) {
	for _, c := range []struct {
		xs   []float64
		want float64
	}{{nil, 0}, {[]float64{3}, 3}, {[]float64{5, 1, 3}, 3}, {[]float64{4, 1, 3, 2}, 2.5}} {
		if got := median(c.xs); got != c.want {
			t.Errorf("median(%v) = %v, want %v", c.xs, got, c.want)
		}
	}
}
