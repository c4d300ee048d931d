package balancer

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Retry defaults.
const (
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

// shouldRetry reports whether a request whose attempt failed with err
// (before any response byte reached the client) may be sent to another
// worker: always if it never reached the worker, else only if its method
// is idempotent; and only if its body can be sent again.
func shouldRetry(r *http.Request, err error, replayable bool) bool {
	if !replayable {
		return false
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return true
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace, http.MethodPut, http.MethodDelete:
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// retryBudget counts requests and retries in one-second buckets over a
// sliding window.
type retryBudget struct {
	buckets [retryBudgetWindow]budgetBucket
}

type budgetBucket struct {
	sec      atomic.Int64
	requests atomic.Int64
	retries  atomic.Int64
}

func (b *retryBudget) bucket(now int64) *budgetBucket {
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

// request records one request.
func (b *retryBudget) request(now time.Time) { b.bucket(now.Unix()).requests.Add(1) }

// allow reports whether one more retry fits in the budget, and counts it.
func (b *retryBudget) allow(now time.Time) bool {
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

// errBodyRead means the client's request body could not be read.
var errBodyRead = errors.New("could not read the request body")

// prepareBody makes r's body replayable if it is small enough, by
// reading it into memory. It reports whether the body can be sent again;
// a body that is too large, or of unknown length, is streamed as it comes
// and is not replayable. The buffer is the request's own, not pooled: a
// transport may still read or close a body after its round trip ends.
//
// A body that a handler before the balancer already holds in memory
// (request validation reads it whole) comes with GetBody, as a client's
// request would: it is replayed from there, not copied again.
func prepareBody(r *http.Request, limit int64) (bool, error) {
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
		return false, errBodyRead
	}
	rb.Reset(rb.buf)
	r.Body = rb
	return true, nil
}

// rewindBody puts a replayable body back at its start for a retry.
func rewindBody(r *http.Request) error {
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
