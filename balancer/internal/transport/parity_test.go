package transport

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

// The lean forwarder is a drop-in for the endpoint's ReverseProxy: these
// tests send the same requests through both, to the same worker, and
// compare what the worker and the client saw.

// rpFront serves the standard path's ReverseProxy.
func rpFront(t *testing.T, network, address string, trust func(*http.Request) bool) *httptest.Server {
	t.Helper()
	tr := New(Config{Network: network, Address: address, TrustForwarded: trust})
	t.Cleanup(tr.CloseIdle)
	srv := httptest.NewServer(tr.proxy)
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// seen is what the worker received.
type seen struct {
	Method, RequestURI, Host string
	Header                   http.Header
	ContentLength            int64
	TransferEncoding         []string
	Body                     string
}

func TestForwardRequestParity(t *testing.T) {
	worker := newWorker(t, func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		_ = json.NewEncoder(w).Encode(seen{r.Method, r.RequestURI, r.Host, r.Header, r.ContentLength, r.TransferEncoding, string(body)})
	})
	addr := worker.Listener.Addr().String()

	cases := []struct {
		name, method, target, body string
		chunked                    bool
		header                     http.Header
	}{
		{name: "plain", method: "GET", target: "/a/b?x=1&y=%41",
			header: http.Header{"Accept": {"*/*"}, "X-Multi": {"1", "2"}, "Cookie": {"a=1; b=2"}}},
		{name: "escaped path", method: "GET", target: "/a%2Fb/c%20d/%C3%A9"},
		{name: "empty query", method: "GET", target: "/?"},
		{name: "hop-by-hop", method: "GET", target: "/",
			header: http.Header{
				"Connection":          {"keep-alive, X-Hop", "x-other"},
				"X-Hop":               {"1"},
				"X-Other":             {"2"},
				"Keep-Alive":          {"300"},
				"Proxy-Connection":    {"keep-alive"},
				"Proxy-Authorization": {"Basic eDp5"},
				"Proxy-Authenticate":  {"x"},
				"Te":                  {"trailers, deflate"},
				"X-Stays":             {"3"},
			}},
		{name: "TE without trailers", method: "GET", target: "/", header: http.Header{"Te": {"deflate"}}},
		{name: "forwarded fields", method: "GET", target: "/",
			header: http.Header{
				"X-Forwarded-For":   {"1.2.3.4", "5.6.7.8"},
				"X-Forwarded-Host":  {"proxy.example"},
				"X-Forwarded-Proto": {"https"},
				"Forwarded":         {"for=1.2.3.4"},
			}},
		{name: "empty forwarded fields", method: "GET", target: "/",
			header: http.Header{"X-Forwarded-Host": {""}, "X-Forwarded-Proto": {""}}},
		{name: "no user agent", method: "GET", target: "/", header: http.Header{"User-Agent": {""}}},
		{name: "user agent", method: "GET", target: "/", header: http.Header{"User-Agent": {"curl/8"}}},
		{name: "POST", method: "POST", target: "/p", body: "hello", header: http.Header{"Content-Type": {"text/plain"}}},
		{name: "POST chunked", method: "POST", target: "/p", body: "hello", chunked: true},
		{name: "POST empty", method: "POST", target: "/p"},
		{name: "PUT empty", method: "PUT", target: "/p"},
		{name: "PATCH empty", method: "PATCH", target: "/p"},
		{name: "DELETE", method: "DELETE", target: "/p"},
		{name: "OPTIONS", method: "OPTIONS", target: "/p"},
		{name: "GET with body", method: "GET", target: "/p", body: "odd"},
	}
	for _, trusted := range []bool{false, true} {
		trust := func(*http.Request) bool { return trusted }
		lean, _ := leanFront(t, testForwarder(t, "tcp", addr, trust))
		rp := rpFront(t, "tcp", addr, trust)
		c := newClient(t)
		for _, tc := range cases {
			name := tc.name
			if trusted {
				name += " trusted"
			}
			t.Run(name, func(t *testing.T) {
				var got [2]seen
				for i, front := range []*httptest.Server{lean, rp} {
					var body io.Reader
					if tc.body != "" {
						body = strings.NewReader(tc.body)
						if tc.chunked {
							body = io.MultiReader(body)
						}
					}
					req := mustRequest(tc.method, front.URL+tc.target, body)
					req.Host = "app.example"
					for k, v := range tc.header {
						req.Header[k] = v
					}
					resp, raw := do(t, c, req)
					if resp.StatusCode != 200 {
						t.Fatalf("front %d: %d %s", i, resp.StatusCode, raw)
					}
					if err := json.Unmarshal([]byte(raw), &got[i]); err != nil {
						t.Fatal(err)
					}
				}
				if !reflect.DeepEqual(got[0], got[1]) {
					t.Errorf("the worker saw\nlean:         %+v\nReverseProxy: %+v", got[0], got[1])
				}
			})
		}
	}
}

