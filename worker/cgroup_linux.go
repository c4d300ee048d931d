package worker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// A process group holds a worker's children only while they stay in it:
// one that starts its own session (setsid; Node's `detached: true`)
// leaves it. A cgroup holds every descendant, whatever it does, and
// cgroup.kill kills them all at once. Where cgroup v2 is writable (a
// container run as root, a systemd unit with Delegate=yes) each worker
// process therefore runs in a cgroup of its own:
//
//	<our cgroup>/workerpool-<pid>-<n>/      one per supervisor (cgroupTree)
//	<our cgroup>/workerpool-<pid>-<n>/w1-1  one per process (its reaper joins it)
//
// No controller is enabled in these cgroups, so the rule that a cgroup
// with controllers for its children holds no processes of its own does
// not apply, and we need not move ourselves into a leaf.

// cgroupTree is the cgroup v2 directory that holds one supervisor's
// worker cgroups.
type cgroupTree struct {
	dir string
}

// cgroupTrees numbers the trees of this process.
var cgroupTrees atomic.Uint64

// newCgroupTree makes a tree inside our own cgroup, after removing the
// trees that supervisors which are gone left there. The error says why
// cgroups cannot be used here.
func newCgroupTree(log *zap.Logger) (*cgroupTree, error) {
	own, err := ownCgroup()
	if err != nil {
		return nil, err
	}
	for _, dir := range staleDirs(own) {
		removeCgroupTree(dir, log)
	}
	// The reaper moves itself from our cgroup into its own: that takes
	// write access to the cgroup.procs of both and of their common
	// ancestor, which is ours.
	if err := unix.Access(filepath.Join(own, "cgroup.procs"), unix.W_OK); err != nil {
		return nil, fmt.Errorf("%s/cgroup.procs: %w", own, err)
	}
	dir := filepath.Join(own, ownedName()+strconv.FormatUint(cgroupTrees.Add(1), 10))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create a cgroup: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "cgroup.kill")); err != nil {
		_ = os.Remove(dir)
		return nil, errors.New("no cgroup.kill: the kernel is older than 5.14")
	}
	return &cgroupTree{dir: dir}, nil
}

// ownCgroup finds the directory of our own cgroup v2: our path in the
// unified hierarchy (/proc/self/cgroup) below where it is mounted.
func ownCgroup() (string, error) {
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		return "", err
	}
	var path string
	for line := range strings.Lines(string(b)) {
		if p, ok := strings.CutPrefix(strings.TrimSpace(line), "0::"); ok {
			path = p
		}
	}
	if path == "" {
		return "", errors.New("not in a cgroup v2 hierarchy")
	}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		// id parent major:minor root mountpoint options... - fstype source super-options
		pre, post, ok := strings.Cut(sc.Text(), " - ")
		fields := strings.Fields(pre)
		if !ok || len(fields) < 5 || !strings.HasPrefix(post, "cgroup2 ") {
			continue
		}
		root, mnt := fields[3], fields[4]
		rel, ok := strings.CutPrefix(path, root)
		if !ok || strings.ContainsRune(mnt, '\\') {
			continue // another part of the hierarchy, or an escaped name
		}
		return filepath.Join(mnt, rel), nil
	}
	return "", errors.New("cgroup2 is not mounted")
}

// create makes the cgroup for one process.
func (t *cgroupTree) create(name string) (string, error) {
	dir := filepath.Join(t.dir, name)
	if err := os.Mkdir(dir, 0o755); err != nil {
		return "", fmt.Errorf("create a cgroup: %w", err)
	}
	return dir, nil
}

// remove removes the tree; its worker cgroups are gone by now.
func (t *cgroupTree) remove(log *zap.Logger) {
	if err := syscall.Rmdir(t.dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		log.Warn("cannot remove the supervisor's cgroup", zap.String("cgroup", t.dir), zap.Error(err))
	}
}

// removeCgroupTree kills what a supervisor that is gone left in its tree
// and removes it.
func removeCgroupTree(dir string, log *zap.Logger) {
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if e.IsDir() {
			discard(procGroup{cgroup: filepath.Join(dir, e.Name())})
		}
	}
	if err := syscall.Rmdir(dir); err != nil {
		if errors.Is(err, syscall.ENOENT) {
			return // another supervisor removed it first
		}
		log.Warn("cannot remove the cgroup of a supervisor that is gone", zap.String("cgroup", dir), zap.Error(err))
		return
	}
	log.Info("removed the cgroup of a supervisor that is gone", zap.String("cgroup", dir))
}

// killCgroup kills every process in cgroup dir and its descendants; the
// kernel makes sure that none escapes by forking meanwhile.
func killCgroup(dir string) {
	_ = os.WriteFile(filepath.Join(dir, "cgroup.kill"), []byte("1"), 0)
}

// signalCgroup sends sig to every process in cgroup dir. A process may
// exit between the read and the signal; its pid is not reused that soon.
func signalCgroup(dir string, sig syscall.Signal) {
	b, _ := os.ReadFile(filepath.Join(dir, "cgroup.procs"))
	for line := range strings.Lines(string(b)) {
		if pid, err := strconv.Atoi(strings.TrimSpace(line)); err == nil {
			_ = syscall.Kill(pid, sig)
		}
	}
}

// cgroupPopulated reports whether a live process remains in cgroup dir
// or below it; a cgroup that is gone holds none.
func cgroupPopulated(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "cgroup.events"))
	return err == nil && bytes.Contains(b, []byte("populated 1"))
}

// joinCgroup moves the calling process, all its threads, into cgroup dir.
func joinCgroup(dir string) error {
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte("0"), 0)
}
