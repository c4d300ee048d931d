// Package procfs reads what the pool needs to know of processes from
// Linux's /proc: a process's state, process group, CPU time and resident
// memory, from /proc/<pid>/stat. Elsewhere every read fails, and callers
// treat that as "not known".
package procfs

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// Stat is what the pool reads of one process's /proc/<pid>/stat.
type Stat struct {
	PID int
	// State is the one-letter state: R, S, D, Z (zombie), X (dead), ….
	State byte
	// PGID is the process group.
	PGID int
	// CPU is the user and system time the process has used, in steps of
	// the kernel's 10 ms accounting tick.
	CPU time.Duration
	// RSS is the resident memory in bytes.
	RSS int64
}

// Live reports whether the process runs: neither a zombie nor dead.
func (s Stat) Live() bool { return s.State != 'Z' && s.State != 'X' }

var errFormat = errors.New("procfs: unexpected /proc/<pid>/stat format")

var pageSize = int64(os.Getpagesize())

// ReadStat reads process pid's stat.
func ReadStat(pid int) (Stat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return Stat{}, err
	}
	return parseStat(pid, string(b))
}

// parseStat parses the text of /proc/<pid>/stat. The command, field 2,
// is in parentheses and may itself hold spaces and parentheses: the
// fields that follow are counted from its last closing one.
func parseStat(pid int, s string) (Stat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return Stat{}, errFormat
	}
	// After the command: state(3) ppid(4) pgrp(5) ... utime(14)
	// stime(15) ... rss(24).
	f := strings.Fields(s[i+1:])
	if len(f) < 22 || len(f[0]) != 1 {
		return Stat{}, errFormat
	}
	pgid, err1 := strconv.Atoi(f[2])
	utime, err2 := strconv.ParseInt(f[11], 10, 64)
	stime, err3 := strconv.ParseInt(f[12], 10, 64)
	rss, err4 := strconv.ParseInt(f[21], 10, 64)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		return Stat{}, errFormat
	}
	return Stat{PID: pid, State: f[0][0], PGID: pgid, CPU: time.Duration(utime+stime) * clockTick, RSS: rss * pageSize}, nil
}

// All reads the stat of every process that can be read now; a process
// that goes away meanwhile is left out.
func All() []Stat {
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	out := make([]Stat, 0, len(paths))
	for _, p := range paths {
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err != nil {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		if s, err := parseStat(pid, string(b)); err == nil {
			out = append(out, s)
		}
	}
	return out
}

// CPUTime returns a function that reads the CPU time process pid has
// used; it reports false once that cannot be read (another OS, a process
// that is gone).
func CPUTime(pid int) func() (time.Duration, bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	return func() (time.Duration, bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		s, err := parseStat(pid, string(b))
		return s.CPU, err == nil
	}
}

// Busy returns a function that reads how long process pid's main thread
// (a Node, Bun, Deno or Python worker's event loop) has run on a CPU or
// waited in a run queue to run: the time it wanted a CPU, in
// nanoseconds, from /proc/<pid>/schedstat. A thread that did neither
// for a while was idle, whatever the host's load. Where schedstat is
// missing (a kernel without CONFIG_SCHED_INFO) it falls back to the
// process's CPU time, in 10 ms ticks. It reports false once neither can
// be read. A reading does not allocate where schedstat is there.
func Busy(pid int) func() (time.Duration, bool) {
	f := newSmallFile("/proc/" + strconv.Itoa(pid) + "/schedstat")
	cpu := CPUTime(pid)
	return func() (time.Duration, bool) {
		var buf [64]byte
		n, ok := f.read(buf[:])
		if !ok {
			return cpu()
		}
		run, wait, ok := parseSchedstat(buf[:n])
		if !ok || run == 0 {
			// A kernel without schedstats reads zeros: nothing ran.
			return cpu()
		}
		return run + wait, true
	}
}

// Runnable returns a function that reads whether process pid's main
// thread is on a CPU, waiting in a run queue, or in an uninterruptible
// wait (disk I/O): the state R or D of /proc/<pid>/stat. Busy lags for
// a thread in a run queue: the kernel adds the wait to schedstat only
// once the thread runs, so a thread that waits long reads as idle until
// then; its state does not lag. It reports false once the state cannot
// be read. A reading does not allocate.
func Runnable(pid int) func() (runnable, ok bool) {
	f := newSmallFile("/proc/" + strconv.Itoa(pid) + "/stat")
	return func() (bool, bool) {
		// The command is at most 16 bytes (TASK_COMM_LEN): the state is
		// well inside the first 64.
		var buf [64]byte
		n, ok := f.read(buf[:])
		if !ok {
			return false, false
		}
		state, ok := parseState(buf[:n])
		return ok && (state == 'R' || state == 'D'), ok
	}
}

// parseState reads the state, field 3, from the start of a
// /proc/<pid>/stat: the byte after the command's last closing
// parenthesis and a space.
func parseState(b []byte) (byte, bool) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 >= len(b) || b[i+1] != ' ' {
		return 0, false
	}
	return b[i+2], true
}

// parseSchedstat reads the first two fields of /proc/<pid>/schedstat:
// the time on a CPU and the time waiting for one, in nanoseconds.
func parseSchedstat(b []byte) (run, wait time.Duration, ok bool) {
	var f [2]int64
	for i := range f {
		for len(b) > 0 && b[0] == ' ' {
			b = b[1:]
		}
		digits := 0
		for len(b) > 0 && '0' <= b[0] && b[0] <= '9' {
			f[i] = f[i]*10 + int64(b[0]-'0')
			b = b[1:]
			digits++
		}
		if digits == 0 || len(b) > 0 && b[0] != ' ' && b[0] != '\n' {
			return 0, 0, false
		}
	}
	return time.Duration(f[0]), time.Duration(f[1]), true
}
