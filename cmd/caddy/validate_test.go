package main

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
)

// startValidatingCaddy runs our Caddy with one worker of the example app
// behind worker_pool with the given validate block.
func startValidatingCaddy(t *testing.T, validate string) *caddyProc {
	t.Helper()
	c := startPool(t, 1, "node %s", "validate {\n\t\t\t"+validate+"\n\t\t}")
	waitPIDs(t, c, 1)
	return c
}

// served is how many requests the worker received (its /stats counts
// every request but /healthz and /stats).
func served(t *testing.T, c *caddyProc) int {
	t.Helper()
	resp, err := client.Get(c.url + "/stats")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var s struct{ Requests int }
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil || resp.StatusCode != 200 {
		t.Fatalf("/stats: %s %v", resp.Status, err)
	}
	return s.Requests
}

const e2eOrder = `{"id":"7c9e6679-7425-40de-944b-e07fc1f90ae7","createdAt":"2026-11-20T10:00:00Z","status":"paid",
"customer":{"email":"a@example.com","name":"Ann"},"items":[{"sku":"ABC-1234","qty":2,"note":null}]}`

// chunked is a body of unknown length: the client sends it chunked.
type chunked struct{ io.Reader }

func TestValidationRefusesBeforeTheWorker(t *testing.T) {
	doc, _ := filepath.Abs("../../examples/node/openapi.json")
	c := startValidatingCaddy(t, "max_body 4KiB\n\t\t\topenapi "+doc)
	big := `{"pad":"` + strings.Repeat("x", 8<<10) + `"}`
	orderWith := func(from, to string) string { return strings.Replace(e2eOrder, from, to, 1) }
	for _, tc := range []struct {
		name, method, path, ctype string
		body                      io.Reader
		status                    int
		pointer                   string
	}{
		{"invalid JSON", "POST", "/orders", "application/json", strings.NewReader(`{"id":`), 400, "/body"},
		{"wrong type", "POST", "/orders", "application/json", strings.NewReader(orderWith(`"qty":2`, `"qty":"2"`)), 400, "/body/items/0/qty"},
		{"missing required", "POST", "/orders", "application/json", strings.NewReader(orderWith(`"sku":"ABC-1234",`, ``)), 400, "/body/items/0/sku"},
		{"extra field", "POST", "/orders", "application/json", strings.NewReader(orderWith(`"qty":2`, `"qty":2,"gift":true`)), 400, "/body/items/0/gift"},
		{"enum", "POST", "/orders", "application/json", strings.NewReader(orderWith(`"paid"`, `"lost"`)), 400, "/body/status"},
		{"format", "POST", "/orders", "application/json", strings.NewReader(orderWith(`a@example.com`, `nobody`)), 400, "/body/customer/email"},
		{"too large, declared", "POST", "/orders", "application/json", strings.NewReader(big), 413, ""},
		{"too large, chunked", "POST", "/orders", "application/json", chunked{strings.NewReader(big)}, 413, ""},
		{"wrong content type", "POST", "/orders", "text/plain", strings.NewReader(e2eOrder), 415, ""},
		{"bad path parameter", "GET", "/orders/42", "", nil, 400, "/path/orderId"},
		{"bad query parameter", "GET", "/work?ms=-1", "", nil, 400, "/query/ms"},
		{"unknown route", "GET", "/admin", "", nil, 404, ""},
		{"wrong method", "DELETE", "/orders", "", nil, 405, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := served(t, c)
			req, err := http.NewRequest(tc.method, c.url+tc.path, tc.body)
			if err != nil {
				t.Fatal(err)
			}
			if tc.ctype != "" {
				req.Header.Set("Content-Type", tc.ctype)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%s %s: %s %q, want %d problem+json: %s", tc.method, tc.path, resp.Status, resp.Header.Get("Content-Type"), tc.status, body)
			}
			if tc.status == 405 && resp.Header.Get("Allow") != "POST" {
				t.Fatalf("Allow %q, want POST", resp.Header.Get("Allow"))
			}
			if tc.pointer != "" && !strings.Contains(string(body), `"pointer":"`+tc.pointer+`"`) {
				t.Fatalf("no error at %s: %s", tc.pointer, body)
			}
			if after := served(t, c); after != before {
				t.Fatalf("the worker received the request: its count went from %d to %d", before, after)
			}
		})
	}

	// A valid order reaches the worker with the very bytes the client
	// sent, streamed or not; the worker's count shows it arrived.
	want := sha256.Sum256([]byte(e2eOrder))
	for _, body := range []io.Reader{strings.NewReader(e2eOrder), chunked{strings.NewReader(e2eOrder)}} {
		before := served(t, c)
		resp, err := client.Post(c.url+"/orders", "application/json", body)
		if err != nil {
			t.Fatal(err)
		}
		var got struct {
			Bytes  int
			SHA256 string
		}
		err = json.NewDecoder(resp.Body).Decode(&got)
		resp.Body.Close()
		if resp.StatusCode != 201 || err != nil || got.SHA256 != hex.EncodeToString(want[:]) || got.Bytes != len(e2eOrder) {
			t.Fatalf("valid order: %s %+v %v", resp.Status, got, err)
		}
		if after := served(t, c); after != before+1 {
			t.Fatalf("worker count went from %d to %d for one valid request", before, after)
		}
	}
}

