package main

import (
	"os"
	"slices"
	"testing"
)

func TestParseProcStat(t *testing.T) {
	// A command name with spaces and a ')' inside, as PM2's daemon
	// ("PM2 v7.0.4: God Daemon") or a hostile program may have.
	line := "4242 (PM2 v7: God (x) y) S 1 4242 4242 0 -1 4194560 2000 0 3 0 1234 567 0 0 20 0 11 0 9999 1234567 8901 18446744073709551615\n"
	st, err := parseProcStat(line)
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{PPID: 1, PGID: 4242, Utime: 1234, Stime: 567}
	if st != want {
		t.Fatalf("parsed %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "12 (x", "12 (x) S 1 2", "12 (x) S a 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := parseProcStat(bad); err == nil {
			t.Errorf("parseProcStat(%q) accepted", bad)
		}
	}
}

func TestParseVmRSS(t *testing.T) {
	status := "Name:\tnginx\nVmPeak:\t   20000 kB\nVmRSS:\t    5120 kB\nThreads:\t1\n"
	n, err := parseVmRSS(status)
	if err != nil || n != 5120*1024 {
		t.Fatalf("VmRSS = %d, %v; want %d", n, err, 5120*1024)
	}
	if _, err := parseVmRSS("Name:\tkthreadd\nThreads:\t1\n"); err == nil {
		t.Error("a status without VmRSS was accepted")
	}
}

// The harness's own process is a real one to read.
func TestProcOfThisProcess(t *testing.T) {
	me := os.Getpid()
	st, err := readProcStat(me)
	if err != nil {
		t.Fatal(err)
	}
	if st.PPID != os.Getppid() {
		t.Errorf("ppid %d, want %d", st.PPID, os.Getppid())
	}
	if rssBytes([]int{me}) <= 0 {
		t.Error("no RSS for this process")
	}
	if cpuSeconds([]int{me, 1 << 30}) < 0 {
		t.Error("negative CPU time")
	}
	if !slices.Contains(descendants(os.Getppid()), me) {
		t.Error("this process is not among its parent's descendants")
	}
	if isAppWorker(me, "server.js") {
		t.Error("the test binary taken for a Node worker")
	}
}

func TestParsePss(t *testing.T) {
	rollup := "55d0c0000000-7ffd5fd7c000 ---p 00000000 00:00 0    [rollup]\nRss:               51200 kB\nPss:               20480 kB\nPss_Anon:          10240 kB\n"
	n, err := parsePss(rollup)
	if err != nil || n != 20480*1024 {
		t.Fatalf("Pss = %d, %v", n, err)
	}
	if pssBytes([]int{os.Getpid()}) <= 0 {
		t.Error("no PSS for this process")
	}
}
