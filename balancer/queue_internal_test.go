package balancer

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/queue"
)

func newPick(b *Balancer, tried ...*Endpoint) *Pick {
	p := &Pick{Request: httptest.NewRequest("GET", "/", nil), tried: tried, b: b}
	p.w.Init((*request)(p))
	return p
}

// acquire is what Serve does for a slot.
func (b *Balancer) acquire(ctx context.Context, p *Pick) (*Endpoint, error) {
	_, _, err := b.queue.Acquire(ctx, &p.w)
	if err != nil {
		return nil, err
	}
	return p.e, nil
}

// release gives back a slot acquire took, as a request's end does.
func (b *Balancer) release(e *Endpoint) {
	e.unslot(slotEpoch(e.slots.Load()))
	b.queue.Dispatch()
}

type got struct {
	e   *Endpoint
	err error
}

func acquireAsync(b *Balancer, p *Pick) <-chan got {
	ch := make(chan got, 1)
	go func() {
		e, err := b.acquire(context.Background(), p)
		ch <- got{e, err}
	}()
	return ch
}

func awaitQueue(t *testing.T, b *Balancer, n int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for b.QueueLen() != n {
		if time.Now().After(deadline) {
			t.Fatalf("queue length %d, want %d", b.QueueLen(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// A waiter at the head that cannot use the endpoint that frees up (it
// tried it already) must not hold up the waiter behind it.
func TestQueueHeadDoesNotBlockOthers(t *testing.T) {
	b, err := New(Config{MaxInflight: 1, Policy: PolicyConfig{Name: First}, QueueTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	a, c := b.NewEndpoint(1, 0, "tcp", "127.0.0.1:1"), b.NewEndpoint(2, 0, "tcp", "127.0.0.1:1")
	b.Add(a)
	b.Add(c)
	a.tryAcquire()
	c.tryAcquire()

	head := acquireAsync(b, newPick(b, a)) // a retry that already failed on a
	awaitQueue(t, b, 1)
	behind := acquireAsync(b, newPick(b))
	awaitQueue(t, b, 2)

	b.release(a)
	select {
	case g := <-behind:
		if g.e != a || g.err != nil {
			t.Fatalf("waiter behind got %v, %v", g.e, g.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiter behind the head did not get the free endpoint")
	}
	b.release(c)
	if g := <-head; g.e != c || g.err != nil {
		t.Fatalf("head got %v, %v", g.e, g.err)
	}
}

// When the only endpoint a waiter could still use leaves, it gets its
// answer at once.
func TestRemoveAnswersHopelessWaiters(t *testing.T) {
	b, _ := New(Config{MaxInflight: 1, QueueTimeout: 10 * time.Second})
	a, c := b.NewEndpoint(1, 0, "tcp", "127.0.0.1:1"), b.NewEndpoint(2, 0, "tcp", "127.0.0.1:1")
	b.Add(a)
	b.Add(c)
	a.tryAcquire()
	c.tryAcquire()
	w := acquireAsync(b, newPick(b, a)) // can only still use c
	awaitQueue(t, b, 1)
	b.Remove(c)
	select {
	case g := <-w:
		if g.err != queue.ErrNoEndpoint {
			t.Fatalf("got %v, %v; want errNoEndpoint", g.e, g.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("waiter with no endpoint left still waits")
	}
}
