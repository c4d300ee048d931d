package worker

// This file reads from a Linux /proc which TCP addresses a set of
// processes listen on: each process's open sockets (the inodes that
// /proc/<pid>/fd links to) matched against the LISTEN entries of
// /proc/<pid>/net/tcp and tcp6 (the tables of the process's network
// namespace). It uses the standard library only and nothing else of
// this package, so that it can move to a shared /proc package as it is.

import (
	"bufio"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// tcpListen is the state column of a listening socket in /proc/net/tcp
// (TCP_LISTEN in the kernel's enum).
const tcpListen = "0A"

// listeningTCP returns the addresses that the processes pids listen on
// with TCP, read from the /proc mounted at proc, sorted and without
// duplicates. A process that is gone by the time it is read is skipped;
// it is an error only when none of them could be read.
func listeningTCP(proc string, pids []int) ([]netip.AddrPort, error) {
	byAddr, err := listenersTCP(proc, pids)
	if err != nil {
		return nil, err
	}
	addrs := make([]netip.AddrPort, 0, len(byAddr))
	for a := range byAddr {
		addrs = append(addrs, a)
	}
	slices.SortFunc(addrs, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return addrs, nil
}

// listenersTCP returns the addresses that the processes pids listen on
// with TCP, each with the pids of the processes that hold the socket, as
// listeningTCP reads them.
func listenersTCP(proc string, pids []int) (map[netip.AddrPort][]int, error) {
	owned := map[uint64][]int{}
	var readable []int
	var firstErr error
	for _, pid := range pids {
		inodes, err := socketInodes(filepath.Join(proc, strconv.Itoa(pid), "fd"))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		readable = append(readable, pid)
		for ino := range inodes {
			owned[ino] = append(owned[ino], pid)
		}
	}
	if len(readable) == 0 {
		if firstErr == nil {
			firstErr = errors.New("no process to read")
		}
		return nil, firstErr
	}
	addrs := map[netip.AddrPort][]int{}
	// Processes of one worker normally share a network namespace; read
	// each namespace's tables once.
	seen := map[string]bool{}
	for _, pid := range readable {
		dir := filepath.Join(proc, strconv.Itoa(pid))
		ns, _ := os.Readlink(filepath.Join(dir, "ns", "net"))
		if ns != "" && seen[ns] {
			continue
		}
		seen[ns] = true
		for _, table := range []string{"tcp", "tcp6"} {
			f, err := os.Open(filepath.Join(dir, "net", table))
			if errors.Is(err, os.ErrNotExist) {
				continue // a kernel without IPv6
			}
			if err != nil {
				return nil, err
			}
			listening, err := parseListening(f)
			f.Close()
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name(), err)
			}
			for ino, a := range listening {
				if holders, ok := owned[ino]; ok {
					for _, pid := range holders {
						if !slices.Contains(addrs[a], pid) {
							addrs[a] = append(addrs[a], pid)
						}
					}
				}
			}
		}
	}
	return addrs, nil
}

// socketInodes returns the inodes of the sockets among the links in fd
// (a /proc/<pid>/fd directory), which read as "socket:[<inode>]".
func socketInodes(fd string) (map[uint64]bool, error) {
	entries, err := os.ReadDir(fd)
	if err != nil {
		return nil, err
	}
	inodes := map[uint64]bool{}
	for _, e := range entries {
		target, err := os.Readlink(filepath.Join(fd, e.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if ino, ok := socketInode(target); ok {
			inodes[ino] = true
		}
	}
	return inodes, nil
}

// socketInode parses a /proc/<pid>/fd link's target "socket:[12345]".
func socketInode(target string) (uint64, bool) {
	rest, ok := strings.CutPrefix(target, "socket:[")
	if !ok {
		return 0, false
	}
	rest, ok = strings.CutSuffix(rest, "]")
	if !ok {
		return 0, false
	}
	ino, err := strconv.ParseUint(rest, 10, 64)
	return ino, err == nil
}

// parseListening reads a /proc/net/tcp or tcp6 table and returns the
// local address of each socket in LISTEN state, by inode.
//
//	sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
//	 0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 ...
func parseListening(r io.Reader) (map[uint64]netip.AddrPort, error) {
	out := map[uint64]netip.AddrPort{}
	sc := bufio.NewScanner(r)
	header := true
	for sc.Scan() {
		if header {
			header = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 10 {
			continue
		}
		if f[3] != tcpListen {
			continue
		}
		addr, err := parseHexAddrPort(f[1])
		if err != nil {
			return nil, err
		}
		ino, err := strconv.ParseUint(f[9], 10, 64)
		if err != nil {
			return nil, fmt.Errorf("inode %q: %w", f[9], err)
		}
		out[ino] = addr
	}
	return out, sc.Err()
}

// parseHexAddrPort parses a local_address column: the address as the
// kernel prints it ("%08X" of each 32-bit word of the address as the
// machine stores it, so the bytes of each word appear in the machine's
// byte order), a colon, and the port in hex.
func parseHexAddrPort(s string) (netip.AddrPort, error) {
	hexAddr, hexPort, ok := strings.Cut(s, ":")
	if !ok || (len(hexAddr) != 8 && len(hexAddr) != 32) || len(hexPort) != 4 {
		return netip.AddrPort{}, fmt.Errorf("address %q: want HEX:PORT", s)
	}
	raw, err := hex.DecodeString(hexAddr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("address %q: %w", s, err)
	}
	port, err := strconv.ParseUint(hexPort, 16, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("port %q: %w", s, err)
	}
	b := make([]byte, len(raw))
	for i := 0; i < len(raw); i += 4 {
		binary.NativeEndian.PutUint32(b[i:], binary.BigEndian.Uint32(raw[i:]))
	}
	addr, _ := netip.AddrFromSlice(b)
	return netip.AddrPortFrom(addr, uint16(port)), nil
}
