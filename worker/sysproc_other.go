//go:build unix && !linux

package worker

import (
	"context"
	"os/exec"
	"syscall"

	"go.uber.org/zap"
)

// procGroup holds one worker's processes: its process group. A process
// that starts a new session or group leaves it, and nothing here kills
// the group when the supervisor is killed with SIGKILL: there is no
// parent-death signal outside Linux.
type procGroup struct {
	pgid int
}

func (g procGroup) interrupt()        { signalPgrp(g.pgid, syscall.SIGTERM) }
func (g procGroup) kill()             { signalPgrp(g.pgid, syscall.SIGKILL) }
func (g procGroup) alive() bool       { return g.pgid > 0 && pgrpAlive(g.pgid) }
func (g procGroup) free()             {}
func (g procGroup) cgroupDir() string { return "" }

// launcher starts the processes of one supervisor.
type launcher struct{}

func newLauncher(*zap.Logger) *launcher { return &launcher{} }

// close releases what the launcher holds; nothing here.
func (*launcher) close() {}

// start starts cmd in a process group of its own, so one signal reaches
// its children too, and returns its pid and group. The name is for
// platforms that make a container per process.
func (*launcher) start(_ context.Context, cmd *exec.Cmd, _ string) (int, procGroup, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return 0, procGroup{}, err
	}
	return cmd.Process.Pid, procGroup{pgid: cmd.Process.Pid}, nil
}
