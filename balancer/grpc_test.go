package balancer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
)

// h2cServer serves h over HTTP/2 with prior knowledge, on a real socket,
// as a grpc-js worker or Caddy's server with h2c would.
func h2cServer(t testing.TB, h http.Handler) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
	})
	return srv
}

// OnResult hears the gRPC status that each call's client got: a
// worker's from its trailers or its trailers-only headers, UNKNOWN for a
// worker's answer without one, and the pool's own code when it answered.
// The worker is a Go HTTP/2 server that answers as a gRPC server does on
// the wire; no protobuf is needed to carry a status.
func TestResultCarriesTheCallsGRPCStatus(t *testing.T) {
	worker := h2cServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		switch r.URL.Path {
		case "/pkg.Demo/Trailers":
			w.Header().Set("Trailer", "Grpc-Status")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set("Grpc-Status", "5")
		case "/pkg.Demo/Unannounced":
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write([]byte{0, 0, 0, 0, 0})
			w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		case "/pkg.Demo/TrailersOnly":
			w.Header().Set("Grpc-Status", "7")
			w.WriteHeader(http.StatusOK)
		default: // no status at all
			w.WriteHeader(http.StatusOK)
		}
	}))
	var mu sync.Mutex
	var got []balancer.Result
	onResult := func(_ *http.Request, res *balancer.Result) {
		mu.Lock()
		got = append(got, *res)
		mu.Unlock()
	}
	b := newBalancer(t, balancer.Config{OnResult: onResult})
	e := b.NewEndpoint(1, 0, "tcp", strings.TrimPrefix(worker.URL, "http://"))
	t.Cleanup(e.Close)
	b.Add(e)
	empty := newBalancer(t, balancer.Config{OnResult: onResult})
	withWorker, without := h2cServer(t, b), h2cServer(t, empty)
	client := &http.Client{Transport: &http.Transport{Protocols: new(http.Protocols)}}
	client.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(client.CloseIdleConnections)

	call := func(base, method, contentType string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+method, strings.NewReader("\x00\x00\x00\x00\x00"))
		req.Header.Set("Content-Type", contentType)
		req.Header.Set("Te", "trailers")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for _, c := range []struct {
		base, method, contentType string
		grpc                      bool
		status                    int
		byWorker                  bool
	}{
		{withWorker.URL, "/pkg.Demo/Trailers", "application/grpc", true, 5, true},
		{withWorker.URL, "/pkg.Demo/Unannounced", "application/grpc+proto", true, 0, true},
		{withWorker.URL, "/pkg.Demo/TrailersOnly", "application/grpc", true, 7, true},
		{withWorker.URL, "/pkg.Demo/Nothing", "application/grpc", true, 2, false},
		{without.URL, "/pkg.Demo/Trailers", "application/grpc", true, 14, false},
		{withWorker.URL, "/plain", "application/json", false, 0, false},
	} {
		mu.Lock()
		got = nil
		mu.Unlock()
		call(c.base, c.method, c.contentType)
		mu.Lock()
		if len(got) != 1 {
			t.Fatalf("%s: OnResult heard %d results, want 1", c.method, len(got))
		}
		r := got[0]
		mu.Unlock()
		if r.GRPC != c.grpc || r.GRPCStatus != c.status || r.GRPCByWorker != c.byWorker {
			t.Errorf("%s %s: GRPC %v, status %d, by worker %v; want %v, %d, %v",
				c.base, c.method, r.GRPC, r.GRPCStatus, r.GRPCByWorker, c.grpc, c.status, c.byWorker)
		}
	}
}
