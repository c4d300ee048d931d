package main

import (
	"math"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestPoissonArrivals(t *testing.T) {
	const rate = 500.0
	times, err := arrivalTimes(poisson, rate, 40*time.Second, 7)
	if err != nil {
		t.Fatal(err)
	}
	// 20,000 expected, standard deviation √20000 ≈ 141.
	if n := len(times); n < 19400 || n > 20600 {
		t.Fatalf("%d arrivals in 40 s at 500/s", n)
	}
	var sum, sumSq float64
	prev := time.Duration(0)
	for _, at := range times {
		gap := (at - prev).Seconds()
		if gap < 0 {
			t.Fatal("arrival times go back")
		}
		sum += gap
		sumSq += gap * gap
		prev = at
	}
	n := float64(len(times))
	mean := sum / n
	cv := math.Sqrt(sumSq/n-mean*mean) / mean
	// Exponential gaps: mean 1/rate, coefficient of variation 1.
	if math.Abs(mean*rate-1) > 0.03 || math.Abs(cv-1) > 0.05 {
		t.Errorf("mean gap %.3f ms (want 2), coefficient of variation %.3f (want 1)", mean*1000, cv)
	}
	again, _ := arrivalTimes(poisson, rate, 40*time.Second, 7)
	other, _ := arrivalTimes(poisson, rate, 40*time.Second, 8)
	if len(again) != len(times) || again[100] != times[100] {
		t.Error("one seed gave two schedules")
	}
	if len(other) == len(times) && other[100] == times[100] {
		t.Error("two seeds gave one schedule")
	}
}

func TestEvenArrivals(t *testing.T) {
	times, err := arrivalTimes(even, 400, time.Second, 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(times) != 400 || times[0] != 0 || times[1] != 2500*time.Microsecond || times[399] != 997500*time.Microsecond {
		t.Errorf("%d arrivals, first %v, second %v, last %v", len(times), times[0], times[1], times[len(times)-1])
	}
	if _, err := arrivalTimes("bursty", 400, time.Second, 1); err == nil {
		t.Error("unknown process accepted")
	}
	if _, err := arrivalTimes(poisson, 0, time.Second, 1); err == nil {
		t.Error("rate 0 accepted")
	}
	if _, err := parseArrivals("poisson, even"); err != nil {
		t.Error(err)
	}
	if _, err := parseArrivals("poisson,constant"); err == nil {
		t.Error("-arrivals constant accepted")
	}
}

// Against a real server that answers one request at a time in 5 ms
// (200/s), 400/s offered for a quarter second: requests do not wait for
// each other's answers (several are at the server at once), and the
// queue that builds up is in the latencies, which run from each
// request's due time. A closed-loop client on one connection would have
// measured 5 ms for every request.
func TestOfferIsOpenLoop(t *testing.T) {
	var mu sync.Mutex
	var inside, most atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inside.Add(1)
		for {
			m := most.Load()
			if n <= m || most.CompareAndSwap(m, n) {
				break
			}
		}
		mu.Lock()
		time.Sleep(5 * time.Millisecond)
		mu.Unlock()
		inside.Add(-1)
	}))
	defer srv.Close()
	times, _ := arrivalTimes(even, 400, 250*time.Millisecond, 1)
	outs := offer(&mix{base: srv.URL, kind: "cpu", seed: 1}, times)
	st := summarize(outs, 250*time.Millisecond)
	if st.Requests != 100 || st.Errors != 0 {
		t.Fatalf("%d requests, %d errors", st.Requests, st.Errors)
	}
	if most.Load() < 5 {
		t.Errorf("at most %d requests at the server at once: the generator waited for answers", most.Load())
	}
	// The last request is due at 247.5 ms and answered at about 500.
	if st.AllP999 < 150 {
		t.Errorf("slowest request %.1f ms from its due time, want the queue's ~250 ms", st.AllP999)
	}
	for _, o := range outs {
		if o.latency < o.lag {
			t.Fatalf("latency %v shorter than the generator's lag %v: not measured from the due time", o.latency, o.lag)
		}
	}
}

func TestSummarize(t *testing.T) {
	var outs []outcome
	for i := range 1000 {
		o := outcome{path: fastPath, ok: true, latency: time.Duration(i%100+1) * time.Millisecond, lag: 100 * time.Microsecond}
		if i%20 == 0 {
			o.path, o.latency = slowPath, 60*time.Millisecond
		}
		if i%100 == 1 {
			o.ok = false
		}
		if i < 30 {
			o.lag = 5 * time.Millisecond
		}
		outs = append(outs, o)
	}
	st := summarize(outs, 2*time.Second)
	if st.Requests != 1000 || st.Errors != 10 || st.Throughput != 495 {
		t.Errorf("requests %d errors %d throughput %v", st.Requests, st.Errors, st.Throughput)
	}
	if st.SlowP50 != 60 || st.SlowP99 != 60 || st.FastP99 > 100 || st.FastP50 < 40 {
		t.Errorf("slow p50 %v p99 %v, fast p50 %v p99 %v", st.SlowP50, st.SlowP99, st.FastP50, st.FastP99)
	}
	if st.LateShare != 0.03 || !st.Behind || st.LagMax != 5 || generatorNote(st) == "" {
		t.Errorf("late %v behind %v max lag %v ms: %q", st.LateShare, st.Behind, st.LagMax, generatorNote(st))
	}
	outs = outs[30:]
	if st := summarize(outs, time.Second); st.Behind || generatorNote(st) != "" {
		t.Errorf("a generator that kept up said it was behind: %+v", st)
	}
}
