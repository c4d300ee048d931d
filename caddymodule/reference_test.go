package caddymodule_test

import (
	"encoding"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"

	"github.com/caddy-workerpool/caddy-workerpool/caddymodule"
)

// referenceDoc is the option reference, relative to this package.
const referenceDoc = "../docs/configuration.md"

// ourModule is the import path prefix of this repository's packages: the
// config types whose fields the reference must name.
const ourModule = "github.com/caddy-workerpool/caddy-workerpool"

// TestOptionReference keeps docs/configuration.md complete: every JSON
// field of every Caddy module this repository registers (the
// worker_pool handler and the structs it embeds or nests: breaker,
// validate, consul, …) and every Caddyfile option its parsers accept
// must appear in it as `name`. The fields are found by reflection on the
// registered modules, the options by reading the parsers' source, so
// neither list can fall behind the code.
func TestOptionReference(t *testing.T) {
	b, err := os.ReadFile(referenceDoc)
	if err != nil {
		t.Fatalf("the option reference: %v", err)
	}
	doc := string(b)
	documented := func(name string) bool { return strings.Contains(doc, "`"+name+"`") }

	fields := jsonFields(t)
	if _, ok := fields["command"]; !ok {
		t.Fatalf("found no JSON field command among %d: the worker_pool handler was not reflected on", len(fields))
	}
	for _, name := range slices.Sorted(maps.Keys(fields)) {
		if !documented(name) {
			t.Errorf("JSON field %q (%s) is not in docs/configuration.md: add it there as `%s` with its meaning and default",
				name, strings.Join(fields[name], ", "), name)
		}
	}

	options := caddyfileOptions(t)
	if _, ok := options["health_uri"]; !ok {
		t.Fatalf("found no Caddyfile option health_uri among %d: the parsers' source was not read as expected", len(options))
	}
	for _, name := range slices.Sorted(maps.Keys(options)) {
		if !documented(name) {
			t.Errorf("Caddyfile option %q (parsed in %s) is not in docs/configuration.md: add it there as `%s` with its syntax and default",
				name, strings.Join(options[name], ", "), name)
		}
	}
	t.Logf("checked %d JSON fields and %d Caddyfile names: %s", len(fields), len(options), strings.Join(slices.Sorted(maps.Keys(options)), " "))
}

// jsonFields maps each JSON field name of this repository's Caddy
// modules to where it was found (module ID and field path).
func jsonFields(t *testing.T) map[string][]string {
	t.Helper()
	_ = caddymodule.Handler{} // the modules register when the package loads
	fields := map[string][]string{}
	modules := 0
	for _, id := range caddy.Modules() {
		info, err := caddy.GetModule(id)
		if err != nil {
			t.Fatal(err)
		}
		typ := reflect.TypeOf(info.New())
		for typ.Kind() == reflect.Pointer {
			typ = typ.Elem()
		}
		if !strings.HasPrefix(typ.PkgPath(), ourModule) {
			continue
		}
		modules++
		walkJSON(typ, string(id), map[reflect.Type]bool{}, fields)
	}
	if modules == 0 {
		t.Fatal("no Caddy module of this repository is registered")
	}
	return fields
}

