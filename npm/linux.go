package npm

import (
	"bytes"
	"embed"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	"github.com/goreleaser/nfpm/v2/files"
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// packaging holds the files of the Linux packages besides the binary:
// the systemd unit, the default Caddyfile and the maintainer scripts.
//
//go:embed packaging
var packaging embed.FS

func fsMode(m int) fs.FileMode { return fs.FileMode(m) }

// writeLinuxPackages writes a .deb and an .rpm of bin for p into out and
// returns their paths relative to out. They install the binary as
// /usr/bin/caddy-workerpool, a caddy-workerpool.service that runs it on
// /etc/caddy-workerpool/Caddyfile as the caddy user, like Caddy's own
// packages, and that Caddyfile as a config file that upgrades keep.
func writeLinuxPackages(out string, p Platform, version, bin string, mtime time.Time) ([]string, error) {
	staging, err := os.MkdirTemp("", "caddy-workerpool-packaging-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(staging)
	if err := os.CopyFS(staging, packaging); err != nil {
		return nil, err
	}
	src := func(name string) string { return filepath.Join(staging, "packaging", name) }
	mode := func(m fs.FileMode) *files.ContentFileInfo {
		return &files.ContentFileInfo{Mode: m, Owner: "root", Group: "root", MTime: mtime}
	}
	var written []string
	for _, format := range []string{"deb", "rpm"} {
		info := nfpm.WithDefaults(&nfpm.Info{
			Name:        "caddy-workerpool",
			Arch:        p.GOARCH,
			Platform:    "linux",
			Version:     version,
			Section:     "web",
			Priority:    "optional",
			Maintainer:  "caddy-workerpool <caddy-workerpool@users.noreply.github.com>",
			Description: "Caddy with a pool of worker processes for single-threaded runtimes (Node.js, Bun, Deno, Python)",
			Homepage:    "https://github.com/caddy-workerpool/caddy-workerpool",
			MTime:       mtime,
			Overridables: nfpm.Overridables{
				Contents: files.Contents{
					{Source: bin, Destination: "/usr/bin/caddy-workerpool", FileInfo: mode(0o755)},
					{Source: src("caddy-workerpool.service"), Destination: "/usr/lib/systemd/system/caddy-workerpool.service", FileInfo: mode(0o644)},
					{Source: src("Caddyfile"), Destination: "/etc/caddy-workerpool/Caddyfile", Type: files.TypeConfigNoReplace, FileInfo: mode(0o644)},
				},
				Scripts: nfpm.Scripts{
					PostInstall: src("postinstall.sh"),
					PreRemove:   src("preremove.sh"),
					PostRemove:  src("postremove.sh"),
				},
				// A fixed build host: rpm records the machine's otherwise.
				RPM: nfpm.RPM{BuildHost: "caddy-workerpool-release", Group: "System Environment/Daemons", Summary: "Caddy with a pool of worker processes"},
			},
		})
		packager, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		if err := nfpm.PrepareForPackager(info, format); err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		if err := packager.Package(info, &buf); err != nil {
			return nil, err
		}
		name := packager.ConventionalFileName(info)
		if err := os.WriteFile(filepath.Join(out, name), buf.Bytes(), 0o644); err != nil {
			return nil, err
		}
		written = append(written, name)
	}
	return written, nil
}
