package transport

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
)

// forwardable reports whether the lean forwarder handles r. What it
// declines goes through httputil.ReverseProxy: protocol switches,
// Expect: 100-continue, requests with trailers, CONNECT (extended
// CONNECT of HTTP/2 included), and anything ReverseProxy would rewrite
// (a query it cleans, a host it punycodes or blanks) or refuse.
func forwardable(r *http.Request) bool {
	if r.URL == nil || r.URL.Opaque != "" || r.Method == http.MethodConnect || !validFieldName(r.Method) {
		return false
	}
	h := r.Header
	if h["Upgrade"] != nil || h["Expect"] != nil || h["Trailer"] != nil || r.Trailer != nil {
		return false
	}
	return validHost(r.Host) && plainQuery(r.URL.RawQuery)
}

// validHost admits the hosts that need no cleaning: names, IPv4, IPv6
// without a zone, a port.
func validHost(h string) bool {
	for i := 0; i < len(h); i++ {
		switch c := h[i]; {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	return true
}

// plainQuery reports whether ReverseProxy would send the query as it is:
// no semicolon, no malformed escape, nothing that cannot stand in a
// request line.
func plainQuery(q string) bool {
	for i := 0; i < len(q); i++ {
		switch c := q[i]; {
		case c <= ' ', c == 0x7f, c == ';':
			return false
		case c == '%':
			if i+2 >= len(q) || !isHex(q[i+1]) || !isHex(q[i+2]) {
				return false
			}
		}
	}
	return true
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// writeHead writes r's request line and header fields to bw, as
// the standard path (proxy.go's Rewrite and http.Transport) would
// send them, in map order. It returns false, having written part of it
// perhaps, at a field name or value that must not be sent.
func (f *forwarder) writeHead(bw *bufio.Writer, r *http.Request, body int64) bool {
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(path)
	if r.URL.ForceQuery || r.URL.RawQuery != "" {
		bw.WriteByte('?')
		bw.WriteString(r.URL.RawQuery)
	}
	host := r.Host
	if host == "" {
		host = f.host
	}
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(host)
	bw.WriteString("\r\n")

	conn := r.Header["Connection"]
	for k, vv := range r.Header {
		if skipRequestField(k) || (conn != nil && hasToken(conn, k)) {
			continue
		}
		if !validFieldName(k) {
			return false
		}
		for _, v := range vv {
			if !writeField(bw, k, v) {
				return false
			}
		}
	}
	// http.Transport sends the first User-Agent only, and none if empty.
	if ua := r.Header["User-Agent"]; len(ua) > 0 && ua[0] != "" && !writeField(bw, "User-Agent", ua[0]) {
		return false
	}
	// ReverseProxy tells the worker that trailers would get through.
	if hasToken(r.Header["Te"], "trailers") {
		bw.WriteString("Te: trailers\r\n")
	}
	if !f.writeForwarded(bw, r) {
		return false
	}
	switch {
	case body > 0:
		bw.WriteString("Content-Length: ")
		bw.Write(strconv.AppendInt(bw.AvailableBuffer(), body, 10))
		bw.WriteString("\r\n")
	case body < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	bw.WriteString("\r\n")
	return true
}

// skipRequestField reports whether a request field is not passed on as
// it is: hop-by-hop fields (RFC 9110 section 7.6.1 and ReverseProxy's
// list), framing, and what writeHead writes itself.
func skipRequestField(k string) bool {
	switch k {
	case "Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Host", "Content-Length", "User-Agent",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto":
		return true
	}
	return false
}

func writeField(bw *bufio.Writer, k, v string) bool {
	if !validFieldValue(v) {
		return false
	}
	bw.WriteString(k)
	bw.WriteString(": ")
	bw.WriteString(v)
	bw.WriteString("\r\n")
	return true
}

// writeForwarded writes X-Forwarded-For, -Host and -Proto as
// the standard path's Rewrite sets them: the client's address, Host and
// scheme; behind a trusted proxy, appended to what it said (For), or
// what it said if anything (Host, Proto). Forwarded is dropped.
func (f *forwarder) writeForwarded(bw *bufio.Writer, r *http.Request) bool {
	trusted := f.trust != nil && f.trust(r)
	if ip, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		bw.WriteString("X-Forwarded-For: ")
		if trusted {
			for _, v := range r.Header["X-Forwarded-For"] {
				if !validFieldValue(v) {
					return false
				}
				bw.WriteString(v)
				bw.WriteString(", ")
			}
		}
		bw.WriteString(ip)
		bw.WriteString("\r\n")
	}
	host, proto := r.Host, "http"
	if r.TLS != nil {
		proto = "https"
	}
	if trusted {
		if v := r.Header.Get("X-Forwarded-Host"); v != "" {
			host = v
		}
		if v := r.Header.Get("X-Forwarded-Proto"); v != "" {
			proto = v
		}
	}
	return writeField(bw, "X-Forwarded-Host", host) && writeField(bw, "X-Forwarded-Proto", proto)
}

// requestBodyLength is the length writeHead announces: -1 for a body of
// unknown length, sent chunked.
func requestBodyLength(r *http.Request) int64 {
	if r.Body == nil || r.Body == http.NoBody || r.ContentLength == 0 {
		return 0
	}
	return r.ContentLength
}

// bodyError marks a failure to read the client's body, as opposed to a
// failure to write to the worker.
func bodyError(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", errBodyRead, err)
}

// writeBody copies n bytes of body (n < 0: until EOF, chunked) to bw and
// flushes. It reports whether any byte was read from body; an error
// from body is wrapped in errBodyRead, one from the connection is not.
func writeBody(bw *bufio.Writer, body io.Reader, n int64) (touched bool, err error) {
	if n < 0 {
		return writeChunked(bw, body)
	}
	for n > 0 {
		if bw.Available() == 0 {
			if err := bw.Flush(); err != nil {
				return touched, err
			}
		}
		// Read straight into the write buffer: no copy, no buffer to get.
		buf := bw.AvailableBuffer()
		buf = buf[:min(int64(cap(buf)), n)]
		k, rerr := body.Read(buf)
		if k > 0 {
			touched = true
			n -= int64(k)
			_, _ = bw.Write(buf[:k])
		}
		if rerr != nil && (rerr != io.EOF || n > 0) {
			return touched, bodyError(rerr)
		}
	}
	return touched, bw.Flush()
}

// writeChunked sends body chunked, a chunk per read, each flushed at once
// as http.Transport does, so that a streamed upload is not held back.
func writeChunked(bw *bufio.Writer, body io.Reader) (touched bool, err error) {
	bufp := buffers.Get().(*[bufSize]byte)
	defer buffers.Put(bufp)
	for {
		k, rerr := body.Read(bufp[:])
		if k > 0 {
			touched = true
			bw.Write(strconv.AppendUint(bw.AvailableBuffer(), uint64(k), 16))
			bw.WriteString("\r\n")
			bw.Write(bufp[:k])
			bw.WriteString("\r\n")
			if err := bw.Flush(); err != nil {
				return touched, err
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return touched, bodyError(rerr)
		}
	}
	bw.WriteString("0\r\n\r\n")
	return touched, bw.Flush()
}
