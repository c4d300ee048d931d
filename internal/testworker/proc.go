package testworker

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

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
