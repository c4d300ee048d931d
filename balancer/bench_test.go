package balancer_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// BenchmarkProxy sends tiny requests to a real worker process, straight
// ("direct") and through the balancer on a real socket ("balancer"). The
// ratio of the two is the cost of the front; allocs/op counts the client
// and, in the balancer case, our server side (the worker is another
// process).
func BenchmarkProxy(b *testing.B) {
	p := testworker.Start(b, "serve")
	bal, _ := balancer.New(balancer.Config{})
	e := bal.NewEndpoint(1, p.PID, p.Network, p.Address)
	defer e.Close()
	bal.Add(e)
	srv := httptest.NewServer(bal)
	defer srv.Close()

	for _, c := range []struct{ name, url string }{
		{"direct", "http://" + p.Address + "/pid"},
		{"balancer", srv.URL + "/pid"},
	} {
		b.Run(c.name, func(b *testing.B) {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			defer client.CloseIdleConnections()
			b.ReportAllocs()
			for b.Loop() {
				resp, err := client.Get(c.url)
				if err != nil {
					b.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Fatal(resp.Status)
				}
			}
		})
	}
}
