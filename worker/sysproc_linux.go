package worker

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// start starts cmd under a reaper (see reaper_linux.go) that leads a new
// process group and gets SIGTERM if we die; the reaper starts the worker
// with SIGKILL as its own parent-death signal. It returns the worker's
// pid; cmd.Process is the reaper, whose pid is the group id. If our own
// executable cannot be found, the worker runs directly, without a reaper.
// If it fails after the process started, cmd.Process is set and the
// caller must Wait for it.
func start(cmd *exec.Cmd) (int, error) {
	self, err := os.Executable()
	if err != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return 0, err
		}
		return cmd.Process.Pid, nil
	}
	cmd.Args = append([]string{self, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = self
	cmd.Env = append(cmd.Env, reaperEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, err
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, err
	}
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(r).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		// The reaper could not run the program and said why on stderr;
		// the caller reaps it.
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		return 0, errors.New("the program did not start (its error is logged on stderr)")
	}
	return pid, nil
}
