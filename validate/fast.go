package validate

import (
	"encoding/json"
	"math"
	"math/big"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// fastSchema is a compiled schema reduced to plain Go checks of the
// keywords request bodies use most, that answers only "valid or not".
// The general validator walks a schema with bookkeeping for error paths
// and evaluated properties on every request; this one does not, and is
// several times cheaper. A body it accepts is passed without the
// general validator; a body it refuses goes to the general validator,
// which is the authority and writes the errors. So it may say "no" too
// often but must never say "yes" wrongly: a schema that uses a keyword
// it does not implement gets no fastSchema at all (FuzzFastAgrees holds
// the two to the same verdicts).
type fastSchema struct {
	never bool // the false schema
	types typeSet

	enum     []any // strings, booleans and nulls only
	hasEnum  bool
	constant any // a string, boolean or null
	hasConst bool
	unique   bool
	format   *jsonschema.Format
	ref      *fastSchema

	allOf, anyOf, oneOf []*fastSchema
	not                 *fastSchema

	// objects
	props          map[string]*fastSchema
	required       []string
	additional     *fastSchema // nil: anything
	noAdditional   bool
	minProps       int
	maxProps       int // -1: none
	minItems       int
	maxItems       int // -1: none
	items          *fastSchema
	minLen, maxLen int // -1: none
	pattern        jsonschema.Regexp
	min, max       *bound
	exMin, exMax   *bound
}

// bound is a numeric limit, exact and as a float for the quick compare.
type bound struct {
	rat *big.Rat
	f   float64
}

type typeSet uint8

const (
	tNull typeSet = 1 << iota
	tBoolean
	tNumber
	tInteger
	tString
	tArray
	tObject
)

var typeNames = map[string]typeSet{
	"null": tNull, "boolean": tBoolean, "number": tNumber, "integer": tInteger,
	"string": tString, "array": tArray, "object": tObject,
}

// compileFast returns the fast form of s, or nil if s (or a schema it
// reaches) uses something the fast form does not implement.
func compileFast(s *jsonschema.Schema) *fastSchema {
	c := fastCompiler{seen: map[*jsonschema.Schema]*fastSchema{}}
	f := c.compile(s)
	if c.unsupported {
		return nil
	}
	return f
}

type fastCompiler struct {
	seen        map[*jsonschema.Schema]*fastSchema
	unsupported bool
	// negated counts the not and oneOf around the schema being compiled:
	// there, a check that says "no" when unsure could turn a refusal
	// into an acceptance, so such checks (uniqueItems) are unsupported.
	negated int
}

func (c *fastCompiler) compile(s *jsonschema.Schema) *fastSchema {
	if s == nil {
		return nil
	}
	if f, ok := c.seen[s]; ok {
		return f // a cycle: its fields are filled in by the first visit
	}
	f := &fastSchema{maxProps: -1, maxItems: -1, minLen: -1, maxLen: -1}
	c.seen[s] = f
	if s.Bool != nil {
		f.never = !*s.Bool
		return f
	}
	if s.DraftVersion < 2019 || s.RecursiveRef != nil || s.DynamicRef != nil ||
		s.If != nil || s.Then != nil || s.Else != nil || s.PropertyNames != nil ||
		len(s.PatternProperties) > 0 || len(s.Dependencies) > 0 || len(s.DependentRequired) > 0 ||
		len(s.DependentSchemas) > 0 || s.UnevaluatedProperties != nil || s.UnevaluatedItems != nil ||
		s.Contains != nil || s.PrefixItems != nil || s.Items != nil || s.AdditionalItems != nil ||
		(s.UniqueItems && c.negated > 0) || s.ContentEncoding != nil || s.ContentMediaType != nil || s.ContentSchema != nil ||
		s.MultipleOf != nil || len(s.Extensions) > 0 || (s.Format != nil && s.Format.Name == "regex") {
		c.unsupported = true
		return f
	}
	if s.Types != nil {
		for _, name := range s.Types.ToStrings() {
			f.types |= typeNames[name]
		}
	}
	scalars := func(vs []any) []any {
		for _, v := range vs {
			switch v.(type) {
			case string, bool, nil:
			default:
				c.unsupported = true // numbers, arrays, objects: equality rules
			}
		}
		return vs
	}
	if s.Enum != nil {
		f.hasEnum = true
		f.enum = scalars(s.Enum.Values)
	}
	if s.Const != nil {
		f.hasConst = true
		f.constant = scalars([]any{*s.Const})[0]
	}
	f.unique = s.UniqueItems
	f.format = s.Format
	f.ref = c.compile(s.Ref)
	for _, x := range s.AllOf {
		f.allOf = append(f.allOf, c.compile(x))
	}
	for _, x := range s.AnyOf {
		f.anyOf = append(f.anyOf, c.compile(x))
	}
	c.negated++
	for _, x := range s.OneOf {
		f.oneOf = append(f.oneOf, c.compile(x))
	}
	f.not = c.compile(s.Not)
	c.negated--

	if len(s.Properties) > 0 {
		f.props = make(map[string]*fastSchema, len(s.Properties))
		for name, x := range s.Properties {
			f.props[name] = c.compile(x)
		}
	}
	f.required = s.Required
	switch a := s.AdditionalProperties.(type) {
	case bool:
		f.noAdditional = !a
	case *jsonschema.Schema:
		f.additional = c.compile(a)
	}
	intOr := func(p *int, def int) int {
		if p == nil {
			return def
		}
		return *p
	}
	f.minProps, f.maxProps = intOr(s.MinProperties, 0), intOr(s.MaxProperties, -1)
	f.minItems, f.maxItems = intOr(s.MinItems, 0), intOr(s.MaxItems, -1)
	f.items = c.compile(s.Items2020)
	f.minLen, f.maxLen = intOr(s.MinLength, -1), intOr(s.MaxLength, -1)
	f.pattern = s.Pattern
	mk := func(r *big.Rat) *bound {
		if r == nil {
			return nil
		}
		fl, _ := r.Float64()
		return &bound{rat: r, f: fl}
	}
	f.min, f.max, f.exMin, f.exMax = mk(s.Minimum), mk(s.Maximum), mk(s.ExclusiveMinimum), mk(s.ExclusiveMaximum)
	return f
}

// valid reports whether v, as jsonschema.UnmarshalJSON decodes it
// (numbers as json.Number), satisfies f.
func (f *fastSchema) valid(v any) bool {
	if f == nil {
		return true
	}
	if f.never {
		return false
	}
	if f.types != 0 && !f.types.has(v) {
		return false
	}
	if f.hasEnum {
		found := false
		for _, e := range f.enum {
			if e == v {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	if f.hasConst && f.constant != v {
		return false
	}
	if f.format != nil && f.format.Validate(v) != nil {
		return false
	}
	if f.ref != nil && !f.ref.valid(v) {
		return false
	}
	for _, x := range f.allOf {
		if !x.valid(v) {
			return false
		}
	}
	if len(f.anyOf) > 0 {
		any := false
		for _, x := range f.anyOf {
			if x.valid(v) {
				any = true
				break
			}
		}
		if !any {
			return false
		}
	}
	if len(f.oneOf) > 0 {
		n := 0
		for _, x := range f.oneOf {
			if x.valid(v) {
				n++
			}
		}
		if n != 1 {
			return false
		}
	}
	if f.not != nil && f.not.valid(v) {
		return false
	}
	switch v := v.(type) {
	case map[string]any:
		return f.validObject(v)
	case []any:
		if len(v) < f.minItems || (f.maxItems >= 0 && len(v) > f.maxItems) {
			return false
		}
		if f.items != nil {
			for _, x := range v {
				if !f.items.valid(x) {
					return false
				}
			}
		}
		if f.unique && !uniqueScalars(v) {
			return false
		}
	case string:
		if f.minLen >= 0 || f.maxLen >= 0 {
			n := utf8.RuneCountInString(v)
			if n < f.minLen || (f.maxLen >= 0 && n > f.maxLen) {
				return false
			}
		}
		if f.pattern != nil && !f.pattern.MatchString(v) {
			return false
		}
	case json.Number:
		return f.validNumber(string(v))
	}
	return true
}

func (f *fastSchema) validObject(obj map[string]any) bool {
	if len(obj) < f.minProps || (f.maxProps >= 0 && len(obj) > f.maxProps) {
		return false
	}
	for _, name := range f.required {
		if _, ok := obj[name]; !ok {
			return false
		}
	}
	for name, x := range obj {
		if p, ok := f.props[name]; ok {
			if !p.valid(x) {
				return false
			}
			continue
		}
		if f.noAdditional || (f.additional != nil && !f.additional.valid(x)) {
			return false
		}
	}
	return true
}

func (f *fastSchema) validNumber(text string) bool {
	if f.min == nil && f.max == nil && f.exMin == nil && f.exMax == nil {
		return true
	}
	x := newNumber(text)
	return (f.min == nil || x.cmp(f.min) >= 0) && (f.max == nil || x.cmp(f.max) <= 0) &&
		(f.exMin == nil || x.cmp(f.exMin) > 0) && (f.exMax == nil || x.cmp(f.exMax) < 0)
}

// number is a JSON number's text and its float value.
type number struct {
	text string
	f    float64
	ok   bool // f is finite
}

func newNumber(text string) number {
	f, err := strconv.ParseFloat(text, 64)
	return number{text: text, f: f, ok: err == nil && !math.IsInf(f, 0)}
}

// cmp compares x with b: as floats when they are clearly apart, exactly
// otherwise.
func (x number) cmp(b *bound) int {
	if x.ok && !math.IsInf(b.f, 0) {
		d := x.f - b.f
		if math.Abs(d) > 1e-9*max(1, math.Abs(x.f), math.Abs(b.f)) {
			if d < 0 {
				return -1
			}
			return 1
		}
	}
	r, ok := new(big.Rat).SetString(x.text)
	if !ok {
		return 0
	}
	return r.Cmp(b.rat)
}

// has reports whether v is of one of the types, with JSON Schema's
// integer: a number whose value is whole (1.0 is an integer).
func (t typeSet) has(v any) bool {
	switch v := v.(type) {
	case nil:
		return t&tNull != 0
	case bool:
		return t&tBoolean != 0
	case string:
		return t&tString != 0
	case []any:
		return t&tArray != 0
	case map[string]any:
		return t&tObject != 0
	case json.Number:
		if t&tNumber != 0 {
			return true
		}
		if t&tInteger == 0 {
			return false
		}
		s := string(v)
		if !strings.ContainsAny(s, ".eE") {
			return true
		}
		r, ok := new(big.Rat).SetString(s)
		return ok && r.IsInt()
	}
	return false
}

// uniqueScalars reports whether the items are strings, booleans or
// nulls, none twice. Other items (whose equality has JSON Schema's
// rules: 1 equals 1.0) make it say no, and the general validator
// decide; compile keeps uniqueItems out of not and oneOf, where that
// "no" could turn into a yes.
func uniqueScalars(items []any) bool {
	if len(items) < 2 {
		return true
	}
	seen := make(map[any]struct{}, len(items))
	for _, x := range items {
		switch x.(type) {
		case string, bool, nil:
		default:
			return false
		}
		if _, dup := seen[x]; dup {
			return false
		}
		seen[x] = struct{}{}
	}
	return true
}
