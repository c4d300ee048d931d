package validate

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// param is a declared path, query or header parameter. Values arrive as
// strings; they are read as the schema's type (integer, number, boolean,
// string, or an array of those) and then checked against the schema.
// Object parameters and cookies are not checked.
type param struct {
	name     string
	in       string
	pointer  string // "/query/limit"
	required bool
	explode  bool
	schema   *jsonschema.Schema
	types    []string // the schema's type(s)
	items    []string // an array's item type(s)
}

func (b *builder) params(node any, ptr string) ([]*param, error) {
	list, ok := node.([]any)
	if node != nil && !ok {
		return nil, fmt.Errorf("%s: want a list of parameters", ptr)
	}
	var ps []*param
	for i, n := range list {
		m, pptr, err := b.resolve(n, ptr+"/"+strconv.Itoa(i))
		if err != nil {
			return nil, err
		}
		name, _ := m["name"].(string)
		in, _ := m["in"].(string)
		if in != "path" && in != "query" && in != "header" {
			continue // cookie: not checked
		}
		if in == "header" {
			switch http.CanonicalHeaderKey(name) {
			case "Accept", "Content-Type", "Authorization":
				continue // OpenAPI says these are ignored as parameters
			}
			name = http.CanonicalHeaderKey(name)
		}
		p := &param{name: name, in: in, pointer: "/" + in + "/" + escape(name), explode: in == "query"}
		p.required, _ = m["required"].(bool)
		if ex, ok := m["explode"].(bool); ok {
			p.explode = ex
		}
		if style, _ := m["style"].(string); style != "" && style != "form" && style != "simple" {
			continue // matrix, label, spaceDelimited, deepObject …: not checked
		}
		sch, ok := m["schema"]
		if !ok {
			ps = append(ps, p)
			continue
		}
		sm, _, err := b.resolve(sch, pptr+"/schema")
		if err != nil {
			if _, isBool := sch.(bool); !isBool {
				return nil, err
			}
		}
		p.types = typesOf(sm)
		if slices.Contains(p.types, "object") {
			ps = append(ps, p) // presence only
			continue
		}
		if slices.Contains(p.types, "array") {
			if im, _, err := b.resolve(sm["items"], pptr+"/schema/items"); err == nil {
				p.items = typesOf(im)
			}
		}
		if p.schema, err = b.schema(sch, pptr+"/schema"); err != nil {
			return nil, err
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// typesOf is a schema's "type", as a list.
func typesOf(m map[string]any) []string {
	switch t := m["type"].(type) {
	case string:
		return []string{t}
	case []any:
		var ts []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				ts = append(ts, s)
			}
		}
		return ts
	}
	return nil
}

// mergeParams is the path item's parameters overridden by the
// operation's own of the same name and location.
func mergeParams(shared, own []*param) []*param {
	out := append([]*param(nil), own...)
	for _, s := range shared {
		overridden := false
		for _, o := range own {
			if o.name == s.name && o.in == s.in {
				overridden = true
				break
			}
		}
		if !overridden {
			out = append(out, s)
		}
	}
	return out
}

// checkParams checks r's parameters; path holds the path's values.
func (op *operation) checkParams(r *http.Request, path map[string]string) []problem.FieldError {
	var errs []problem.FieldError
	var query url.Values
	var bracketed map[string]bool // names given as name[...]
	for _, p := range op.params {
		var raw []string
		switch p.in {
		case "path":
			if v, ok := path[p.name]; ok {
				raw = []string{v}
			}
		case "query":
			if query == nil {
				var err error
				if query, err = url.ParseQuery(r.URL.RawQuery); err != nil {
					return []problem.FieldError{{Pointer: "/query", Detail: "the query string is not well-formed"}}
				}
				bracketed = bracketedNames(query)
			}
			raw = query[p.name]
			// Frameworks differ on a parameter given twice (the first,
			// the last, or an array) and some read name[]= and name[k]=
			// as arrays and objects (qs, PHP, Rails): the worker must
			// see the one value that was checked.
			if bracketed[p.name] {
				errs = append(errs, problem.FieldError{Pointer: p.pointer,
					Detail: fmt.Sprintf("is given as %s[…]; give %s=<value>", p.name, p.name)})
				continue
			}
			if len(raw) > 1 && !slices.Contains(p.types, "array") {
				errs = append(errs, problem.FieldError{Pointer: p.pointer,
					Detail: fmt.Sprintf("is given %d times; it takes one value", len(raw))})
				continue
			}
		case "header":
			raw = r.Header.Values(p.name)
		}
		if len(raw) == 0 {
			if p.required {
				errs = append(errs, problem.FieldError{Pointer: p.pointer, Detail: "is required"})
			}
			continue
		}
		if p.schema == nil {
			continue
		}
		v := p.value(raw)
		if ptr, ok := oversizedNumber(v); ok {
			errs = append(errs, (&numberError{pointer: ptr, offset: -1}).field(p.pointer))
			continue
		}
		errs = append(errs, schemaErrors(p.schema.Validate(v), p.pointer)...)
		if len(errs) >= maxErrors {
			break
		}
	}
	if len(errs) > maxErrors {
		errs = errs[:maxErrors]
	}
	return errs
}

// bracketedNames are the names that keys of the form name[…] give.
func bracketedNames(query url.Values) map[string]bool {
	var names map[string]bool
	for key := range query {
		if i := strings.IndexByte(key, '['); i > 0 {
			if names == nil {
				names = map[string]bool{}
			}
			names[key[:i]] = true
		}
	}
	return names
}

// value reads the raw strings as the parameter's schema types.
func (p *param) value(raw []string) any {
	if slices.Contains(p.types, "array") {
		var parts []string
		if p.in == "query" && p.explode {
			parts = raw
		} else {
			for _, r := range raw {
				parts = append(parts, strings.Split(r, ",")...)
			}
		}
		out := make([]any, len(parts))
		for i, s := range parts {
			out[i] = scalar(strings.TrimSpace(s), p.items)
		}
		return out
	}
	s := raw[0]
	if p.in == "header" {
		s = strings.TrimSpace(strings.Join(raw, ","))
	}
	return scalar(s, p.types)
}

// scalar reads s as the first of types it fits; as a string if none,
// so that the schema reports the mismatch.
func scalar(s string, types []string) any {
	for _, t := range types {
		switch t {
		case "integer", "number":
			if isJSONNumber(s) {
				return json.Number(s)
			}
		case "boolean":
			switch s {
			case "true":
				return true
			case "false":
				return false
			}
		case "null":
			if s == "" {
				return nil
			}
		case "string":
			return s
		}
	}
	return s
}

// isJSONNumber reports whether s is a number as JSON writes it.
func isJSONNumber(s string) bool {
	if s == "" || (s[0] != '-' && (s[0] < '0' || s[0] > '9')) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < '0' || c > '9') && c != '-' && c != '+' && c != '.' && c != 'e' && c != 'E' {
			return false
		}
	}
	return json.Valid([]byte(s))
}
