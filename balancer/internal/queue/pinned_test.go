package queue

import (
	"context"
	"sync"
	"testing"
	"time"
)

// pinnedSlots are two workers of one slot each, for requests that may
// use only one of them (a sticky session's) or either.
type pinnedSlots struct {
	mu   sync.Mutex
	busy [2]bool
}

func (s *pinnedSlots) anyFree() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return !s.busy[0] || !s.busy[1]
}

// pinnedReq takes worker only (-1: either).
type pinnedReq struct {
	s      *pinnedSlots
	worker int
	took   int
	w      Waiter
}

func (r *pinnedReq) Take() bool {
	r.s.mu.Lock()
	defer r.s.mu.Unlock()
	for i := range r.s.busy {
		if (r.worker < 0 || r.worker == i) && !r.s.busy[i] {
			r.s.busy[i], r.took = true, i
			return true
		}
	}
	return false
}
func (r *pinnedReq) Hopeless() bool { return false }
func (r *pinnedReq) Untake() {
	r.s.mu.Lock()
	r.s.busy[r.took] = false
	r.s.mu.Unlock()
}

// TestWaitersPinnedElsewhereDoNotHoldUpAFreeWorker: a request that can
// use a free worker takes it at once, though the queue holds a request
// waiting for another, busy worker, and is full.
func TestWaitersPinnedElsewhereDoNotHoldUpAFreeWorker(t *testing.T) {
	s := &pinnedSlots{busy: [2]bool{true, false}} // worker 0 busy
	q := New(Config{Size: 1, Timeout: 5 * time.Second, Average: nopClass{}, Servers: func() int { return 2 }, AnyFree: s.anyFree})
	pinned := &pinnedReq{s: s, worker: 0}
	pinned.w.Init(pinned)
	done := make(chan error, 1)
	go func() {
		_, _, err := q.Acquire(context.Background(), &pinned.w)
		done <- err
	}()
	for q.Len() != 1 {
		time.Sleep(time.Millisecond) // polls the queue's own count
	}
	free := &pinnedReq{s: s, worker: -1}
	free.w.Init(free)
	if _, _, err := q.Acquire(context.Background(), &free.w); err != nil || free.took != 1 {
		t.Fatalf("a request for any worker, beside one waiting for busy worker 0: %v, took %d", err, free.took)
	}
	if q.Len() != 1 {
		t.Fatal("the pinned request left the queue")
	}
	// Worker 0 frees up: the pinned request gets it.
	s.mu.Lock()
	s.busy[0] = false
	s.mu.Unlock()
	q.Dispatch()
	if err := <-done; err != nil || pinned.took != 0 {
		t.Fatalf("the pinned request: %v, took %d", err, pinned.took)
	}
}

// nopClass is a class of unknown cost.
type nopClass struct{}

func (nopClass) Cost() (float64, bool) { return 0, false }
