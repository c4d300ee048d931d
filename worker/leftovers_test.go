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
	"strconv"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// Tests that nothing a supervisor made outlives it: no socket directory.

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

func gone(path string) bool {
	_, err := os.Stat(path)
	return errors.Is(err, fs.ErrNotExist)
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
