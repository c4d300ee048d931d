//go:build unix && !linux

package worker

import (
	"os/exec"
	"syscall"
)

// start starts cmd in its own process group, so one signal reaches its
// children too. Outside Linux there is no parent-death signal: a worker
// outlives a supervisor that is killed with SIGKILL.
func start(cmd *exec.Cmd) (int, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, err
	}
	return cmd.Process.Pid, nil
}
