package balancer

import (
	"context"
	"errors"
	"time"
)

// Queue defaults.
const (
	DefaultQueueSize    = 1024
	DefaultQueueTimeout = 10 * time.Second
)

// Why a request got no endpoint.
var (
	errNoEndpoint   = errors.New("no healthy worker is available")
	errQueueFull    = errors.New("all workers are busy and the wait queue is full")
	errQueueTimeout = errors.New("no worker became free within the queue timeout")
)

// waiter is a request waiting for an endpoint. It lives in the request's
// pooled state; the queue links waiters intrusively, so queueing does
// not allocate.
type waiter struct {
	prev, next *waiter
	queued     bool
	ch         chan *Endpoint // capacity 1: dispatch hands over an acquired endpoint
	pick       *Pick
}

// waitQueue is a FIFO of waiters, guarded by Balancer.qmu.
type waitQueue struct {
	head, tail *waiter
	n          int
}

func (q *waitQueue) push(w *waiter) {
	w.prev, w.next, w.queued = q.tail, nil, true
	if q.tail != nil {
		q.tail.next = w
	} else {
		q.head = w
	}
	q.tail = w
	q.n++
}

func (q *waitQueue) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		q.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		q.tail = w.prev
	}
	w.prev, w.next, w.queued = nil, nil, false
	q.n--
}

// QueueLen is the number of requests waiting for a worker.
func (b *Balancer) QueueLen() int { return int(b.waiting.Load()) }

// acquire returns an endpoint that has taken the request into its
// in-flight count: at once if one is usable, else after waiting in the
// queue. It fails when no endpoint could ever take the request, the
// queue is full, the wait times out, or ctx ends.
func (b *Balancer) acquire(ctx context.Context, pick *Pick) (*Endpoint, time.Duration, error) {
	// Requests already waiting go first: only an empty queue allows the
	// fast path, which keeps the queue FIFO.
	if b.waiting.Load() == 0 {
		if e := b.selectAcquire(pick); e != nil {
			return e, 0, nil
		}
	}
	if !b.hopeful(pick, b.Endpoints()) {
		return nil, 0, errNoEndpoint
	}
	return b.wait(ctx, pick)
}

// selectAcquire asks the policy for an endpoint and takes a slot on it;
// another request may take the slot between the two, so it asks again a
// few times.
func (b *Balancer) selectAcquire(pick *Pick) *Endpoint {
	eps := b.Endpoints()
	for range 3 {
		e := b.policy.Select(eps, pick)
		if e == nil {
			return nil
		}
		if e.tryAcquire() {
			return e
		}
	}
	return nil
}

func (b *Balancer) wait(ctx context.Context, pick *Pick) (*Endpoint, time.Duration, error) {
	start := time.Now()
	w := &pick.w
	b.qmu.Lock()
	// Announce the waiter before looking again: a release that happens
	// after this sees waiting > 0 and dispatches under qmu, after we have
	// queued; one that happened before left a slot this look finds. The
	// look is only for an empty queue: others waiting go first.
	b.waiting.Add(1)
	if b.queue.n == 0 {
		if e := b.selectAcquire(pick); e != nil {
			b.waiting.Add(-1)
			b.qmu.Unlock()
			return e, 0, nil
		}
	}
	// The last candidate may have left since acquire looked; Remove
	// answers queued waiters, not this one yet.
	if !b.hopeful(pick, b.Endpoints()) {
		b.waiting.Add(-1)
		b.qmu.Unlock()
		return nil, 0, errNoEndpoint
	}
	if b.queue.n >= b.cfg.QueueSize {
		b.waiting.Add(-1)
		b.qmu.Unlock()
		return nil, 0, errQueueFull
	}
	b.queue.push(w)
	// A slot may be free for an older waiter, or for this one.
	b.dispatchLocked()
	b.qmu.Unlock()

	timer := time.NewTimer(b.cfg.QueueTimeout)
	defer timer.Stop()
	select {
	case e := <-w.ch:
		return handed(e, start)
	case <-timer.C:
		if b.dequeue(w) {
			return nil, time.Since(start), errQueueTimeout
		}
		// Handed an endpoint just as the time ran out: use it.
		return handed(<-w.ch, start)
	case <-ctx.Done():
		if !b.dequeue(w) {
			if e := <-w.ch; e != nil {
				b.release(e)
			}
		}
		return nil, time.Since(start), ctx.Err()
	}
}

// handed is the outcome of a wait that dispatch or failHopeless ended:
// an endpoint, or nil when no endpoint is left for the request.
func handed(e *Endpoint, start time.Time) (*Endpoint, time.Duration, error) {
	if e == nil {
		return nil, time.Since(start), errNoEndpoint
	}
	return e, time.Since(start), nil
}

// failHopeless answers "no endpoint" to every waiting request that no
// endpoint in rotation could ever take (all left, or all it has not yet
// tried did) while none is expected to join: nothing would wake them,
// and a pool without a worker must answer 503 promptly rather than at
// queue_timeout.
func (b *Balancer) failHopeless() {
	eps := b.Endpoints()
	b.qmu.Lock()
	defer b.qmu.Unlock()
	for w := b.queue.head; w != nil; {
		next := w.next
		if !b.hopeful(w.pick, eps) {
			b.queue.remove(w)
			b.waiting.Add(-1)
			w.ch <- nil
		}
		w = next
	}
}

// dispatch hands free endpoints to waiting requests, oldest first. It is
// called whenever capacity may have appeared: a request finished, an
// endpoint joined, a limit grew, a breaker may probe.
func (b *Balancer) dispatch() {
	if b.waiting.Load() == 0 {
		return
	}
	b.qmu.Lock()
	b.dispatchLocked()
	b.qmu.Unlock()
}

// dispatchLocked is dispatch with qmu held. A waiter that cannot use the
// free endpoint (it tried it already, or its policy wants another) is
// passed over, not allowed to hold up those behind it.
func (b *Balancer) dispatchLocked() {
	for w := b.queue.head; w != nil; {
		next := w.next
		if e := b.selectAcquire(w.pick); e != nil {
			b.queue.remove(w)
			b.waiting.Add(-1)
			w.ch <- e
		} else if !b.anyAvailable() {
			return
		}
		w = next
	}
}

// anyAvailable reports whether some endpoint could take a request now.
func (b *Balancer) anyAvailable() bool {
	for _, e := range b.Endpoints() {
		if e.available() {
			return true
		}
	}
	return false
}

// release gives back the slot a request held on e and lets the queue's
// head have it.
func (b *Balancer) release(e *Endpoint) {
	e.inflight.Add(-1)
	b.dispatch()
}

// dequeue takes w out of the queue; false means dispatch already handed
// it an endpoint (or nil), which is waiting in w.ch.
func (b *Balancer) dequeue(w *waiter) bool {
	b.qmu.Lock()
	defer b.qmu.Unlock()
	if !w.queued {
		return false
	}
	b.queue.remove(w)
	b.waiting.Add(-1)
	return true
}
