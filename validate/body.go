package validate

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"sync/atomic"
)

// ErrBodyTooLarge is what reading a limited request body returns once
// the body has passed Config.MaxBody.
var ErrBodyTooLarge = errors.New("request body too large")

// limitedBody counts a streamed body as it is read and fails it once it
// passes the limit. Passing the limit cancels the request's context: the
// proxy then stops, the worker sees its connection close mid-body, and
// the pool counts it as a client that went away, not as a worker fault.
type limitedBody struct {
	rc     io.ReadCloser
	left   int64
	limit  int64
	over   atomic.Bool
	cancel context.CancelFunc
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.over.Load() {
		return 0, ErrBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.rc.Read(p)
	if int64(n) > b.left {
		b.over.Store(true)
		b.cancel()
		return int(b.left), ErrBodyTooLarge
	}
	b.left -= int64(n)
	return n, err
}

func (b *limitedBody) Close() error {
	b.cancel()
	return b.rc.Close()
}

// limitWriter answers 413 instead of whatever the next handler answers
// once the body it streams has passed the limit (unless the answer had
// started already).
type limitWriter struct {
	http.ResponseWriter
	body     *limitedBody
	wrote    bool
	replaced bool
}

func (w *limitWriter) WriteHeader(code int) {
	if w.wrote || code < 200 {
		if !w.replaced {
			w.ResponseWriter.WriteHeader(code)
		}
		return
	}
	w.wrote = true
	if w.body.over.Load() {
		w.replaced = true
		h := w.ResponseWriter.Header()
		for k := range h {
			delete(h, k)
		}
		h.Set("Connection", "close")
		tooLarge(w.body.limit).Write(w.ResponseWriter)
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *limitWriter) Write(p []byte) (int, error) {
	if !w.wrote {
		w.WriteHeader(http.StatusOK)
	}
	if w.replaced {
		return len(p), nil
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer (flush,
// deadlines, hijack).
func (w *limitWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// readBounded reads the whole body if it is at most limit bytes.
func readBounded(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	var buf []byte
	if r.ContentLength > 0 {
		buf = make([]byte, 0, r.ContentLength+1) // +1: room to see EOF without growing
	}
	b := bytes.NewBuffer(buf)
	n, err := b.ReadFrom(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, &Error{Status: http.StatusBadRequest, Detail: "the request body could not be read"}
	}
	if n > limit {
		return nil, tooLarge(limit)
	}
	return b.Bytes(), nil
}

// withBody is r, with ctx if not nil, whose body is now body: the bytes
// read from the client, unchanged, with a Content-Length.
func withBody(r *http.Request, ctx context.Context, body []byte) *http.Request {
	if ctx != nil {
		r = r.WithContext(ctx)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	r.TransferEncoding = nil
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	return r
}
