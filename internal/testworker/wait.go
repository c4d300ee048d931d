package testworker

import (
	"os"
	"strconv"
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

// PIDFile waits for a worker to write a pid to file (see the detached
// mode) and returns it.
func PIDFile(t testing.TB, file string) int {
	t.Helper()
	var pid int
	Eventually(t, 10*time.Second, "a pid in "+file, func() bool {
		b, err := os.ReadFile(file)
		if err != nil {
			return false
		}
		pid, err = strconv.Atoi(string(b))
		return err == nil
	})
	return pid
}
