package transport

import (
	"bufio"
	"bytes"
	"errors"
	"net/http"
	"net/textproto"
	"strings"
)

var (
	errHeadTooLarge = errors.New("response head larger than 1 MiB, the limit")
	errStatusLine   = errors.New("malformed status line")
	errFieldLine    = errors.New("malformed header field line")
	errFraming      = errors.New("conflicting or unsupported message framing")
)

// headScratch is where a connection parses response heads, reused from
// one exchange to the next: the field lines' bytes and where each key and
// value lies in them. Turning them into strings takes one allocation for
// all the bytes and one for all the values.
type headScratch struct {
	buf    []byte
	line   []byte // a line longer than the read buffer, pieced together
	fields []fieldSpan
	keys   []string
	vals   []string
	conn   []string // values of Connection fields
}

type fieldSpan struct{ k0, v0, v1 int }

// readLine returns the next line without its line ending: LF or CRLF,
// or only CRLF if crlf is set. It is valid until the next read from br.
func (sc *headScratch) readLine(br *bufio.Reader, crlf bool) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		sc.line = append(sc.line[:0], line...)
		for err == bufio.ErrBufferFull {
			if len(sc.line) > MaxResponseHeadBytes {
				return nil, errHeadTooLarge
			}
			line, err = br.ReadSlice('\n')
			sc.line = append(sc.line, line...)
		}
		line = sc.line
	}
	if err != nil {
		return nil, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	} else if crlf {
		return nil, errFieldLine
	}
	return line, nil
}

// readFields reads field lines up to the empty line that ends them.
// It is stricter than net/textproto: obs-fold and whitespace before the
// colon are errors, as RFC 9112 lets a recipient choose. crlf demands
// CRLF line endings, as net/http does of a trailer section.
func (sc *headScratch) readFields(br *bufio.Reader, crlf bool) error {
	sc.buf, sc.fields = sc.buf[:0], sc.fields[:0]
	for {
		line, err := sc.readLine(br, crlf)
		if err != nil {
			return err
		}
		if len(line) == 0 {
			return nil
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !validFieldName(line[:colon]) {
			return errFieldLine
		}
		val := trimOWS(line[colon+1:])
		if !validFieldValue(val) {
			return errFieldLine
		}
		if len(sc.buf)+len(line) > MaxResponseHeadBytes {
			return errHeadTooLarge
		}
		k0 := len(sc.buf)
		sc.buf = append(sc.buf, line[:colon]...)
		v0 := len(sc.buf)
		sc.buf = append(sc.buf, val...)
		sc.fields = append(sc.fields, fieldSpan{k0, v0, len(sc.buf)})
	}
}

// strings turns the fields into canonical keys and values; a key that is
// canonical already, or common, costs nothing more.
func (sc *headScratch) strings() {
	sc.keys, sc.vals = sc.keys[:0], nil
	if len(sc.fields) == 0 {
		return
	}
	s := string(sc.buf)
	sc.vals = make([]string, len(sc.fields))
	for i, f := range sc.fields {
		sc.keys = append(sc.keys, textproto.CanonicalMIMEHeaderKey(s[f.k0:f.v0]))
		sc.vals[i] = s[f.v0:f.v1]
	}
}

// add appends field i to h, sharing the values' backing array.
func (sc *headScratch) add(h http.Header, i int) {
	k := sc.keys[i]
	if vv := h[k]; vv != nil {
		h[k] = append(vv, sc.vals[i])
	} else {
		h[k] = sc.vals[i : i+1 : i+1]
	}
}

// release drops the references to the last head's strings.
func (sc *headScratch) release() {
	clear(sc.keys)
	clear(sc.conn)
	sc.keys, sc.vals, sc.conn = sc.keys[:0], nil, sc.conn[:0]
}

// framing is how a response's body is delimited, and whether the
// connection may carry another exchange after it.
type framing struct {
	noBody   bool  // HEAD, 1xx, 204, 304
	chunked  bool  // Transfer-Encoding: chunked
	length   int64 // Content-Length; -1 if none
	close    bool  // Connection: close, HTTP/1.0, or a body delimited by closing
	trailers bool  // a chunked response that announces trailers
}

// frame works out the framing of a final response as net/http's client
// does (RFC 9112 section 6.3), and collects the Connection field's
// values. sc.strings must have run.
func (sc *headScratch) frame(code int, http10, head bool) (framing, error) {
	fr := framing{length: -1, close: http10, noBody: head || code < 200 || code == 204 || code == 304}
	var te, cl string
	nte, ncl := 0, 0
	for i, k := range sc.keys {
		v := sc.vals[i]
		switch k {
		case "Connection":
			sc.conn = append(sc.conn, v)
		case "Transfer-Encoding":
			te = v
			nte++
		case "Content-Length":
			if ncl > 0 && v != cl {
				return fr, errFraming
			}
			cl = v
			ncl++
		case "Trailer":
			// As net/http: only a field that names something announces.
			fr.trailers = fr.trailers || strings.ContainsFunc(v, func(r rune) bool { return r != ',' && r != ' ' && r != '\t' })
		}
	}
	if !http10 && hasToken(sc.conn, "close") {
		fr.close = true
	}
	if nte > 0 && !http10 {
		// As nginx and net/http: one Transfer-Encoding, and only chunked.
		if nte > 1 || !strings.EqualFold(te, "chunked") {
			return fr, errFraming
		}
		fr.chunked = true
	}
	fr.trailers = fr.trailers && fr.chunked
	if fr.trailers && sc.badTrailerNames() {
		return fr, errFraming
	}
	if ncl > 0 {
		// Checked even where no body follows, or chunked framing wins.
		n, ok := parseContentLength(cl)
		if !ok {
			return fr, errFraming
		}
		if !fr.chunked {
			fr.length = n
		}
	}
	if !fr.noBody && !fr.chunked && ncl == 0 {
		fr.close = true // the body ends when the worker closes
	}
	return fr, nil
}

// badTrailerNames reports whether the Trailer field announces a field
// that must not be a trailer.
func (sc *headScratch) badTrailerNames() bool {
	for i, k := range sc.keys {
		if k != "Trailer" {
			continue
		}
		for name := range strings.SplitSeq(sc.vals[i], ",") {
			switch http.CanonicalHeaderKey(textproto.TrimString(name)) {
			case "Transfer-Encoding", "Trailer", "Content-Length":
				return true
			}
		}
	}
	return false
}

// skipResponseField reports whether field i of a response head stays
// between the worker and us: hop-by-hop fields, those its Connection
// field names, framing that the server redoes for the client.
func (sc *headScratch) skipResponseField(i int, fr framing) bool {
	k := sc.keys[i]
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Transfer-Encoding", "Upgrade":
		return true
	case "Trailer":
		return !fr.trailers
	case "Content-Length":
		// Chunked framing wins where there is a body (net/http's rule);
		// of the others the first only: duplicates were checked equal.
		if fr.chunked && !fr.noBody {
			return true
		}
		for j := range i {
			if sc.keys[j] == k {
				return true
			}
		}
	}
	return len(sc.conn) > 0 && hasToken(sc.conn, k)
}

