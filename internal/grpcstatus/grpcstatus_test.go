package grpcstatus

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

func TestIsCall(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"application/grpc-web": false, "application/grpc-web+proto": false, "application/json": false, "": false,
	} {
		r := httptest.NewRequest(http.MethodPost, "/pkg.S/M", nil)
		r.Header.Set("Content-Type", ct)
		if got := IsCall(r); got != want {
			t.Errorf("%q: %v, want %v", ct, got, want)
		}
	}
}

func TestWrite(t *testing.T) {
	rec := httptest.NewRecorder()
	rec.Header().Set("Content-Length", "12")
	Write(rec, ResourceExhausted, "the request body is larger than 4 bytes: 100% too much\n")
	h := rec.Result().Header
	if rec.Code != http.StatusOK || h.Get("Content-Type") != "application/grpc" || h.Get("Grpc-Status") != "8" ||
		h.Get("Content-Length") != "" || rec.Body.Len() != 0 {
		t.Fatalf("answer %d %v %q; want 200, application/grpc, grpc-status 8, no body", rec.Code, h, rec.Body.String())
	}
	if got, want := h.Get("Grpc-Message"), "the request body is larger than 4 bytes: 100%25 too much%0A"; got != want {
		t.Fatalf("grpc-message %q, want %q", got, want)
	}
}

func TestEncodeMessage(t *testing.T) {
	for in, want := range map[string]string{
		"plain":                   "plain",
		"no worker: 100% busy\né": "no worker: 100%25 busy%0A%C3%A9",
	} {
		if got := encodeMessage(in); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

func TestFromHeader(t *testing.T) {
	for _, c := range []struct {
		h    http.Header
		code int
		ok   bool
	}{
		{http.Header{"Grpc-Status": {"14"}}, Unavailable, true},
		{http.Header{http.TrailerPrefix + "Grpc-Status": {"5"}}, NotFound, true},
		{http.Header{"Grpc-Status": {"0"}}, OK, true},
		{http.Header{"Grpc-Status": {"x"}}, 0, false},
		{http.Header{"Grpc-Status": {"-1"}}, 0, false},
		{http.Header{}, 0, false},
	} {
		if code, ok := FromHeader(c.h); code != c.code || ok != c.ok {
			t.Errorf("%v: %d, %v; want %d, %v", c.h, code, ok, c.code, c.ok)
		}
	}
}

func TestNames(t *testing.T) {
	for code, want := range map[int]string{0: "OK", 1: "CANCELLED", 3: "INVALID_ARGUMENT", 8: "RESOURCE_EXHAUSTED", 14: "UNAVAILABLE", 16: "UNAUTHENTICATED", 17: "17", -1: "-1"} {
		if got := Name(code); got != want {
			t.Errorf("Name(%d) = %q, want %q", code, got, want)
		}
	}
	for status, want := range map[int]int{400: Internal, 404: Unimplemented, 499: Cancelled, 502: Unavailable, 503: Unavailable, 200: Unknown, 500: Unknown} {
		if got := FromHTTP(status); got != want {
			t.Errorf("FromHTTP(%d) = %d, want %d", status, got, want)
		}
	}
}
