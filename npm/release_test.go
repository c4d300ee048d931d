package npm

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// TestArchives checks every platform's archive and npm package against
// the binary built for it, and SHA256SUMS against every file it names.
func TestArchives(t *testing.T) {
	r := release(t)
	t.Logf("built %d platforms in %s", len(r.Binaries), buildSpent.Round(1e9))
	for _, p := range testPlatforms(t) {
		bin, err := os.ReadFile(filepath.Join(r.Out, r.Binaries[p]))
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: binary %d bytes (%.1f MiB)", p, len(bin), float64(len(bin))/(1<<20))

		want := fmt.Sprintf("caddy-workerpool_%s_%s_%s", testVersion, p.GOOS, p.GOARCH)
		archive := r.Archives[p]
		var entries map[string]entry
		if p.GOOS == "windows" {
			if archive != want+".zip" {
				t.Errorf("%s: archive %q, want %s.zip", p, archive, want)
			}
			entries = readZip(t, filepath.Join(r.Out, archive))
		} else {
			if archive != want+".tar.gz" {
				t.Errorf("%s: archive %q, want %s.tar.gz", p, archive, want)
			}
			entries = readTarGz(t, filepath.Join(r.Out, archive))
		}
		if names := sortedKeys(entries); !slices.Equal(names, []string{"README.md", p.Exe()}) {
			t.Errorf("%s: archive holds %q, want the binary and README.md", p, names)
		}
		checkEntry(t, archive, entries[p.Exe()], bin, 0o755)

		pkg := readTarGz(t, filepath.Join(r.Out, r.NPM[p.Package()]))
		checkEntry(t, r.NPM[p.Package()], pkg["package/bin/"+p.Exe()], bin, 0o755)
		var manifest struct {
			Name, Version string
			OS, CPU       []string
		}
		if err := json.Unmarshal(pkg["package/package.json"].data, &manifest); err != nil {
			t.Fatalf("%s: package.json: %v", p.Package(), err)
		}
		if manifest.Name != p.Package() || manifest.Version != testVersion ||
			!slices.Equal(manifest.OS, []string{p.NodeOS()}) || !slices.Equal(manifest.CPU, []string{p.NodeCPU()}) {
			t.Errorf("%s: package.json is %+v", p.Package(), manifest)
		}
	}

	root := readTarGz(t, filepath.Join(r.Out, r.NPM["caddy-workerpool"]))
	var manifest struct {
		Name, Version        string
		Bin                  map[string]string
		OptionalDependencies map[string]string
	}
	if err := json.Unmarshal(root["package/package.json"].data, &manifest); err != nil {
		t.Fatal(err)
	}
	if manifest.Name != "caddy-workerpool" || manifest.Version != testVersion {
		t.Errorf("root package.json: %s@%s", manifest.Name, manifest.Version)
	}
	if shim := manifest.Bin["caddy-workerpool"]; root["package/"+shim].mode != 0o755 {
		t.Errorf("root package: bin %q missing or not executable", shim)
	}
	// Every platform package, at the root's version: in lock step.
	if len(manifest.OptionalDependencies) != len(Platforms) {
		t.Errorf("optionalDependencies %v, want one per platform", manifest.OptionalDependencies)
	}
	for _, p := range Platforms {
		if v := manifest.OptionalDependencies[p.Package()]; v != testVersion {
			t.Errorf("optionalDependencies[%s] = %q, want %s", p.Package(), v, testVersion)
		}
	}

	checkSums(t, r)
}

// TestShimKnowsEveryPlatform keeps the shim's table of packages
// and the release's platforms the same.
func TestShimKnowsEveryPlatform(t *testing.T) {
	shim, err := rootPackage.ReadFile("caddy-workerpool/bin/caddy-workerpool.js")
	if err != nil {
		t.Fatal(err)
	}
	table := regexp.MustCompile(`'([a-z0-9]+-[a-z0-9]+)': '(@caddy-workerpool/[a-z0-9-]+)'`).FindAllStringSubmatch(string(shim), -1)
	var got, want []string
	for _, m := range table {
		got = append(got, m[1]+" "+m[2])
	}
	for _, p := range Platforms {
		want = append(want, p.NodeOS()+"-"+p.NodeCPU()+" "+p.Package())
	}
	slices.Sort(got)
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Errorf("the shim maps %q, the release builds %q", got, want)
	}
}

