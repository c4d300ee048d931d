//go:build unix

package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// The bad-input part of the suite: the hostile requests of issue 19 sent
// to our Caddy in front of the example app, one at a time to see what
// each gets and whether a worker saw it (the worker's /stats count),
// then all again during the steady load, which must not lose a request.

// badInputRow is one line of the bad-input table.
type badInputRow struct {
	input, answer, reached string
	took                   time.Duration
}

var badInputReport struct {
	rows                   []badInputRow
	sent, failed           int
	headerTimeout, slowNet string
}

// badInputHeaderTimeout is the suite's read_header: shorter than the
// shipped configs' 10 s so that the slow clients' row takes seconds.
const badInputHeaderTimeout = 2 * time.Second

// badInputCaddyfile is the suite's pool behind two sites: one that
// validates with unknown_routes reject (the default), one with pass and
// the status page, on every interface.
func badInputCaddyfile(port, adminPort, passPort int, trusted string) string {
	doc, _ := filepath.Abs("../../examples/node/openapi.json")
	proxies := ""
	if trusted != "" {
		proxies = "trusted_proxies static " + trusted + "/32"
	}
	return fmt.Sprintf(`{
	admin 127.0.0.1:%d
	auto_https off
	persist_config off
	servers {
		%s
		timeouts {
			read_header %v
		}
		listener_wrappers {
			worker_pool_framing
		}
	}
}

http://127.0.0.1:%d {
	%s
}

http://:%d {
	handle /pool-status {
		worker_pool_status
	}
	handle {
		%s
	}
}
`, adminPort, proxies, badInputHeaderTimeout, port,
		faultPoolBlock("validate {\n\t\t\tmax_body 1MiB\n\t\t\topenapi "+doc+"\n\t\t}"), passPort,
		faultPoolBlock("validate {\n\t\t\tmax_body 1MiB\n\t\t\topenapi "+doc+"\n\t\t\tunknown_routes pass\n\t\t}"))
}

// badInput is one hostile request (or act) and how to send it; it
// returns the answer as the table shows it.
type badInput struct {
	input string
	send  func(t *testing.T) string
}

func badInputs(t *testing.T, f *faultPool, passURL, remoteURL string) []badInput {
	host := strings.TrimPrefix(f.url, "http://")
	order := func(qty string) string {
		return strings.Replace(e2eOrder, `"qty":2`, `"qty":`+qty, 1)
	}
	status := func(method, url, ctype string, body io.Reader, header ...string) string {
		req, err := http.NewRequest(method, url, body)
		if err != nil {
			t.Fatal(err)
		}
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			return "error: " + err.Error()
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.Status
	}
	inputs := []badInput{
		{"a chunked body of 10 MB to a `text/plain` operation, `max_body 1MiB`", func(t *testing.T) string {
			return status("POST", f.url+"/upload", "text/plain", chunked{strings.NewReader(strings.Repeat("x", 10<<20))})
		}},
		{"`POST /x/../orders` with an invalid order, `unknown_routes pass`", func(t *testing.T) string {
			return status("POST", passURL+"/x/../orders", "application/json", strings.NewReader(`{}`))
		}},
		{"`POST /echo/%2e%2e/orders`, the same", func(t *testing.T) string {
			return status("POST", passURL+"/echo/%2e%2e/orders", "application/json", strings.NewReader(`{}`))
		}},
		{"`POST //orders`, the same", func(t *testing.T) string {
			return status("POST", passURL+"//orders", "application/json", strings.NewReader(`{}`))
		}},
		{"`GET /work?ms=5&ms=100000`", func(t *testing.T) string {
			return status("GET", f.url+"/work?ms=5&ms=100000", "", nil)
		}},
		{"`GET /work?ms[]=100000`", func(t *testing.T) string {
			return status("GET", f.url+"/work?ms[]=100000", "", nil)
		}},
		{"an order whose `qty` has 900,000 digits (900 KB)", func(t *testing.T) string {
			return status("POST", f.url+"/orders", "application/json", strings.NewReader(order("1"+strings.Repeat("0", 900_000))))
		}},
		{"an order whose `qty` is `1e999999`", func(t *testing.T) string {
			return status("POST", f.url+"/orders", "application/json", strings.NewReader(order("1e999999")))
		}},
		{"a body to `GET /orders/{orderId}`, which declares none", func(t *testing.T) string {
			return status("GET", f.url+"/orders/7c9e6679-7425-40de-944b-e07fc1f90ae7", "application/json", strings.NewReader(`{"x":1}`))
		}},
		{"`Content-Length` and `Transfer-Encoding` together (raw socket)", func(t *testing.T) string {
			answer, err := exchange(t, host, ambiguousUpload(host))
			if err != nil {
				return "error: " + err.Error()
			}
			line, _, _ := strings.Cut(answer, "\r\n")
			if strings.Contains(answer, "\r\nConnection: close\r\n") {
				line += ", connection closed"
			}
			return strings.TrimPrefix(line, "HTTP/1.1 ")
		}},
		{"a worker that does not answer (`GET /sleep?ms=10000`; `request_timeout 2s` here, 60 s by default)", func(t *testing.T) string {
			return status("GET", f.url+"/sleep?ms=10000", "", nil)
		}},
		{"a reload whose config has two different pools named `default`", func(t *testing.T) string {
			twice := strings.Replace(f.caddyfile, "count 3", "count 2", 1) // the second site's pool differs now
			resp, err := client.Post(f.admin+"/load", "text/caddyfile", strings.NewReader(twice))
			if err != nil {
				return "error: " + err.Error()
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			answer := resp.Status + " from the admin API"
			if !strings.Contains(string(b), `name: \"default\" is the name of two different pools`) {
				answer += " (without the reason: " + string(b) + ")"
			}
			return answer + "; the running config stays"
		}},
		{fmt.Sprintf("300 connections that send their headers a byte every 500 ms (`read_header %v` here, 10 s shipped, a minute by Caddy's default)", badInputHeaderTimeout),
			func(t *testing.T) string { return slowHeaders(t, host, 300) }},
	}
	if remoteURL != "" {
		inputs = append(inputs, badInput{"the status page from another host, through a trusted proxy, with `X-Forwarded-For: 127.0.0.1`", func(t *testing.T) string {
			return status("GET", remoteURL+"/pool-status?format=json", "", nil, "X-Forwarded-For", "127.0.0.1")
		}})
	}
	return inputs
}

// slowHeaders opens n connections that send a request's headers a byte
// at a time, and says what became of them.
func slowHeaders(t *testing.T, host string, n int) string {
	var wg sync.WaitGroup
	var mu sync.Mutex
	closed := 0
	answers := map[string]int{}
	for range n {
		conn, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
			head := "GET / HTTP/1.1\r\nHost: " + host + "\r\nX-Slow: " + strings.Repeat("x", 100)
			got := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(conn) // until Caddy closes it
				line, _, _ := strings.Cut(string(b), "\r\n")
				got <- strings.TrimPrefix(line, "HTTP/1.1 ")
			}()
			done := func(answer string) {
				mu.Lock()
				defer mu.Unlock()
				closed++
				answers[answer]++
			}
			for i := 0; ; i++ {
				select {
				case answer := <-got:
					done(answer)
					return
				case <-time.After(500 * time.Millisecond): // the client's pace, not a wait for the server
				}
				if _, err := conn.Write([]byte{head[i%len(head)]}); err != nil {
					done(<-got)
					return
				}
			}
		})
	}
	wg.Wait()
	var parts []string
	for answer, k := range answers {
		if answer == "" {
			answer = "no answer"
		}
		parts = append(parts, fmt.Sprintf("%d × %s", k, answer))
	}
	slices.Sort(parts)
	return fmt.Sprintf("%d of %d closed by Caddy: %s", closed, n, strings.Join(parts, ", "))
}

