// Package npm builds a release of caddy-workerpool: our Caddy build
// (cmd/caddy) for every platform, and from those binaries the npm
// packages (the root package caddy-workerpool with its bin shim, and one
// package per platform, as esbuild, Biome and Turborepo ship theirs), the
// archives with their SHA256SUMS, and a .deb and an .rpm with a systemd
// unit (through nfpm, the packager GoReleaser uses).
//
// The same source gives the same bytes: binaries are built with
// -trimpath, stripped, without a build ID or VCS stamp and without cgo
// (a static binary, so one Linux package serves glibc and musl), and
// every file in every archive and package carries one fixed time, the
// release commit's.
package npm

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// Platform is one target of the release, in Go's names.
type Platform struct {
	GOOS, GOARCH string
}

// Platforms are the targets a release builds: the desktop and server
// platforms that npm users run on and Caddy ships for.
var Platforms = []Platform{
	{"linux", "amd64"}, {"linux", "arm64"},
	{"darwin", "amd64"}, {"darwin", "arm64"},
	{"windows", "amd64"}, {"windows", "arm64"},
}

func (p Platform) String() string { return p.GOOS + "/" + p.GOARCH }

// NodeOS is the platform as Node's process.platform (and package.json's
// "os") names it.
func (p Platform) NodeOS() string {
	if p.GOOS == "windows" {
		return "win32"
	}
	return p.GOOS
}

// NodeCPU is the architecture as Node's process.arch (and package.json's
// "cpu") names it.
func (p Platform) NodeCPU() string {
	if p.GOARCH == "amd64" {
		return "x64"
	}
	return p.GOARCH
}

// Package is the npm package that holds this platform's binary.
func (p Platform) Package() string {
	return "@caddy-workerpool/" + p.NodeOS() + "-" + p.NodeCPU()
}

// Exe is the binary's file name.
func (p Platform) Exe() string {
	if p.GOOS == "windows" {
		return "caddy-workerpool.exe"
	}
	return "caddy-workerpool"
}

// Options say what to build and where.
type Options struct {
	// Root is the repository's root (where go.mod and cmd/caddy are).
	Root string
	// Out is the folder the release is written to; it is created.
	Out string
	// Version is the release's version without the tag's "v", e.g.
	// 1.2.3 or 1.2.3-rc.1: npm's, the archives' and the packages' version.
	Version string
	// Commit is the commit the release is built from; the binaries say it.
	Commit string
	// Time is the modification time of every file in every archive and
	// package: the commit's time, so that a rebuild gives the same bytes.
	Time time.Time
	// Platforms to build; all of Platforms when empty.
	Platforms []Platform
	// Log, when set, hears what is being built.
	Log func(format string, args ...any)
}

// Release is what Build wrote, all paths relative to Options.Out.
type Release struct {
	Out string
	// Binaries are the built binaries by platform.
	Binaries map[Platform]string
	// Archives are the .tar.gz (.zip for Windows) archives by platform.
	Archives map[Platform]string
	// NPM are the npm package tarballs by package name, the root package
	// "caddy-workerpool" among them.
	NPM map[string]string
	// Linux are the .deb and .rpm packages.
	Linux []string
	// Sums is the SHA256SUMS file, over all of the above but the binaries.
	Sums string
}

