package worker

import (
	"bufio"
	"context"
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
// reaper leads and, where cgroup v2 is writable, a cgroup of its own.
type procGroup struct {
	pgid   int
	cgroup string // empty: the process group only
}

// interrupt asks every process to stop: each one in the cgroup, where
// there is one, else the process group. Each gets one SIGTERM, so that a
// handler that runs once per signal runs once.
func (g procGroup) interrupt() {
	if g.cgroup != "" {
		signalCgroup(g.cgroup, syscall.SIGTERM)
		return
	}
	signalPgrp(g.pgid, syscall.SIGTERM)
}

// kill kills the group first, then the cgroup: a reaper that is still
// joining its cgroup dies before it can start a process there that the
// cgroup.kill would miss.
func (g procGroup) kill() {
	if g.pgid > 0 {
		signalPgrp(g.pgid, syscall.SIGKILL)
	}
	if g.cgroup != "" {
		killCgroup(g.cgroup)
	}
}

func (g procGroup) alive() bool {
	if g.cgroup != "" {
		return cgroupPopulated(g.cgroup)
	}
	return g.pgid > 0 && pgrpAlive(g.pgid)
}

// free removes the cgroup, which must hold no process by now.
func (g procGroup) free() {
	if g.cgroup != "" {
		_ = syscall.Rmdir(g.cgroup)
	}
}

func (g procGroup) cgroupDir() string { return g.cgroup }

// launcher starts the processes of one supervisor, each under a reaper
// (see reaper_linux.go) and, where it can, in a cgroup of its own.
type launcher struct {
	log     *zap.Logger
	cgroups *cgroupTree // nil: process groups only
}

func newLauncher(log *zap.Logger) *launcher {
	t, err := newCgroupTree(log)
	if err != nil {
		log.Info("no cgroup for the workers: a process that a worker starts in a session of its own outlives its stop",
			zap.String("reason", err.Error()))
	}
	return &launcher{log: log, cgroups: t}
}

// close removes the cgroup tree, once every worker's cgroup is gone.
func (l *launcher) close() {
	if l.cgroups != nil {
		l.cgroups.remove(l.log)
	}
}

// start starts cmd under a reaper that leads a new process group and
// gets SIGTERM if we die; the reaper joins the cgroup called name (if we
// have cgroups) before it starts the worker, with SIGKILL as the
// worker's own parent-death signal. It returns the worker's pid and its
// group; cmd.Process is the reaper, whose pid is the group id. If our
// own executable cannot be found, the worker runs directly, without a
// reaper or cgroup. Stop (ctx done) ends the wait for the reaper's
// report. If start fails after the process started, cmd.Process is set
// and the caller must Wait for it; the group it returns is to discard.
func (l *launcher) start(ctx context.Context, cmd *exec.Cmd, name string) (int, procGroup, error) {
	self, err := os.Executable()
	if err != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		if err := cmd.Start(); err != nil {
			return 0, procGroup{}, err
		}
		return cmd.Process.Pid, procGroup{pgid: cmd.Process.Pid}, nil
	}
	var g procGroup
	if l.cgroups != nil {
		if g.cgroup, err = l.cgroups.create(name); err != nil {
			return 0, g, err
		}
	}
	cmd.Args = append([]string{self, cmd.Path}, cmd.Args[1:]...)
	cmd.Path = self
	cmd.Env = append(cmd.Env, reaperEnv+"="+strconv.Itoa(os.Getpid()))
	if g.cgroup != "" {
		cmd.Env = append(cmd.Env, reaperCgroupEnv+"="+g.cgroup)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	r, w, err := os.Pipe()
	if err != nil {
		return 0, g, err
	}
	defer r.Close()
	cmd.ExtraFiles = []*os.File{w}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return 0, g, err
	}
	g.pgid = cmd.Process.Pid
	_ = r.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer context.AfterFunc(ctx, func() { _ = r.SetReadDeadline(time.Now()) })()
	line, err := bufio.NewReader(r).ReadString('\n')
	if ctx.Err() != nil {
		return 0, g, errors.New("stopped while starting")
	}
	report, outside := strings.CutSuffix(strings.TrimSpace(line), " "+notInCgroup)
	pid, perr := strconv.Atoi(report)
	if perr != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return 0, g, errors.New("the reaper did not report within 10s")
		}
		// The reaper could not run the program and said why on stderr.
		return 0, g, errors.New("the program did not start (its error is logged on stderr)")
	}
	if outside {
		g.free()
		g.cgroup = ""
	}
	return pid, g, nil
}