// TestBinary runs the binary built for this machine: it says our version
// and commit, and it holds Caddy's standard modules and ours, nothing
// else.
func TestBinary(t *testing.T) {
	bin := hostBinary(t)
	out := run(t, "", nil, bin, "version")
	if want := "caddy-workerpool v" + testVersion + " (commit 0123456789abcdef0123456789abcdef01234567), Caddy v2."; !strings.HasPrefix(out, want) {
		t.Errorf("version says %q, want it to start with %q", out, want)
	}
	modules := run(t, "", nil, bin, "list-modules")
	// list-modules prints the standard modules, their count, then the
	// others and their count.
	var ours []string
	others := false
	for _, line := range strings.Split(modules, "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "Standard modules:"):
			t.Log(line)
			others = true
		case strings.HasPrefix(line, "Non-standard modules:"), strings.HasPrefix(line, "Unknown modules:"):
			t.Log(line)
			others = false
		case others && line != "":
			ours = append(ours, line)
		}
	}
	for _, m := range ours {
		if !strings.Contains(m, "worker_pool") {
			t.Errorf("non-standard module %q: the binary should hold Caddy's standard modules and ours only", m)
		}
	}
	if !slices.Contains(ours, "http.handlers.worker_pool") {
		t.Errorf("list-modules shows no http.handlers.worker_pool among %q", ours)
	}
}

// TestDeb checks the .deb as dpkg sees it: control fields, contents,
// maintainer scripts and conffiles, and the unit and Caddyfile it
// installs. It does not install the package: that would add a user and
// a service to the machine the tests run on.
func TestDeb(t *testing.T) {
	dpkgDeb := need(t, "dpkg-deb", "install Debian's dpkg to check the .deb")
	r := release(t)
	if _, ok := r.Binaries[hostPlatform]; !ok {
		t.Skipf("%s narrows the build to platforms without %s", platformsEnv, hostPlatform)
	}
	deb := filepath.Join(r.Out, "caddy-workerpool_"+testVersion+"_amd64.deb")
	if !slices.Contains(r.Linux, filepath.Base(deb)) {
		t.Fatalf("no %s among %q", filepath.Base(deb), r.Linux)
	}
	fields := map[string]string{
		"Package":      "caddy-workerpool",
		"Version":      testVersion,
		"Architecture": "amd64",
		"Section":      "web",
	}
	for field, want := range fields {
		if got := strings.TrimSpace(run(t, "", nil, dpkgDeb, "-f", deb, field)); got != want {
			t.Errorf("dpkg-deb -f %s: %q, want %q", field, got, want)
		}
	}
	contents := run(t, "", nil, dpkgDeb, "-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root", "./usr/bin/caddy-workerpool",
		"./usr/lib/systemd/system/caddy-workerpool.service",
		"./etc/caddy-workerpool/Caddyfile",
	} {
		if !strings.Contains(contents, want) {
			t.Errorf("dpkg-deb -c has no %q:\n%s", want, contents)
		}
	}
	info := run(t, "", nil, dpkgDeb, "-I", deb)
	for _, want := range []string{"postinst", "prerm", "postrm", "conffiles"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I has no %s:\n%s", want, info)
		}
	}
	if conffiles := run(t, "", nil, dpkgDeb, "-I", deb, "conffiles"); strings.TrimSpace(conffiles) != "/etc/caddy-workerpool/Caddyfile" {
		t.Errorf("conffiles: %q", conffiles)
	}
	if postinst := run(t, "", nil, dpkgDeb, "-I", deb, "postinst"); !strings.Contains(postinst, "useradd --system --gid caddy") {
		t.Errorf("postinst creates no caddy user:\n%s", postinst)
	}

	root := t.TempDir()
	run(t, "", nil, dpkgDeb, "-x", deb, root)
	unit, err := os.ReadFile(filepath.Join(root, "usr/lib/systemd/system/caddy-workerpool.service"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"User=caddy\n", "Group=caddy\n", "Type=notify\n",
		"ExecStart=/usr/bin/caddy-workerpool run --environ --config /etc/caddy-workerpool/Caddyfile\n",
		"ExecReload=/usr/bin/caddy-workerpool reload --config /etc/caddy-workerpool/Caddyfile --force\n",
		"WantedBy=multi-user.target\n",
	} {
		if !strings.Contains(string(unit), want) {
			t.Errorf("the unit has no %q:\n%s", want, unit)
		}
	}
	// The installed binary validates the installed Caddyfile.
	bin := filepath.Join(root, "usr/bin/caddy-workerpool")
	run(t, "", nil, bin, "validate", "--config", filepath.Join(root, "etc/caddy-workerpool/Caddyfile"), "--adapter", "caddyfile")
	if out := run(t, "", nil, bin, "version"); !strings.Contains(out, "v"+testVersion) {
		t.Errorf("the .deb's binary says %q", out)
	}

	rpm := filepath.Join(r.Out, "caddy-workerpool-"+testVersion+"-1.x86_64.rpm")
	data, err := os.ReadFile(rpm)
	if err != nil {
		t.Fatalf("rpm: %v (have %q)", err, r.Linux)
	}
	if !bytes.HasPrefix(data, []byte{0xed, 0xab, 0xee, 0xdb}) {
		t.Errorf("%s does not start with an rpm lead", rpm)
	}
}

