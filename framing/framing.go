// Package framing guards an HTTP/1 listener against request smuggling:
// a request head that declares its body's length twice is refused before
// Go's server serves it. It works on connections, below any handler, and
// shares nothing with request validation (package validate).
//
// It does not import Caddy: caddymodule's worker_pool_framing listener
// wrapper adapts it, and any Go program can wrap its own listener.
package framing

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// ErrAmbiguousFraming is what a connection wrapped by StrictFraming
// returns to its reader once a request head on it declares its body's
// length twice: Content-Length and Transfer-Encoding together, or
// Transfer-Encoding in HTTP/1.0, where Go ignores it.
var ErrAmbiguousFraming = errors.New("request with both Content-Length and Transfer-Encoding")

// StrictFraming wraps a listener of HTTP/1 connections (after TLS, if
// any) so that a request whose body length is ambiguous never gets
// served: Go's HTTP server answers it "400 Bad Request" with Connection:
// close and closes the connection, as nginx does.
//
// Go's server takes Transfer-Encoding over Content-Length, as RFC 9112
// says, but then serves the request and keeps the connection open. A
// proxy in front that took Content-Length instead would see a different
// end of the body, and what one of them takes for body the other takes
// for the next request: request smuggling. A handler cannot refuse it,
// because the server removes Content-Length before any handler runs; so
// the connection is read as the server reads it, and the read that
// would complete such a head fails instead, which the server answers
// with 400.
//
// Only request heads are looked at; bodies are skipped by their length
// (Content-Length, or chunk sizes), as the server reads them. A
// connection that is not HTTP/1 (HTTP/2's preface, a protocol switched
// to) or that the server would refuse anyway for its framing is passed
// through unread from there on.
func StrictFraming(ln net.Listener) net.Listener { return framingListener{ln} }

type framingListener struct{ net.Listener }

func (l framingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	fc := &framingConn{Conn: c}
	if _, ok := c.(connectionStater); ok {
		return framingTLSConn{fc}, nil
	}
	return fc, nil
}

// connectionStater is a TLS connection: the server asks it for its
// state, so the wrapper must answer for it.
type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

type framingTLSConn struct{ *framingConn }

func (c framingTLSConn) ConnectionState() tls.ConnectionState {
	return c.Conn.(connectionStater).ConnectionState()
}

// framingConn scans what the server reads. The server never reads a
// connection from two goroutines at once (its own, or its background
// read while a handler runs); mu keeps the scanner whole even if some
// other reader did, though bytes read at the same time by two readers
// have no order to follow.
type framingConn struct {
	net.Conn
	mu      sync.Mutex
	scan    framingScanner
	refused atomic.Bool
}

func (c *framingConn) Read(p []byte) (int, error) {
	if c.refused.Load() {
		return 0, ErrAmbiguousFraming
	}
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	at := c.scan.scan(p[:n])
	c.mu.Unlock()
	if at >= 0 {
		// Everything before the head's last byte goes to the server,
		// which then finds the head cut short by the error.
		c.refused.Store(true)
		return at, ErrAmbiguousFraming
	}
	return n, err
}

// lingerAfterRefusal bounds how long Close waits, after refusing, for
// the client to take the 400 before the rest of what it sent is thrown
// away: closing with unread bytes resets the connection, and a client
// may then lose the answer. It is what Go's server waits after refusing
// a body that is too large.
const lingerAfterRefusal = 500 * time.Millisecond

// Close closes the connection; after a refusal, only once the client has
// closed its side or lingerAfterRefusal has passed.
func (c *framingConn) Close() error {
	if c.refused.Load() {
		if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
		_ = c.Conn.SetReadDeadline(time.Now().Add(lingerAfterRefusal))
		_, _ = io.Copy(io.Discard, io.LimitReader(c.Conn, 1<<20))
	}
	return c.Conn.Close()
}

