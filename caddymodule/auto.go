package caddymodule

import (
	"fmt"
	"strconv"
)

// The JSON of options that take a number or "auto" (max_inflight,
// max_count): a number, or the string "auto".

func marshalNumberOrAuto(n int, auto bool) ([]byte, error) {
	if auto {
		return []byte(`"auto"`), nil
	}
	return []byte(strconv.Itoa(n)), nil
}

// unmarshalNumberOrAuto reads b; the error names field.
func unmarshalNumberOrAuto(b []byte, field string) (n int, auto bool, err error) {
	if string(b) == `"auto"` {
		return 0, true, nil
	}
	n, err = strconv.Atoi(string(b))
	if err != nil {
		return 0, false, fmt.Errorf("%s: %s is neither a number nor \"auto\"", field, b)
	}
	return n, false, nil
}
