package balancer

import (
	"net/http"
	"testing"
	"time"
)

func TestGRPCTimeout(t *testing.T) {
	for _, c := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1S", time.Second, true}, {"100m", 100 * time.Millisecond, true}, {"5M", 5 * time.Minute, true},
		{"2H", 2 * time.Hour, true}, {"250u", 250 * time.Microsecond, true}, {"99999999n", 99999999, true},
		{"", 0, false}, {"S", 0, false}, {"1s", 0, false}, {"123456789S", 0, false}, {"-1S", 0, false},
	} {
		if got, ok := grpcTimeout(c.in); got != c.want || ok != c.ok {
			t.Errorf("grpcTimeout(%q) = %v, %v; want %v, %v", c.in, got, ok, c.want, c.ok)
		}
	}
	for _, d := range []time.Duration{time.Nanosecond, 1500 * time.Microsecond, 42 * time.Second, 3 * time.Hour} {
		s := formatGRPCTimeout(d)
		got, ok := grpcTimeout(s)
		if !ok || got > d || d-got > d/1e7+time.Nanosecond {
			t.Errorf("formatGRPCTimeout(%v) = %q, which reads back as %v", d, s, got)
		}
	}
}

func TestWorkerGRPCFailure(t *testing.T) {
	for _, c := range []struct {
		h    http.Header
		want bool
	}{
		{http.Header{"Grpc-Status": {"14"}}, true},
		{http.Header{"Trailer:Grpc-Status": {"13"}}, true},
		{http.Header{"Grpc-Status": {"0"}}, false},
		{http.Header{"Grpc-Status": {"5"}}, false},
		{http.Header{}, false},
	} {
		if got := workerGRPCFailure(c.h); got != c.want {
			t.Errorf("%v: %v, want %v", c.h, got, c.want)
		}
	}
}
