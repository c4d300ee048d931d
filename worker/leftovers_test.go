//go:build unix

package worker_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Tests that nothing a supervisor started or made outlives it: no
// process, also none that left its worker's process group, no cgroup, no
// socket directory.

// superviseEnv makes the test binary a supervisor of one worker in the
// mode it names (see superviseIfAsked).
const superviseEnv = "WORKERPOOL_TEST_SUPERVISE"

// superviseIfAsked runs the test binary as a supervisor, if superviseEnv
// is set, until it is killed: it starts one worker (listening as
// WORKERPOOL_TEST_LISTEN says) and prints the worker's Instance as JSON.
func superviseIfAsked() {
	mode := os.Getenv(superviseEnv)
	if mode == "" {
		return
	}
	started := make(chan *worker.Instance, 1)
	s, err := worker.New(worker.Spec{
		Command: testworker.Command(), Env: testworker.Env(mode), Count: 1,
		Listen: os.Getenv("WORKERPOOL_TEST_LISTEN"),
	}, worker.Hooks{Started: func(i *worker.Instance) { started <- i }}, nil)
	if err != nil {
		panic(err)
	}
	s.Start()
	_ = json.NewEncoder(os.Stdout).Encode(<-started)
	select {} // until killed
}

// startSupervisor runs the test binary as a supervisor of one worker in
// mode (see superviseIfAsked), with env added to ours, and returns it and
// its worker.
func startSupervisor(t *testing.T, mode, listen string, env ...string) (*exec.Cmd, *worker.Instance) {
	t.Helper()
	cmd := exec.Command(testworker.Command())
	cmd.Env = append(os.Environ(), superviseEnv+"="+mode, "WORKERPOOL_TEST_LISTEN="+listen)
	cmd.Env = append(cmd.Env, env...)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	var inst worker.Instance
	if err := json.NewDecoder(bufio.NewReader(out)).Decode(&inst); err != nil {
		t.Fatalf("the supervisor did not report its worker: %v", err)
	}
	return cmd, &inst
}

// killSupervisor kills a supervisor started by startSupervisor with
// SIGKILL, as an OOM killer or a container runtime would.
func killSupervisor(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
}

// detachedChild has the worker of a test start a child in a session of
// its own, and returns the environment for it and a function that waits
// for the child's pid. The child is killed when the test ends, in case
// it survives.
func detachedChild(t *testing.T) (env string, pid func() int) {
	file := filepath.Join(t.TempDir(), "child.pid")
	return "CHILD_PID_FILE=" + file, func() int {
		t.Helper()
		child := testworker.PIDFile(t, file)
		t.Cleanup(func() { _ = testworker.Kill(child) })
		return child
	}
}

func gone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
}

// noCgroupReason says why a supervisor started no cgroup, from its log.
func noCgroupReason(logs *observer.ObservedLogs) string {
	for _, e := range logs.All() {
		if strings.HasPrefix(e.Message, "no cgroup for the workers") {
			return e.Message + ": " + e.ContextMap()["reason"].(string)
		}
	}
	return "no cgroup for the workers on " + runtime.GOOS
}

func TestStopKillsWhatLeftTheProcessGroup(t *testing.T) {
	env, childPID := detachedChild(t)
	k, v, _ := strings.Cut(env, "=")
	spec := worker.Spec{Command: testworker.Command(), Env: testworker.Env("detached"), Count: 1}
	spec.Env[k] = v
	core, logs := observer.New(zap.InfoLevel)
	rec := &recorder{}
	s, err := worker.New(spec, rec.hooks(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	child := childPID()
	inst := rec.current()[1]
	if inst.Cgroup == "" {
		t.Skip(noCgroupReason(logs) + "; a process that leaves its process group survives Stop")
	}
	if g := testworker.PGID(child); g == inst.PGID {
		t.Fatalf("the child %d is in the worker's group %d: it should have left it", child, g)
	}
	s.Stop()
	if testworker.Alive(child) {
		t.Fatalf("the worker's child %d, in a session of its own, survived Stop", child)
	}
	for _, dir := range []string{inst.Cgroup, filepath.Dir(inst.Cgroup)} {
		if !gone(dir) {
			t.Errorf("cgroup %s left behind after Stop", dir)
		}
	}
}

// supervisedDetachedChild runs a supervisor process whose worker starts
// a detached child, and returns them. It skips the test where no cgroup
// holds that child.
func supervisedDetachedChild(t *testing.T) (sup *exec.Cmd, inst *worker.Instance, child int) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("cgroups are Linux's: elsewhere a worker's detached child outlives a supervisor killed with SIGKILL")
	}
	env, childPID := detachedChild(t)
	sup, inst = startSupervisor(t, "detached", worker.ListenTCP, env)
	child = childPID()
	if inst.Cgroup == "" {
		t.Skip("no writable cgroup v2 here: a worker's detached child outlives a supervisor killed with SIGKILL")
	}
	return sup, inst, child
}

