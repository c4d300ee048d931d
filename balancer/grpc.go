package balancer

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/balancer/internal/queue"
	"github.com/caddy-workerpool/caddy-workerpool/internal/grpcstatus"
)

// What the balancer does differently for a gRPC call: its grpc-timeout
// bounds its wait and its time at the worker, its route is its full
// method path, and what the pool answers itself is a gRPC status, not
// problem+json.

// errCallDeadline is the cause of a call's context that its grpc-timeout
// ended.
var errCallDeadline = errors.New("the call's deadline (grpc-timeout) passed")

// grpcTimeout parses a grpc-timeout value: at most eight digits and a
// unit, H, M, S, m (milli), u (micro) or n (nano).
func grpcTimeout(v string) (time.Duration, bool) {
	if len(v) < 2 || len(v) > 9 {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return 0, false
	}
	var unit time.Duration
	switch v[len(v)-1] {
	case 'H':
		unit = time.Hour
	case 'M':
		unit = time.Minute
	case 'S':
		unit = time.Second
	case 'm':
		unit = time.Millisecond
	case 'u':
		unit = time.Microsecond
	case 'n':
		unit = time.Nanosecond
	default:
		return 0, false
	}
	return time.Duration(n) * unit, true
}

// formatGRPCTimeout writes d as a grpc-timeout value, in the finest unit
// that keeps it within eight digits.
func formatGRPCTimeout(d time.Duration) string {
	if d <= 0 {
		return "0n"
	}
	for _, u := range []struct {
		unit   time.Duration
		suffix string
	}{{time.Nanosecond, "n"}, {time.Microsecond, "u"}, {time.Millisecond, "m"}, {time.Second, "S"}, {time.Minute, "M"}} {
		if n := d / u.unit; n < 1e8 {
			return strconv.FormatInt(int64(n), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(min(d/time.Hour, 1e8-1)), 10) + "H"
}

// withCallDeadline bounds a gRPC call r by its grpc-timeout, if it has
// one: the returned request's context ends then, with errCallDeadline
// as its cause.
func withCallDeadline(r *http.Request) (*http.Request, time.Time, context.CancelFunc) {
	d, ok := grpcTimeout(r.Header.Get("Grpc-Timeout"))
	if !ok {
		return r, time.Time{}, func() {}
	}
	deadline := time.Now().Add(d)
	ctx, cancel := context.WithDeadlineCause(r.Context(), deadline, errCallDeadline)
	return r.WithContext(ctx), deadline, cancel
}

// callDeadlinePassed reports whether r's context ended because its
// grpc-timeout passed (not because the client went away).
func callDeadlinePassed(r *http.Request) bool {
	return r.Context().Err() != nil && errors.Is(context.Cause(r.Context()), errCallDeadline)
}

// grpcCode is the gRPC status of an answer the pool makes itself: as
// gRPC maps HTTP statuses (doc/http-grpc-status-mapping.md), made more
// precise where the pool knows more.
func (e *Error) grpcCode() int {
	switch {
	case errors.Is(e.Err, errCallDeadline), errors.Is(e.Err, queue.ErrDeadline), e.Status == http.StatusGatewayTimeout:
		return grpcstatus.DeadlineExceeded
	case errors.Is(e.Err, queue.ErrFull):
		return grpcstatus.ResourceExhausted
	case e.Status == http.StatusBadRequest:
		return grpcstatus.Internal
	}
	return grpcstatus.Unavailable
}

// workerGRPCFailure reports whether a call's answer, whose headers and
// trailers are in h once it is complete, carries a gRPC status that
// says the worker failed (UNAVAILABLE, INTERNAL), as opposed to one the
// application meant (NOT_FOUND, INVALID_ARGUMENT, …). A trailer that
// was not announced stands under http.TrailerPrefix.
func workerGRPCFailure(h http.Header) bool {
	code, ok := grpcstatus.FromHeader(h)
	return ok && (code == grpcstatus.Internal || code == grpcstatus.Unavailable)
}

// callStatus is the gRPC status that a call's client got, once Serve is
// done with it: h holds the answer's headers and trailers, status is its
// HTTP status (499: the client went away), failed the pool's own answer
// if it made one, and aborted whether the answer broke off. byWorker
// says that the status is one a worker's answer carried.
func callStatus(h http.Header, status int, failed *Error, aborted bool) (code int, byWorker bool) {
	switch {
	case failed != nil:
		return failed.grpcCode(), false
	case aborted:
		// The stream was cut: the client saw no status.
		return grpcstatus.FromHTTP(status), false
	}
	code, ok := grpcstatus.FromHeader(h)
	switch {
	case ok && status == 499:
		// Not the worker's: the handler before the balancer answered in
		// its place (a streamed body that passed its limit).
		return code, false
	case ok:
		return code, true
	}
	return grpcstatus.FromHTTP(status), false
}
