package procfs

import (
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// A command with spaces and a closing parenthesis of its own.
	line := "4242 (node (my) app) S 1 4240 4240 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 11 0 999 1000000 2048 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0"
	s, err := parseStat(4242, line)
	if err != nil {
		t.Fatal(err)
	}
	want := Stat{PID: 4242, State: 'S', PGID: 4240, CPU: (1234 + 56) * 10 * time.Millisecond, RSS: 2048 * pageSize}
	if s != want {
		t.Fatalf("parsed %+v, want %+v", s, want)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 x S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22"} {
		if _, err := parseStat(1, bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestReadStatOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	s, err := ReadStat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !s.Live() || s.PGID <= 0 || s.RSS <= 0 {
		t.Fatalf("this process: %+v", s)
	}
	// Spin until the kernel's 10 ms tick has counted some CPU time.
	cpu := CPUTime(os.Getpid())
	start, ok := cpu()
	if !ok {
		t.Fatal("CPU time not readable")
	}
	for now, _ := cpu(); now <= start; now, _ = cpu() {
	}
	found := false
	for _, p := range All() {
		found = found || p.PID == os.Getpid()
	}
	if !found {
		t.Fatal("All does not list this process")
	}
}

func TestParseState(t *testing.T) {
	for in, want := range map[string]byte{
		"42 (node) S 1 42 42 0":        'S',
		"42 (a) R (b)) R 1 42 42 0 -1": 'R',
		"42 (my worker) D 1":           'D',
	} {
		if got, ok := parseState([]byte(in)); !ok || got != want {
			t.Errorf("%q: state %q (%v), want %q", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "42 (node)", "42 node S", "42 (node)S"} {
		if _, ok := parseState([]byte(bad)); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestParseSchedstat(t *testing.T) {
	run, wait, ok := parseSchedstat([]byte("2144228 83469 3\n"))
	if !ok || run != 2144228 || wait != 83469 {
		t.Fatalf("parsed %v %v %v", run, wait, ok)
	}
	for _, bad := range []string{"", "12", "a b c"} {
		if _, _, ok := parseSchedstat([]byte(bad)); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}

// TestBusyTellsSpinningFromSleeping: the main thread of a process that
// spins wants a CPU all the time, one that sleeps never.
func TestBusyTellsSpinningFromSleeping(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("/proc is Linux's")
	}
	start := func(script string) *exec.Cmd {
		c := exec.Command("sh", "-c", script)
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Process.Kill(); c.Wait() })
		return c
	}
	spin := start("while :; do :; done")
	sleep := start("exec sleep 30")
	// Until it sleeps, it starts: that takes a CPU.
	for deadline := time.Now().Add(5 * time.Second); ; {
		s, err := ReadStat(sleep.Process.Pid)
		if err == nil && s.State == 'S' {
			comm, _ := os.ReadFile("/proc/" + strconv.Itoa(sleep.Process.Pid) + "/comm")
			if strings.TrimSpace(string(comm)) == "sleep" {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("sleep never slept")
		}
		runtime.Gosched()
	}
	// How much each wanted a CPU over the same 300 ms of wall time (a
	// measuring window, not a wait for a condition).
	const window = 300 * time.Millisecond
	spinBusy, sleepBusy := Busy(spin.Process.Pid), Busy(sleep.Process.Pid)
	s0, ok1 := spinBusy()
	z0, ok2 := sleepBusy()
	if !ok1 || !ok2 {
		t.Fatal("busy time not readable")
	}
	time.Sleep(window)
	s1, _ := spinBusy()
	z1, _ := sleepBusy()
	if d := s1 - s0; d < window/2 {
		t.Errorf("a spinning process wanted a CPU for %v of %v", d, window)
	}
	if d := z1 - z0; d > window/20 {
		t.Errorf("a sleeping process wanted a CPU for %v of %v", d, window)
	}
	if r, ok := Runnable(spin.Process.Pid)(); !ok || !r {
		t.Errorf("a spinning process reads runnable %v (known %v)", r, ok)
	}
	if r, ok := Runnable(sleep.Process.Pid)(); !ok || r {
		t.Errorf("a sleeping process reads runnable %v (known %v)", r, ok)
	}
	spin.Process.Kill()
	spin.Wait()
	if _, ok := spinBusy(); ok {
		t.Error("busy time of a process that is gone reads as known")
	}
	if _, ok := Runnable(spin.Process.Pid)(); ok {
		t.Error("the state of a process that is gone reads as known")
	}
}

func TestBusyDoesNotAllocate(t *testing.T) {
	if runtime.GOOS != "linux" || raceEnabled {
		t.Skip("/proc is Linux's; the race detector allocates")
	}
	busy := Busy(os.Getpid())
	if _, ok := busy(); !ok {
		t.Fatal("busy time of this process not readable")
	}
	if n := testing.AllocsPerRun(100, func() { busy() }); n != 0 {
		t.Fatalf("%v allocations a reading", n)
	}
	runnable := Runnable(os.Getpid())
	if _, ok := runnable(); !ok {
		t.Fatal("the state of this process not readable")
	}
	if n := testing.AllocsPerRun(100, func() { runnable() }); n != 0 {
		t.Fatalf("%v allocations a state reading", n)
	}
}