// runBadInput measures the bad inputs and records the table.
func runBadInput(t *testing.T) {
	remote := testworker.NonLoopbackIPv4() // "": no status page row
	passPort := testworker.FreePort(t)
	f := startFaultCaddy(t, func(port, adminPort int) string { return badInputCaddyfile(port, adminPort, passPort, remote) })
	passURL := "http://127.0.0.1:" + strconv.Itoa(passPort)
	remoteURL := ""
	if remote != "" {
		remoteURL = "http://" + net.JoinHostPort(remote, strconv.Itoa(passPort))
	}
	inputs := badInputs(t, f, passURL, remoteURL)
	// What the pool sent to its workers, from the admin API.
	sent := func() uint64 {
		var n uint64
		for _, w := range f.status(t).Workers {
			n += w.Served
		}
		return n
	}
	for _, in := range inputs {
		before := sent()
		start := time.Now()
		answer := in.send(t)
		took := time.Since(start)
		reached := "no"
		if after := sent(); after != before {
			reached = fmt.Sprintf("yes (%d)", after-before)
		}
		t.Logf("%s: %s, reached %s, %v", in.input, answer, reached, took)
		badInputReport.rows = append(badInputReport.rows, badInputRow{in.input, answer, reached, took})
	}
	res := steadyLoad(f.url, func() {
		for _, in := range inputs {
			in.send(t)
		}
	})
	if res.failed > 0 {
		t.Errorf("%d of %d good requests failed (%s) while the bad inputs were sent", res.failed, res.sent, kinds(res))
	}
	badInputReport.sent, badInputReport.failed = res.sent, res.failed
}

// writeBadInputReport is the bad-input part of docs/reliability.md.
func writeBadInputReport(b *strings.Builder) {
	if len(badInputReport.rows) == 0 {
		return
	}
	fmt.Fprintf(b, `
## Bad input

The same Caddy and pool, `+"`validate { max_body 1MiB  openapi examples/node/openapi.json }`"+`
(and a second site with `+"`unknown_routes pass`"+`), `+"`read_header %v`"+` and the
`+"`worker_pool_framing`"+` wrapper. Each input was sent alone; "reached a worker"
is the change of the workers' request count, "answered in" the client's
wait for the answer (or for all connections to close). Then all of
them were sent again during %d requests of the steady load, of which
%d failed.

| bad input | answer | reached a worker | answered in |
|---|---|---|---|
`, badInputHeaderTimeout, badInputReport.sent, badInputReport.failed)
	for _, r := range badInputReport.rows {
		fmt.Fprintf(b, "| %s | %s | %s | %s |\n", r.input, r.answer, r.reached, roundDuration(r.took))
	}
}

// roundDuration keeps two or three significant digits.
func roundDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(10 * time.Millisecond).String()
	case d >= 10*time.Millisecond:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(100 * time.Microsecond).String()
	}
	return d.Round(10 * time.Microsecond).String()
}
