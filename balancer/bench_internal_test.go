package balancer

import (
	"context"
	"runtime"
	"testing"
)

// BenchmarkQueueHandoff is the queue alone, without sockets or workers:
// eight goroutines take a slot on one endpoint, let the others run, and
// give the slot back. With no limit none waits ("direct"); with
// max_inflight 1 all but one wait ("queued"), so queued/direct is what a
// wait and its wake-up cost.
func BenchmarkQueueHandoff(b *testing.B) {
	for _, c := range []struct {
		name  string
		limit int
	}{{"direct", 0}, {"queued", 1}} {
		b.Run(c.name, func(b *testing.B) {
			bal, _ := New(Config{MaxInflight: c.limit})
			bal.Add(bal.NewEndpoint(1, 0, "tcp", "127.0.0.1:1"))
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				// A request's context, as the HTTP server gives it.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				p := newPick()
				for pb.Next() {
					e, _, err := bal.acquire(ctx, p)
					if err != nil {
						b.Error(err)
						return
					}
					runtime.Gosched() // the request's work: others run meanwhile
					bal.release(e)
				}
			})
		})
	}
}
