// Package worker spawns and supervises the processes of a pool: one
// goroutine per worker slot starts the command, restarts it with backoff
// when it exits, and stops its whole process group on shutdown.
//
// The package knows nothing about health or load: it reports each
// process it starts and each exit through Hooks, and whoever composes a
// pool decides when a process is fit to serve.
package worker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Listen modes: how a worker is told where to listen.
const (
	// ListenTCP gives each worker a free loopback port in PORT (and
	// HOST=127.0.0.1).
	ListenTCP = "tcp"
	// ListenUnix gives each worker a socket path in SOCKET_PATH, inside a
	// directory that only this process's user can enter.
	ListenUnix = "unix"
)

// Defaults applied by Spec.withDefaults.
const (
	DefaultStopTimeout            = 10 * time.Second
	DefaultMaxConsecutiveFailures = 5
)

// Spec says what to run and how many.
type Spec struct {
	// Command is the program to run: a name looked up in PATH, or a path
	// (relative paths are relative to Dir).
	Command string
	// Args follow the program on its command line.
	Args []string
	// Dir is the working directory; empty means the current one.
	Dir string
	// Env is added to the inherited environment, overriding it.
	Env map[string]string
	// Count is the number of workers; 0 means one per usable CPU.
	Count int
	// Listen is ListenTCP (default) or ListenUnix.
	Listen string
	// SocketDir holds the unix sockets; empty means a new private
	// directory that is removed on Stop.
	SocketDir string
	// StopTimeout is how long a worker's process group may take to exit
	// after SIGTERM before it is killed.
	StopTimeout time.Duration
	// Backoff paces restarts of a worker that keeps exiting.
	Backoff Backoff
	// MaxConsecutiveFailures is how many exits in a row (or failed
	// starts) mark a worker failed: logged at error level, shown in
	// Status, and retried only at Backoff.Max. Default 5.
	MaxConsecutiveFailures int
}

// withDefaults returns a copy of s with zero fields set to defaults.
func (s Spec) withDefaults() Spec {
	if s.Count <= 0 {
		s.Count = runtime.GOMAXPROCS(0)
	}
	if s.Listen == "" {
		s.Listen = ListenTCP
	}
	if s.StopTimeout <= 0 {
		s.StopTimeout = DefaultStopTimeout
	}
	s.Backoff = s.Backoff.withDefaults()
	if s.MaxConsecutiveFailures <= 0 {
		s.MaxConsecutiveFailures = DefaultMaxConsecutiveFailures
	}
	return s
}

// ResolveCommand finds the executable that command names, the way the
// process will be started: a name without a slash is looked up in PATH, a
// path is taken relative to dir. The error names the command and says why.
func ResolveCommand(command, dir string) (string, error) {
	if command == "" {
		return "", errors.New("no command given")
	}
	// On Windows both / and \ separate; elsewhere the second test repeats the first.
	if !strings.ContainsAny(command, "/"+string(os.PathSeparator)) {
		p, err := exec.LookPath(command)
		if err != nil {
			return "", fmt.Errorf("command %q: not found in PATH", command)
		}
		return filepath.Abs(p)
	}
	p := command
	if !filepath.IsAbs(p) && dir != "" {
		p = filepath.Join(dir, p)
	}
	p, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("command %q: %w", command, err)
	}
	fi, err := os.Stat(p)
	switch {
	case err != nil:
		return "", fmt.Errorf("command %q: %w", command, err)
	case fi.IsDir():
		return "", fmt.Errorf("command %q: %s is a directory", command, p)
	case fi.Mode().Perm()&0o111 == 0 && runtime.GOOS != "windows": // Windows has no execute bits
		return "", fmt.Errorf("command %q: %s is not executable", command, p)
	}
	return p, nil
}

// Validate reports the first problem with s, naming the field.
func (s Spec) Validate() error {
	if _, err := ResolveCommand(s.Command, s.Dir); err != nil {
		return err
	}
	if s.Listen != "" && s.Listen != ListenTCP && s.Listen != ListenUnix {
		return fmt.Errorf("listen %q: must be %q or %q", s.Listen, ListenTCP, ListenUnix)
	}
	if s.Count < 0 {
		return fmt.Errorf("count %d: must be positive, or 0 for one worker per CPU", s.Count)
	}
	if s.Dir != "" {
		fi, err := os.Stat(s.Dir)
		if err != nil {
			return fmt.Errorf("dir: %w", err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("dir %q: not a directory", s.Dir)
		}
	}
	for k := range s.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("env %q: not a valid variable name", k)
		}
	}
	return nil
}