// Build builds the release that opts describe.
func Build(ctx context.Context, opts Options) (*Release, error) {
	if err := checkVersion(opts.Version); err != nil {
		return nil, err
	}
	if opts.Time.IsZero() {
		return nil, fmt.Errorf("release: give the time of the commit (Options.Time), e.g. git log -1 --format=%%ct")
	}
	platforms := opts.Platforms
	if len(platforms) == 0 {
		platforms = Platforms
	}
	logf := opts.Log
	if logf == nil {
		logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(filepath.Join(opts.Out, "npm"), 0o755); err != nil {
		return nil, err
	}
	r := &Release{
		Out:      opts.Out,
		Binaries: map[Platform]string{},
		Archives: map[Platform]string{},
		NPM:      map[string]string{},
	}
	readme, err := os.ReadFile(filepath.Join(opts.Root, "README.md"))
	if err != nil {
		return nil, fmt.Errorf("release: the archives carry the README: %w", err)
	}
	mtime := opts.Time.UTC().Truncate(time.Second)
	for _, p := range platforms {
		start := time.Now()
		bin := filepath.Join("bin", p.GOOS+"_"+p.GOARCH, p.Exe())
		if err := buildBinary(ctx, opts, p, filepath.Join(opts.Out, bin)); err != nil {
			return nil, err
		}
		r.Binaries[p] = bin
		data, err := os.ReadFile(filepath.Join(opts.Out, bin))
		if err != nil {
			return nil, err
		}
		logf("built %s: %s, %.1f MiB in %s", p, bin, float64(len(data))/(1<<20), time.Since(start).Round(time.Second))

		files := []file{
			{name: p.Exe(), data: data, mode: 0o755},
			{name: "README.md", data: readme, mode: 0o644},
		}
		archive := fmt.Sprintf("caddy-workerpool_%s_%s_%s", opts.Version, p.GOOS, p.GOARCH)
		if p.GOOS == "windows" {
			archive += ".zip"
			err = writeZip(filepath.Join(opts.Out, archive), files, mtime)
		} else {
			archive += ".tar.gz"
			err = writeTarGz(filepath.Join(opts.Out, archive), "", files, mtime)
		}
		if err != nil {
			return nil, err
		}
		r.Archives[p] = archive

		tgz, err := writePlatformPackage(opts.Out, p, opts.Version, data, mtime)
		if err != nil {
			return nil, err
		}
		r.NPM[p.Package()] = tgz

		if p.GOOS == "linux" {
			pkgs, err := writeLinuxPackages(opts.Out, p, opts.Version, filepath.Join(opts.Out, bin), mtime)
			if err != nil {
				return nil, err
			}
			r.Linux = append(r.Linux, pkgs...)
		}
	}
	root, err := writeRootPackage(opts.Out, opts.Version, mtime)
	if err != nil {
		return nil, err
	}
	r.NPM["caddy-workerpool"] = root
	if err := r.writeSums(); err != nil {
		return nil, err
	}
	return r, nil
}

// checkVersion refuses what npm, dpkg and rpm would not take as a
// version, with the fix.
func checkVersion(v string) error {
	core, _, _ := strings.Cut(strings.SplitN(v, "+", 2)[0], "-")
	parts := strings.Split(core, ".")
	ok := len(parts) == 3
	for _, part := range parts {
		ok = ok && part != "" && strings.Trim(part, "0123456789") == ""
	}
	if !ok {
		return fmt.Errorf("release: version %q: give a semantic version without the tag's v, e.g. 1.2.3 or 1.2.3-rc.1", v)
	}
	return nil
}

// buildBinary builds cmd/caddy for p into out, reproducibly: no cgo, no
// paths of this machine (-trimpath), no symbol tables (-s -w), no build
// ID, no VCS stamp (the commit is passed in instead), and the baseline
// instruction set whatever this machine's Go environment says.
func buildBinary(ctx context.Context, opts Options, p Platform, out string) error {
	ldflags := strings.Join([]string{
		"-s", "-w", "-buildid=",
		"-X", "main.version=v" + opts.Version,
		"-X", "main.commit=" + opts.Commit,
	}, " ")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags="+ldflags, "-o", out, "./cmd/caddy")
	cmd.Dir = opts.Root
	cmd.Env = append(os.Environ(),
		"GOOS="+p.GOOS, "GOARCH="+p.GOARCH, "CGO_ENABLED=0",
		"GOAMD64=v1", "GOARM64=v8.0", "GOFLAGS=", "GOEXPERIMENT=",
	)
	if output, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("release: go build ./cmd/caddy for %s: %w\n%s", p, err, output)
	}
	return nil
}

// writeSums writes SHA256SUMS over the archives and packages, in the
// format `sha256sum -c` reads, sorted by name.
func (r *Release) writeSums() error {
	var names []string
	for _, a := range r.Archives {
		names = append(names, a)
	}
	for _, t := range r.NPM {
		names = append(names, t)
	}
	names = append(names, r.Linux...)
	slices.Sort(names)
	var b strings.Builder
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join(r.Out, name))
		if err != nil {
			return err
		}
		sum := sha256.Sum256(data)
		fmt.Fprintf(&b, "%s  %s\n", hex.EncodeToString(sum[:]), filepath.ToSlash(name))
	}
	r.Sums = "SHA256SUMS"
	return os.WriteFile(filepath.Join(r.Out, r.Sums), []byte(b.String()), 0o644)
}
