package procfs

import (
	"os"
	"runtime"
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
