package testworker

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
)

// Traffic sends GET url from n clients, each its next request as soon as
// the last is answered, until the function it returns is called; that
// waits for the clients and returns how many answers were 200 and how
// many requests failed (each failure is also a t.Errorf). A request
// that meets io.EOF is sent once more: a server that is being replaced
// (a config reload) closed the idle keep-alive connection as it went
// out, before any handler saw it, and browsers and most clients resend
// it the same way.
func Traffic(t testing.TB, c *http.Client, url string, n int) (stop func() (ok, failed int64)) {
	done := make(chan struct{})
	var okN, failedN atomic.Int64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for {
				select {
				case <-done:
					return
				default:
				}
				resp, err := c.Get(url)
				if errors.Is(err, io.EOF) {
					resp, err = c.Get(url)
				}
				if err != nil {
					failedN.Add(1)
					t.Errorf("GET %s: %v", url, err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					failedN.Add(1)
					t.Errorf("GET %s: %s", url, resp.Status)
					continue
				}
				okN.Add(1)
			}
		})
	}
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return okN.Load(), failedN.Load()
	}
}
