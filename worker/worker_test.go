//go:build unix

package worker_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

func TestMain(m *testing.M) {
	testworker.RunIfWorker()
	superviseIfAsked()
	goleak.VerifyTestMain(m)
}

// recorder collects the hooks' calls.
type recorder struct {
	mu      sync.Mutex
	started []*worker.Instance
	exited  []*worker.Instance
}

func (r *recorder) hooks() worker.Hooks {
	return worker.Hooks{
		Started: func(i *worker.Instance) { r.mu.Lock(); r.started = append(r.started, i); r.mu.Unlock() },
		Exited:  func(i *worker.Instance, _ error) { r.mu.Lock(); r.exited = append(r.exited, i); r.mu.Unlock() },
	}
}

func (r *recorder) startedCount() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.started) }

// current returns the latest instance of each worker id.
func (r *recorder) current() map[int]*worker.Instance {
	r.mu.Lock()
	defer r.mu.Unlock()
	m := map[int]*worker.Instance{}
	for _, i := range r.started {
		m[i.Worker] = i
	}
	return m
}

func client(inst *worker.Instance) *http.Client {
	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{
			DisableKeepAlives: true,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, inst.Network, inst.Address)
			},
		},
	}
}

// servedPID asks the worker for its pid; 0 if it does not answer.
func servedPID(inst *worker.Instance) int {
	resp, err := client(inst).Get("http://worker/pid")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pid, _ := strconv.Atoi(string(b))
	return pid
}

