package transport

import (
	"bufio"
	"bytes"
	"io"
	"maps"
	"net/http"
	"net/textproto"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// responseView is a response as the client of the front would see it.
type responseView struct {
	Interim []int
	Status  int
	Header  http.Header
	Trailer http.Header
	Body    string
}

// viewWriter records what readResponse writes.
type viewWriter struct {
	h    http.Header
	v    responseView
	body bytes.Buffer
}

func (w *viewWriter) Header() http.Header { return w.h }

func (w *viewWriter) WriteHeader(code int) {
	if code < 200 {
		w.v.Interim = append(w.v.Interim, code)
		return
	}
	w.v.Status = code
	w.v.Header = w.h.Clone()
}

func (w *viewWriter) Write(p []byte) (int, error) { return w.body.Write(p) }

func (w *viewWriter) Flush() {}

// leanRead reads a response with the forwarder's reader.
func leanRead(data []byte, head bool) (responseView, bool, error) {
	c := &conn{br: bufio.NewReaderSize(bytes.NewReader(data), connReadBuf)}
	w := &viewWriter{h: http.Header{}}
	_, keep, err := (&forwarder{}).readResponse(c, w, new(Exchange), head)
	w.v.Body = w.body.String()
	w.v.Trailer = http.Header{}
	for k, vv := range w.h {
		if name, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			w.v.Trailer[name] = vv
		}
	}
	return w.v, keep, err
}

// stdRead reads a response as http.Transport does and returns what
// ReverseProxy would pass on.
func stdRead(data []byte, head bool) (responseView, bool, error) {
	var v responseView
	br := bufio.NewReader(bytes.NewReader(data))
	req := &http.Request{Method: http.MethodGet}
	if head {
		req.Method = http.MethodHead
	}
	var resp *http.Response
	for {
		var err error
		if resp, err = http.ReadResponse(br, req); err != nil {
			return v, false, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == 101 || len(v.Interim) == maxInterim {
			break
		}
		v.Interim = append(v.Interim, resp.StatusCode)
	}
	// ReverseProxy announces the trailers it knows of before the body.
	announced := slices.Sorted(maps.Keys(resp.Trailer))
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return v, false, err
	}
	v.Status, v.Body = resp.StatusCode, string(body)
	v.Header = resp.Header
	for _, f := range resp.Header["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = textproto.TrimString(sf); sf != "" {
				v.Header.Del(sf)
			}
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade"} {
		v.Header.Del(k)
	}
	if len(announced) > 0 {
		v.Header["Trailer"] = announced
	}
	// A difference by design: Pragma does not add a Cache-Control.
	if !bytes.Contains(bytes.ToLower(data), []byte("cache-control")) {
		v.Header.Del("Cache-Control")
	}
	v.Trailer = http.Header{}
	for k, vv := range resp.Trailer {
		if vv != nil {
			v.Trailer[k] = vv
		}
	}
	return v, !resp.Close, nil
}

// normalize makes equal what says the same: a Trailer field is a set of
// names; a nil value (no sniffing) is no field; hop-by-hop and framing
// fields are not passed on as trailers.
func normalize(v *responseView) {
	var names []string
	for _, t := range v.Header["Trailer"] {
		for n := range strings.SplitSeq(t, ",") {
			if n = textproto.TrimString(n); n != "" {
				names = append(names, http.CanonicalHeaderKey(n))
			}
		}
	}
	if names != nil {
		slices.Sort(names)
		v.Header["Trailer"] = slices.Compact(names)
	}
	for k, vv := range v.Header {
		if vv == nil {
			delete(v.Header, k)
		}
	}
	for _, k := range []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade", "Content-Length"} {
		v.Trailer.Del(k)
	}
}

// FuzzForwardResponse checks the forwarder's response reader against
// net/http's: whatever it accepts, net/http must accept and read the
// same way. It may refuse more (obs-fold, odd versions and lengths).
func FuzzForwardResponse(f *testing.F) {
	seeds := []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 200 OK\r\nConnection: X-A, keep-alive\r\nX-A: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: v\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 9\r\n\r\n3 \r\nabc\r\n0\r\n\r\n",
		"HTTP/1.0 200 OK\r\nX-A: b\r\n\r\nuntil close",
		"HTTP/1.1 200 OK\r\n\r\nuntil close",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nok",
		"HTTP/1.1 200 OK\r\nX-A:  spaced \t\r\nPragma: no-cache\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n1\r\nx\r\n0\r\nX-A: 1\r\nX-A: 2\r\n\r\n",
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, head bool) {
		ours, keep, err := leanRead(data, head)
		if err != nil {
			return
		}
		theirs, theirKeep, err := stdRead(data, head)
		if err != nil {
			t.Fatalf("accepted what net/http refuses (%v):\n%q", err, data)
		}
		normalize(&ours)
		normalize(&theirs)
		if !reflect.DeepEqual(ours, theirs) {
			t.Fatalf("read differently:\n%q\nlean:     %+v\nnet/http: %+v", data, ours, theirs)
		}
		if keep && !theirKeep {
			t.Fatalf("kept a connection net/http would close:\n%q", data)
		}
	})
}
