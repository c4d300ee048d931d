package framing

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

// FuzzFramingScanner holds the scanner to one verdict however a stream
// arrives: whole, or cut anywhere into two reads.
func FuzzFramingScanner(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), uint16(20))
	f.Add([]byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;x\r\nhello\r\n0\r\nT: 1\r\n\r\nGET / HTTP/1.0\r\nTransfer-Encoding: x\r\n\r\n"), uint16(60))
	f.Add([]byte("POST / HTTP/1.1\r\nContent-Length:\r\n 2\r\n\r\nhiPOST / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"), uint16(33))
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), uint16(3))
	f.Fuzz(func(t *testing.T, stream []byte, cut uint16) {
		var whole framingScanner
		want := whole.scan(stream)
		at := int(cut) % (len(stream) + 1)
		var split framingScanner
		got := split.scan(stream[:at])
		if got < 0 {
			if got = split.scan(stream[at:]); got >= 0 {
				got += at
			}
		}
		if got != want {
			t.Fatalf("%q cut at %d: refused at %d, whole at %d", stream, at, got, want)
		}
	})
}

// BenchmarkFramingScanner is what the framing wrapper costs a request:
// a browser-like head of 480 bytes, and a 64 KiB body it skips.
func BenchmarkFramingScanner(b *testing.B) {
	head := "POST /orders?dry_run=true HTTP/1.1\r\nHost: shop.example.com\r\n" +
		"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36\r\n" +
		"Accept: application/json\r\nAccept-Language: en-GB,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n" +
		"Content-Type: application/json\r\nContent-Length: 65536\r\nCookie: session=0123456789abcdef0123456789abcdef\r\n" +
		"X-Request-Id: 7c9e6679-7425-40de-944b-e07fc1f90ae7\r\nX-Forwarded-For: 203.0.113.7\r\n\r\n"
	stream := []byte(head + strings.Repeat("x", 65536))
	b.SetBytes(int64(len(head)))
	for b.Loop() {
		var s framingScanner
		if s.scan(stream) >= 0 {
			b.Fatal("refused")
		}
	}
}
