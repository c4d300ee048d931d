package queue

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
)

// slots is a fake endpoint of limit slots (0: unlimited), taken by
// compare-and-swap as the balancer's endpoints take theirs.
type slots struct {
	limit, n atomic.Int64
	q        *Queue
}

func (s *slots) take() bool {
	for {
		n := s.n.Load()
		if l := s.limit.Load(); l != 0 && n >= l {
			return false
		}
		if s.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

func (s *slots) free() bool {
	l := s.limit.Load()
	return l == 0 || s.n.Load() < l
}

func (s *slots) release() {
	s.n.Add(-1)
	s.q.Dispatch()
}

// slotReq is a request that takes a slot of s.
type slotReq struct{ s *slots }

func (r slotReq) Take() bool     { return r.s.take() }
func (r slotReq) Hopeless() bool { return false }
func (r slotReq) Untake()        { r.s.release() }

func newSlots(limit int) *slots {
	s := &slots{}
	s.limit.Store(int64(limit))
	s.q = New(Config{
		Size: DefaultQueueSize, Timeout: DefaultQueueTimeout, ByCost: true, Average: noCost{},
		Servers: func() int { return 1 }, AnyFree: s.free,
	})
	return s
}

type noCost struct{}

func (noCost) Cost() (float64, bool) { return 0, false }

// BenchmarkQueueHandoff is the queue alone, without sockets or workers:
// eight goroutines take a slot of one fake endpoint, let the others run,
// and give the slot back. With no limit none waits ("direct"); with a
// limit of 1 all but one wait ("queued"), so queued/direct is what a
// wait and its wake-up cost.
func BenchmarkQueueHandoff(b *testing.B) {
	for _, c := range []struct {
		name  string
		limit int
	}{{"direct", 0}, {"queued", 1}} {
		b.Run(c.name, func(b *testing.B) {
			s := newSlots(c.limit)
			b.ReportAllocs()
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				// A request's context, as the HTTP server gives it.
				ctx, cancel := context.WithCancel(context.Background())
				defer cancel()
				var w Waiter
				w.Init(slotReq{s})
				for pb.Next() {
					if _, _, err := s.q.Acquire(ctx, &w); err != nil {
						b.Error(err)
						return
					}
					runtime.Gosched() // the request's work: others run meanwhile
					s.q.Done(&w)
					s.release()
				}
			})
		})
	}
}

// The queue allocates nothing to hand a slot to a waiting request.
func TestHandoffAllocatesNothing(t *testing.T) {
	s := newSlots(1)
	var holder, waiter Waiter
	holder.Init(slotReq{s})
	waiter.Init(slotReq{s})
	ctx := context.Background()
	release := make(chan struct{})
	go func() {
		for range release {
			for s.q.Len() == 0 {
				runtime.Gosched()
			}
			s.q.Done(&holder)
			s.release()
		}
	}()
	defer close(release)
	n := testing.AllocsPerRun(100, func() {
		if _, _, err := s.q.Acquire(ctx, &holder); err != nil {
			t.Fatal(err)
		}
		release <- struct{}{}
		if _, handoff, err := s.q.Acquire(ctx, &waiter); err != nil || handoff < 0 {
			t.Fatal(handoff, err)
		}
		s.q.Done(&waiter)
		s.release()
	})
	if n != 0 {
		t.Fatalf("%v allocations per hand-off, want 0", n)
	}
}

// A waiter whose client leaves gives back a slot it was handed at that
// moment, and the queue does not keep it.
func TestCancelledWaiterGivesItsSlotBack(t *testing.T) {
	s := newSlots(1)
	var holder, waiter Waiter
	holder.Init(slotReq{s})
	waiter.Init(slotReq{s})
	if _, _, err := s.q.Acquire(context.Background(), &holder); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, _, err := s.q.Acquire(ctx, &waiter); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a waiter whose context ended: %v", err)
	}
	if s.q.Len() != 0 || s.n.Load() != 1 {
		t.Fatalf("after the waiter left: %d waiting, %d slots taken; want 0 and the holder's 1", s.q.Len(), s.n.Load())
	}
}
