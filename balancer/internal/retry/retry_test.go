package retry

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestRetryBudget(t *testing.T) {
	var b Budget
	now := time.Unix(1000, 0)
	// Without traffic the floor still allows a few retries.
	for i := range retryBudgetFloor {
		if !b.Allow(now) {
			t.Fatalf("retry %d refused below the floor", i)
		}
	}
	if b.Allow(now) {
		t.Fatal("retry allowed past the floor with no requests")
	}
	// 100 requests allow 20% retries in all: 10 more.
	for range 100 {
		b.Request(now)
	}
	allowed := 0
	for b.Allow(now) {
		allowed++
	}
	if allowed != 10 {
		t.Fatalf("%d more retries allowed after 100 requests, want 10", allowed)
	}
	// The window slides: ten seconds later the old counts are gone.
	later := now.Add(retryBudgetWindow * time.Second)
	if !b.Allow(later) {
		t.Fatal("retry refused after the window moved on")
	}
}

func TestAllowed(t *testing.T) {
	for _, c := range []struct {
		method              string
		reached, replayable bool
		header              string
		want                bool
	}{
		{"POST", false, true, "", true},
		{"POST", true, true, "", false},
		{"POST", true, true, "Idempotency-Key", true},
		{"POST", true, true, "X-Idempotency-Key", true},
		{"GET", true, true, "", true},
		{"PUT", true, true, "", true},
		{"GET", false, false, "", false},
	} {
		r := httptest.NewRequest(c.method, "/", strings.NewReader(""))
		if c.header != "" {
			r.Header.Set(c.header, "k1")
		}
		if got := Allowed(r, c.reached, c.replayable); got != c.want {
			t.Errorf("Allowed(%s, reached=%v, replayable=%v, %q) = %v", c.method, c.reached, c.replayable, c.header, got)
		}
	}
}

// A body already in memory (GetBody set, as request validation leaves
// it) is replayable without a second copy, and a retry starts it over.
func TestPrepareBodyUsesGetBody(t *testing.T) {
	const body = `{"qty":2}`
	r := httptest.NewRequest("POST", "/", strings.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(body)), nil }
	orig := r.Body
	ok, err := Prepare(r, 64<<10)
	if err != nil || !ok {
		t.Fatalf("prepareBody = %v, %v; want a replayable body", ok, err)
	}
	if r.Body != orig {
		t.Fatal("prepareBody copied a body that GetBody can give again")
	}
	_, _ = io.ReadAll(r.Body) // the first attempt reads it
	if err := Rewind(r); err != nil {
		t.Fatal(err)
	}
	if got, _ := io.ReadAll(r.Body); string(got) != body {
		t.Fatalf("after rewind the body is %q, want %q", got, body)
	}
	r.GetBody = nil
	r.Body = io.NopCloser(strings.NewReader(body))
	if ok, _ := Prepare(r, 64<<10); !ok {
		t.Fatal("a small body without GetBody is not buffered")
	}
	if !InMemory(r) {
		t.Fatal("a small body without GetBody is not buffered")
	}
}
