package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// The apps in examples/thirdparty are written the way Express's,
// Fastify's and ws's guides write them; these tests run them as workers
// with the packages from the npm registry, as a user would.

var (
	npmMu   sync.Mutex
	npmDone = map[string]error{}
)

// npmInstalled returns the absolute path of the example directory rel,
// installing the packages its package-lock.json names first (npm ci, a
// few seconds) where node_modules is missing or older than the lock;
// once per directory and test binary.
func npmInstalled(t *testing.T, rel string) string {
	t.Helper()
	dir, err := filepath.Abs(rel)
	if err != nil {
		t.Fatal(err)
	}
	npmMu.Lock()
	defer npmMu.Unlock()
	err, done := npmDone[dir]
	if !done {
		err = npmCI(dir)
		npmDone[dir] = err
	}
	if err != nil {
		t.Fatal(err)
	}
	return dir
}

func npmCI(dir string) error {
	lock, err := os.Stat(filepath.Join(dir, "package-lock.json"))
	if err != nil {
		return err
	}
	if installed, err := os.Stat(filepath.Join(dir, "node_modules", ".package-lock.json")); err == nil && !installed.ModTime().Before(lock.ModTime()) {
		return nil
	}
	cmd := exec.Command("npm", "ci", "--no-audit", "--no-fund")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("npm ci in %s (the npm registry must be reachable): %v\n%s", dir, err, out)
	}
	return nil
}

// thirdPartyApp returns the path of examples/thirdparty/<name>.js, its
// packages installed.
func thirdPartyApp(t *testing.T, name string) string {
	t.Helper()
	return filepath.Join(npmInstalled(t, "../../examples/thirdparty"), name+".js")
}

// startApp runs our Caddy with a pool of count workers of the Node app
// at path.
func startApp(t *testing.T, count int, path string) *caddyProc {
	return startCommandPool(t, "", count, "node "+path, "")
}

func postJSON(url, body string) (int, map[string]any, error) {
	resp, err := client.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var v map[string]any
	err = json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v, err
}

// Express and Fastify apps serve through the pool on every worker; a
// client's malformed JSON gets the framework's own 400 and costs no
// worker its place; concurrent clients all get answers.
func TestThirdPartyAppsThroughCaddy(t *testing.T) {
	for _, name := range []string{"express", "fastify"} {
		t.Run(name, func(t *testing.T) {
			c := startApp(t, 2, thirdPartyApp(t, name))
			pids := waitPIDs(t, c, 2)

			code, v, err := postJSON(c.url+"/echo", `{"n":1,"s":"é"}`)
			if err != nil || code != 200 {
				t.Fatalf("POST /echo: %d %v", code, err)
			}
			if body, _ := v["body"].(map[string]any); body["n"] != 1.0 || body["s"] != "é" {
				t.Fatalf("POST /echo answered %v", v)
			}

			for range 4 {
				// Express answers it in HTML, Fastify in JSON.
				resp, err := client.Post(c.url+"/echo", "application/json", strings.NewReader(`{"n":`))
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusBadRequest {
					t.Fatalf("malformed JSON: %s, want the framework's 400", resp.Status)
				}
			}
			// Both workers still serve: a client's bad body is not the
			// worker's failure.
			if seen := servingPIDs(c.url+"/", 40); len(seen) != 2 || !seen[firstKey(pids)] {
				t.Fatalf("after malformed bodies the pool served from %v, want both of %v", seen, pids)
			}

			var wg sync.WaitGroup
			failed := make(chan string, 400)
			for range 20 {
				wg.Go(func() {
					for range 20 {
						if r, code, err := get(c.url + "/"); err != nil || code != 200 || !pids[r.PID] {
							failed <- fmt.Sprintf("%+v %d %v", r, code, err)
						}
					}
				})
			}
			wg.Wait()
			close(failed)
			for f := range failed {
				t.Errorf("concurrent GET /: %s", f)
			}
		})
	}
}

func firstKey(m map[int]bool) int {
	for k := range m {
		return k
	}
	return 0
}