var (
	jsonMarshaler   = reflect.TypeFor[json.Marshaler]()
	jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// walkJSON records the JSON fields of struct type typ as encoding/json
// sees them: embedded structs without a name are flattened, and nested
// structs of this repository (through pointers, slices and maps) are
// walked too, unless they encode themselves (Limit: a number or "auto").
func walkJSON(typ reflect.Type, path string, seen map[reflect.Type]bool, fields map[string][]string) {
	if typ == nil || typ.Kind() != reflect.Struct || seen[typ] {
		return
	}
	seen[typ] = true
	defer delete(seen, typ)
	for i := range typ.NumField() {
		f := typ.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if f.Anonymous && name == "" && ft.Kind() == reflect.Struct {
			walkJSON(ft, path, seen, fields)
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = append(fields[name], path+"."+name)
		walkJSON(nested(ft), path+"."+name, seen, fields)
	}
}

// nested is the struct type of this repository that a field of type t
// holds, or nil.
func nested(t reflect.Type) reflect.Type {
	for {
		switch t.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array, reflect.Map:
			t = t.Elem()
			continue
		case reflect.Struct:
			if !strings.HasPrefix(t.PkgPath(), ourModule) || encodesItself(t) {
				return nil
			}
			return t
		}
		return nil
	}
}

func encodesItself(t reflect.Type) bool {
	p := reflect.PointerTo(t)
	return t.Implements(jsonMarshaler) || p.Implements(jsonUnmarshaler) || p.Implements(textUnmarshaler)
}

// caddyfileOptions maps each Caddyfile name that this package's parsers
// accept to the functions that accept it: the directives it registers,
// and the subdirectives. A subdirective is a string case of a switch, in
// a loop over the Dispenser's NextBlock, on the block's current token (a
// call of Val, or a variable set from one); a switch on that variable in
// a function the loop hands it to counts too (the worker_pool block's
// scaling and discovery options are read that way). Switches on values
// (balance's policies, tracing's on and off) are not options.
func caddyfileOptions(t *testing.T) map[string][]string {
	t.Helper()
	fset := token.NewFileSet()
	paths, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	// Every function, and by name for the calls that hand one the token
	// (methods of different types may share a name: all are searched).
	var all []*ast.FuncDecl
	byName := map[string][]*ast.FuncDecl{}
	var files []*ast.File
	for _, p := range paths {
		if strings.HasSuffix(p, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, p, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
		for _, d := range f.Decls {
			if fd, ok := d.(*ast.FuncDecl); ok && fd.Body != nil {
				all = append(all, fd)
				byName[fd.Name.Name] = append(byName[fd.Name.Name], fd)
			}
		}
	}
	options := map[string][]string{}
	add := func(name string, fd *ast.FuncDecl) {
		where := "caddymodule/" + fset.Position(fd.Pos()).Filename + " " + fd.Name.Name
		if !slices.Contains(options[name], where) {
			options[name] = append(options[name], where)
		}
	}
	for _, f := range files {
		ast.Inspect(f, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok || len(call.Args) == 0 || !isCallOf(call, "RegisterHandlerDirective", "RegisterDirective", "RegisterGlobalOption") {
				return true
			}
			if name, ok := stringLit(call.Args[0]); ok {
				options[name] = append(options[name], "caddymodule/"+fset.Position(call.Pos()).Filename+" init")
			}
			return true
		})
	}
	for _, fd := range all {
		ast.Inspect(fd.Body, func(n ast.Node) bool {
			loop, ok := n.(*ast.ForStmt)
			if !ok || loop.Cond == nil || !mentionsCall(loop.Cond, "NextBlock") {
				return true
			}
			// The variables that hold the block's current token.
			tokenVars := map[string]bool{}
			ast.Inspect(loop.Body, func(n ast.Node) bool {
				if as, ok := n.(*ast.AssignStmt); ok && len(as.Lhs) == 1 && len(as.Rhs) == 1 && isValCall(as.Rhs[0]) {
					if id, ok := as.Lhs[0].(*ast.Ident); ok {
						tokenVars[id.Name] = true
					}
				}
				return true
			})
			isToken := func(e ast.Expr) bool {
				id, ok := e.(*ast.Ident)
				return isValCall(e) || ok && tokenVars[id.Name]
			}
			ast.Inspect(loop.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.SwitchStmt:
					if n.Tag != nil && isToken(n.Tag) {
						for _, name := range caseStrings(n) {
							add(name, fd)
						}
					}
				case *ast.CallExpr:
					// A function handed the token: its switches on that
					// parameter are options of this block too.
					for i, arg := range n.Args {
						if !isToken(arg) {
							continue
						}
						for _, callee := range byName[calleeName(n)] {
							param := paramName(callee, i)
							if param == "" {
								continue
							}
							ast.Inspect(callee.Body, func(n ast.Node) bool {
								if sw, ok := n.(*ast.SwitchStmt); ok {
									if id, ok := sw.Tag.(*ast.Ident); ok && id.Name == param {
										for _, name := range caseStrings(sw) {
											add(name, callee)
										}
									}
								}
								return true
							})
						}
					}
				}
				return true
			})
			return true
		})
	}
	return options
}

func isCallOf(call *ast.CallExpr, names ...string) bool {
	return slices.Contains(names, calleeName(call))
}

func calleeName(call *ast.CallExpr) string {
	switch fn := call.Fun.(type) {
	case *ast.Ident:
		return fn.Name
	case *ast.SelectorExpr:
		return fn.Sel.Name
	}
	return ""
}

// isValCall reports whether e is a call of a method Val with no
// arguments, as d.Val().
func isValCall(e ast.Expr) bool {
	call, ok := e.(*ast.CallExpr)
	if !ok || len(call.Args) != 0 {
		return false
	}
	sel, ok := call.Fun.(*ast.SelectorExpr)
	return ok && sel.Sel.Name == "Val"
}

func mentionsCall(e ast.Expr, name string) bool {
	found := false
	ast.Inspect(e, func(n ast.Node) bool {
		if call, ok := n.(*ast.CallExpr); ok && calleeName(call) == name {
			found = true
		}
		return !found
	})
	return found
}

// caseStrings are the string literals of sw's case clauses.
func caseStrings(sw *ast.SwitchStmt) []string {
	var out []string
	for _, stmt := range sw.Body.List {
		for _, e := range stmt.(*ast.CaseClause).List {
			if s, ok := stringLit(e); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func stringLit(e ast.Expr) (string, bool) {
	lit, ok := e.(*ast.BasicLit)
	if !ok || lit.Kind != token.STRING {
		return "", false
	}
	s, err := strconv.Unquote(lit.Value)
	return s, err == nil
}

// paramName is the name of fd's i-th parameter, or "".
func paramName(fd *ast.FuncDecl, i int) string {
	for _, field := range fd.Type.Params.List {
		for _, name := range field.Names {
			if i == 0 {
				return name.Name
			}
			i--
		}
		if len(field.Names) == 0 {
			if i == 0 {
				return ""
			}
			i--
		}
	}
	return ""
}
