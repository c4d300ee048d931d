package npm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testVersion and testTime are the release the tests build.
const testVersion = "1.2.3"

var testTime = time.Unix(1767225600, 0) // 2026-01-01

// platformsEnv narrows the platforms the tests build, e.g. to
// linux/amd64 while working on this package; CI builds all of them, which
// is where every platform's full binary is compiled.
const platformsEnv = "CADDY_WORKERPOOL_RELEASE_PLATFORMS"

var (
	buildOnce  sync.Once
	built      *Release
	buildErr   error
	buildDir   string
	buildSpent time.Duration
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// testPlatforms are the platforms the tests build: all, unless
// platformsEnv says otherwise.
func testPlatforms(t *testing.T) []Platform {
	v := os.Getenv(platformsEnv)
	if v == "" {
		return Platforms
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s=%s: CI builds every platform", platformsEnv, v)
	}
	var ps []Platform
	for _, s := range strings.Split(v, ",") {
		i := slices.IndexFunc(Platforms, func(p Platform) bool { return p.String() == s })
		if i < 0 {
			t.Fatalf("%s: %q is not one of %v", platformsEnv, s, Platforms)
		}
		ps = append(ps, Platforms[i])
	}
	return ps
}

// release is the release the tests share, built on first use: building
// every platform's binary is most of this package's test time.
func release(t *testing.T) *Release {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "caddy-workerpool-release-")
		if buildErr != nil {
			return
		}
		start := time.Now()
		built, buildErr = Build(context.Background(), testOptions(t, filepath.Join(buildDir, "a"), testPlatforms(t)))
		buildSpent = time.Since(start)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

func testOptions(t *testing.T, out string, platforms []Platform) Options {
	return Options{
		Root:      "..",
		Out:       out,
		Version:   testVersion,
		Commit:    "0123456789abcdef0123456789abcdef01234567",
		Time:      testTime,
		Platforms: platforms,
		Log:       func(format string, args ...any) { fmt.Fprintf(os.Stderr, "release: "+format+"\n", args...) },
	}
}

// hostPlatform is the platform the tests run the binary on.
var hostPlatform = Platform{"linux", "amd64"}

// hostBinary is the path of the built binary that runs here.
func hostBinary(t *testing.T) string {
	t.Helper()
	r := release(t)
	bin, ok := r.Binaries[hostPlatform]
	if !ok {
		t.Skipf("%s narrows the build to platforms without %s", platformsEnv, hostPlatform)
	}
	return filepath.Join(r.Out, bin)
}

// need finds a command the test cannot do without: under CI=true its
// absence fails the test, elsewhere it skips it with the reason.
func need(t *testing.T, name, why string) string {
	t.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed; %s", name, why)
		}
		t.Skipf("%s is not installed; %s", name, why)
	}
	return path
}

// run runs a command and returns its combined output, failing the test
// on a non-zero exit.
func run(t *testing.T, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}
