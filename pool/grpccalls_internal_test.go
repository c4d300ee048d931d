package pool

import (
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

func TestGRPCCallsByMethodAndStatus(t *testing.T) {
	var g grpcCalls
	call := func(path string, code int, byWorker bool, d time.Duration) {
		g.observe(httptest.NewRequest("POST", path, nil), &balancer.Result{GRPC: true, GRPCStatus: code, GRPCByWorker: byWorker, Duration: d})
	}
	call("/pkg.Demo/Work", grpcstatus.OK, true, time.Millisecond)
	call("/pkg.Demo/Work", grpcstatus.OK, true, 3*time.Millisecond)
	call("/pkg.Demo/Work", grpcstatus.Unavailable, false, 100*time.Millisecond) // known: counts by name
	call("/pkg.Demo/Later", grpcstatus.Unavailable, false, time.Millisecond)    // the pool's answer to an unseen method
	call("/pkg.Demo/Nope", grpcstatus.Unimplemented, true, time.Millisecond)    // nobody serves it
	call("/not%20a/method", grpcstatus.OK, true, time.Millisecond)
	call("/pkg.Demo/Work", 99, true, time.Minute) // not a code: UNKNOWN, past every bucket
	g.observe(httptest.NewRequest("GET", "/plain", nil), &balancer.Result{Status: 200})

	type row struct {
		method, status string
		calls          uint64
	}
	var got []row
	for _, c := range g.snapshot() {
		got = append(got, row{c.Method, c.Status, c.Calls})
	}
	want := []row{
		{"/pkg.Demo/Work", "OK", 2}, {"/pkg.Demo/Work", "UNKNOWN", 1}, {"/pkg.Demo/Work", "UNAVAILABLE", 1},
		{"other", "OK", 1}, {"other", "UNIMPLEMENTED", 1}, {"other", "UNAVAILABLE", 1},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("counted\n%v\nwant\n%v", got, want)
	}
	ok := g.snapshot()[0]
	if ok.MeanMS != 2 || ok.Seconds != 0.004 || ok.Buckets[1] != 1 || ok.Buckets[3] != 1 {
		t.Fatalf("durations of two OK calls of 1 and 3 ms: mean %v ms, total %v s, buckets %v", ok.MeanMS, ok.Seconds, ok.Buckets)
	}
	if unknown := g.snapshot()[1]; unknown.Buckets[len(unknown.Buckets)-1] != 1 {
		t.Fatalf("a call of a minute is not in the last bucket: %v", unknown.Buckets)
	}
}

// The table keeps at most MaxGRPCMethods methods by name; the rest
// count as other.
func TestGRPCCallsAreBounded(t *testing.T) {
	var g grpcCalls
	for i := range MaxGRPCMethods + 10 {
		g.observe(httptest.NewRequest("POST", fmt.Sprintf("/pkg.S/M%d", i), nil), &balancer.Result{GRPC: true, GRPCByWorker: true})
	}
	rows := g.snapshot()
	if len(rows) != MaxGRPCMethods+1 {
		t.Fatalf("%d rows, want %d methods and other", len(rows), MaxGRPCMethods)
	}
	if last := rows[len(rows)-1]; last.Method != OtherGRPCMethod || last.Calls != 10 {
		t.Fatalf("last row %+v, want the 10 calls beyond the bound as other", last)
	}
}

func TestMethodShaped(t *testing.T) {
	for path, want := range map[string]bool{
		"/pkg.Demo/Work": true, "/S/M": true, "/Work": false, "/pkg/Demo/Work": false, "//M": false,
		"/S/": false, "/S/M N": false, "/S/\u00e9": false, "/other": false, "/" + string(make([]byte, 300)): false,
	} {
		if got := methodShaped(path); got != want {
			t.Errorf("%q: %v, want %v", path, got, want)
		}
	}
}