// framingScanner follows a stream of HTTP/1 requests as Go's server
// parses them (net/textproto for heads, its chunked reader for bodies)
// and finds heads whose body length is ambiguous. It keeps a few bytes
// of state whatever the size of heads and bodies.
type framingScanner struct {
	state    framingState
	ring     [len("HTTP/1.1\r")]byte // the request line's last bytes
	lineLen  int
	http10   bool
	hasCL    bool
	hasTE    bool
	name     headerName // of the header being read
	nameLen  int
	inCL     bool // the header being read is Content-Length
	cl       contentLength
	left     uint64 // of a Content-Length body or a chunk
	hexCount int
}

type framingState uint8

const (
	stRequestLine framingState = iota
	stHeaderStart              // a header line, or the head's end
	stHeaderName
	stHeaderValue
	stHeadCR // "\r" at the start of a line: the head ends with "\n"
	stBody
	stChunkSize
	stChunkSpace // whitespace after the size
	stChunkExt   // an extension, to the line's end
	stChunkLF
	stChunkData
	stChunkCR
	stChunkDataLF
	stTrailerStart
	stTrailerLine
	stTrailerCR
	stOff // not followed: the rest passes unread
)

// headerName tracks which of the two names a header's name may still be.
type headerName uint8

const (
	mayCL headerName = 1 << iota
	mayTE
)

const (
	nameCL = "content-length"
	nameTE = "transfer-encoding"
)

// contentLength parses a Content-Length value as the server does:
// digits with optional whitespace around them.
type contentLength struct {
	n      uint64
	digits int
	after  bool // whitespace after the digits
	bad    bool
}

func (v *contentLength) add(c byte) {
	switch {
	case c == ' ' || c == '\t' || c == '\r':
		v.after = v.digits > 0
	case c >= '0' && c <= '9' && !v.after && v.digits < 18:
		v.n = v.n*10 + uint64(c-'0')
		v.digits++
	default:
		v.bad = true
	}
}

// scan follows p, the next bytes the server reads. It returns the index
// of the last byte of an ambiguous head, or -1.
func (s *framingScanner) scan(p []byte) int {
	for i := 0; i < len(p); i++ {
		switch s.state {
		case stOff:
			return -1
		case stBody, stChunkData:
			n := uint64(len(p) - i)
			if n > s.left {
				n = s.left
			}
			s.left -= n
			i += int(n) - 1
			if s.left == 0 {
				if s.state == stBody {
					s.state = stRequestLine
				} else {
					s.state = stChunkCR
				}
			}
			continue
		case stRequestLine, stTrailerLine, stHeaderValue:
			// Up to the line's end, only the request line's last bytes
			// and a Content-Length's value matter: skip the rest.
			if s.state != stHeaderValue || !s.inCL {
				end := bytes.IndexByte(p[i:], '\n')
				if end < 0 {
					end = len(p) - i
				}
				if s.state == stRequestLine {
					s.keep(p[i : i+end])
				}
				i += end
				if i == len(p) {
					return -1
				}
			}
		}
		if s.step(p[i]) {
			return i
		}
	}
	return -1
}

// keep adds part of the request line: the ring holds its last bytes.
func (s *framingScanner) keep(part []byte) {
	if len(part) > len(s.ring) {
		s.lineLen += len(part) - len(s.ring)
		part = part[len(part)-len(s.ring):]
	}
	for _, c := range part {
		s.ring[s.lineLen%len(s.ring)] = c
		s.lineLen++
	}
}