func start(t *testing.T, spec worker.Spec) (*worker.Supervisor, *recorder) {
	t.Helper()
	rec := &recorder{}
	s, err := worker.New(spec, rec.hooks(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(s.Stop)
	return s, rec
}

func TestSpawnServeAndRestartAfterKill(t *testing.T) {
	for _, listen := range []string{worker.ListenTCP, worker.ListenUnix} {
		t.Run(listen, func(t *testing.T) {
			s, rec := start(t, worker.Spec{
				Command: testworker.Command(), Env: testworker.Env("serve"), Count: 3, Listen: listen,
			})
			testworker.Eventually(t, 10*time.Second, "3 workers answering", func() bool {
				cur := rec.current()
				if len(cur) != 3 {
					return false
				}
				for _, inst := range cur {
					if servedPID(inst) != inst.PID {
						return false
					}
				}
				return true
			})
			if listen == worker.ListenUnix {
				dir := rec.current()[1].Address[:strings.LastIndexByte(rec.current()[1].Address, '/')]
				fi, err := os.Stat(dir)
				if err != nil {
					t.Fatal(err)
				}
				if fi.Mode().Perm() != 0o700 {
					t.Fatalf("socket dir mode %v, want 0700", fi.Mode().Perm())
				}
			}
			victim := rec.current()[2]
			if err := syscall.Kill(victim.PID, syscall.SIGKILL); err != nil {
				t.Fatal(err)
			}
			testworker.Eventually(t, 10*time.Second, "worker 2 back with a new pid", func() bool {
				inst := rec.current()[2]
				return inst.PID != victim.PID && servedPID(inst) == inst.PID
			})
			st := s.Status()
			if st[1].Restarts != 1 {
				t.Fatalf("worker 2 restarts = %d, want 1", st[1].Restarts)
			}
			if st[0].Restarts != 0 || st[2].Restarts != 0 {
				t.Fatalf("other workers restarted: %+v", st)
			}
		})
	}
}

func TestEnvironment(t *testing.T) {
	t.Setenv("INHERITED_VAR", "from-parent")
	out := t.TempDir() + "/env"
	_, rec := start(t, worker.Spec{
		Command: "/bin/sh",
		Args:    []string{"-c", `echo "$WORKER_ID/$WORKER_COUNT $PORT $HOST $INHERITED_VAR $EXTRA" > "$OUT.tmp.$WORKER_ID" && mv "$OUT.tmp.$WORKER_ID" "$OUT.$WORKER_ID"; exec sleep 60`},
		Env:     map[string]string{"EXTRA": "given", "OUT": out},
		Count:   2,
	})
	var got []byte
	testworker.Eventually(t, 5*time.Second, "worker 2 wrote its environment", func() bool {
		got, _ = os.ReadFile(out + ".2")
		return len(got) > 0
	})
	_, port, _ := net.SplitHostPort(rec.current()[2].Address)
	want := "2/2 " + port + " 127.0.0.1 from-parent given\n"
	if string(got) != want {
		t.Fatalf("worker saw %q, want %q", got, want)
	}
}

func TestExitingCommandBacksOff(t *testing.T) {
	_, rec := start(t, worker.Spec{
		Command: testworker.Command(), Env: testworker.Env("exit"), Count: 1,
	})
	// With 100 ms doubling and jitter in [d/2, d], starts happen at most
	// at 0, 0.1, 0.3, 0.7, 1.5 s: five in 1.6 s; a hot loop would show
	// hundreds. At least the second start must have happened by 0.5 s.
	window := 1600 * time.Millisecond
	testworker.Eventually(t, 5*time.Second, "a restart", func() bool { return rec.startedCount() >= 2 })
	time.Sleep(window) // a measurement window, not synchronisation
	if n := rec.startedCount(); n > 6 {
		t.Fatalf("%d starts within %v of a command that exits at once: restarts do not back off", n, window)
	}
}

func TestMissingCommand(t *testing.T) {
	for _, cmd := range []string{"no-such-program-xyz", "./no/such/file"} {
		_, err := worker.New(worker.Spec{Command: cmd}, worker.Hooks{}, nil)
		if err == nil || !strings.Contains(err.Error(), strconv.Quote(cmd)) {
			t.Fatalf("New(%q) error = %v, want one naming the command", cmd, err)
		}
	}
}

func TestStopLeavesNoProcess(t *testing.T) {
	rec := &recorder{}
	s, err := worker.New(worker.Spec{
		Command: testworker.Command(), Env: testworker.Env("grandchild"), Count: 2,
	}, rec.hooks(), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	testworker.Eventually(t, 10*time.Second, "workers and their children running", func() bool {
		cur := rec.current()
		if len(cur) != 2 {
			return false
		}
		for _, inst := range cur {
			// The worker and its child, plus the reaper that leads the
			// group where there is one.
			want := 2
			if inst.PGID != inst.PID {
				want = 3
			}
			if len(testworker.GroupMembers(inst.PGID)) < want {
				return false
			}
		}
		return true
	})
	cur := rec.current()
	s.Stop()
	for _, inst := range cur {
		if m := testworker.GroupMembers(inst.PGID); len(m) > 0 {
			t.Fatalf("worker %d's group %d still has processes %v after Stop", inst.Worker, inst.PGID, m)
		}
	}
	for _, st := range s.Status() {
		if st.State != worker.StateStopped {
			t.Fatalf("status after stop: %+v", st)
		}
	}
}

func TestStopKillsWorkerThatIgnoresTerm(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	rec := &recorder{}
	const timeout = 300 * time.Millisecond
	s, err := worker.New(worker.Spec{
		Command: testworker.Command(), Env: testworker.Env("ignore-term"), Count: 1, StopTimeout: timeout,
	}, rec.hooks(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	testworker.Eventually(t, 10*time.Second, "worker serving", func() bool {
		inst := rec.current()[1]
		return inst != nil && servedPID(inst) == inst.PID
	})
	inst := rec.current()[1]
	began := time.Now()
	s.Stop()
	if took := time.Since(began); took < timeout {
		t.Fatalf("Stop took %v; a worker that ignores SIGTERM cannot be gone before stop_timeout %v", took, timeout)
	}
	if testworker.Alive(inst.PID) {
		t.Fatal("worker that ignores SIGTERM survived Stop")
	}
	if err := inst.Err(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("exit = %v, want killed", err)
	}
	if logs.FilterMessage("worker stopped").Len() != 1 {
		t.Fatalf("logs: %v", logs.All())
	}
}

func TestOutputIsLoggedPerLine(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	rec := &recorder{}
	s, err := worker.New(worker.Spec{
		Command: "/bin/sh", Args: []string{"-c", `printf 'hello\nsecond'; echo oops >&2; exec sleep 60`}, Count: 1,
	}, rec.hooks(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	testworker.Eventually(t, 5*time.Second, "stderr line logged", func() bool {
		return logs.FilterMessage("oops").Len() == 1
	})
	s.Stop() // flushes "second", which had no newline
	pid := rec.current()[1].PID
	for msg, stream := range map[string]string{"hello": "stdout", "second": "stdout", "oops": "stderr"} {
		entries := logs.FilterMessage(msg).All()
		if len(entries) != 1 {
			t.Fatalf("line %q logged %d times", msg, len(entries))
		}
		f := entries[0].ContextMap()
		if f["worker"] != int64(1) || f["pid"] != int64(pid) || f["stream"] != stream {
			t.Fatalf("line %q fields %v", msg, f)
		}
	}
}

func TestProgramThatCannotRunIsReportedAndBacksOff(t *testing.T) {
	// Executable, but not a program the kernel can run.
	bad := t.TempDir() + "/not-a-program"
	if err := os.WriteFile(bad, []byte("\x00\x01garbage"), 0o755); err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zap.InfoLevel)
	s, err := worker.New(worker.Spec{Command: bad, Count: 1}, worker.Hooks{}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	testworker.Eventually(t, 5*time.Second, "two failed starts logged", func() bool {
		return logs.FilterMessage("worker did not start").Len() >= 2
	})
	entry := logs.FilterMessage("worker did not start").All()[0]
	if msg := entry.ContextMap()["error"].(string); !strings.Contains(msg, bad) {
		t.Fatalf("error %q does not name the program", msg)
	}
	if st := s.Status()[0]; st.ConsecutiveFailures < 2 || st.PID != 0 {
		t.Fatalf("status %+v", st)
	}
}

func TestWorkerThatKeepsExitingIsMarkedFailed(t *testing.T) {
	core, logs := observer.New(zap.InfoLevel)
	s, err := worker.New(worker.Spec{
		Command: testworker.Command(), Env: testworker.Env("exit"), Count: 1,
		Backoff:                worker.Backoff{Initial: time.Millisecond, Max: 20 * time.Millisecond},
		MaxConsecutiveFailures: 3,
	}, worker.Hooks{}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer s.Stop()
	testworker.Eventually(t, 10*time.Second, "worker marked failed", func() bool {
		st := s.Status()[0]
		return st.Failed && st.State == worker.StateFailed
	})
	if logs.FilterMessage("worker failed: it keeps exiting; retrying at the longest backoff").Len() == 0 {
		t.Fatal("no error log says the worker failed")
	}
}

func TestReplaceStartsTheNewProcessFirst(t *testing.T) {
	s, rec := start(t, worker.Spec{Command: testworker.Command(), Env: testworker.Env("serve"), Count: 1})
	testworker.Eventually(t, 10*time.Second, "worker serving", func() bool {
		inst := rec.current()[1]
		return inst != nil && servedPID(inst) == inst.PID
	})
	old := rec.current()[1]
	ctx := context.Background()

	// A handover that fails keeps the old process and kills the new one.
	var tried *worker.Instance
	err := s.Replace(ctx, old, "test", func(_ context.Context, next *worker.Instance) error {
		tried = next
		return errors.New("not healthy")
	})
	if err == nil || tried == nil {
		t.Fatalf("Replace = %v", err)
	}
	<-tried.Exited()
	if servedPID(old) != old.PID {
		t.Fatal("the old process stopped serving after a failed replacement")
	}

	// A handover that succeeds: while it runs, both processes serve.
	err = s.Replace(ctx, old, "test", func(_ context.Context, next *worker.Instance) error {
		testworker.Eventually(t, 10*time.Second, "replacement serving", func() bool { return servedPID(next) == next.PID })
		if servedPID(old) != old.PID {
			return errors.New("the old process is gone before the handover")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	<-old.Exited()
	st := s.Status()[0]
	if st.PID == old.PID || st.Recycles != 1 || st.Restarts != 0 || st.State != worker.StateRunning {
		t.Fatalf("status after the replacement: %+v", st)
	}
}

func TestJSONOutputKeepsItsFields(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	rec := &recorder{}
	s, err := worker.New(worker.Spec{
		Command: "/bin/sh",
		Args:    []string{"-c", `echo '{"level":50,"msg":"db down","pid":7,"attempt":3}'; echo '{not json'; exec sleep 60`},
		Count:   1,
	}, rec.hooks(), zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	testworker.Eventually(t, 5*time.Second, "both lines logged", func() bool {
		return logs.FilterMessage("db down").Len() == 1 && logs.FilterMessage("{not json").Len() == 1
	})
	s.Stop()
	e := logs.FilterMessage("db down").All()[0]
	f := e.ContextMap()
	if e.Level != zap.ErrorLevel || f["attempt"] != float64(3) || f["app_pid"] != float64(7) || f["pid"] != int64(rec.current()[1].PID) {
		t.Fatalf("JSON line logged as %v %v", e.Level, f)
	}
}
