package validate

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// maxErrors bounds the field errors of one answer: enough to fix a
// request, not a flood for a hostile one.
const maxErrors = 10

var printer = message.NewPrinter(language.Und)

// schemaErrors turns a schema validation error into field errors whose
// pointers start with prefix ("/body", "/query/ids"). Details are short
// sentences about the value; nothing of the library's types leaks.
func schemaErrors(err error, prefix string) []problem.FieldError {
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return []problem.FieldError{{Pointer: prefix, Detail: "does not match the schema"}}
	}
	var out []problem.FieldError
	seen := map[problem.FieldError]bool{}
	add := func(ptr, detail string) {
		fe := problem.FieldError{Pointer: ptr, Detail: detail}
		if !seen[fe] {
			seen[fe] = true
			out = append(out, fe)
		}
	}
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		ptr := prefix
		for _, tok := range e.InstanceLocation {
			ptr += "/" + escape(tok)
		}
		switch k := e.ErrorKind.(type) {
		case *kind.Required:
			for _, p := range k.Missing {
				add(ptr+"/"+escape(p), "is required")
			}
		case *kind.AdditionalProperties:
			for _, p := range k.Properties {
				add(ptr+"/"+escape(p), "is not allowed")
			}
		case *kind.Type:
			add(ptr, fmt.Sprintf("must be %s, not %s", strings.Join(k.Want, " or "), k.Got))
		case *kind.Format:
			add(ptr, "must be a valid "+k.Want)
		case *kind.FalseSchema:
			add(ptr, "is not allowed")
		default:
			add(ptr, e.ErrorKind.LocalizedString(printer))
		}
	}
	walk(ve)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Pointer < out[j].Pointer })
	if len(out) > maxErrors {
		out = out[:maxErrors]
	}
	return out
}

// extraFormats are the OpenAPI formats JSON Schema does not define.
var extraFormats = []*jsonschema.Format{
	{Name: "int32", Validate: intRange(math.MinInt32, math.MaxInt32)},
	{Name: "int64", Validate: intRange(math.MinInt64, math.MaxInt64)},
}

func intRange(lo, hi int64) func(any) error {
	return func(v any) error {
		var s string
		switch n := v.(type) {
		case fmt.Stringer: // json.Number
			s = n.String()
		case float64:
			if n < float64(lo) || n > float64(hi) {
				return errors.New("out of range")
			}
			return nil
		case int:
			s = strconv.Itoa(n)
		default:
			return nil
		}
		if _, err := strconv.ParseInt(s, 10, 64); err != nil && strings.ContainsAny(s, ".eE") {
			return nil // not an integer: "type" says so
		}
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n < lo || n > hi {
			return errors.New("out of range")
		}
		return nil
	}
}