// step takes one byte of a head, a chunk line or a trailer. It reports
// whether the byte ends a head whose body length is ambiguous.
func (s *framingScanner) step(c byte) bool {
	switch s.state {
	case stRequestLine: // at its end: scan skips to it
		s.requestLine()
	case stHeaderStart:
		switch c {
		case '\r':
			s.state = stHeadCR
		case '\n':
			return s.headEnd()
		case ' ', '\t':
			s.state = stHeaderValue // a folded line continues the value
			if s.inCL {
				s.cl.add(c)
			}
		default:
			s.inCL = false
			s.name, s.nameLen = mayCL|mayTE, 0
			s.state = stHeaderName
			s.nameByte(c)
		}
	case stHeadCR:
		if c != '\n' {
			s.state = stOff // a malformed line: the server refuses it
			return false
		}
		return s.headEnd()
	case stHeaderName:
		switch c {
		case ':':
			if s.name&mayCL != 0 && s.nameLen == len(nameCL) {
				s.hasCL, s.inCL, s.cl = true, true, contentLength{}
			}
			if s.name&mayTE != 0 && s.nameLen == len(nameTE) {
				s.hasTE = true
			}
			s.state = stHeaderValue
		case '\n':
			s.state = stOff
		default:
			s.nameByte(c)
		}
	case stHeaderValue:
		if c == '\n' {
			s.state = stHeaderStart
		} else if s.inCL {
			s.cl.add(c)
		}
	case stChunkSize:
		switch {
		case hexDigit(c) && s.hexCount < 16:
			s.left = s.left<<4 | uint64(hexValue(c))
			s.hexCount++
		case s.hexCount == 0:
			s.state = stOff
		case c == ' ' || c == '\t':
			s.state = stChunkSpace
		case c == ';':
			s.state = stChunkExt
		case c == '\r':
			s.state = stChunkLF
		default:
			s.state = stOff
		}
	case stChunkSpace:
		switch c {
		case ' ', '\t':
		case '\r':
			s.state = stChunkLF
		default:
			s.state = stOff
		}
	case stChunkExt:
		switch c {
		case '\r':
			s.state = stChunkLF
		case '\n':
			s.state = stOff
		}
	case stChunkLF:
		switch {
		case c != '\n':
			s.state = stOff
		case s.left == 0:
			s.state = stTrailerStart
		default:
			s.state = stChunkData
		}
	case stChunkCR:
		s.state = stChunkDataLF
		if c != '\r' {
			s.state = stOff
		}
	case stChunkDataLF:
		s.state, s.left, s.hexCount = stChunkSize, 0, 0
		if c != '\n' {
			s.state = stOff
		}
	case stTrailerStart:
		switch c {
		case '\r':
			s.state = stTrailerCR
		case '\n':
			s.state = stRequestLine
		default:
			s.state = stTrailerLine
		}
	case stTrailerLine:
		if c == '\n' {
			s.state = stTrailerStart
		}
	case stTrailerCR:
		s.state = stRequestLine
		if c != '\n' {
			s.state = stOff
		}
	}
	return false
}

// requestLine ends the request line: an HTTP/1 request's headers follow;
// anything else (HTTP/2's "PRI * HTTP/2.0") is not followed.
func (s *framingScanner) requestLine() {
	n := s.lineLen
	if n == 0 {
		return // an empty line before a request
	}
	var version [len("HTTP/1.1")]byte
	end := n
	if s.ring[(end-1)%len(s.ring)] == '\r' {
		end--
	}
	if end < len(version) {
		s.state = stOff
		return
	}
	for i := range version {
		version[i] = s.ring[(end-len(version)+i)%len(s.ring)]
	}
	v := string(version[:])
	if v[:len("HTTP/1.")] != "HTTP/1." || !(v[7] >= '0' && v[7] <= '9') {
		s.state = stOff
		return
	}
	*s = framingScanner{state: stHeaderStart, http10: v == "HTTP/1.0"}
}

func (s *framingScanner) nameByte(c byte) {
	if c >= 'A' && c <= 'Z' {
		c += 'a' - 'A'
	}
	if s.nameLen >= len(nameCL) || nameCL[s.nameLen] != c {
		s.name &^= mayCL
	}
	if s.nameLen >= len(nameTE) || nameTE[s.nameLen] != c {
		s.name &^= mayTE
	}
	s.nameLen++
}

// headEnd decides the body's framing at the end of a head, as the
// server does, and reports whether it is ambiguous.
func (s *framingScanner) headEnd() bool {
	switch {
	case s.hasTE && (s.hasCL || s.http10):
		return true
	case s.hasTE:
		s.state, s.left, s.hexCount = stChunkSize, 0, 0
	case s.hasCL && (s.cl.bad || s.cl.digits == 0):
		s.state = stOff // the server refuses it
	case s.hasCL && s.cl.n > 0:
		s.state, s.left = stBody, s.cl.n
	default:
		s.state, s.lineLen = stRequestLine, 0
	}
	return false
}

func hexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexValue(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
