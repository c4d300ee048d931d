package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat.
// It is 100 on every Linux architecture Go runs on (the kernel fixes it
// for user space whatever its internal HZ).
const clockTicks = 100

// procStat is what the harness reads from /proc/<pid>/stat.
type procStat struct {
	PPID  int
	PGID  int
	Utime uint64 // clock ticks
	Stime uint64 // clock ticks
}

// parseProcStat parses the text of /proc/<pid>/stat. The second field,
// the command name in parentheses, may itself hold spaces and
// parentheses, so the fields are counted from the last ')'.
func parseProcStat(s string) (procStat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return procStat{}, fmt.Errorf("stat %q: no command name", s)
	}
	// After ") ": state(3) ppid(4) pgrp(5) session(6) tty_nr(7) tpgid(8)
	// flags(9) minflt(10) cminflt(11) majflt(12) cmajflt(13) utime(14)
	// stime(15) — field numbers as in proc(5).
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return procStat{}, fmt.Errorf("stat %q: %d fields after the name, want at least 13", s, len(f))
	}
	var st procStat
	var err error
	if st.PPID, err = strconv.Atoi(f[1]); err != nil {
		return procStat{}, fmt.Errorf("stat ppid: %w", err)
	}
	if st.PGID, err = strconv.Atoi(f[2]); err != nil {
		return procStat{}, fmt.Errorf("stat pgrp: %w", err)
	}
	if st.Utime, err = strconv.ParseUint(f[11], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat utime: %w", err)
	}
	if st.Stime, err = strconv.ParseUint(f[12], 10, 64); err != nil {
		return procStat{}, fmt.Errorf("stat stime: %w", err)
	}
	return st, nil
}

func readProcStat(pid int) (procStat, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procStat{}, err
	}
	return parseProcStat(string(b))
}

// cpuSeconds is the user plus system CPU time the processes have used,
// threads included; a process that is gone counts 0.
func cpuSeconds(pids []int) float64 {
	var ticks uint64
	for _, pid := range pids {
		if st, err := readProcStat(pid); err == nil {
			ticks += st.Utime + st.Stime
		}
	}
	return float64(ticks) / clockTicks
}

// parseVmRSS returns VmRSS in bytes from the text of /proc/<pid>/status.
func parseVmRSS(s string) (int64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "VmRSS:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("VmRSS line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("VmRSS: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no VmRSS line (a kernel thread or a zombie)")
}

// rssBytes is the sum of the processes' resident set sizes. Pages that
// processes share (nginx's master and workers) count once per process.
func rssBytes(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err != nil {
			continue
		}
		if n, err := parseVmRSS(string(b)); err == nil {
			sum += n
		}
	}
	return sum
}

// parsePss returns Pss in bytes from the text of /proc/<pid>/smaps_rollup.
func parsePss(s string) (int64, error) {
	for line := range strings.Lines(s) {
		rest, ok := strings.CutPrefix(line, "Pss:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) != 2 || f[1] != "kB" {
			return 0, fmt.Errorf("Pss line %q", strings.TrimSpace(line))
		}
		kb, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("Pss: %w", err)
		}
		return kb * 1024, nil
	}
	return 0, fmt.Errorf("no Pss line")
}

// pssBytes is the sum of the processes' proportional set sizes: a page
// shared by k processes counts 1/k in each, so processes of one binary
// (nginx's workers, Caddy's reapers) do not count its code k times.
func pssBytes(pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
		if err != nil {
			continue
		}
		if n, err := parsePss(string(b)); err == nil {
			sum += n
		}
	}
	return sum
}

// descendants returns root and every process below it, found by their
// parent pids in /proc.
func descendants(root int) []int {
	children := map[int][]int{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil {
			children[st.PPID] = append(children[st.PPID], pid)
		}
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// processGroup returns the live processes whose process group is pgid.
func processGroup(pgid int) []int {
	var out []int
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if st, err := readProcStat(pid); err == nil && st.PGID == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// isAppWorker reports whether pid is a process of the example app: its
// executable is node and its command line names the app. Caddy's
// reapers name the app in their arguments too, but run Caddy's binary.
func isAppWorker(pid int, app string) bool {
	exe, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/exe")
	if err != nil || !strings.HasPrefix(filepath.Base(exe), "node") {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	return bytes.Contains(cmdline, []byte(app))
}

// splitWorkers separates the app's worker processes from the others (the
// proxy, a cluster primary, a PM2 daemon, Caddy's reapers).
func splitWorkers(pids []int, app string) (proxy, workers []int) {
	for _, pid := range pids {
		if isAppWorker(pid, app) {
			workers = append(workers, pid)
		} else {
			proxy = append(proxy, pid)
		}
	}
	return proxy, workers
}

// raiseNoFile raises the soft limit of open files to the hard limit, and
// the hard limit to atLeast where it is lower and this process may (as
// root), for this process and the contenders it starts; it returns the
// limit now in force. Go raises its own soft limit at start but gives
// children the original one back unless the program sets the limit
// itself, hence the explicit call.
func raiseNoFile(atLeast uint64) uint64 {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0
	}
	want := syscall.Rlimit{Max: max(lim.Max, atLeast)}
	want.Cur = want.Max
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want); err != nil {
		want = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &want)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	openFiles = lim.Cur
	return lim.Cur
}
