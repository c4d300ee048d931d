package pool_test

import (
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/caddy-workerpool/caddy-workerpool/balancer"
	"github.com/caddy-workerpool/caddy-workerpool/internal/testworker"
	"github.com/caddy-workerpool/caddy-workerpool/pool"
	"github.com/caddy-workerpool/caddy-workerpool/worker"
)

// A worker that listens on every interface is found when it becomes
// ready: reported in its status and in an error that names the fix,
// and, under refuse, kept out of rotation with that reason; a worker on
// loopback is not. Nothing connects to any address but 127.0.0.1.
func TestBindCheck(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the bind check reads /proc")
	}
	for _, tc := range []struct {
		name    string
		mode    string
		check   pool.BindCheck
		exposed bool // the status and the log report it
		serves  bool
	}{
		{"loopback, default", "serve", "", false, true},
		{"loopback, refuse", "serve", pool.BindRefuse, false, true},
		{"every interface, default warns", "every-interface", "", true, true},
		{"every interface, refuse", "every-interface", pool.BindRefuse, true, false},
		{"every interface, off", "every-interface", pool.BindOff, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			core, logs := observer.New(zap.InfoLevel)
			p, srv := newPool(t, pool.Config{
				Workers:   worker.Spec{Count: 1, Env: testworker.Env(tc.mode)},
				BindCheck: tc.check,
			}, zap.New(core))
			var w pool.WorkerStatus
			testworker.Eventually(t, 10*time.Second, "the worker ready", func() bool {
				w = p.Status().Workers[0]
				return w.Lifecycle == "serving"
			})

			_, port, _ := net.SplitHostPort(w.Address)
			switch got := testworker.SSListening(t, port); {
			case got == "":
			case tc.mode == "every-interface" && !testworker.EveryInterface(got):
				t.Fatalf("ss shows the worker on %s, not on every interface", got)
			case tc.mode == "serve" && got != w.Address:
				t.Fatalf("ss shows the worker on %s, want %s", got, w.Address)
			}

			if tc.exposed != (len(w.ExposedOn) > 0) {
				t.Fatalf("exposed_on %v, want exposed %v", w.ExposedOn, tc.exposed)
			}
			for _, a := range w.ExposedOn {
				if !strings.HasSuffix(a, ":"+port) {
					t.Errorf("exposed_on %v: not the worker's port %s", w.ExposedOn, port)
				}
			}
			errs := logs.FilterMessageSnippet("listens beyond loopback").All()
			if tc.exposed != (len(errs) == 1) {
				t.Fatalf("%d errors about the bind, want exposed %v: %v", len(errs), tc.exposed, logs.All())
			}
			if tc.exposed && (errs[0].Level != zap.ErrorLevel || !strings.Contains(errs[0].Message, "listen(process.env.PORT, process.env.HOST)") ||
				!strings.Contains(errs[0].Message, "listen unix")) {
				t.Fatalf("the error does not name the fix: %v %q", errs[0].Level, errs[0].Message)
			}

			if w.Healthy != tc.serves {
				t.Fatalf("in rotation %v, want %v (%+v)", w.Healthy, tc.serves, w)
			}
			resp, err := http.Get(srv.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if tc.serves && resp.StatusCode != 200 || !tc.serves && resp.StatusCode != 503 {
				t.Fatalf("GET /: %s, want it served %v", resp.Status, tc.serves)
			}
			if !tc.serves {
				if w.OutOfRotation != "listens beyond loopback" {
					t.Fatalf("out_of_rotation %q, want the reason", w.OutOfRotation)
				}
				// Held, not sick: it is neither killed nor restarted.
				if st := p.Status(); st.Workers[0].PID != w.PID || st.Workers[0].Restarts != 0 {
					t.Fatalf("the refused worker was restarted: %+v", st.Workers[0])
				}
			}
		})
	}
}

func TestBindCheckRefusesAnUnknownMode(t *testing.T) {
	_, err := pool.New(pool.Config{Workers: worker.Spec{Command: testworker.Command()}, BindCheck: "strict"}, nil)
	if err == nil || !strings.Contains(err.Error(), "bind_check") || !strings.Contains(err.Error(), "warn, refuse or off") {
		t.Fatalf("New with bind_check strict: %v", err)
	}
}

// TestLauncherServerIsFound: a worker command that runs the server as
// its child (npm start, a shell script) has its CPU read in the child,
// the process that listens: the status names it, and the child's idle
// long polls are parked.
func TestLauncherServerIsFound(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the serving process is found in /proc")
	}
	p, srv := newPool(t, pool.Config{
		Workers:  worker.Spec{Count: 1, Env: testworker.Env("launcher")},
		Balancer: balancer.Config{MaxInflight: 1},
	}, zap.NewNop())
	var w pool.WorkerStatus
	testworker.Eventually(t, 10*time.Second, "the worker ready", func() bool {
		w = p.Status().Workers[0]
		return w.Lifecycle == "serving"
	})
	if w.ServerPID == 0 || w.ServerPID == w.PID {
		t.Fatalf("server pid %d of launcher pid %d: the child that listens was not found", w.ServerPID, w.PID)
	}
	// The child holds a long poll and computes nothing: a second request
	// is served beside it.
	held := make(chan error, 1)
	go func() {
		resp, err := http.Get(srv.URL + "/block")
		if err == nil {
			resp.Body.Close()
		}
		held <- err
	}()
	testworker.Eventually(t, 10*time.Second, "the poll held", func() bool { return p.Status().Workers[0].Inflight == 1 })
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(srv.URL + "/")
	if err != nil {
		t.Fatalf("a request beside the launcher's child's idle poll: %v", err)
	}
	resp.Body.Close()
	if st := p.Status().Workers[0]; st.Parked != 1 || st.Streams != 1 {
		t.Fatalf("parked %d, streams %d: want the poll parked", st.Parked, st.Streams)
	}
	// The worker's own address, past the pool, to let the poll go.
	if resp, err := http.Post("http://"+w.Address+"/release", "", nil); err != nil {
		t.Fatal(err)
	} else {
		resp.Body.Close()
	}
	if err := <-held; err != nil {
		t.Fatal(err)
	}
}
