package deploy

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestXcaddyBuild builds Caddy v2.11.9 with this checkout of the module
// the way the README tells users to, with xcaddy v0.4.5 (a tool of this
// module: `go tool xcaddy`), and checks that the result has our modules.
// xcaddy runs `go get`, `go mod tidy` and `go build` in a temporary
// module, so this needs the Go module proxy, or a module cache that
// already holds Caddy's and our requirements (the main module's tests
// fill it). With the build cache of deploy/build.sh's build (same flags
// and tags as xcaddy's), it takes about half a minute.
func TestXcaddyBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("the xcaddy build takes about half a minute warm, minutes cold; CI runs it")
	}
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "caddy")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "tool", "xcaddy", "build", "v2.11.9",
		"--with", "github.com/caddy-workerpool/caddy-workerpool="+root, "--output", out)
	cmd.Env = append(os.Environ(), "GOPROXY="+proxyThenOff(t))
	start := time.Now()
	log, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("xcaddy build: %v\n%s", err, log)
	}
	t.Logf("xcaddy build took %v", time.Since(start).Round(time.Second))
	checkOurModules(t, out)
}

// proxyThenOff is the GOPROXY for the xcaddy build. The module is not
// published, so xcaddy's `go get github.com/caddy-workerpool/caddy-workerpool`
// asks the proxies for its latest version before it uses the local
// replacement, and only a "not found" lets it go on; a proxy that answers
// 403 for an unknown module, or a direct (git) lookup that cannot reach
// the host, stops it. Ending the list with "|off" turns any failed lookup
// into "not found" after the proxies had their say, so every other
// module still comes from them.
func proxyThenOff(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOPROXY").Output()
	if err != nil {
		t.Fatal(err)
	}
	var proxies []string
	for _, p := range strings.FieldsFunc(strings.TrimSpace(string(out)), func(r rune) bool { return r == ',' || r == '|' }) {
		if p != "direct" && p != "off" {
			proxies = append(proxies, p)
		}
	}
	return strings.Join(append(proxies, "off"), "|")
}
