package transport

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net/http"
)

// maxInterim bounds the 1xx responses before the final one, as
// http.Transport does.
const maxInterim = 5

var (
	errSwitch      = errors.New("switched protocols unasked")
	errInterim     = errors.New("too many 1xx responses")
	errChunk       = errors.New("malformed chunked encoding")
	errUnsolicited = errors.New("bytes after the response")
)

// readResponse reads the worker's response from c and copies it to w:
// 1xx interim responses as they come, then the final head and its body.
// It returns the final status (0 if none was written) and whether c may
// carry another exchange.
func (f *forwarder) readResponse(c *conn, w http.ResponseWriter, x *Exchange, head bool) (status int, keep bool, err error) {
	sc := &c.head
	if speaksHTTP2(c.br) {
		return 0, false, fmt.Errorf("%w: %w", errNoResponse, errSpeaksHTTP2)
	}
	var fr framing
	for interim := 0; ; interim++ {
		code, http10, err := readHead(c.br, sc)
		if err != nil {
			return 0, false, fmt.Errorf("%w: %w", errNoResponse, err)
		}
		if fr, err = sc.frame(code, http10, head); err != nil {
			return 0, false, fmt.Errorf("%w: %w", errNoResponse, err)
		}
		if code >= 200 {
			status = code
			break
		}
		if code == http.StatusSwitchingProtocols {
			return 0, false, fmt.Errorf("%w: %w", errNoResponse, errSwitch)
		}
		if interim == maxInterim {
			return 0, false, fmt.Errorf("%w: %w", errNoResponse, errInterim)
		}
		// As ReverseProxy does: the interim fields go out with it, and
		// the header map is cleared after (WriteHeader does not for 1xx).
		h := w.Header()
		sc.copyFields(h, fr)
		w.WriteHeader(code)
		clear(h)
		sc.release()
	}

	h := w.Header()
	sc.copyFields(h, fr)
	x.head(h)
	events := !fr.noBody && isEventStream(h.Get("Content-Type"))
	stream := events || (!fr.noBody && fr.length < 0)
	sc.release()
	if _, typed := h["Content-Type"]; stream && !typed {
		// ReverseProxy sends a stream's head before its body, so the server
		// has nothing to sniff a type from; a nil value says the same.
		h["Content-Type"] = nil
	}
	x.answered(status)
	if events {
		x.stream()
	}
	w.WriteHeader(status)
	if stream {
		// As ReverseProxy with FlushInterval -1, but flushed only before a
		// read from the worker would wait: what has come goes out at once,
		// in as few writes as it came.
		c.w, c.pending = w, true
	}

	var trailers bool
	switch {
	case fr.noBody:
	case fr.chunked:
		trailers, err = copyChunked(c, w)
	default:
		err = copyBody(c, w, fr.length)
	}
	if err != nil {
		return status, false, err
	}
	if trailers {
		// As ReverseProxy: a flush makes the response chunked before the
		// trailers go in, or a short one would get a Content-Length and
		// lose them.
		_ = http.NewResponseController(w).Flush()
		sc.strings()
		for i, k := range sc.keys {
			if !sc.skipResponseField(i, framing{}) {
				h[http.TrailerPrefix+k] = append(h[http.TrailerPrefix+k], sc.vals[i])
			}
		}
	}
	// A worker that sent more than its response cannot be trusted with
	// the next request.
	return status, !fr.close && c.br.Buffered() == 0, nil
}

// readHead reads a status line and its fields into sc.
func readHead(br *bufio.Reader, sc *headScratch) (code int, http10 bool, err error) {
	line, err := sc.readLine(br, false)
	if err != nil {
		return 0, false, err
	}
	code, http10, ok := parseStatusLine(line)
	if !ok {
		return 0, false, errStatusLine
	}
	if err := sc.readFields(br, false); err != nil {
		return 0, false, err
	}
	sc.strings()
	return code, http10, nil
}

// copyFields adds the head's end-to-end fields to h.
func (sc *headScratch) copyFields(h http.Header, fr framing) {
	for i := range sc.keys {
		if !sc.skipResponseField(i, fr) {
			sc.add(h, i)
		}
	}
}

// copyBody copies a body of n bytes (n < 0: until the worker closes)
// from c to w, straight from c's read buffer.
func copyBody(c *conn, w http.ResponseWriter, n int64) error {
	br := c.br
	for n != 0 {
		if br.Buffered() == 0 {
			if _, err := br.Peek(1); err != nil {
				if n < 0 && err == io.EOF {
					return nil
				}
				return bodyCut(err)
			}
		}
		k := br.Buffered()
		if n > 0 && int64(k) > n {
			k = int(n)
		}
		p, _ := br.Peek(k)
		if _, err := w.Write(p); err != nil {
			return fmt.Errorf("%w: %w", errClientGone, err)
		}
		c.pending = c.w != nil
		_, _ = br.Discard(k)
		if n > 0 {
			n -= int64(k)
		}
	}
	return nil
}

// copyChunked copies a chunked body from c to w, and reads the trailer
// section into c.head. It reports whether there were trailer fields.
func copyChunked(c *conn, w http.ResponseWriter) (trailers bool, err error) {
	br := c.br
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			if err == bufio.ErrBufferFull {
				err = errChunk
			}
			return false, bodyCut(err)
		}
		size, ok := parseChunkSize(line)
		if !ok || size > 1<<62 {
			return false, bodyCut(errChunk)
		}
		if size == 0 {
			break
		}
		if err := copyBody(c, w, int64(size)); err != nil {
			return false, err
		}
		crlf, err := br.Peek(2)
		if err != nil {
			return false, bodyCut(err)
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return false, bodyCut(errChunk)
		}
		_, _ = br.Discard(2)
	}
	if err := c.head.readFields(br, true); err != nil {
		return false, bodyCut(err)
	}
	return len(c.head.fields) > 0, nil
}

func bodyCut(err error) error {
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %w", errAborted, err)
}

// speaksHTTP2 reports whether the worker's first bytes are an HTTP/2
// frame header rather than a status line: a SETTINGS frame (type 4) on
// stream 0, the connection preface of an HTTP/2 server, which such a
// server sends (and then GOAWAY) to a client that spoke HTTP/1.1.
func speaksHTTP2(br *bufio.Reader) bool {
	b, err := br.Peek(9)
	if err != nil && len(b) < 9 {
		return false
	}
	return string(b[:5]) != "HTTP/" && b[3] == 0x04 && b[5]&0x7f == 0 && b[6] == 0 && b[7] == 0 && b[8] == 0
}
