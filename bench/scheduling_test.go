package main

import (
	"strings"
	"testing"
	"time"
)

// About 5% of the CPU mix is slow, whatever the seed: 20,000 draws give
// 1,000 ± 31 (one standard deviation); the bounds are four of them.
func TestMixIsFivePercentSlow(t *testing.T) {
	for _, seed := range []uint64{1, 2, 42, 1 << 40} {
		m := &mix{base: "http://x", seed: seed}
		slow := 0
		for range 20000 {
			if strings.HasSuffix(m.next(), slowPath) {
				slow++
			}
		}
		if slow < 877 || slow > 1123 {
			t.Errorf("seed %d: %d of 20000 requests slow, want about 1000 (5%%)", seed, slow)
		}
	}
}

// Round robin over N workers sends request k to worker k mod N: the slow
// requests must land on every worker about equally, so that a policy that
// ignores load is not measured against a sequence that piles every slow
// request on one worker (the old "fixed scramble" put all of them on even
// positions). With ~1,000 slow requests, a worker of 2 gets 500 ± 16,
// a worker of 4 250 ± 14.
func TestSlowRequestsSpreadOverRoundRobinWorkers(t *testing.T) {
	for _, seed := range []uint64{1, 2, 42, 1 << 40} {
		for _, workers := range []int{2, 4} {
			m := &mix{seed: seed}
			per := make([]int, workers)
			total := 0
			for k := range uint64(20000) {
				if m.path(k) == slowPath {
					per[k%uint64(workers)]++
					total++
				}
			}
			for w, n := range per {
				share := float64(n) / float64(total)
				if want := 1 / float64(workers); share < want*0.8 || share > want*1.2 {
					t.Errorf("seed %d, %d workers: worker %d gets %d of %d slow requests (%.0f%%), want about %.0f%%",
						seed, workers, w, n, total, 100*share, 100*want)
				}
			}
		}
	}
}

// The sequence depends on the seed only: two runs with one seed send the
// same requests, another seed sends others.
func TestMixIsSeeded(t *testing.T) {
	a, b, c := &mix{seed: 7}, &mix{seed: 7}, &mix{seed: 8}
	same, differ := true, false
	for range 2000 {
		pa, pb, pc := a.next(), b.next(), c.next()
		same = same && pa == pb
		differ = differ || pa != pc
	}
	if !same || !differ {
		t.Errorf("same seed gives the same sequence: %v; another seed another: %v", same, differ)
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
