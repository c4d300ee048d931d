package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// caddy worker-pool --max-workers refuses a value it cannot use, naming
// the flag or the option and the fix, before it starts anything.
func TestWorkerPoolCommandMaxWorkers(t *testing.T) {
	self, _ := os.Executable()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--max-workers", "lots"}, "give a number of workers at least --workers, or auto"},
		{[]string{"--workers", "3", "--max-workers", "2"}, "max_count: 2 is below count 3"},
	} {
		args := append([]string{"worker-pool", "--admin", "off"}, c.args...)
		cmd := exec.Command(self, append(args, "--", "node", "server.js")...)
		cmd.Env = append(os.Environ(), caddyEnv+"=1", "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir())
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("%v: %v, output %s; want a failure saying %q", c.args, err, out, c.want)
		}
	}
}
