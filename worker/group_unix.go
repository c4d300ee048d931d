//go:build unix

package worker

import (
	"errors"
	"os"
	"syscall"
)

// signalPgrp sends sig to process group pgid. A group that is already
// empty is not an error.
func signalPgrp(pgid int, sig syscall.Signal) {
	if err := syscall.Kill(-pgid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		// Fall back to the leader alone, e.g. if it left its group.
		_ = syscall.Kill(pgid, sig)
	}
}

// pgrpAlive reports whether any process of group pgid remains. The group
// id cannot be reused while the group has members, so this never
// mistakes another process for ours.
func pgrpAlive(pgid int) bool {
	return syscall.Kill(-pgid, 0) == nil
}

// processAlive reports whether a process with this pid exists, also one
// that we may not signal.
func processAlive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// ownedByUs reports whether a file, as Lstat describes it, belongs to
// the user we run as.
func ownedByUs(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
