// Package problem writes RFC 9457 "problem details" responses
// (application/problem+json), the one error format of every response the
// pool produces itself rather than a worker.
package problem

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// ContentType is the media type of a problem details document.
const ContentType = "application/problem+json"

// Details is an RFC 9457 problem details document. Type is omitted, which
// the RFC defines as "about:blank": the status code and title say it all.
type Details struct {
	Type     string       `json:"type,omitempty"`
	Title    string       `json:"title"`
	Status   int          `json:"status"`
	Detail   string       `json:"detail,omitempty"`
	Instance string       `json:"instance,omitempty"`
	Errors   []FieldError `json:"errors,omitempty"`
}

// FieldError points at one invalid part of a request, with a JSON pointer
// such as "/body/items/0/qty" or "/query/limit".
type FieldError struct {
	Pointer string `json:"pointer"`
	Detail  string `json:"detail"`
}

// Write sends d with its status code. A zero Title becomes the status text.
func Write(w http.ResponseWriter, d Details) {
	if d.Title == "" {
		d.Title = http.StatusText(d.Status)
	}
	body, err := json.Marshal(d)
	if err != nil {
		// Details holds only strings and ints; this cannot fail.
		body = []byte(`{"title":"Internal Server Error","status":500}`)
		d.Status = http.StatusInternalServerError
	}
	h := w.Header()
	h.Set("Content-Type", ContentType)
	h.Set("Content-Length", strconv.Itoa(len(body)+1))
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(d.Status)
	_, _ = w.Write(append(body, '\n'))
}

// Unavailable writes 503 Service Unavailable with a Retry-After header in
// seconds, so well-behaved clients and upstream proxies back off.
func Unavailable(w http.ResponseWriter, retryAfterSeconds int, detail string) {
	w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	Write(w, Details{Status: http.StatusServiceUnavailable, Detail: detail})
}
