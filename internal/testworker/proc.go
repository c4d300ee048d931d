package testworker

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// GroupMembers lists the pids of live (non-zombie) processes whose
// process group is pgid, read from /proc. Group 0 (kernel threads) has
// no members here.
func GroupMembers(pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	var pids []int
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // the process went away while we looked
		}
		// Fields after the parenthesised command: state ppid pgrp ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		fields := strings.Fields(s[i+1:])
		if len(fields) < 3 || fields[0] == "Z" || fields[0] == "X" {
			continue
		}
		if g, _ := strconv.Atoi(fields[2]); g == pgid {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(f)))
			pids = append(pids, pid)
		}
	}
	return pids
}

// PGID returns the process group of pid, or 0 if it is gone.
func PGID(pid int) int {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(f) < 3 {
		return 0
	}
	g, _ := strconv.Atoi(f[2])
	return g
}

// Alive reports whether pid is a live, non-zombie process.
func Alive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	f := strings.Fields(s[i+1:])
	return len(f) > 0 && f[0] != "Z" && f[0] != "X"
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
