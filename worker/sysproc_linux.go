package worker

import "syscall"

// sysProcAttr puts each worker in its own process group, so one signal
// reaches its children too, and asks the kernel to kill it if we die
// without stopping it (parent-death signal).
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
