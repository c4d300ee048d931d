package worker

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/windows"
)

// procGroup holds one worker's processes: a job object, which every
// process the worker starts joins too and which is killed when its last
// handle closes, also when the supervisor dies; and the console process
// group that the worker leads, for the stop signal.
type procGroup struct {
	pgid int // the worker's pid
	job  windows.Handle
}

// interrupt sends CTRL_BREAK to the worker's console process group
// (Node's 'SIGBREAK', Go's os.Interrupt). That needs a console shared
// with ours; where there is none (Caddy runs as a service) nothing can
// ask the worker to stop, and its job is terminated at once.
func (g procGroup) interrupt() {
	if g.pgid <= 0 || windows.GenerateConsoleCtrlEvent(windows.CTRL_BREAK_EVENT, uint32(g.pgid)) != nil {
		g.kill()
	}
}

func (g procGroup) kill() {
	if g.job != 0 {
		_ = windows.TerminateJobObject(g.job, 1)
	}
}

// jobAccounting is JOBOBJECT_BASIC_ACCOUNTING_INFORMATION, which
// x/sys/windows does not define.
type jobAccounting struct {
	TotalUserTime             int64
	TotalKernelTime           int64
	ThisPeriodTotalUserTime   int64
	ThisPeriodTotalKernelTime int64
	TotalPageFaultCount       uint32
	TotalProcesses            uint32
	ActiveProcesses           uint32
	TotalTerminatedProcesses  uint32
}

func (g procGroup) alive() bool {
	if g.job == 0 {
		return false
	}
	var acct jobAccounting
	err := windows.QueryInformationJobObject(g.job, windows.JobObjectBasicAccountingInformation,
		uintptr(unsafe.Pointer(&acct)), uint32(unsafe.Sizeof(acct)), nil)
	return err == nil && acct.ActiveProcesses > 0
}

// free closes the job, which kills whatever it still holds.
func (g procGroup) free() {
	if g.job != 0 {
		_ = windows.CloseHandle(g.job)
	}
}

func (g procGroup) cgroupDir() string { return "" }

// launcher starts the processes of one supervisor.
type launcher struct{}

func newLauncher(*zap.Logger) *launcher { return &launcher{} }

// close releases what the launcher holds; nothing here.
func (*launcher) close() {}

// start starts cmd suspended in a new console process group, puts it in
// a new job object that kills its processes when closed, and lets it
// run: it cannot start a process before it is in the job. If start
// fails after the process started, cmd.Process is set and the caller
// must Wait for it; the group it returns is to discard.
func (*launcher) start(_ context.Context, cmd *exec.Cmd, _ string) (int, procGroup, error) {
	job, err := windows.CreateJobObject(nil, nil)
	if err != nil {
		return 0, procGroup{}, fmt.Errorf("create a job object: %w", err)
	}
	g := procGroup{job: job}
	limits := windows.JOBOBJECT_EXTENDED_LIMIT_INFORMATION{
		BasicLimitInformation: windows.JOBOBJECT_BASIC_LIMIT_INFORMATION{
			LimitFlags: windows.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
		},
	}
	if _, err := windows.SetInformationJobObject(job, windows.JobObjectExtendedLimitInformation,
		uintptr(unsafe.Pointer(&limits)), uint32(unsafe.Sizeof(limits))); err != nil {
		return 0, g, fmt.Errorf("set up a job object: %w", err)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		CreationFlags: windows.CREATE_NEW_PROCESS_GROUP | windows.CREATE_SUSPENDED,
	}
	if err := cmd.Start(); err != nil {
		return 0, g, err
	}
	pid := cmd.Process.Pid
	g.pgid = pid
	if err := assignJob(job, pid); err != nil {
		_ = cmd.Process.Kill()
		return 0, g, fmt.Errorf("put the process in its job object: %w", err)
	}
	if err := resumeProcess(pid); err != nil {
		return 0, g, fmt.Errorf("resume the process: %w", err)
	}
	return pid, g, nil
}

// assignJob puts process pid in job. Our os.Process holds a handle to
// it, so the pid is not reused meanwhile.
func assignJob(job windows.Handle, pid int) error {
	h, err := windows.OpenProcess(windows.PROCESS_SET_QUOTA|windows.PROCESS_TERMINATE, false, uint32(pid))
	if err != nil {
		return err
	}
	defer windows.CloseHandle(h)
	return windows.AssignProcessToJobObject(job, h)
}

// resumeProcess resumes the threads of process pid, which was created
// suspended: its main thread, the only one it has.
func resumeProcess(pid int) error {
	snap, err := windows.CreateToolhelp32Snapshot(windows.TH32CS_SNAPTHREAD, 0)
	if err != nil {
		return err
	}
	defer windows.CloseHandle(snap)
	entry := windows.ThreadEntry32{Size: uint32(unsafe.Sizeof(windows.ThreadEntry32{}))}
	resumed := false
	for err = windows.Thread32First(snap, &entry); err == nil; err = windows.Thread32Next(snap, &entry) {
		if entry.OwnerProcessID != uint32(pid) {
			continue
		}
		th, err := windows.OpenThread(windows.THREAD_SUSPEND_RESUME, false, entry.ThreadID)
		if err != nil {
			return err
		}
		_, err = windows.ResumeThread(th)
		_ = windows.CloseHandle(th)
		if err != nil {
			return err
		}
		resumed = true
	}
	if !resumed {
		return errors.New("no thread found")
	}
	return nil
}
