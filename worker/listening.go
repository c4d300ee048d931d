package worker

import (
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
)

// ErrNoListenCheck is returned by Instance.Listening where the
// platform offers no way to list a process's sockets (outside Linux).
var ErrNoListenCheck = fmt.Errorf("listening sockets of a worker are read from /proc, which %s does not have: %w", runtime.GOOS, errors.ErrUnsupported)

// Listening returns the TCP addresses that the worker's processes (its
// cgroup, or else its process group: the worker and its children)
// listen on now, sorted.
func (i *Instance) Listening() ([]netip.AddrPort, error) {
	if runtime.GOOS != "linux" {
		return nil, ErrNoListenCheck
	}
	addrs, err := listeningTCP("/proc", i.pids())
	if err != nil {
		return nil, fmt.Errorf("worker %d: read its sockets from /proc: %w", i.Worker, err)
	}
	return addrs, nil
}

// pids are the worker's processes: its cgroup's, or else its process
// group's, or else its own.
func (i *Instance) pids() []int {
	pids := cgroupPIDs(i.Cgroup)
	if len(pids) == 0 {
		pids = pgrpPIDs("/proc", i.PGID)
	}
	if len(pids) == 0 {
		pids = []int{i.PID}
	}
	return pids
}

// ServerPID returns the pid of the worker's process that listens on
// TCP port: the server itself, where the command is a launcher (npm
// start, a shell script, a process manager) that started it as a child.
// shared reports that several of its processes hold the socket (a
// prefork server: a master and its children); pid is then the first.
// ok is false where that cannot be told (no /proc, a unix socket, the
// port not open yet).
func (i *Instance) ServerPID(port uint16) (pid int, shared, ok bool) {
	if runtime.GOOS != "linux" || port == 0 {
		return 0, false, false
	}
	byAddr, err := listenersTCP("/proc", i.pids())
	if err != nil {
		return 0, false, false
	}
	var holders []int
	for a, pids := range byAddr {
		if a.Port() == port {
			for _, p := range pids {
				if !slices.Contains(holders, p) {
					holders = append(holders, p)
				}
			}
		}
	}
	if len(holders) == 0 {
		return 0, false, false
	}
	slices.Sort(holders)
	return holders[0], len(holders) > 1, true
}

// BeyondLoopback reports whether a listening address can be reached
// from other machines: a wildcard (0.0.0.0, ::) or any address that is
// not a loopback one.
func BeyondLoopback(a netip.AddrPort) bool { return !a.Addr().Unmap().IsLoopback() }

// cgroupPIDs lists the processes of a cgroup v2 directory; none if dir
// is empty or cannot be read.
func cgroupPIDs(dir string) []int {
	if dir == "" {
		return nil
	}
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	if err != nil {
		return nil
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		if pid, err := strconv.Atoi(f); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

// pgrpPIDs lists the processes of group pgid, from the /proc at proc.
func pgrpPIDs(proc string, pgid int) []int {
	if pgid <= 0 {
		return nil
	}
	stats, _ := filepath.Glob(filepath.Join(proc, "[0-9]*", "stat"))
	var pids []int
	for _, f := range stats {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		// After the command: state ppid pgrp ...
		fields := strings.Fields(s[i+1:])
		if len(fields) < 3 || fields[2] != strconv.Itoa(pgid) {
			continue
		}
		if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(f))); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}
