package worker

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Instance is one process started for a worker slot. A slot that restarts
// its worker gets a new Instance with a new pid and address.
type Instance struct {
	// Worker is the slot's id, 1..Count, also given to the process as
	// WORKER_ID.
	Worker int
	// PID is the worker's process id.
	PID int
	// PGID is the id of the process group that holds the worker and its
	// children. On Linux its leader is the worker's reaper, not the
	// worker itself. On Windows it is the worker's pid, the id of the
	// console process group it leads.
	PGID int
	// Cgroup is the cgroup v2 directory that holds the worker and every
	// process it starts, also those that leave its process group; empty
	// where there is none (outside Linux, or where cgroup v2 is not
	// writable).
	Cgroup string
	// Network is "tcp" or "unix"; Address is where the worker was told to
	// listen (host:port or a socket path).
	Network, Address string
	// Started is when the process was started.
	Started time.Time

	cmd     *exec.Cmd
	group   procGroup
	exited  chan struct{}
	err     error // set before exited is closed
	replace chan *replaceRequest
}

// Exited is closed when the process has exited and been reaped.
func (i *Instance) Exited() <-chan struct{} { return i.exited }

// Err is the exit status; valid after Exited is closed.
func (i *Instance) Err() error {
	<-i.exited
	return i.err
}

// terminate stops the instance's processes gracefully: a stop signal
// (SIGTERM, or CTRL_BREAK on Windows) to all of them, then a kill for
// whatever is left after timeout. It returns when the leader has been
// reaped and the group is empty, or after the kill.
func (i *Instance) terminate(timeout time.Duration) {
	i.group.interrupt()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	select {
	case <-i.exited:
	case <-deadline.C:
		i.group.kill()
		<-i.exited
		awaitGone(i.group, time.Second)
		return
	}
	// The leader is gone; its children may still be finishing. Nothing
	// notifies us about processes that are not our children, so poll for
	// the group to empty.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for i.group.alive() {
		select {
		case <-tick.C:
		case <-deadline.C:
			i.group.kill()
			awaitGone(i.group, time.Second)
			return
		}
	}
}

// discard kills whatever is left of g, waits briefly for it to go, and
// frees what held it (a cgroup, a job object).
func discard(g procGroup) {
	g.kill()
	awaitGone(g, time.Second)
	g.free()
}

// awaitGone waits, at most d, for g's processes to die after a kill: the
// kill is delivered at once, the exits a moment later.
func awaitGone(g procGroup, d time.Duration) {
	for end := time.Now().Add(d); g.alive() && time.Now().Before(end); {
		time.Sleep(5 * time.Millisecond) // nothing notifies us; poll
	}
}

// spawn starts one process for slot id.
func (s *Supervisor) spawn(id int) (*Instance, error) {
	inst := &Instance{Worker: id, Network: s.spec.Listen, exited: make(chan struct{}), replace: make(chan *replaceRequest)}
	env := append(os.Environ(), s.env...)
	env = append(env, "WORKER_ID="+strconv.Itoa(id), "WORKER_COUNT="+strconv.Itoa(s.spec.Count))
	// A replacement runs beside the process it replaces: each process
	// gets a socket and a cgroup of its own.
	seq := s.spawned.Add(1)
	switch s.spec.Listen {
	case ListenUnix:
		inst.Address = filepath.Join(s.sockDir, "worker-"+strconv.Itoa(id)+"-"+strconv.FormatUint(seq, 10)+".sock")
		if err := os.Remove(inst.Address); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove stale socket: %w", err)
		}
		env = append(env, "SOCKET_PATH="+inst.Address)
	default:
		port, err := freePort()
		if err != nil {
			return nil, err
		}
		inst.Address = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		env = append(env, "PORT="+strconv.Itoa(port), "HOST=127.0.0.1")
	}

	cmd := exec.Command(s.path, s.spec.Args...)
	cmd.Dir = s.spec.Dir
	cmd.Env = env
	// A grandchild that keeps our output pipes open must not keep Wait
	// from returning after the worker itself has exited.
	cmd.WaitDelay = time.Second
	stdout := newLineLogger(zapcore.InfoLevel)
	stderr := newLineLogger(zapcore.WarnLevel)
	cmd.Stdout, cmd.Stderr = stdout, stderr
	base := s.log.With(zap.Int("worker", id))
	pid, group, err := s.launcher.start(s.stopCtx, cmd, "w"+strconv.Itoa(id)+"-"+strconv.FormatUint(seq, 10))
	if err != nil {
		// Let whatever the failed start printed through, without a pid.
		stdout.setLogger(base.With(zap.String("stream", "stdout")))
		stderr.setLogger(base.With(zap.String("stream", "stderr")))
		group.kill() // a reaper that started must die for Wait to return
		if cmd.Process != nil {
			_ = cmd.Wait()
		}
		discard(group)
		return nil, fmt.Errorf("worker %d: start %q: %w", id, s.path, err)
	}
	inst.cmd = cmd
	inst.group = group
	inst.PID = pid
	inst.PGID, inst.Cgroup = group.pgid, group.cgroupDir()
	inst.Started = time.Now()
	withPID := base.With(zap.Int("pid", inst.PID))
	stdout.setLogger(withPID.With(zap.String("stream", "stdout")))
	stderr.setLogger(withPID.With(zap.String("stream", "stderr")))

	go func() {
		inst.err = cmd.Wait()
		stdout.flush()
		stderr.flush()
		close(inst.exited)
	}()
	return inst, nil
}

// freePort asks the kernel for a loopback port nobody listens on. The
// port is free when we return; the worker binds it a moment later.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	return port, nil
}
