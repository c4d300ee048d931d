// Package testworker is a worker program for tests: the test binary runs
// itself as a worker when WORKERPOOL_TEST_MODE is set, so tests spawn real
// processes that serve real sockets without building anything.
//
// Call RunIfWorker first thing in TestMain.
package testworker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
)

// ModeEnv selects what the process does when run as a worker:
//
//	serve        HTTP on PORT (HOST) or SOCKET_PATH, see the routes below
//	exit         exit with status 1 at once
//	ignore-term  serve, but ignore SIGTERM
//	grandchild   serve, and start a child that sleeps in the same group
//	detached     serve, and start a child that sleeps in a session of its
//	             own (Node's `detached: true`); its pid is written to the
//	             file CHILD_PID_FILE names
//	no-health    serve, but /healthz answers 503
//	sleep        block forever without listening
//	slow-start   serve, after half a second without listening
//	every-interface  serve on PORT on every interface, ignoring HOST, as
//	             app.listen(process.env.PORT) does
//	launcher     listen on nothing, and run a child that serves, as npm
//	             start or a shell script does; exit with it
const ModeEnv = "WORKERPOOL_TEST_MODE"

// Env returns the environment that makes the test binary a worker. It
// also turns off the race detector's one-second sleep at exit, which
// would otherwise delay every stop of a worker built with -race.
func Env(mode string) map[string]string {
	return map[string]string{ModeEnv: mode, "GORACE": "atexit_sleep_ms=0"}
}

// Command is the program to spawn: this test binary.
func Command() string {
	p, err := os.Executable()
	if err != nil {
		panic(err)
	}
	return p
}

// Reply is the JSON answer of GET /.
type Reply struct {
	PID    int    `json:"pid"`
	Worker string `json:"worker"`
	Path   string `json:"path"`
	// Headers the worker received, for tests of forwarding.
	Header http.Header `json:"header"`
	Host   string      `json:"host"`
}

