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
