//go:build unix

package worker

import (
	"errors"
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