// A streamed body that passes max_body while the worker already reads it
// is cut: the worker sees a broken body, the client a 413.
func TestStreamedBodyCutWhileProxied(t *testing.T) {
	c := startValidatingCaddy(t, "max_body 1KiB")
	pr, pw := io.Pipe()
	go func() {
		chunk := []byte(strings.Repeat("x", 512))
		for range 64 {
			if _, err := pw.Write(chunk); err != nil {
				return
			}
		}
		pw.Close()
	}()
	defer pr.Close()
	resp, err := client.Post(c.url+"/orders", "application/json", pr)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != "application/problem+json" {
		t.Fatalf("%s %q: %s", resp.Status, resp.Header.Get("Content-Type"), body)
	}
	// The pool still serves: the cut counted against the client, not the worker.
	testworker.Eventually(t, 5*time.Second, "the worker serving after the cut", func() bool {
		_, code, err := get(c.url + "/")
		return err == nil && code == 200
	})
}

// A streamed body to an operation whose media type is not checked
// against a schema (text/plain, application/octet-stream) is held to
// max_body like any other: 413, and the client's 10 MB are not taken.
func TestMaxBodyHoldsForStreamedBodiesOfEveryType(t *testing.T) {
	doc, _ := filepath.Abs("../../examples/node/openapi.json")
	c := startValidatingCaddy(t, "max_body 64KiB\n\t\t\topenapi "+doc)
	const size = 10 << 20
	for _, ctype := range []string{"text/plain", "application/octet-stream"} {
		t.Run(ctype, func(t *testing.T) {
			body := &countingReader{r: strings.NewReader(strings.Repeat("x", size))}
			req, err := http.NewRequest("POST", c.url+"/upload", chunked{body})
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Content-Type", ctype)
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			answer, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 413 || resp.Header.Get("Content-Type") != "application/problem+json" {
				t.Fatalf("%s %q: %s", resp.Status, resp.Header.Get("Content-Type"), answer)
			}
			if n := body.n.Load(); n >= size {
				t.Fatalf("all %d bytes were taken from the client", n)
			}
		})
	}
}

