package worker

import (
	"errors"
	"os"

	"golang.org/x/sys/windows"
)

// stillActive is the exit code that GetExitCodeProcess reports for a
// process that runs (STILL_ACTIVE).
const stillActive = 259

// processAlive reports whether a process with this pid exists, also one
// that we may not query.
func processAlive(pid int) bool {
	h, err := windows.OpenProcess(windows.PROCESS_QUERY_LIMITED_INFORMATION, false, uint32(pid))
	if err != nil {
		return errors.Is(err, windows.ERROR_ACCESS_DENIED)
	}
	defer windows.CloseHandle(h)
	var code uint32
	return windows.GetExitCodeProcess(h, &code) == nil && code == stillActive
}

// ownedByUs reports whether a file belongs to the user we run as. The
// temporary directory on Windows is the user's own.
func ownedByUs(os.FileInfo) bool { return true }
