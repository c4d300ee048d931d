package worker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
)

// reaperEnv marks a process started as a worker's reaper; its value is
// the pid of the supervisor that started it.
const reaperEnv = "_WORKERPOOL_REAPER_FOR"

// pidFD is the descriptor on which the reaper reports the worker's pid.
const pidFD = 3

// On Linux every worker runs under a reaper: this same executable,
// re-executed, leading the worker's process group. The parent-death
// signal reaches only a direct child, so without it a worker's own
// children would outlive a supervisor that is killed with SIGKILL. The
// reaper gets SIGTERM when the supervisor dies and then kills the whole
// group. It does nothing else: the supervisor signals the group directly.
func init() {
	if v := os.Getenv(reaperEnv); v != "" {
		os.Exit(runReaper(v))
	}
}

func runReaper(parent string) int {
	// The pid pipe is for the reaper alone; the worker must not inherit it.
	syscall.CloseOnExec(pidFD)
	ppid, _ := strconv.Atoi(parent)
	_ = os.Unsetenv(reaperEnv)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if len(os.Args) < 2 || os.Getppid() != ppid {
		return 1
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 127
	}
	if f := os.NewFile(pidFD, "pid"); f != nil {
		fmt.Fprintln(f, cmd.Process.Pid)
		_ = f.Close()
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case err := <-done:
			var exit *exec.ExitError
			if errors.As(err, &exit) {
				if ws, ok := exit.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
					return 128 + int(ws.Signal())
				}
				return exit.ExitCode()
			}
			return 0
		case <-sigs:
			// A SIGTERM while the supervisor lives is a graceful stop sent
			// to the whole group: the worker has it too, wait for it. Once
			// the supervisor is gone we have been reparented.
			if os.Getppid() != ppid {
				_ = syscall.Kill(0, syscall.SIGKILL)
			}
		}
	}
}
