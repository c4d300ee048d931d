package main

import (
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"
)

func TestPoolArgs(t *testing.T) {
	dir := t.TempDir()
	app := filepath.Join(dir, "app.mjs")
	if err := os.WriteFile(app, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{}
	getenv := func(k string) string { return env[k] }
	for _, tc := range []struct {
		name string
		env  map[string]string
		args []string
		want []string
	}{
		{"no arguments", nil, nil, nil},
		{"caddy subcommand", nil, []string{"run", "--config", "Caddyfile"}, []string{"run", "--config", "Caddyfile"}},
		{"caddy help", nil, []string{"--help"}, []string{"--help"}},
		{"worker-pool itself", nil, []string{"worker-pool", "--", "x"}, []string{"worker-pool", "--", "x"}},
		{"script", nil, []string{app, "--x", "1"},
			[]string{"worker-pool", "--listen", ":8080", "--", "node", app, "--x", "1"}},
		{"script with the shim's node and PORT", map[string]string{"PORT": "3000", nodeEnv: "/opt/node/bin/node"}, []string{app},
			[]string{"worker-pool", "--listen", ":3000", "--", "/opt/node/bin/node", app}},
		{"options before the script", map[string]string{"PORT": "3000"}, []string{"-w", "2", "--access-log", "--health-uri=/healthz", "--max-workers", "auto", app},
			[]string{"worker-pool", "-w", "2", "--access-log", "--health-uri=/healthz", "--max-workers", "auto", "--listen", ":3000", "--", "node", app}},
		{"listen given wins over PORT", map[string]string{"PORT": "3000"}, []string{"--listen", "127.0.0.1:9000", app},
			[]string{"worker-pool", "--listen", "127.0.0.1:9000", "--", "node", app}},
		{"any command", map[string]string{"PORT": "127.0.0.1:4000"}, []string{"--workers", "3", "--", "bun", "server.ts"},
			[]string{"worker-pool", "--workers", "3", "--listen", "127.0.0.1:4000", "--", "bun", "server.ts"}},
		{"options only reach worker-pool's own error", nil, []string{"--workers", "3"},
			[]string{"worker-pool", "--workers", "3", "--listen", ":8080"}},
		{"unknown option is Caddy's to refuse", nil, []string{"--bogus", app}, []string{"--bogus", app}},
		{"not a script", nil, []string{"server.py"}, []string{"server.py"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env = tc.env
			got, err := poolArgs(tc.args, getenv, workerPoolFlags())
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("poolArgs(%q)\n got %q\nwant %q", tc.args, got, tc.want)
			}
		})
	}
}

func TestPoolArgsRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"missing.js"}, "missing.js"},
		{[]string{"--workers"}, "--workers needs a value"},
		{[]string{"--"}, "give the command to run after --"},
	} {
		_, err := poolArgs(tc.args, func(string) string { return "" }, workerPoolFlags())
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("poolArgs(%q) = %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
}

func TestDescribeBuild(t *testing.T) {
	info := func(version string, settings ...debug.BuildSetting) func() (*debug.BuildInfo, bool) {
		return func() (*debug.BuildInfo, bool) {
			return &debug.BuildInfo{Main: debug.Module{Version: version}, Settings: settings}, true
		}
	}
	none := func() (*debug.BuildInfo, bool) { return nil, false }
	for _, tc := range []struct {
		v, c string
		read func() (*debug.BuildInfo, bool)
		want string
	}{
		{"v1.2.3", "abc", info("(devel)"), "v1.2.3 (commit abc)"},
		{"", "", info("v1.4.0"), "v1.4.0 (commit unknown)"},
		{"", "", info("(devel)", debug.BuildSetting{Key: "vcs.revision", Value: "def"}, debug.BuildSetting{Key: "vcs.modified", Value: "true"}), "(devel) (commit def+modified)"},
		{"", "", none, "(devel) (commit unknown)"},
	} {
		if got := describeBuild(tc.v, tc.c, tc.read); got != tc.want {
			t.Errorf("describeBuild(%q, %q) = %q, want %q", tc.v, tc.c, got, tc.want)
		}
	}
}
