// Package retry decides whether a failed attempt may be sent again, and
// keeps what that needs: a budget of retries against requests, and a
// request body that can be replayed.
package retry

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Defaults.
const (
	// DefaultRetries is how many times a request may be sent again.
	DefaultRetries = 1
	// MaxRetries bounds the retries option.
	MaxRetries = 5
	// DefaultRetryBodyLimit is the largest request body kept in memory so
	// that a request can be sent again.
	DefaultRetryBodyLimit = 64 << 10
	// retryBudgetRatio of requests over the last retryBudgetWindow
	// seconds may be retries, with at least retryBudgetFloor per window,
	// so a failing pool does not multiply its own load.
	retryBudgetRatio  = 0.2
	retryBudgetWindow = 10
	retryBudgetFloor  = 10
)

// Allowed reports whether a request whose attempt failed before any
// response byte reached the client may be sent to another worker: always
// when it never reached a worker, else only when it is idempotent; and
// only when its body can be sent again.
func Allowed(r *http.Request, reached, replayable bool) bool {
	return replayable && (!reached || Idempotent(r))
}

// Idempotent reports whether sending r twice does what sending it once
// does: its method says so (RFC 9110 section 9.2.2), or it carries an
// idempotency key.
func Idempotent(r *http.Request) bool {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// Budget counts requests and retries in one-second buckets over a
// sliding window. The zero value is ready; it is safe for concurrent use.
type Budget struct {
	buckets [retryBudgetWindow]budgetBucket
}

type budgetBucket struct {
	sec      atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func (b *Budget) bucket(now int64) *budgetBucket {
	k := &b.buckets[now%retryBudgetWindow]
	if old := k.sec.Load(); old != now && k.sec.CompareAndSwap(old, now) {
		// A stale bucket from an earlier turn of the ring: start it over.
		// Counts that race with the reset are lost, which only makes the
		// budget a little less exact.
		k.requests.Store(0)
		k.retries.Store(0)
	}
	return k
}

// Request records one request.
func (b *Budget) Request(now time.Time) { b.bucket(now.Unix()).requests.Add(1) }

// Allow reports whether one more retry fits in the budget, and counts it.
func (b *Budget) Allow(now time.Time) bool {
	sec := now.Unix()
	var requests, retries int64
	for i := range b.buckets {
		k := &b.buckets[i]
		if sec-k.sec.Load() < retryBudgetWindow {
			requests += k.requests.Load()
			retries += k.retries.Load()
		}
	}
	if retries >= retryBudgetFloor && float64(retries+1) > retryBudgetRatio*float64(requests) {
		return false
	}
	b.bucket(sec).retries.Add(1)
	return true
}

// replayBody holds a buffered request body so it can be sent again.
type replayBody struct {
	bytes.Reader
	buf []byte
}

func (*replayBody) Close() error { return nil }

// ErrBodyRead means the client's request body could not be read.
var ErrBodyRead = errors.New("could not read the request body")

// Prepare makes r's body replayable if it is small enough, by
// reading it into memory. It reports whether the body can be sent again;
// a body that is too large, or of unknown length, is streamed as it comes
// and is not replayable. The buffer is the request's own, not pooled: a
// transport may still read or close a body after its round trip ends.
//
// A body that a handler before the balancer already holds in memory
// (request validation reads it whole) comes with GetBody, as a client's
// request would: it is replayed from there, not copied again.
func Prepare(r *http.Request, limit int64) (bool, error) {
	if r.Body == nil || r.Body == http.NoBody || (r.ContentLength == 0 && len(r.TransferEncoding) == 0) {
		return true, nil
	}
	if r.ContentLength < 0 || r.ContentLength > limit {
		return false, nil
	}
	if r.GetBody != nil {
		return true, nil
	}
	rb := &replayBody{buf: make([]byte, r.ContentLength)}
	if _, err := io.ReadFull(r.Body, rb.buf); err != nil {
		return false, ErrBodyRead
	}
	rb.Reset(rb.buf)
	r.Body = rb
	return true, nil
}

// Rewind puts a body that Prepare made replayable back at its start.
func Rewind(r *http.Request) error {
	if rb, ok := r.Body.(*replayBody); ok {
		rb.Reset(rb.buf)
		return nil
	}
	if r.GetBody == nil {
		return nil
	}
	body, err := r.GetBody()
	if err != nil {
		return err
	}
	r.Body = body
	return nil
}

// InMemory reports whether r's body is one that Prepare buffered: it
// cannot fail to read.
func InMemory(r *http.Request) bool {
	_, ok := r.Body.(*replayBody)
	return ok
}