// countingReader counts what the client's transport has read.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// With unknown_routes pass, a path that the worker's URL parser resolves
// to a documented path (Node's new URL() removes dot segments, %2e
// included) is refused instead of passing unchecked as unknown.
func TestDotSegmentsDoNotDodgeTheSchema(t *testing.T) {
	doc, _ := filepath.Abs("../../examples/node/openapi.json")
	c := startValidatingCaddy(t, "openapi "+doc+"\n\t\t\tunknown_routes pass")
	for _, path := range []string{"/x/../orders", "/./orders", "/echo/%2e%2e/orders", "/echo/.%2E/orders", "//orders"} {
		t.Run(path, func(t *testing.T) {
			before := served(t, c)
			resp, err := client.Post(c.url+path, "application/json", strings.NewReader(`{}`))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), `"pointer":"/path"`) {
				t.Fatalf("POST %s: %s %s", path, resp.Status, body)
			}
			if after := served(t, c); after != before {
				t.Fatalf("POST %s reached the worker", path)
			}
		})
	}
	// An unknown path still passes.
	if resp, err := client.Get(c.url + "/nowhere"); err != nil || resp.StatusCode != 404 {
		t.Fatalf("unknown path: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
}

// exchange sends request on a new connection to host and returns all
// that comes back until the server closes the connection.
func exchange(t *testing.T, host, request string) (string, error) {
	t.Helper()
	conn, err := net.Dial("tcp", host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// ambiguousUpload is a POST /upload to host whose body's length is
// declared twice.
func ambiguousUpload(host string) string {
	return "POST /upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: text/plain\r\n" +
		"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
}

// refusesAmbiguousFraming checks that the Caddy at url answers an
// ambiguous request 400 with Connection: close, and closes.
func refusesAmbiguousFraming(t *testing.T, url string) {
	t.Helper()
	host := strings.TrimPrefix(url, "http://")
	answer, err := exchange(t, host, ambiguousUpload(host))
	if err != nil {
		t.Fatalf("ambiguous request: %v; want the connection closed after the answer", err)
	}
	if !strings.HasPrefix(answer, "HTTP/1.1 400 ") || !strings.Contains(answer, "\r\nConnection: close\r\n") {
		t.Fatalf("ambiguous request: answered %q; want 400 with Connection: close", answer)
	}
}

// A request that declares its body's length twice is answered 400 with
// Connection: close, and the connection closed, before any handler: a
// proxy in front that took Content-Length (where Caddy takes
// Transfer-Encoding) would otherwise read the rest as another request.
func TestAmbiguousFramingRefused(t *testing.T) {
	doc, _ := filepath.Abs("../../examples/node/openapi.json")
	c := startPoolWith(t, "servers {\n\t\tlistener_wrappers {\n\t\t\tworker_pool_framing\n\t\t}\n\t}",
		1, "node %s", "validate {\n\t\t\topenapi "+doc+"\n\t\t}")
	waitPIDs(t, c, 1)
	host := strings.TrimPrefix(c.url, "http://")
	before := served(t, c)
	refusesAmbiguousFraming(t, c.url)
	for _, request := range []string{
		"POST /upload HTTP/1.1\r\nHost: " + host + "\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\nContent-Length: 40\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
		"POST /upload HTTP/1.0\r\nHost: " + host + "\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	} {
		answer, err := exchange(t, host, request)
		if err != nil || !strings.HasPrefix(answer, "HTTP/1.1 400 ") || !strings.Contains(answer, "\r\nConnection: close\r\n") {
			t.Fatalf("%q: answered %q, %v; want 400 with Connection: close, then the close", request, answer, err)
		}
	}
	if after := served(t, c); after != before {
		t.Fatalf("the worker received %d of the requests", after-before)
	}
	// The same body, framed once, is served; Connection: close only ends
	// the exchange.
	answer, err := exchange(t, host, "POST /upload HTTP/1.1\r\nHost: "+host+"\r\nContent-Type: text/plain\r\n"+
		"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n3\r\nabc\r\n0\r\n\r\n")
	if err != nil || !strings.HasPrefix(answer, "HTTP/1.1 200 ") || !strings.Contains(answer, `"bytes":3`) {
		t.Fatalf("a chunked upload: %q %v", answer, err)
	}
}

// caddy validate refuses a config with two different pools of one name,
// naming the lines of both.
func TestCaddyValidateRefusesTwoPoolsWithOneName(t *testing.T) {
	app, _ := filepath.Abs("../../examples/node/server.js")
	dir := t.TempDir()
	path := filepath.Join(dir, "Caddyfile")
	caddyfile := fmt.Sprintf("{\n\tadmin off\n\tauto_https off\n}\n\n"+
		"http://127.0.0.1:%d {\n\tworker_pool {\n\t\tname app\n\t\tcommand node %s\n\t}\n}\n\n"+
		"http://127.0.0.1:%d {\n\tworker_pool {\n\t\tname app\n\t\tcommand node %s --other\n\t}\n}\n",
		testworker.FreePort(t), app, testworker.FreePort(t), app)
	if err := os.WriteFile(path, []byte(caddyfile), 0o600); err != nil {
		t.Fatal(err)
	}
	self, _ := os.Executable()
	cmd := exec.Command(self, "validate", "--config", path, "--adapter", "caddyfile")
	cmd.Env = append(os.Environ(), caddyEnv+"=1", "XDG_DATA_HOME="+dir, "XDG_CONFIG_HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("caddy validate accepted two pools named app:\n%s", out)
	}
	for _, want := range []string{`name: \"app\" is the name of two different pools`, "Caddyfile:7", "Caddyfile:14"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("caddy validate does not say %q:\n%s", want, out)
		}
	}
}