func TestKilledSupervisorLeavesNoProcess(t *testing.T) {
	sup, inst, child := supervisedDetachedChild(t)
	killSupervisor(t, sup)
	testworker.Eventually(t, 5*time.Second, "the worker, its reaper and its detached child gone", func() bool {
		return !testworker.Alive(inst.PID) && !testworker.Alive(inst.PGID) && !testworker.Alive(child)
	})
	testworker.Eventually(t, 5*time.Second, "the cgroups removed by the reaper", func() bool {
		return gone(inst.Cgroup) && gone(filepath.Dir(inst.Cgroup))
	})
}

func TestNextStartCleansCgroupOfKilledSupervisorAndReaper(t *testing.T) {
	sup, inst, child := supervisedDetachedChild(t)
	// Kill the reaper too, so that nobody is left to kill the cgroup:
	// the worker dies with its reaper, its detached child stays.
	if err := testworker.Kill(inst.PGID); err != nil {
		t.Fatal(err)
	}
	killSupervisor(t, sup)
	testworker.Eventually(t, 5*time.Second, "the worker gone", func() bool { return !testworker.Alive(inst.PID) })
	if !testworker.Alive(child) || gone(inst.Cgroup) {
		t.Fatal("the detached child and its cgroup should be left behind here")
	}

	_, rec := start(t, worker.Spec{Command: testworker.Command(), Env: testworker.Env("serve"), Count: 1})
	testworker.Eventually(t, 10*time.Second, "the next supervisor's worker", func() bool { return rec.startedCount() == 1 })
	if testworker.Alive(child) {
		t.Errorf("the next supervisor left the detached child %d of a killed one alive", child)
	}
	if !gone(filepath.Dir(inst.Cgroup)) {
		t.Errorf("the next supervisor left the cgroup %s of a killed one", filepath.Dir(inst.Cgroup))
	}
}

func TestNextStartRemovesStaleSocketDirs(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	sup, inst := startSupervisor(t, "serve", worker.ListenUnix)
	killed := filepath.Dir(inst.Address)
	killSupervisor(t, sup)
	if gone(killed) {
		t.Fatalf("the socket directory %s of a supervisor killed with SIGKILL is gone: nothing to clean", killed)
	}

	const deadPID = 1<<22 + 1 // above any pid_max
	keep := map[string]string{
		"workerpool-" + strconv.Itoa(os.Getpid()) + "-1": "its owner runs",
		"workerpool-bench-1":                             "not named by a supervisor",
		"workerpool-123456789":                           "named as before the owner's pid was in the name",
	}
	remove := []string{killed, filepath.Join(tmp, "workerpool-"+strconv.Itoa(deadPID)+"-1")}
	if os.Getuid() == 0 {
		keep["workerpool-"+strconv.Itoa(deadPID)+"-2"] = "another user's"
	}
	for name, why := range keep {
		dir := filepath.Join(tmp, name)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if why == "another user's" {
			if err := os.Chown(dir, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.Mkdir(remove[1], 0o700); err != nil {
		t.Fatal(err)
	}

	s, err := worker.New(worker.Spec{Command: testworker.Command(), Listen: worker.ListenUnix}, worker.Hooks{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	for _, dir := range remove {
		if !gone(dir) {
			t.Errorf("stale socket directory %s was not removed", dir)
		}
	}
	for name, why := range keep {
		if gone(filepath.Join(tmp, name)) {
			t.Errorf("%s was removed, but it is %s", name, why)
		}
	}
}

func TestStopWhileStarting(t *testing.T) {
	// Workers that never listen, each marked by an argument of its own.
	mark := "starting-" + strconv.Itoa(os.Getpid())
	s, err := worker.New(worker.Spec{
		Command: testworker.Command(), Args: []string{mark}, Env: testworker.Env("sleep"),
		Count: 4, StopTimeout: time.Minute,
	}, worker.Hooks{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	began := time.Now()
	s.Stop()
	// A stop that waited for StopTimeout would take a minute.
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Stop right after Start took %v", took)
	}
	if pids := testworker.WithArg(mark); len(pids) > 0 {
		t.Errorf("processes %v of starting workers outlived Stop", pids)
	}
}