func TestForwardResponseParity(t *testing.T) {
	// A stream without a Content-Type is sniffed by ReverseProxy or not,
	// as its timer's flush and the first body write race; the lean
	// forwarder never sniffs one (TestForwardExchanges). So every stream
	// here has a type.
	responses := map[string]string{
		"/hop": "HTTP/1.1 200 OK\r\nConnection: X-Resp, keep-alive\r\nX-Resp: 1\r\nKeep-Alive: timeout=5\r\n" +
			"Proxy-Connection: x\r\nUpgrade: y\r\nX-Keep: y\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok",
		"/lowercase": "HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nx-custom-thing: 1\r\n" +
			"etag: \"e\"\r\ncontent-length: 2\r\n\r\n{}",
		"/declared-trailers": "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nTrailer: X-T\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: v\r\n\r\n",
		"/trailers":          "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n",
		"/trailer-no-chunks": "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 1\r\n\r\na",
		"/http10":            "HTTP/1.0 200 OK\r\nContent-Type: a/b\r\nX-A: b\r\n\r\nuntil close",
		"/until-close":       "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nX-A: b\r\n\r\nuntil close",
		"/not-modified":      "HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
		"/no-content":        "HTTP/1.1 204 No Content\r\nX-A: b\r\n\r\n",
		"/same-lengths":      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
		"/whitespace":        "HTTP/1.1 200 OK\r\nX-A:   spaced  \t\r\nX-Empty:\r\nContent-Length: 0\r\n\r\n",
		"/bare-lf":           "HTTP/1.1 200 OK\nX-A: b\nContent-Length: 2\n\nok",
		"/no-reason":         "HTTP/1.1 299\r\nContent-Length: 0\r\n\r\n",
		"/interim":           "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
		"/server-error":      "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nbusy",
	}
	worker := newRawWorker(t, func(c net.Conn, req *http.Request) bool {
		raw := responses[req.URL.Path]
		if req.Method == "HEAD" {
			// The head of the final response, without its body.
			final := raw[strings.LastIndex(raw, "HTTP/1."):]
			end := strings.Index(final, "\r\n\r\n") + 4
			if end < 4 {
				end = strings.Index(final, "\n\n") + 2
			}
			raw = raw[:len(raw)-len(final)+end]
		}
		_, _ = io.WriteString(c, raw)
		// After a HEAD the body is left over: not a connection to reuse.
		return req.Method != "HEAD" && !strings.Contains(req.URL.Path, "close") && !strings.HasPrefix(raw, "HTTP/1.0")
	})
	lean, _ := leanFront(t, testForwarder(t, "tcp", worker.addr, nil))
	rp := rpFront(t, "tcp", worker.addr, nil)
	c := newClient(t)
	type view struct {
		Status          int
		Header, Trailer http.Header
		Body            string
	}
	for path := range responses {
		for _, method := range []string{"GET", "HEAD"} {
			t.Run(method+path, func(t *testing.T) {
				var got [2]view
				for i, front := range []*httptest.Server{lean, rp} {
					resp, body := do(t, c, mustRequest(method, front.URL+path, nil))
					resp.Header.Del("Date")
					got[i] = view{resp.StatusCode, resp.Header, resp.Trailer, body}
				}
				if !reflect.DeepEqual(got[0], got[1]) {
					t.Errorf("the client saw\nlean:         %+v\nReverseProxy: %+v", got[0], got[1])
				}
			})
		}
	}
}
