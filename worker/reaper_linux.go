package worker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
)

// reaperEnv marks a process started as a worker's reaper; its value is
// the pid of the supervisor that started it.
const reaperEnv = "_WORKERPOOL_REAPER_FOR"

// reaperCgroupEnv names the cgroup that the reaper joins before it starts
// the worker; unset where cgroups are not used.
const reaperCgroupEnv = "_WORKERPOOL_REAPER_CGROUP"

// pidFD is the descriptor on which the reaper reports the worker's pid,
// followed by notInCgroup if it could not join the cgroup.
const pidFD = 3

const notInCgroup = "outside-cgroup"

// On Linux every worker runs under a reaper: this same executable,
// re-executed, leading the worker's process group. The parent-death
// signal reaches only a direct child, so without it a worker's own
// children would outlive a supervisor that is killed with SIGKILL. The
// reaper gets SIGTERM when the supervisor dies and then kills the
// worker's cgroup, if it has one, and its whole group. It does nothing
// else: the supervisor signals the group directly.
func init() {
	if v := os.Getenv(reaperEnv); v != "" {
		os.Exit(runReaper(v))
	}
}

func runReaper(parent string) int {
	// The pid pipe is for the reaper alone; the worker must not inherit it.
	syscall.CloseOnExec(pidFD)
	ppid, _ := strconv.Atoi(parent)
	cgroup := os.Getenv(reaperCgroupEnv)
	_ = os.Unsetenv(reaperEnv)
	_ = os.Unsetenv(reaperCgroupEnv)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM)
	if len(os.Args) < 2 || os.Getppid() != ppid {
		return 1
	}
	// The cgroup is joined before the worker starts, so that it and
	// everything it starts are born inside. Where that fails, the worker
	// runs in its process group only, and the pid line says so.
	outside := ""
	if cgroup != "" {
		if err := joinCgroup(cgroup); err != nil {
			fmt.Fprintln(os.Stderr, "the worker runs outside its cgroup: join:", err)
			cgroup, outside = "", " "+notInCgroup
		}
	}
	cmd := exec.Command(os.Args[1], os.Args[2:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 127
	}
	if f := os.NewFile(pidFD, "pid"); f != nil {
		fmt.Fprintf(f, "%d%s\n", cmd.Process.Pid, outside)
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
				if cgroup != "" {
					orphanedCgroup(cgroup)
				}
				_ = syscall.Kill(0, syscall.SIGKILL)
			}
		}
	}
}

// orphanedCgroup kills the worker's cgroup after the supervisor died, and
// removes it and, once the last is gone, the supervisor's tree. The
// reaper first moves itself back to the supervisor's cgroup, so as not
// to be killed before it has removed them; where it cannot, it dies with
// the cgroup and the next supervisor removes what is left.
func orphanedCgroup(cgroup string) {
	tree := filepath.Dir(cgroup)
	if joinCgroup(filepath.Dir(tree)) != nil {
		killCgroup(cgroup)
		return
	}
	discard(procGroup{cgroup: cgroup})
	_ = syscall.Rmdir(tree) // fails while other workers' cgroups remain
}
