// Package grpcstatus is what the pool needs to know of gRPC's status
// codes: which requests are gRPC calls, how to answer one with a status
// (trailers-only), how to read the status of a call's answer, and the
// codes' names. It is shared by the balancer and by the handlers that
// answer before it (validation, size limits), so that a gRPC client gets
// gRPC's terms from all of them. Standard library only.
package grpcstatus

import (
	"net/http"
	"strconv"
	"strings"
)

// gRPC's status codes (gRPC's doc/statuscodes.md).
const (
	OK                 = 0
	Cancelled          = 1
	Unknown            = 2
	InvalidArgument    = 3
	DeadlineExceeded   = 4
	NotFound           = 5
	AlreadyExists      = 6
	PermissionDenied   = 7
	ResourceExhausted  = 8
	FailedPrecondition = 9
	Aborted            = 10
	OutOfRange         = 11
	Unimplemented      = 12
	Internal           = 13
	Unavailable        = 14
	DataLoss           = 15
	Unauthenticated    = 16
)

// NumCodes is the number of codes gRPC defines, 0 to NumCodes-1.
const NumCodes = 17

var names = [NumCodes]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

// Name is the code's name as gRPC's documentation writes it
// ("UNAVAILABLE"); a code gRPC does not define is its number.
func Name(code int) string {
	if code >= 0 && code < NumCodes {
		return names[code]
	}
	return strconv.Itoa(code)
}

// IsCall reports whether r is a gRPC call: its content type is
// application/grpc, application/grpc+<codec> or has parameters. gRPC-Web
// (application/grpc-web…) is not: it is made for HTTP/1.1 proxies.
func IsCall(r *http.Request) bool {
	ct := r.Header.Get("Content-Type")
	if !strings.HasPrefix(ct, "application/grpc") {
		return false
	}
	rest := ct[len("application/grpc"):]
	return rest == "" || rest[0] == '+' || rest[0] == ';'
}

// Write answers a gRPC call trailers-only: HTTP 200, and the status and
// message in the one header block that ends the stream. Headers set on w
// before stay, but for a Content-Length, which a gRPC answer never has.
func Write(w http.ResponseWriter, code int, msg string) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/grpc")
	h.Set("Grpc-Status", strconv.Itoa(code))
	h.Set("Grpc-Message", encodeMessage(msg))
	w.WriteHeader(http.StatusOK)
}

// encodeMessage percent-encodes what grpc-message may not carry as it
// is: bytes outside printable ASCII, and '%'.
func encodeMessage(msg string) string {
	i := strings.IndexFunc(msg, func(r rune) bool { return r < 0x20 || r > 0x7e || r == '%' })
	if i < 0 {
		return msg
	}
	var b strings.Builder
	b.WriteString(msg[:i])
	for ; i < len(msg); i++ {
		c := msg[i]
		if c < 0x20 || c > 0x7e || c == '%' {
			b.WriteByte('%')
			b.WriteByte("0123456789ABCDEF"[c>>4])
			b.WriteByte("0123456789ABCDEF"[c&15])
			continue
		}
		b.WriteByte(c)
	}
	return b.String()
}

// FromHeader is the grpc-status of a call's answer whose headers, and
// trailers once it is complete, are in h, as a handler's
// http.ResponseWriter holds them: in the headers for a trailers-only
// answer, else among the trailers, which stand under
// http.TrailerPrefix when they were not announced. ok is false when
// there is none, or it is not a number.
func FromHeader(h http.Header) (code int, ok bool) {
	v := h.Get("Grpc-Status")
	if v == "" {
		v = h.Get(http.TrailerPrefix + "Grpc-Status")
	}
	if v == "" {
		return 0, false
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		return 0, false
	}
	return n, true
}

// FromHTTP is the status a gRPC client takes an answer of HTTP status
// to mean when it carries no grpc-status (gRPC's
// doc/http-grpc-status-mapping.md); 499, a client that went away, is
// CANCELLED, as gRPC servers count such a call.
func FromHTTP(status int) int {
	switch status {
	case http.StatusBadRequest:
		return Internal
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusNotFound:
		return Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	case 499:
		return Cancelled
	}
	return Unknown
}