// TestReproducible builds the host platform's release again into another
// folder and compares every artifact's bytes. The compiler's work comes
// from the build cache both times, so this shows that linking, archiving
// and packaging add nothing of the moment or the place; that compiling
// does not either is Go's own promise (-trimpath, no cgo).
func TestReproducible(t *testing.T) {
	first := release(t)
	if _, ok := first.Binaries[hostPlatform]; !ok {
		t.Skipf("%s narrows the build to platforms without %s", platformsEnv, hostPlatform)
	}
	second, err := Build(t.Context(), testOptions(t, filepath.Join(t.TempDir(), "elsewhere", "b"), []Platform{hostPlatform}))
	if err != nil {
		t.Fatal(err)
	}
	names := []string{second.Binaries[hostPlatform], second.Archives[hostPlatform], second.NPM[hostPlatform.Package()], second.NPM["caddy-workerpool"]}
	names = append(names, second.Linux...)
	for _, name := range names {
		a, err := os.ReadFile(filepath.Join(first.Out, name))
		if err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(filepath.Join(second.Out, name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two builds of the same source", name)
		} else {
			sum := sha256.Sum256(a)
			t.Logf("%s: the same %d bytes both times (sha256 %x)", name, len(a), sum[:8])
		}
	}
}

// checkSums checks that SHA256SUMS names every archive and package, with
// the right sums.
func checkSums(t *testing.T, r *Release) {
	t.Helper()
	f, err := os.Open(filepath.Join(r.Out, r.Sums))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	listed := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		sum, name, ok := strings.Cut(s.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("SHA256SUMS line %q is not `sum  name`", s.Text())
		}
		listed[name] = sum
	}
	var want []string
	for _, a := range r.Archives {
		want = append(want, a)
	}
	for _, n := range r.NPM {
		want = append(want, n)
	}
	want = append(want, r.Linux...)
	slices.Sort(want)
	if got := sortedKeys(listed); !slices.Equal(got, want) {
		t.Errorf("SHA256SUMS lists %q, want %q", got, want)
	}
	for name, sum := range listed {
		data, err := os.ReadFile(filepath.Join(r.Out, name))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256.Sum256(data); hex.EncodeToString(got[:]) != sum {
			t.Errorf("SHA256SUMS: %s has sum %x, the file says %s", name, got, sum)
		}
	}
}

type entry struct {
	data []byte
	mode fs.FileMode
}

func checkEntry(t *testing.T, archive string, e entry, want []byte, mode fs.FileMode) {
	t.Helper()
	if !bytes.Equal(e.data, want) {
		t.Errorf("%s: the binary is not the one built (%d bytes, want %d)", archive, len(e.data), len(want))
	}
	if e.mode != mode {
		t.Errorf("%s: the binary's mode is %v, want %v", archive, e.mode, mode)
	}
}

func readTarGz(t *testing.T, name string) map[string]entry {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	entries := map[string]entry{}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return entries
		}
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !h.ModTime.Equal(testTime) {
			t.Errorf("%s: %s has time %v, want the release's %v", name, h.Name, h.ModTime, testTime)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		entries[h.Name] = entry{data, fs.FileMode(h.Mode).Perm()}
	}
}

func readZip(t *testing.T, name string) map[string]entry {
	t.Helper()
	zr, err := zip.OpenReader(name)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	entries := map[string]entry{}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		entries[f.Name] = entry{data, f.Mode().Perm()}
	}
	return entries
}

func sortedKeys[V any](m map[string]V) []string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