// RunIfWorker runs the worker and exits if ModeEnv is set; otherwise it
// returns at once. It also turns off the race detector's one-second
// sleep at exit for every process this test binary starts, which would
// otherwise slow down each stop of a worker or reaper built with -race.
func RunIfWorker() {
	_ = os.Setenv("GORACE", "atexit_sleep_ms=0")
	mode := os.Getenv(ModeEnv)
	if mode == "" {
		return
	}
	switch mode {
	case "exit":
		os.Exit(1)
	case "sleep":
		select {}
	case "slow-start":
		time.Sleep(500 * time.Millisecond) // an app that takes a while to start
	case "ignore-term":
		signal.Ignore(syscall.SIGTERM)
	case "launcher":
		child := exec.Command(Command())
		child.Env = append(os.Environ(), ModeEnv+"=serve")
		child.Stdout, child.Stderr = os.Stdout, os.Stderr
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "launcher:", err)
			os.Exit(2)
		}
		signal.Ignore(syscall.SIGTERM) // the group's SIGTERM reaches the child
		if err := child.Wait(); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	case "grandchild":
		child := exec.Command(Command())
		child.Env = append(os.Environ(), ModeEnv+"=sleep")
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "grandchild:", err)
			os.Exit(2)
		}
		fmt.Printf("grandchild pid %d\n", child.Process.Pid)
	case "detached":
		child := exec.Command(Command())
		child.Env = append(os.Environ(), ModeEnv+"=sleep")
		child.SysProcAttr = detached()
		if err := child.Start(); err != nil {
			fmt.Fprintln(os.Stderr, "detached child:", err)
			os.Exit(2)
		}
		if err := writePID(os.Getenv("CHILD_PID_FILE"), child.Process.Pid); err != nil {
			fmt.Fprintln(os.Stderr, "detached child:", err)
			os.Exit(2)
		}
	}
	// The server runs elsewhere; this goroutine, locked to the main
	// thread since init, computes what /cpu asks, as a Node worker's
	// event loop does on its main thread (where the pool looks for
	// whether a worker computes, see procfs.Busy).
	go func() {
		if err := serve(mode); err != nil {
			fmt.Fprintln(os.Stderr, "testworker:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}()
	for job := range mainThread {
		job()
	}
}

// mainThread carries work to the main thread: the goroutine that runs
// RunIfWorker, locked to the process's first thread by init.
var mainThread = make(chan func())

func init() {
	if os.Getenv(ModeEnv) != "" {
		runtime.LockOSThread()
	}
}

// writePID writes pid to file at once: a reader sees all of it or none.
func writePID(file string, pid int) error {
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(pid)), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func listen(mode string) (net.Listener, error) {
	if p := os.Getenv("SOCKET_PATH"); p != "" {
		return net.Listen("unix", p)
	}
	host := os.Getenv("HOST")
	if mode == "every-interface" {
		host = ""
	}
	return net.Listen("tcp", net.JoinHostPort(host, os.Getenv("PORT")))
}

func serve(mode string) error {
	ln, err := listen(mode)
	if err != nil {
		return err
	}
	var (
		mu      sync.Mutex
		release = make(chan struct{})
	)
	released := func() <-chan struct{} {
		mu.Lock()
		defer mu.Unlock()
		return release
	}
	var sick, failing, closed atomic.Bool
	var blocked atomic.Int32
	mux := http.NewServeMux()
	// POST /fail makes every route but /healthz and /heal answer 500;
	// POST /heal undoes it.
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) { failing.Store(true) })
	mux.HandleFunc("POST /heal", func(w http.ResponseWriter, r *http.Request) { failing.Store(false) })
	// POST /close-listener stops accepting connections; the process lives.
	mux.HandleFunc("POST /close-listener", func(w http.ResponseWriter, r *http.Request) {
		closed.Store(true)
		_ = ln.Close()
	})
	// GET /blocked says how many /block requests are waiting.
	mux.HandleFunc("GET /blocked", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, blocked.Load())
	})
	// /die reads the request (body included) and closes the connection
	// without answering.
	mux.HandleFunc("/die", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close()
		}
	})
	// GET /cpu?ms=N (or ?us=N) spins for N ms (µs) on the main thread,
	// one request at a time: a worker that computes like a
	// single-threaded runtime.
	mux.HandleFunc("GET /cpu", func(w http.ResponseWriter, r *http.Request) {
		d := queryMS(r)
		done := make(chan struct{})
		mainThread <- func() {
			for end := time.Now().Add(d); time.Now().Before(end); {
			}
			close(done)
		}
		<-done
		_, _ = io.WriteString(w, "done\n")
	})
	// GET /sleep?ms=N waits N ms without using the CPU: an I/O-bound worker
	// (that fails at once after POST /fail).
	mux.HandleFunc("GET /sleep", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		time.Sleep(queryMS(r))
		_, _ = io.WriteString(w, "done\n")
	})
	// POST /sick makes /healthz fail from then on, with the process alive.
	mux.HandleFunc("POST /sick", func(w http.ResponseWriter, r *http.Request) { sick.Store(true) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if mode == "no-health" || sick.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(Reply{
			PID: os.Getpid(), Worker: os.Getenv("WORKER_ID"), Path: r.URL.Path,
			Header: r.Header, Host: r.Host,
		})
	})
	// GET /hints sends 103 Early Hints with a Link, then its answer.
	mux.HandleFunc("GET /hints", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload; as=style")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		_, _ = io.WriteString(w, "hinted\n")
	})
	// POST /echo reads the whole body, then answers with it.
	mux.HandleFunc("POST /echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		_, _ = w.Write(b)
	})
	// /block answers only after POST /release (or when the client goes).
	mux.HandleFunc("GET /block", func(w http.ResponseWriter, r *http.Request) {
		if failing.Load() {
			http.Error(w, "failing on purpose", http.StatusInternalServerError)
			return
		}
		rel := released()
		blocked.Add(1)
		defer blocked.Add(-1)
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
		fmt.Fprintf(w, `{"pid":%d,"id":%q}`, os.Getpid(), r.URL.Query().Get("id"))
	})
	mux.HandleFunc("POST /release", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		close(release)
		release = make(chan struct{})
		mu.Unlock()
	})
	// /stream sends a first chunk at once and the rest after /release;
	// ?type= names its Content-Type (default text/event-stream).
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		ct := r.URL.Query().Get("type")
		if ct == "" {
			ct = "text/event-stream"
		}
		w.Header().Set("Content-Type", ct)
		rel := released()
		_, _ = io.WriteString(w, "data: first\n\n")
		_ = http.NewResponseController(w).Flush()
		select {
		case <-rel:
		case <-r.Context().Done():
			return
		}
		_, _ = io.WriteString(w, "data: last\n\n")
	})
	// /ws echoes WebSocket messages.
	mux.HandleFunc("GET /ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, append([]byte("echo:"), msg...)); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("GET /pid", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strconv.Itoa(os.Getpid()))
	})

	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	ctx, stop := context.WithCancel(context.Background())
	defer stop()
	if mode != "ignore-term" {
		ctx, stop = signal.NotifyContext(ctx, syscall.SIGTERM)
		defer stop()
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		if closed.Load() {
			<-ctx.Done() // keep the process, and its open connections, alive
			return nil
		}
		return err
	}
	return nil
}

func queryMS(r *http.Request) time.Duration {
	if us, err := strconv.Atoi(r.URL.Query().Get("us")); err == nil {
		return time.Duration(us) * time.Microsecond
	}
	ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
	return time.Duration(ms) * time.Millisecond
}
