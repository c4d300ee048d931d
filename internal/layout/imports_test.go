package layout

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const caddy = "github.com/caddyserver/caddy/v2"

// TestImportRules checks the module's import graph, as `go list` sees it
// for every package of ./... (those added later included) and for their
// tests, against the package rules of DESIGN.md and issue 25:
//
//   - nothing below the balancer imports its root package: the units
//     under balancer/ (limit, retry, transport, queue, cost, …) know
//     nothing of the Balancer that composes them;
//   - the packages outside balancer/ (pool and caddymodule among them)
//     import nothing under balancer/internal/, only the root. Go's
//     internal rule already refuses such an import from outside
//     balancer/; the check is here so that the rule reads in one place
//     and still holds if a unit moves out of internal/;
//   - the packages below caddymodule (worker, health, balancer and its
//     units, tracing, validate, framing, pool, internal/…) are a library
//     without Caddy: only the module's root package, caddymodule and
//     cmd/ may depend on github.com/caddyserver/caddy/v2.
//
// A failure names the rule and the chain of imports that breaks it.
func TestImportRules(t *testing.T) {
	g := loadGraph(t)
	root := g.module + "/balancer"
	internal := root + "/internal/"
	for _, p := range g.packages {
		if under(p, root) && p != root {
			if chain := g.chain(p, func(q string) bool { return q == root }); chain != nil {
				t.Errorf("%s: nothing below the balancer imports its root package (the units know nothing of the Balancer)", chain)
			}
		}
		if !under(p, root) {
			for _, q := range g.direct(p) {
				if strings.HasPrefix(q, internal) {
					t.Errorf("%s → %s: outside balancer/ (pool, caddymodule, …) only the balancer's root package is imported, never its units under balancer/internal/", p, q)
				}
			}
		}
		if p != g.module && !under(p, g.module+"/caddymodule") && !under(p, g.module+"/cmd") {
			if chain := g.chain(p, func(q string) bool { return under(q, caddy) }); chain != nil {
				t.Errorf("%s: the packages below caddymodule never import Caddy (only the root package, caddymodule and cmd/ may)", chain)
			}
		}
	}
}

// under reports whether the import path p is path or below it.
func under(p, path string) bool {
	return p == path || strings.HasPrefix(p, path+"/")
}

// graph is the import graph of the module's packages and everything they
// and their tests depend on.
type graph struct {
	module   string
	packages []string            // the module's own, from ./...
	imports  map[string][]string // what a package's non-test files import
	tests    map[string][]string // what a module package's tests import besides
}

// direct is what p and its tests import.
func (g *graph) direct(p string) []string {
	return append(slices.Clone(g.imports[p]), g.tests[p]...)
}

// chain is the shortest chain of imports from p (its tests included) to
// a package that bad accepts, written "p → … → bad", or nil if there is
// none. Beyond p, only non-test imports count: a dependency's tests are
// not built into p.
type chain []string

func (c chain) String() string { return strings.Join(c, " → ") }

func (g *graph) chain(p string, bad func(string) bool) chain {
	from := map[string]string{p: ""}
	queue := []string{p}
	for len(queue) > 0 {
		q := queue[0]
		queue = queue[1:]
		next := g.imports[q]
		if q == p {
			next = g.direct(p)
		}
		for _, n := range next {
			if _, seen := from[n]; seen {
				continue
			}
			from[n] = q
			if bad(n) {
				c := chain{n}
				for at := q; at != ""; at = from[at] {
					c = append(c, at)
				}
				slices.Reverse(c)
				if slices.Contains(g.imports[p], c[1]) {
					return c
				}
				c[0] += " (in its tests)"
				return c
			}
			queue = append(queue, n)
		}
	}
	return nil
}

// loadGraph asks `go list` for the import graph of ./..., tests
// included, from the module's root.
func loadGraph(t *testing.T) *graph {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the import rules need the go command in PATH: %v", err)
		}
		t.Skipf("no go command in PATH to list the imports with: %v", err)
	}
	out, err := exec.Command(gobin, "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(out)) == "" || strings.TrimSpace(string(out)) == os.DevNull {
		t.Fatalf("go env GOMOD: %q, %v; the test runs inside the module", out, err)
	}
	dir := filepath.Dir(strings.TrimSpace(string(out)))
	modOut, err := run(dir, gobin, "list", "-m")
	if err != nil {
		t.Fatal(err)
	}
	g := &graph{
		module:  strings.TrimSpace(string(modOut)),
		imports: map[string][]string{},
		tests:   map[string][]string{},
	}
	listed, err := run(dir, gobin, "list", "-e", "-deps", "-test",
		"-json=ImportPath,ForTest,Imports,TestImports,XTestImports,DepOnly,Module", "./...")
	if err != nil {
		t.Fatal(err)
	}
	type pkg struct {
		ImportPath, ForTest                string
		Imports, TestImports, XTestImports []string
		DepOnly                            bool
		Module                             *struct{ Path string }
	}
	// A package recompiled for a test ("q [p.test]") imports what q
	// does; it stands for q when q is listed only that way.
	recompiled := map[string][]string{}
	for d := json.NewDecoder(strings.NewReader(string(listed))); ; {
		var p pkg
		if err := d.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("go list -json: %v", err)
		}
		if p.ForTest != "" || strings.HasSuffix(p.ImportPath, ".test") {
			name := strip(p.ImportPath)
			if name != p.ForTest && name != p.ForTest+"_test" && !strings.HasSuffix(name, ".test") {
				recompiled[name] = stripAll(p.Imports)
			}
			continue
		}
		g.imports[p.ImportPath] = p.Imports
		if !p.DepOnly && p.Module != nil && p.Module.Path == g.module {
			g.packages = append(g.packages, p.ImportPath)
			var tests []string
			for _, q := range append(slices.Clone(p.TestImports), p.XTestImports...) {
				if q != p.ImportPath && !slices.Contains(p.Imports, q) && !slices.Contains(tests, q) {
					tests = append(tests, q)
				}
			}
			g.tests[p.ImportPath] = tests
		}
	}
	for name, imports := range recompiled {
		if _, ok := g.imports[name]; !ok {
			g.imports[name] = imports
		}
	}
	if !slices.Contains(g.packages, g.module+"/balancer") {
		t.Fatalf("go list ./... in %s listed no %s/balancer: %v", dir, g.module, g.packages)
	}
	return g
}

func run(dir, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, errors.New(strings.Join(append([]string{name}, args...), " ") + ": " + err.Error() + ": " + stderr.String())
	}
	return out, nil
}

// strip drops the test variant's suffix: "q [p.test]" is q.
func strip(p string) string {
	if i := strings.Index(p, " ["); i >= 0 {
		return p[:i]
	}
	return p
}

func stripAll(ps []string) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = strip(p)
	}
	return out
}
