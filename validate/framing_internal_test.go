package validate

import (
	"strconv"
	"strings"
	"testing"
)

// The scanner finds the head whose body length is ambiguous however the
// stream arrives, and follows bodies as Go's server reads them: a head
// inside a body is body, a head after one is a head.
func TestFramingScanner(t *testing.T) {
	const ambiguous = "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
	get := "GET / HTTP/1.1\r\nHost: a\r\n\r\n"
	withLength := func(body string) string {
		return "POST / HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
	}
	for _, c := range []struct {
		name, stream string
		refused      string // the stream up to and with the refused head; "" for none
	}{
		{"plain requests", get + withLength("hello") + get, ""},
		{"both lengths", ambiguous, ambiguous},
		{"both lengths, the other order", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"},
		{"names in any case", "POST / HTTP/1.1\r\ncontent-LENGTH: 3\r\nTRANSFER-encoding: chunked\r\n\r\n", "POST / HTTP/1.1\r\ncontent-LENGTH: 3\r\nTRANSFER-encoding: chunked\r\n\r\n"},
		{"bare LF", "POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n", "POST / HTTP/1.1\nContent-Length: 3\nTransfer-Encoding: chunked\n\n"},
		{"HTTP/1.0 with Transfer-Encoding", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"},
		{"after a good request", get + withLength("hi") + ambiguous + get, get + withLength("hi") + ambiguous},
		{"inside a Content-Length body", withLength(ambiguous) + get, ""},
		{"after a Content-Length body", withLength(ambiguous) + ambiguous, withLength(ambiguous) + ambiguous},
		{"inside a chunk", "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + strconv.FormatInt(int64(len(ambiguous)), 16) + "\r\n" + ambiguous + "\r\n0\r\n\r\n" + get, ""},
		{"after chunks, extensions and trailers",
			"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n" + ambiguous,
			"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\r\nhello\r\nA \r\n0123456789\r\n0\r\nX-Sum: 1\r\n\r\n" + ambiguous},
		{"a folded Content-Length", "POST / HTTP/1.1\r\nContent-Length:\r\n 2\r\n\r\nhi" + ambiguous, "POST / HTTP/1.1\r\nContent-Length:\r\n 2\r\n\r\nhi" + ambiguous},
		{"other names", "POST / HTTP/1.1\r\nX-Content-Length: 3\r\nContent-Lengths: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", ""},
		{"HTTP/2", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + ambiguous, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := -1
			if c.refused != "" {
				if !strings.HasPrefix(c.stream, c.refused) {
					t.Fatal("bad case")
				}
				want = len(c.refused) - 1
			}
			for _, size := range []int{1, 2, 7, len(c.stream)} {
				var s framingScanner
				got := -1
				for off := 0; off < len(c.stream) && got < 0; off += size {
					part := c.stream[off:min(off+size, len(c.stream))]
					if at := s.scan([]byte(part)); at >= 0 {
						got = off + at
					}
				}
				if got != want {
					t.Fatalf("in pieces of %d: refused at %d, want %d", size, got, want)
				}
			}
		})
	}
}