// parseStatusLine parses "HTTP/1.x ddd[ reason]".
func parseStatusLine(line []byte) (code int, http10 bool, ok bool) {
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' ||
		(len(line) > 12 && line[12] != ' ') {
		return 0, false, false
	}
	switch line[7] {
	case '0':
		http10 = true
	case '1':
	default:
		return 0, false, false
	}
	d := line[9:12]
	if d[0] < '1' || d[0] > '9' || d[1] < '0' || d[1] > '9' || d[2] < '0' || d[2] > '9' {
		return 0, false, false
	}
	return int(d[0]-'0')*100 + int(d[1]-'0')*10 + int(d[2]-'0'), http10, true
}

// parseContentLength accepts what net/http does: decimal digits, at most
// 2^63-1.
func parseContentLength(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return -1, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return -1, false
		}
		n = n*10 + uint64(c-'0')
	}
	if n > 1<<63-1 {
		return -1, false
	}
	return int64(n), true
}

// parseChunkSize parses a chunk-size line as net/http does: CRLF
// required, extensions ignored, at most 16 hex digits.
func parseChunkSize(line []byte) (uint64, bool) {
	n := len(line)
	if n < 2 || line[n-2] != '\r' || bytes.IndexByte(line[:n-2], '\r') >= 0 || n-2 >= 4096 {
		return 0, false
	}
	line = trimOWSRight(line[:n-2])
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i]
	}
	if len(line) == 0 || len(line) > 16 {
		return 0, false
	}
	var size uint64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return 0, false
		}
		size = size<<4 | uint64(c)
	}
	return size, true
}

// hasToken reports whether a comma-separated list among values holds
// token, ignoring case.
func hasToken(values []string, token string) bool {
	for _, v := range values {
		for t := range strings.SplitSeq(v, ",") {
			if strings.EqualFold(textproto.TrimString(t), token) {
				return true
			}
		}
	}
	return false
}

// isEventStream reports whether a Content-Type is text/event-stream.
func isEventStream(ct string) bool {
	mt, _, _ := strings.Cut(ct, ";")
	return strings.EqualFold(textproto.TrimString(mt), "text/event-stream")
}

// tokenBytes marks the bytes of an RFC 9110 token.
var tokenBytes = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c], t[c-'a'+'A'] = true, true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func validFieldName[S string | []byte](s S) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenBytes[s[i]] {
			return false
		}
	}
	return true
}

// validFieldValue rejects control bytes but HTAB, as net/http does.
func validFieldValue[S string | []byte](s S) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return trimOWSRight(b)
}

func trimOWSRight(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
