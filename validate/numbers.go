package validate

import (
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/caddy-workerpool/caddy-workerpool/internal/problem"
)

// Numbers are compared with a schema's bounds (minimum, multipleOf,
// integer, enum …) exactly, as rationals, by the fast form and by the
// general validator alike. That costs time that grows with the digits of
// the literal and with its exponent: a body of one number of 900,000
// digits took seconds to refuse, 1e999999 a tenth of one. A literal
// beyond these limits is refused before any schema sees it; within them
// an exact comparison takes microseconds. Both are far beyond a
// double's 17 significant digits and exponents to ±308, or a
// decimal128's 34 digits.
const (
	// maxNumberDigits bounds the digits of a literal's integer and
	// fraction parts together.
	maxNumberDigits = 1000
	// maxNumberExponent bounds the value of its exponent part.
	maxNumberExponent = 1000
)

// numberLimits says what a refused number breaks.
var numberLimits = fmt.Sprintf("more than %d digits or an exponent beyond ±%d", maxNumberDigits, maxNumberExponent)

// numberError is a value refused for a number beyond the limits: at a
// JSON pointer below the value when the decoder knows it, else at a
// byte offset of the body.
type numberError struct {
	pointer string
	offset  int // -1 when pointer says where
}

func (e *numberError) Error() string {
	return e.field("").Detail
}

// field is e as a field error below prefix ("/body").
func (e *numberError) field(prefix string) problem.FieldError {
	if e.offset >= 0 {
		return problem.FieldError{Pointer: prefix, Detail: fmt.Sprintf("the number at byte %d has %s", e.offset, numberLimits)}
	}
	return problem.FieldError{Pointer: prefix + e.pointer, Detail: "has " + numberLimits}
}

// exponentFits reports whether the digits of an exponent part (after e
// and its sign) are within maxNumberExponent, without reading more of
// them than that takes.
func exponentFits[T string | []byte](digits T) bool {
	i := 0
	for i < len(digits) && digits[i] == '0' {
		i++
	}
	if len(digits)-i > len(strconv.Itoa(maxNumberExponent)) {
		return false
	}
	n := 0
	for ; i < len(digits); i++ {
		n = n*10 + int(digits[i]-'0')
	}
	return n <= maxNumberExponent
}

// numberFits reports whether a number literal (JSON's grammar) is within
// the limits.
func numberFits(lit string) bool {
	digits := 0
	for i := 0; i < len(lit); i++ {
		switch c := lit[i]; {
		case c >= '0' && c <= '9':
			if digits++; digits > maxNumberDigits {
				return false
			}
		case c == 'e' || c == 'E':
			exp := lit[i+1:]
			if len(exp) > 0 && (exp[0] == '+' || exp[0] == '-') {
				exp = exp[1:]
			}
			return exponentFits(exp)
		}
	}
	return true
}

// oversizedNumber finds a number beyond the limits in a decoded value;
// it returns its pointer below v, and whether there is one.
func oversizedNumber(v any) (string, bool) {
	switch v := v.(type) {
	case json.Number:
		return "", !numberFits(string(v))
	case []any:
		for i, x := range v {
			if ptr, ok := oversizedNumber(x); ok {
				return "/" + strconv.Itoa(i) + ptr, true
			}
		}
	case map[string]any:
		for k, x := range v {
			if ptr, ok := oversizedNumber(x); ok {
				return "/" + escape(k) + ptr, true
			}
		}
	}
	return "", false
}
