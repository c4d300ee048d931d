package testworker

import (
	"testing"
	"time"
)

// Eventually polls cond until it holds, failing the test after timeout.
// It awaits a condition that nothing notifies us about (a process that
// appears or vanishes), never a fixed delay.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
