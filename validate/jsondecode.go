package validate

import (
	"bytes"
	"encoding/json"
	"errors"
	"unicode/utf8"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// decodeJSON decodes body as jsonschema.UnmarshalJSON does (numbers as
// json.Number, the last of duplicate keys, one value and nothing after
// it), but without reflection: request bodies are decoded on every
// request. It handles the common case itself and hands everything else
// to the standard decoder: \u escapes, invalid UTF-8 (which the standard
// decoder replaces), deep nesting, and every error, so that results and
// error messages are the standard ones. FuzzDecodeJSON holds the two to
// the same results.
//
// A number beyond the limits of numbers.go is a *numberError: the fast
// decoder stops at its first digit past them, so that refusing a huge
// literal costs no more than reading it up to there.
func decodeJSON(body []byte) (any, error) {
	v, err := decodeDocument(body)
	var ne *numberError
	if err == nil || errors.As(err, &ne) {
		return v, err
	}
	if v, err = jsonschema.UnmarshalJSON(bytes.NewReader(body)); err != nil {
		return nil, err
	}
	if ptr, ok := oversizedNumber(v); ok {
		return nil, &numberError{pointer: ptr, offset: -1}
	}
	return v, nil
}

// decodeDocument is the fast decoder on a whole body; errHandOver (or a
// *numberError) when it leaves the body to the standard decoder.
func decodeDocument(body []byte) (any, error) {
	d := jsonDecoder{data: body}
	v, err := d.value(0)
	if err != nil {
		return nil, err
	}
	if d.space(); d.pos != len(d.data) {
		return nil, errHandOver
	}
	return v, nil
}

// decodeFast is the fast decoder alone; false hands the input over.
func decodeFast(body []byte) (any, bool) {
	v, err := decodeDocument(body)
	return v, err == nil
}

// errHandOver means the fast decoder leaves the input to the standard one.
var errHandOver = errors.New("hand over to encoding/json")

// maxFastDepth is the nesting the fast decoder handles; deeper input goes
// to the standard decoder and its limits.
const maxFastDepth = 512

type jsonDecoder struct {
	data []byte
	pos  int
}

func (d *jsonDecoder) space() {
	for d.pos < len(d.data) {
		switch d.data[d.pos] {
		case ' ', '\t', '\n', '\r':
			d.pos++
		default:
			return
		}
	}
}

func (d *jsonDecoder) value(depth int) (any, error) {
	if depth > maxFastDepth {
		return nil, errHandOver
	}
	d.space()
	if d.pos >= len(d.data) {
		return nil, errHandOver
	}
	switch c := d.data[d.pos]; {
	case c == '{':
		return d.object(depth)
	case c == '[':
		return d.array(depth)
	case c == '"':
		return d.str()
	case c == 't':
		return true, d.literal("true")
	case c == 'f':
		return false, d.literal("false")
	case c == 'n':
		return nil, d.literal("null")
	case c == '-' || (c >= '0' && c <= '9'):
		return d.number()
	}
	return nil, errHandOver
}

func (d *jsonDecoder) literal(word string) error {
	if !bytes.HasPrefix(d.data[d.pos:], []byte(word)) {
		return errHandOver
	}
	d.pos += len(word)
	return nil
}

func (d *jsonDecoder) object(depth int) (any, error) {
	d.pos++ // {
	obj := map[string]any{}
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == '}' {
		d.pos++
		return obj, nil
	}
	for {
		d.space()
		if d.pos >= len(d.data) || d.data[d.pos] != '"' {
			return nil, errHandOver
		}
		key, err := d.str()
		if err != nil {
			return nil, err
		}
		d.space()
		if d.pos >= len(d.data) || d.data[d.pos] != ':' {
			return nil, errHandOver
		}
		d.pos++
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		obj[key] = v
		if done, err := d.after('}'); done || err != nil {
			return obj, err
		}
	}
}

func (d *jsonDecoder) array(depth int) (any, error) {
	d.pos++ // [
	arr := []any{}
	d.space()
	if d.pos < len(d.data) && d.data[d.pos] == ']' {
		d.pos++
		return arr, nil
	}
	for {
		v, err := d.value(depth + 1)
		if err != nil {
			return nil, err
		}
		arr = append(arr, v)
		if done, err := d.after(']'); done || err != nil {
			return arr, err
		}
	}
}

// after reads what follows a member or element: a comma (more follow)
// or the container's closing byte (done).
func (d *jsonDecoder) after(closing byte) (done bool, err error) {
	d.space()
	if d.pos >= len(d.data) {
		return false, errHandOver
	}
	switch d.data[d.pos] {
	case ',':
		d.pos++
		return false, nil
	case closing:
		d.pos++
		return true, nil
	}
	return false, errHandOver
}

// str reads a string with at most the short escapes; \u escapes, control
// characters and invalid UTF-8 are handed over.
func (d *jsonDecoder) str() (string, error) {
	d.pos++ // "
	start := d.pos
	ascii, escaped := true, false
	for d.pos < len(d.data) {
		c := d.data[d.pos]
		switch {
		case c == '"':
			raw := d.data[start:d.pos]
			d.pos++
			if !ascii && !utf8.Valid(raw) {
				return "", errHandOver
			}
			if !escaped {
				return string(raw), nil
			}
			return unescape(raw)
		case c == '\\':
			escaped = true
			d.pos += 2
			continue
		case c < 0x20:
			return "", errHandOver
		case c >= 0x80:
			ascii = false
		}
		d.pos++
	}
	return "", errHandOver
}

func unescape(raw []byte) (string, error) {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i >= len(raw) {
			return "", errHandOver
		}
		switch raw[i] {
		case '"', '\\', '/':
			out = append(out, raw[i])
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		default: // \u and anything invalid
			return "", errHandOver
		}
	}
	return string(out), nil
}

// number reads a number in JSON's grammar,
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?, within the limits of
// numbers.go.
func (d *jsonDecoder) number() (any, error) {
	start := d.pos
	// digits reads digits, but no more than the limit and one: the
	// number is refused then, whatever follows.
	digits := func() int {
		n := 0
		for d.pos < len(d.data) && d.data[d.pos] >= '0' && d.data[d.pos] <= '9' && n <= maxNumberDigits {
			d.pos++
			n++
		}
		return n
	}
	if d.data[d.pos] == '-' {
		d.pos++
	}
	mantissa := 1
	if d.pos < len(d.data) && d.data[d.pos] == '0' {
		d.pos++
	} else if mantissa = digits(); mantissa == 0 {
		return nil, errHandOver
	}
	if d.pos < len(d.data) && d.data[d.pos] == '.' {
		d.pos++
		n := digits()
		if n == 0 {
			return nil, errHandOver
		}
		mantissa += n
	}
	if mantissa > maxNumberDigits {
		return nil, &numberError{offset: start}
	}
	if d.pos < len(d.data) && (d.data[d.pos] == 'e' || d.data[d.pos] == 'E') {
		d.pos++
		if d.pos < len(d.data) && (d.data[d.pos] == '+' || d.data[d.pos] == '-') {
			d.pos++
		}
		exp := d.pos
		if digits() == 0 {
			return nil, errHandOver
		}
		if !exponentFits(d.data[exp:d.pos]) {
			return nil, &numberError{offset: start}
		}
	}
	return json.Number(d.data[start:d.pos]), nil
}
