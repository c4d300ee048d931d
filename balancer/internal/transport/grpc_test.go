package transport

import (
	"bytes"
	"encoding/binary"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// message is one length-prefixed gRPC message with payload p.
func message(p string) []byte {
	b := make([]byte, 5, 5+len(p))
	binary.BigEndian.PutUint32(b[1:], uint32(len(p)))
	return append(b, p...)
}

func TestGRPCMessagesInAnyPieces(t *testing.T) {
	long := strings.Repeat("x", 70000) // a length with three bytes of its prefix set
	for _, c := range []struct {
		name string
		body []byte
		want int
	}{
		{"nothing", nil, 0},
		{"one message", message("hello"), 1},
		{"one empty message", message(""), 1},
		{"two empty messages", append(message(""), message("")...), 2},
		{"one long message", message(long), 1},
		{"a long message, then another", append(message(long), message("y")...), 2},
		{"three", bytes.Join([][]byte{message("a"), message(""), message("bc")}, nil), 3},
	} {
		for _, size := range []int{1, 2, 3, 5, 7, 4096, 1 << 20} {
			var m grpcMessages
			got := 0
			for b := c.body; len(b) > 0; {
				k := min(size, len(b))
				got = m.feed(b[:k])
				b = b[k:]
			}
			if got != c.want {
				t.Errorf("%s in pieces of %d: %d messages, want %d", c.name, size, got, c.want)
			}
		}
	}
}

// h2cWorker is a worker that speaks HTTP/2 with prior knowledge only,
// as a grpc-js server does.
func h2cWorker(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

// A gRPC answer is a stream from its second message on, never before:
// a unary call's one message keeps its exchange a plain one.
func TestGRPCAnswerBecomesAStreamAtItsSecondMessage(t *testing.T) {
	next := make(chan struct{})
	worker := h2cWorker(t, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.Header().Set("Trailer", "Grpc-Status")
		w.WriteHeader(200)
		_, _ = w.Write(message("first"))
		w.(http.Flusher).Flush()
		if r.URL.Path == "/pool.example.Demo/Count" {
			<-next
			_, _ = w.Write(message("second"))
			w.(http.Flusher).Flush()
			<-next
		}
		w.Header().Set("Grpc-Status", "0")
	})
	tr := New(Config{Network: "tcp", Address: worker.Listener.Addr().String(), Protocol: ProtocolAuto})
	t.Cleanup(tr.CloseIdle)

	var streamed atomic.Bool
	front := h2cWorker(t, func(w http.ResponseWriter, r *http.Request) {
		x := &Exchange{OnStream: func() { streamed.Store(true) }}
		if err := tr.Forward(w, r, x); err != nil {
			t.Errorf("Forward: %v", err)
		}
	})
	client := &http.Client{Transport: &http.Transport{Protocols: front.Config.Protocols}, Timeout: 10 * time.Second}
	t.Cleanup(client.CloseIdleConnections)
	call := func(method string) *http.Response {
		req, _ := http.NewRequest("POST", front.URL+"/pool.example.Demo/"+method, bytes.NewReader(message("")))
		req.Header.Set("Content-Type", "application/grpc")
		req.Header.Set("Te", "trailers")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	read := func(resp *http.Response, n int) {
		t.Helper()
		buf := make([]byte, n)
		if _, err := io.ReadFull(resp.Body, buf); err != nil {
			t.Fatalf("reading %d bytes of the answer: %v", n, err)
		}
	}

	resp := call("Work")
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || !bytes.Equal(b, message("first")) || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("unary answer %q %v, trailers %v", b, err, resp.Trailer)
	}
	if streamed.Load() {
		t.Fatal("a unary answer was taken for a stream")
	}

	resp = call("Count")
	defer resp.Body.Close()
	read(resp, len(message("first")))
	if streamed.Load() {
		t.Fatal("a streaming answer was a stream before its second message")
	}
	next <- struct{}{}
	read(resp, len(message("second")))
	// The second message was copied to the client after OnStream ran.
	if !streamed.Load() {
		t.Fatal("a streaming answer was no stream after its second message")
	}
	next <- struct{}{}
	if _, err := io.ReadAll(resp.Body); err != nil || resp.Trailer.Get("Grpc-Status") != "0" {
		t.Fatalf("the stream's end: %v, trailers %v", err, resp.Trailer)
	}
}
