package worker

import (
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// The tables as a little-endian Linux prints them: one socket in each
// state that matters, IPv4 and IPv6.
const (
	sampleTCP = `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1001 1 0000000000000000 100 0 0 10 0
   1: 00000000:0BB8 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1002 1 0000000000000000 100 0 0 10 0
   2: 0501A8C0:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 1003 1 0000000000000000 100 0 0 10 0
   3: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 1004 1 0000000000000000 20 4 30 10 -1
`
	sampleTCP6 = `  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000001000000:1F91 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2001 1 0000000000000000 100 0 0 10 0
   1: 00000000000000000000000000000000:0BB9 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2002 1 0000000000000000 100 0 0 10 0
   2: 0000000000000000FFFF00000100007F:1F92 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 2003 1 0000000000000000 100 0 0 10 0
`
)

func TestParseListening(t *testing.T) {
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		t.Skip("the samples are as a little-endian kernel prints them")
	}
	for _, tc := range []struct {
		name, table string
		want        map[uint64]string
	}{
		{"tcp", sampleTCP, map[uint64]string{1001: "127.0.0.1:8080", 1002: "0.0.0.0:3000", 1003: "192.168.1.5:80"}},
		{"tcp6", sampleTCP6, map[uint64]string{2001: "[::1]:8081", 2002: "[::]:3001", 2003: "[::ffff:127.0.0.1]:8082"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseListening(strings.NewReader(tc.table))
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v (the established socket is not listening)", got, tc.want)
			}
			for ino, want := range tc.want {
				if got[ino].String() != want {
					t.Errorf("inode %d: %v, want %s", ino, got[ino], want)
				}
			}
		})
	}
}

func TestParseListeningRefusesGarbage(t *testing.T) {
	for _, line := range []string{
		"   0: 0100007F1F90 00000000:0000 0A 0 0 0 1000 0 1001 1",
		"   0: 0100007G:1F90 00000000:0000 0A 0 0 0 1000 0 1001 1",
		"   0: 0100007F:1F90 00000000:0000 0A 0 0 0 1000 0 x 1",
	} {
		if _, err := parseListening(strings.NewReader("header\n" + line + "\n")); err == nil {
			t.Errorf("%q: no error", line)
		}
	}
}

func TestSocketInode(t *testing.T) {
	for target, want := range map[string]uint64{"socket:[12345]": 12345, "pipe:[12345]": 0, "socket:[x]": 0, "/dev/null": 0, "socket:[1": 0} {
		got, ok := socketInode(target)
		if got != want || ok != (want != 0) {
			t.Errorf("%q: %d %v, want %d", target, got, ok, want)
		}
	}
}

func TestBeyondLoopback(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:80": false, "127.0.0.2:80": false, "[::1]:80": false, "[::ffff:127.0.0.1]:80": false,
		"0.0.0.0:80": true, "[::]:80": true, "192.168.1.5:80": true, "[fe80::1]:80": true,
	} {
		if got := BeyondLoopback(netip.MustParseAddrPort(addr)); got != want {
			t.Errorf("%s: %v, want %v", addr, got, want)
		}
	}
}

// This process's own listeners, as /proc lists them: the real tables of
// a real kernel. Nothing connects to them.
func TestListeningTCPOfThisProcess(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("reads /proc")
	}
	want := []string{"127.0.0.1:0", "0.0.0.0:0"}
	if l, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		l.Close()
		want = append(want, "[::1]:0", "[::]:0")
	}
	var addrs []netip.AddrPort
	for _, a := range want {
		network := "tcp4"
		if strings.HasPrefix(a, "[") {
			network = "tcp6"
		}
		l, err := net.Listen(network, a)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().(*net.TCPAddr).AddrPort())
	}
	got, err := listeningTCP("/proc", []int{os.Getpid(), 1 << 30}) // the second pid does not exist
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if !slices.Contains(got, a) {
			t.Errorf("%v not among this process's listeners %v", a, got)
		}
	}
	if _, err := listeningTCP("/proc", []int{1 << 30}); err == nil {
		t.Error("no error for a process that does not exist")
	}
}
