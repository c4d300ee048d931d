package worker

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.uber.org/zap"
)

// Directories that a supervisor makes for itself (its socket directory,
// its cgroup tree) are named workerpool-<pid>-<suffix>. A supervisor that
// is killed with SIGKILL cannot remove them; the pid lets a later one
// tell them from those of a live process and remove them.
//
// The pid is read in our own pid namespace: two supervisors in different
// pid namespaces that share a temporary directory should each be given
// a SocketDir of their own.
const ownedPrefix = "workerpool-"

// ownedName is the start of the name of a directory this process makes.
func ownedName() string {
	return ownedPrefix + strconv.Itoa(os.Getpid()) + "-"
}

// ownerPID reads the pid from a name that ownedName began.
func ownerPID(name string) (int, bool) {
	rest, ok := strings.CutPrefix(name, ownedPrefix)
	if !ok {
		return 0, false
	}
	digits, suffix, ok := strings.Cut(rest, "-")
	if !ok || suffix == "" || digits == "" || strings.Trim(digits, "0123456789") != "" {
		return 0, false
	}
	pid, err := strconv.Atoi(digits)
	return pid, err == nil && pid > 0
}

// staleDirs lists the directories in parent that a process of ours left
// behind: named by ownedName for a pid that no longer runs, and owned by
// the user we run as.
func staleDirs(parent string) []string {
	entries, err := os.ReadDir(parent)
	if err != nil {
		return nil
	}
	var stale []string
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		pid, ok := ownerPID(e.Name())
		if !ok || processAlive(pid) {
			continue
		}
		if fi, err := e.Info(); err != nil || !ownedByUs(fi) {
			continue
		}
		stale = append(stale, filepath.Join(parent, e.Name()))
	}
	return stale
}

// removeStaleSocketDirs removes the socket directories that supervisors
// which are gone left in the temporary directory.
func removeStaleSocketDirs(log *zap.Logger) {
	for _, dir := range staleDirs(os.TempDir()) {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("cannot remove the socket directory of a supervisor that is gone", zap.String("dir", dir), zap.Error(err))
			continue
		}
		log.Info("removed the socket directory of a supervisor that is gone", zap.String("dir", dir))
	}
}
