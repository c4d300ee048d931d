package balancer

import (
	"context"
	"net/http"
	"net/http/httptest"
	"runtime"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// What a waiting request costs the pool in memory, beyond what the HTTP
// server holds for it anyway (its goroutine, request and response
// writer, made before the baseline here): its pooled state and the
// stack its wait needs. docs/configuration.md's queue_size quotes the figure; the
// bound only catches a regression by a multiple.
func TestWaitingRequestMemory(t *testing.T) {
	const n = 5000
	b, _ := New(Config{MaxInflight: 1})
	e := b.NewEndpoint(1, 0, "tcp", "127.0.0.1:1") // never dialled: its one slot is held
	b.Add(e)
	e.tryAcquire()
	ctx, cancel := context.WithCancel(context.Background())
	start := make(chan struct{})
	done := make(chan struct{}, n)
	for i := range n {
		r := httptest.NewRequest(http.MethodGet, "/orders/"+string(rune('a'+i%26)), nil).WithContext(ctx)
		w := httptest.NewRecorder()
		go func() {
			<-start
			_ = b.Serve(w, r)
			done <- struct{}{}
		}()
	}
	before := heapAndStacks()
	close(start)
	testworker.Eventually(t, 30*time.Second, "every request waiting", func() bool { return b.QueueLen() == n })
	after := heapAndStacks()
	per := float64(after-before) / n
	t.Logf("%.0f bytes per waiting request (%d waiting)", per, n)
	cancel()
	for range n {
		<-done
	}
	if per > 8<<10 {
		t.Fatalf("%.0f bytes per waiting request", per)
	}
}

func heapAndStacks() int64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return int64(m.HeapAlloc) + int64(m.StackInuse)
}
