//go:build unix && !linux

package worker

import "syscall"

// sysProcAttr puts each worker in its own process group, so one signal
// reaches its children too. Outside Linux there is no parent-death
// signal: a worker outlives a Caddy that is killed with SIGKILL.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
