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

	"go.uber.org/zap"
)

// procGroup holds one worker's processes: the process group that its
// reaper leads.
type procGroup struct {
	pgid int
}

func (g procGroup) interrupt()  { signalPgrp(g.pgid, syscall.SIGTERM) }
func (g procGroup) kill()       { signalPgrp(g.pgid, syscall.SIGKILL) }
func (g procGroup) alive() bool { return g.pgid > 0 && pgrpAlive(g.pgid) }
func (g procGroup) free()       {}

// launcher starts the processes of one supervisor, each under a reaper
// (see reaper_linux.go).
type launcher struct{}

func newLauncher(*zap.Logger) *launcher { return &launcher{} }

// close releases what the launcher holds; nothing here.
func (*launcher) close() {}

// start starts cmd under a reaper that leads a new process group and
// gets SIGTERM if we die; the reaper starts the worker with SIGKILL as
// its own parent-death signal. It returns the worker's pid and its
// group; cmd.Process is the reaper, whose pid is the group id. If our
// own executable cannot be found, the worker runs directly, without a
// reaper. If start fails after the process started, cmd.Process is set
// and the caller must Wait for it; the group it returns is to discard.
func (*launcher) start(cmd *exec.Cmd) (int, procGroup, error) {
	self, err := os.Executable()
	if err != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return 0, procGroup{}, err
		}
		return cmd.Process.Pid, procGroup{pgid: cmd.Process.Pid}, nil
	}
	cmd.Args = append([]string{self, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = self
	cmd.Env = append(cmd.Env, reaperEnv+"="+strconv.Itoa(os.Getpid()))
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, procGroup{}, err
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, procGroup{}, err
	}
	g := procGroup{pgid: cmd.Process.Pid}
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	line, _ := bufio.NewReader(r).ReadString('\n')
	pid, err := strconv.Atoi(strings.TrimSpace(line))
	if err != nil {
		// The reaper could not run the program and said why on stderr.
		return 0, g, errors.New("the program did not start (its error is logged on stderr)")
	}
	return pid, g, nil
}
