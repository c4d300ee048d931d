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
//
// It reads through http.MaxBytesReader on the server's own writer, which
// tells Go's server that the body was too large: the server then closes
// the connection after the 413 only once the client had time to read it
// (otherwise the unread rest of the body makes the close a reset, and
// many clients report the reset instead of the answer).
type limitedBody struct {
	rc     io.ReadCloser
	limit  int64
	over   atomic.Bool
	cancel context.CancelFunc
}

func newLimitedBody(w http.ResponseWriter, body io.ReadCloser, limit int64, cancel context.CancelFunc) *limitedBody {
	return &limitedBody{rc: http.MaxBytesReader(serverWriter(w), body, limit), limit: limit, cancel: cancel}
}

// serverWriter is the writer that w wraps, innermost first: the one
// http.MaxBytesReader can tell about the limit.
func serverWriter(w http.ResponseWriter) http.ResponseWriter {
	for {
		u, ok := w.(interface{ Unwrap() http.ResponseWriter })
		if !ok {
			return w
		}
		w = u.Unwrap()
	}
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.over.Load() {
		return 0, ErrBodyTooLarge
	}
	n, err := b.rc.Read(p)
	if _, over := err.(*http.MaxBytesError); over {
		b.over.Store(true)
		b.cancel()
		return n, ErrBodyTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error {
	b.cancel()
	return b.rc.Close()
}

// limitWriter answers 413 (RESOURCE_EXHAUSTED to a gRPC call) instead
// of whatever the next handler answers once the body it streams has
// passed the limit (unless the answer had started already).
type limitWriter struct {
	http.ResponseWriter
	body     *limitedBody
	grpc     bool
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
		if w.grpc {
			// An HTTP/2 stream: the connection carries other calls.
			tooLarge(w.body.limit).WriteGRPC(w.ResponseWriter)
			return
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
		return nil, unreadableBody("the request body could not be read")
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
