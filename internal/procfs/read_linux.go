package procfs

import (
	"unsafe"

	"golang.org/x/sys/unix"
)

// smallFile is a small file that is read often (a /proc entry), whose
// path is converted for the kernel once, so that a read does not
// allocate.
type smallFile struct{ path *byte }

func newSmallFile(path string) smallFile {
	p, err := unix.BytePtrFromString(path)
	if err != nil {
		return smallFile{}
	}
	return smallFile{p}
}

// read reads the start of the file into buf.
func (f smallFile) read(buf []byte) (int, bool) {
	if f.path == nil {
		return 0, false
	}
	fd, _, errno := unix.Syscall6(unix.SYS_OPENAT, atFDCWD, uintptr(unsafe.Pointer(f.path)), uintptr(unix.O_RDONLY|unix.O_CLOEXEC), 0, 0, 0)
	if errno != 0 {
		return 0, false
	}
	n, err := unix.Read(int(fd), buf)
	unix.Close(int(fd))
	return n, err == nil && n > 0
}

// atFDCWD is AT_FDCWD as the system call takes it.
var atFDCWD = func() uintptr { d := unix.AT_FDCWD; return uintptr(d) }()
