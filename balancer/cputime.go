package balancer

import (
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat: USER_HZ,
// 100 on every Linux architecture Go supports.
const clockTick = 10 * time.Millisecond

// processCPUTime returns a function that reads the CPU time (user +
// system) process pid has used, from /proc. It reports false where that
// cannot be read (another OS, a process that is gone).
func processCPUTime(pid int) func() (time.Duration, bool) {
	path := "/proc/" + strconv.Itoa(pid) + "/stat"
	return func() (time.Duration, bool) {
		b, err := os.ReadFile(path)
		if err != nil {
			return 0, false
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			return 0, false
		}
		// After the command: state(3) ppid ... utime(14) stime(15).
		f := strings.Fields(s[i+1:])
		if len(f) < 13 {
			return 0, false
		}
		utime, err1 := strconv.ParseInt(f[11], 10, 64)
		stime, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 != nil || err2 != nil {
			return 0, false
		}
		return time.Duration(utime+stime) * clockTick, true
	}
}
