package main

import "runtime/debug"

// version and commit are set by the release build:
//
//	-ldflags "-X main.version=v1.2.3 -X main.commit=<full hash>"
//
// Other builds fall back to what the Go toolchain recorded.
var (
	version string
	commit  string
)

// buildVersion says which caddy-workerpool this is, e.g.
// "v1.2.3 (commit 0123abcd…)", for `caddy version`. Without the release
// build's values it takes the module version that `go install …@v1.2.3`
// records and the VCS revision that a build in a git checkout records,
// and says "(devel)" or "unknown" where neither is there.
func buildVersion() string {
	return describeBuild(version, commit, debug.ReadBuildInfo)
}

func describeBuild(v, c string, read func() (*debug.BuildInfo, bool)) string {
	if bi, ok := read(); ok && (v == "" || c == "") {
		if v == "" {
			v = bi.Main.Version
		}
		if c == "" {
			c = vcsRevision(bi.Settings)
		}
	}
	if v == "" {
		v = "(devel)"
	}
	if c == "" {
		c = "unknown"
	}
	return v + " (commit " + c + ")"
}

// vcsRevision is the commit a build in a git checkout recorded, with
// "+modified" when the tree had uncommitted changes.
func vcsRevision(settings []debug.BuildSetting) string {
	revision, modified := "", false
	for _, s := range settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if revision != "" && modified {
		revision += "+modified"
	}
	return revision
}
