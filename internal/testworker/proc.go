package testworker

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/internal/procfs"
)

// GroupMembers lists the pids of live (non-zombie) processes whose
// process group is pgid, read from /proc. Group 0 (kernel threads) has
// no members here.
func GroupMembers(pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	var pids []int
	for _, p := range procfs.All() {
		if p.PGID == pgid && p.Live() {
			pids = append(pids, p.PID)
		}
	}
	return pids
}

// PGID returns the process group of pid, or 0 if it is gone.
func PGID(pid int) int {
	s, err := procfs.ReadStat(pid)
	if err != nil {
		return 0
	}
	return s.PGID
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool {
	s, err := procfs.ReadStat(pid)
	return err == nil && s.Live()
}

// Kill kills process pid at once: SIGKILL, or TerminateProcess on
// Windows.
func Kill(pid int) error {
	p, err := os.FindProcess(pid)
	if err != nil {
		return err
	}
	return p.Kill()
}

// WithArg lists the pids of live processes that have arg among their
// command-line arguments, read from /proc.
func WithArg(arg string) []int {
	var pids []int
	lines, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, f := range lines {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
		if slices.Contains(strings.Split(string(b), "\x00"), arg) && Alive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// SSListening is the local address that `ss` (iproute2) shows for the
// TCP socket listening on port — "*:41234" for every interface,
// "127.0.0.1:41234" for loopback — judged without connecting to it; ""
// where ss is not installed.
func SSListening(t testing.TB, port string) string {
	t.Helper()
	if _, err := exec.LookPath("ss"); err != nil {
		t.Log("ss not found: the socket's address is judged from /proc only")
		return ""
	}
	out, err := exec.Command("ss", "-Hltn", "sport = :"+port).Output()
	if err != nil {
		t.Fatalf("ss: %v", err)
	}
	f := strings.Fields(string(out))
	if len(f) < 4 {
		t.Fatalf("ss lists no socket listening on port %s: %q", port, out)
	}
	return f[3]
}

// EveryInterface reports whether an address as ss shows it is a
// wildcard.
func EveryInterface(addr string) bool {
	return strings.HasPrefix(addr, "*:") || strings.HasPrefix(addr, "0.0.0.0:") || strings.HasPrefix(addr, "[::]:")
}