// WebSockets of the ws library pass through the pool both ways, and when
// Caddy is told to stop (SIGINT, Ctrl-C) with sockets open, the app's
// own goodbye reaches every client: close code 1001 from its SIGTERM
// handler, not a cut connection.
func TestWebSocketsOfTheWsLibrary(t *testing.T) {
	c := startApp(t, 2, thirdPartyApp(t, "ws"))
	pids := waitPIDs(t, c, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	wsURL := "ws" + strings.TrimPrefix(c.url, "http") + "/"
	var socks []*websocket.Conn
	served := map[int]bool{}
	for i := range 6 {
		s, _, err := websocket.Dial(ctx, wsURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer s.CloseNow()
		socks = append(socks, s)
		msg := []byte("hello " + strconv.Itoa(i))
		if err := s.Write(ctx, websocket.MessageText, msg); err != nil {
			t.Fatal(err)
		}
		_, got, err := s.Read(ctx)
		pid, rest, ok := bytes.Cut(got, []byte(":"))
		n, _ := strconv.Atoi(string(pid))
		if err != nil || !ok || !bytes.Equal(rest, msg) || !pids[n] {
			t.Fatalf("socket %d echoed %q, %v", i, got, err)
		}
		served[n] = true
	}
	t.Logf("6 sockets on %d workers", len(served))

	if err := c.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for i, s := range socks {
		_, _, err := s.Read(ctx)
		if status := websocket.CloseStatus(err); status != websocket.StatusGoingAway {
			t.Errorf("socket %d ended with %v (close status %d), want the app's 1001 going away", i, err, status)
		}
	}
	select {
	case <-c.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("Caddy did not exit after SIGINT")
	}
}

// A Python app on the standard library's http.server answers in
// HTTP/1.0, closing each connection, once without a Content-Length (the
// body ends with the connection): every worker serves, concurrent
// clients get whole answers.
func TestPythonStdlibAppThroughCaddy(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Fatal("python3 is required (Debian's python3 is on every machine of this project)")
	}
	dir, err := filepath.Abs("../../examples/thirdparty")
	if err != nil {
		t.Fatal(err)
	}
	c := startCommandPool(t, "", 2, python+" "+filepath.Join(dir, "app.py"), "")
	pids := waitPIDs(t, c, 2)
	var wg sync.WaitGroup
	failed := make(chan string, 400)
	for g := range 20 {
		wg.Go(func() {
			for i := range 20 {
				path := "/"
				if (g+i)%2 == 0 {
					path = "/stream"
				}
				if r, code, err := get(c.url + path); err != nil || code != 200 || !pids[r.PID] {
					failed <- fmt.Sprintf("%s: %+v %d %v", path, r, code, err)
				}
			}
		})
	}
	wg.Wait()
	close(failed)
	for f := range failed {
		t.Errorf("concurrent GET: %s", f)
	}
}

// With an OpenAPI document and unknown_routes pass, the variants of a
// documented route that Express routes to its handler (a trailing
// slash, another case) and an encoded slash are checked against that
// route: an invalid body gets 400 problem+json naming the field and
// never reaches the app (its own counter says so); a valid one reaches
// it with the path the client sent.
func TestRouteVariantsAreValidatedBeforeExpress(t *testing.T) {
	doc, err := filepath.Abs("../../examples/thirdparty/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	c := startCommandPool(t, "", 1, "node "+thirdPartyApp(t, "express"),
		"validate {\n\t\t\topenapi "+doc+"\n\t\t\tunknown_routes pass\n\t\t}")
	waitPIDs(t, c, 1)
	post := func(path, body string) (int, string, string) {
		t.Helper()
		resp, err := client.Post(c.url+path, "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header.Get("Content-Type"), string(b)
	}
	const invalid, valid = `{"sku":"ABC-1","qty":"2"}`, `{"sku":"ABC-1","qty":2}`
	for _, path := range []string{"/orders/", "/ORDERS", "/Orders/", "/orders%2f", "/orders%2F", "/ORDERS%2F"} {
		t.Run(path, func(t *testing.T) {
			before := served(t, c)
			code, ctype, body := post(path, invalid)
			if code != 400 || ctype != "application/problem+json" || !strings.Contains(body, `"pointer":"/body/qty"`) {
				t.Fatalf("POST %s with an invalid body: %d %s %s, want 400 problem+json at /body/qty", path, code, ctype, body)
			}
			if after := served(t, c); after != before {
				t.Fatalf("POST %s with an invalid body reached the app: its count went from %d to %d", path, before, after)
			}
			// A valid one reaches the app, with its path as sent.
			code, _, body = post(path, valid)
			if after := served(t, c); after != before+1 {
				t.Fatalf("POST %s with a valid body: %d %s; the app's count went from %d to %d", path, code, body, before, after)
			}
			if !strings.Contains(path, "%") {
				// Express routes it to POST /orders, as the check assumed.
				var got struct{ Path string }
				if code != 201 || json.Unmarshal([]byte(body), &got) != nil || got.Path != path {
					t.Fatalf("POST %s with a valid body: %d %s, want 201 from the /orders handler, path unchanged", path, code, body)
				}
			}
		})
	}
	// The exact route, as before.
	if code, _, body := post("/orders", invalid); code != 400 {
		t.Fatalf("POST /orders with an invalid body: %d %s", code, body)
	}
	if code, _, body := post("/orders", valid); code != 201 {
		t.Fatalf("POST /orders: %d %s", code, body)
	}
}
