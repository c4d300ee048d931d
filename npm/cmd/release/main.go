// Command release builds a caddy-workerpool release: binaries for every
// platform, the npm packages, the archives, SHA256SUMS, a .deb and an
// .rpm. Run it from npm/ (npm/release.sh does):
//
//	go run ./cmd/release -version 1.2.3 -out dist
//
// The commit and its time default to git's HEAD; the same commit gives
// the same bytes.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/npm"
)

func main() {
	root := flag.String("root", "..", "the repository's root")
	out := flag.String("out", "dist", "folder to write the release to")
	version := flag.String("version", "", "version, e.g. 1.2.3 (a leading v, as in a tag, is dropped)")
	commit := flag.String("commit", "", "commit built (default: git rev-parse HEAD)")
	epoch := flag.Int64("time", 0, "Unix time of every file in the archives (default: the commit's time)")
	only := flag.String("platforms", "", "comma-separated GOOS/GOARCH to build (default: all)")
	flag.Parse()
	if err := run(*root, *out, *version, *commit, *epoch, *only); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(root, out, version, commit string, epoch int64, only string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if version == "" {
		return fmt.Errorf("give -version, e.g. -version 1.2.3 or -version $(git describe --tags)")
	}
	var err error
	if commit == "" {
		if commit, err = git(root, "rev-parse", "HEAD"); err != nil {
			return err
		}
	}
	if epoch == 0 {
		s, err := git(root, "log", "-1", "--format=%ct", commit)
		if err != nil {
			return err
		}
		if epoch, err = strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Errorf("commit time %q: %w", s, err)
		}
	}
	var platforms []npm.Platform
	for _, s := range strings.Split(only, ",") {
		if s == "" {
			continue
		}
		i := slices.IndexFunc(npm.Platforms, func(p npm.Platform) bool { return p.String() == s })
		if i < 0 {
			return fmt.Errorf("-platforms: %q is not one of %v", s, npm.Platforms)
		}
		platforms = append(platforms, npm.Platforms[i])
	}
	r, err := npm.Build(ctx, npm.Options{
		Root:      root,
		Out:       out,
		Version:   strings.TrimPrefix(version, "v"),
		Commit:    commit,
		Time:      time.Unix(epoch, 0),
		Platforms: platforms,
		Log:       func(format string, args ...any) { fmt.Fprintf(os.Stderr, format+"\n", args...) },
	})
	if err != nil {
		return err
	}
	sums, err := os.ReadFile(filepath.Join(out, r.Sums))
	if err != nil {
		return err
	}
	fmt.Printf("%s\n%s", filepath.Join(out, r.Sums), sums)
	return nil
}

func git(dir string, args ...string) (string, error) {
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).Output()
	if err != nil {
		return "", fmt.Errorf("git %s: %w (give the value as a flag outside a git checkout)", strings.Join(args, " "), err)
	}
	return strings.TrimSpace(string(out)), nil
}
