package pool

import (
	"cmp"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

// MaxGRPCMethods bounds the gRPC methods whose calls the pool counts by
// name; the calls of methods beyond it count under OtherGRPCMethod. A
// method gets a name of its own only once a worker has answered it with
// a status other than UNIMPLEMENTED, so that calls to methods nobody
// serves (a scanner's, a misconfigured client's) never take a place.
const MaxGRPCMethods = 100

// OtherGRPCMethod is the method that the calls of methods without a name
// of their own count under.
const OtherGRPCMethod = "other"

// GRPCDurationBuckets are the upper bounds, in seconds, of the duration
// buckets of GRPCCalls: 0.5 ms to 16 s, doubling.
var GRPCDurationBuckets = func() []float64 {
	b := make([]float64, len(grpcBounds))
	for i, d := range grpcBounds {
		b[i] = d.Seconds()
	}
	return b
}()

var grpcBounds = func() [16]time.Duration {
	var b [16]time.Duration
	for i := range b {
		b[i] = 500 * time.Microsecond << i
	}
	return b
}()

// GRPCCalls is what the pool counted of the calls of one gRPC method
// that ended with one status.
type GRPCCalls struct {
	// Method is the full method, /package.Service/Method, or
	// OtherGRPCMethod.
	Method string `json:"method"`
	// Code is the status's number and Status its name (UNAVAILABLE).
	Code   int    `json:"code"`
	Status string `json:"status"`
	Calls  uint64 `json:"calls"`
	// MeanMS is the calls' mean duration in milliseconds, from their
	// arrival in the pool until their answer ended (waiting included).
	MeanMS float64 `json:"mean_ms"`
	// Seconds is the calls' total duration; Buckets counts them by
	// duration: Buckets[i] those within GRPCDurationBuckets[i] and above
	// the bound before, the last those above every bound.
	Seconds float64  `json:"-"`
	Buckets []uint64 `json:"-"`
}

// grpcCalls counts the pool's gRPC calls by method and status, without
// a lock on the path of a call whose method has been seen: the methods
// are a copy-on-write map, the counts atomic.
type grpcCalls struct {
	mu      sync.Mutex // serialises writers of methods
	methods atomic.Pointer[map[string]*methodCalls]
	other   methodCalls
}

type methodCalls [grpcstatus.NumCodes]codeCalls

type codeCalls struct {
	nanos   atomic.Int64
	buckets [len(grpcBounds) + 1]atomic.Uint64
}

// observe is the pool's part of the balancer's OnResult.
func (g *grpcCalls) observe(r *http.Request, res *balancer.Result) {
	if !res.GRPC {
		return
	}
	code := res.GRPCStatus
	if code < 0 || code >= grpcstatus.NumCodes {
		code = grpcstatus.Unknown
	}
	m := g.method(r.URL.Path, res.GRPCByWorker && code != grpcstatus.Unimplemented)
	c := &m[code]
	d := res.Duration
	c.nanos.Add(int64(d))
	i, _ := slices.BinarySearch(grpcBounds[:], d)
	c.buckets[i].Add(1)
}

// ObserveGRPC counts a gRPC call r that was answered with code before it
// reached the balancer (a refusal of request validation); the calls the
// balancer serves are counted as they end.
func (p *Pool) ObserveGRPC(r *http.Request, code int, d time.Duration) {
	p.grpc.observe(r, &balancer.Result{GRPC: true, GRPCStatus: code, Duration: d})
}

// method is the counts of the method named path; admit says whether a
// method not seen yet may take a place.
func (g *grpcCalls) method(path string, admit bool) *methodCalls {
	if ms := g.methods.Load(); ms != nil {
		if m, ok := (*ms)[path]; ok {
			return m
		}
	}
	if !admit || !methodShaped(path) {
		return &g.other
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	var next map[string]*methodCalls
	if ms := g.methods.Load(); ms != nil {
		if m, ok := (*ms)[path]; ok {
			return m
		}
		if len(*ms) >= MaxGRPCMethods {
			return &g.other
		}
		next = make(map[string]*methodCalls, len(*ms)+1)
		for k, v := range *ms {
			next[k] = v
		}
	} else {
		next = map[string]*methodCalls{}
	}
	m := new(methodCalls)
	next[path] = m
	g.methods.Store(&next)
	return m
}

// methodShaped reports whether path is /service/method, printable ASCII
// of a sensible length: what is shown and used as a label.
func methodShaped(path string) bool {
	if len(path) < 4 || len(path) > 256 || path[0] != '/' || path == "/"+OtherGRPCMethod {
		return false
	}
	slash := 0
	for i := 1; i < len(path); i++ {
		switch c := path[i]; {
		case c == '/':
			if slash != 0 {
				return false
			}
			slash = i
		case c <= ' ' || c > '~':
			return false
		}
	}
	return slash > 1 && slash < len(path)-1
}

// snapshot is every method and status with calls, by method (other
// last), then code.
func (g *grpcCalls) snapshot() []GRPCCalls {
	var out []GRPCCalls
	add := func(method string, m *methodCalls) {
		for code := range m {
			c := &m[code]
			buckets := make([]uint64, len(c.buckets))
			var n uint64
			for i := range c.buckets {
				buckets[i] = c.buckets[i].Load()
				n += buckets[i]
			}
			if n == 0 {
				continue
			}
			secs := time.Duration(c.nanos.Load()).Seconds()
			out = append(out, GRPCCalls{Method: method, Code: code, Status: grpcstatus.Name(code), Calls: n,
				MeanMS: secs * 1000 / float64(n), Seconds: secs, Buckets: buckets})
		}
	}
	if ms := g.methods.Load(); ms != nil {
		for method, m := range *ms {
			add(method, m)
		}
	}
	slices.SortFunc(out, func(a, b GRPCCalls) int {
		return cmp.Or(cmp.Compare(a.Method, b.Method), cmp.Compare(a.Code, b.Code))
	})
	add(OtherGRPCMethod, &g.other)
	return out
}
