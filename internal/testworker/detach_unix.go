//go:build unix

package testworker

import "syscall"

// detached starts a process in a session of its own, outside its
// parent's process group.
func detached() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setsid: true} }
