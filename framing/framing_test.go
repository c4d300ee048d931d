package framing_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/framing"
)

// Behind StrictFraming, Go's server answers a request that declares its
// body's length twice with 400 and closes the connection, and serves
// every other request as before, keep-alive included.
func TestStrictFraming(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var served atomic.Int32
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		b, _ := io.ReadAll(r.Body)
		_, _ = w.Write(b)
	})}
	go func() { _ = srv.Serve(framing.StrictFraming(ln)) }()
	t.Cleanup(func() { _ = srv.Close() })

	dial := func() (net.Conn, *bufio.Reader) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		return c, bufio.NewReader(c)
	}

	for name, head := range map[string]string{
		"both lengths":                    "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 with Transfer-Encoding": "POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			c, br := dial()
			if _, err := io.WriteString(c, head+"3\r\nabc\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			// The body has no length: it ends when the server closes
			// the connection. ReadResponse takes "Connection: close"
			// out of the header into Close.
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("the answer's body: %v; want it ended by the server's close", err)
			}
			if resp.StatusCode != 400 || !resp.Close {
				t.Fatalf("%s %q, Connection: close %v; want 400 and close", resp.Status, body, resp.Close)
			}
		})
	}
	if n := served.Load(); n != 0 {
		t.Fatalf("the handler served %d requests", n)
	}

	// Chunked and Content-Length bodies, one after the other on one
	// connection.
	c, br := dial()
	if _, err := io.WriteString(c, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"+
		"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nde"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"abc", "de"} {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.EqualFold(string(b), want) {
			t.Fatalf("%s %q, want 200 %q", resp.Status, b, want)
		}
	}
}
