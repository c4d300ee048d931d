package npm

import (
	"embed"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// rootPackage is the source of the root npm package, caddy-workerpool:
// its package.json names version 0.0.0-dev for itself and for each
// platform package, which a release replaces with its own version, so
// that all of them are always in lock step.
//
//go:embed caddy-workerpool/package.json caddy-workerpool/README.md caddy-workerpool/bin/caddy-workerpool.js
var rootPackage embed.FS

// devVersion is the version the sources of the npm packages carry.
const devVersion = "0.0.0-dev"

// writeRootPackage writes the root package's tarball into out/npm and
// returns its path relative to out.
func writeRootPackage(out, version string, mtime time.Time) (string, error) {
	var files []file
	for _, name := range []string{"package.json", "README.md", "bin/caddy-workerpool.js"} {
		data, err := rootPackage.ReadFile("caddy-workerpool/" + name)
		if err != nil {
			return "", err
		}
		mode := 0o644
		if name == "package.json" {
			data = []byte(strings.ReplaceAll(string(data), `"`+devVersion+`"`, `"`+version+`"`))
		}
		if strings.HasPrefix(name, "bin/") {
			mode = 0o755
		}
		files = append(files, file{name: name, data: data, mode: fsMode(mode)})
	}
	name := filepath.Join("npm", "caddy-workerpool-"+version+".tgz")
	return name, writeTarGz(filepath.Join(out, name), "package", files, mtime)
}

// platformManifest is the package.json of a platform package. os and cpu
// make npm install it only where it runs; there is no libc field, since
// the binary is static.
type platformManifest struct {
	Name            string   `json:"name"`
	Version         string   `json:"version"`
	Description     string   `json:"description"`
	Homepage        string   `json:"homepage"`
	OS              []string `json:"os"`
	CPU             []string `json:"cpu"`
	PreferUnplugged bool     `json:"preferUnplugged"`
}

// writePlatformPackage writes the tarball of p's package, holding bin,
// into out/npm and returns its path relative to out.
func writePlatformPackage(out string, p Platform, version string, bin []byte, mtime time.Time) (string, error) {
	manifest, err := json.MarshalIndent(platformManifest{
		Name:        p.Package(),
		Version:     version,
		Description: fmt.Sprintf("The caddy-workerpool binary for %s %s; install caddy-workerpool, which picks it.", p.NodeOS(), p.NodeCPU()),
		Homepage:    "https://github.com/caddy-workerpool/caddy-workerpool",
		OS:          []string{p.NodeOS()},
		CPU:         []string{p.NodeCPU()},
		// Yarn's Plug'n'Play must unpack it to run the binary.
		PreferUnplugged: true,
	}, "", "  ")
	if err != nil {
		return "", err
	}
	readme := fmt.Sprintf("# %s\n\nThe prebuilt caddy-workerpool binary (Caddy with the worker_pool module) for %s %s.\n"+
		"Do not install it yourself: install `caddy-workerpool`, whose optional dependencies\n"+
		"make npm pick the package for the platform it runs on.\n", p.Package(), p.NodeOS(), p.NodeCPU())
	files := []file{
		{name: "package.json", data: append(manifest, '\n'), mode: 0o644},
		{name: "README.md", data: []byte(readme), mode: 0o644},
		{name: "bin/" + p.Exe(), data: bin, mode: 0o755},
	}
	name := filepath.Join("npm", "caddy-workerpool-"+p.NodeOS()+"-"+p.NodeCPU()+"-"+version+".tgz")
	return name, writeTarGz(filepath.Join(out, name), "package", files, mtime)
}
