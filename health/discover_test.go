package health_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/caddy-workerpool/caddy-workerpool/health"
)

func TestParseCandidates(t *testing.T) {
	cases := []struct {
		specs []string
		want  []string // network:address, or the error's text after "!"
	}{
		{[]string{"127.0.0.1:3001"}, []string{"tcp:127.0.0.1:3001"}},
		{[]string{"127.0.0.1:3001-3003", "127.0.0.1:3002"}, []string{"tcp:127.0.0.1:3001", "tcp:127.0.0.1:3002", "tcp:127.0.0.1:3003"}},
		{[]string{"[::1]:80", "localhost:81"}, []string{"tcp:[::1]:80", "tcp:localhost:81"}},
		{nil, []string{"!give at least one address"}},
		{[]string{"127.0.0.1:3005-3001"}, []string{"!runs backwards"}},
		{[]string{"127.0.0.1:65535-65536"}, []string{`!port "65536": give a number from 1 to 65535`}},
		{[]string{"127.0.0.1:0"}, []string{`!port "0"`}},
		{[]string{"127.0.0.1:1-2000"}, []string{"!a range may hold at most 1024"}},
		{[]string{"10.0.0.5:3001"}, []string{"!10.0.0.5 is not a loopback address", "use consul"}},
		{[]string{"example.com:3001"}, []string{"!not a loopback address"}},
		{[]string{"127.0.0.1"}, []string{"!want host:port"}},
		{[]string{"unix/run/*.sock"}, []string{"!must be absolute"}},
		{[]string{"unix//run/[.sock"}, []string{"!bad glob"}},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.specs, " "), func(t *testing.T) {
			cands, err := health.ParseCandidates(c.specs)
			if strings.HasPrefix(c.want[0], "!") {
				if err == nil {
					t.Fatalf("parsed; want an error with %q", c.want)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), strings.TrimPrefix(w, "!")) {
						t.Fatalf("error %q: want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, tg := range cands.Expand() {
				got = append(got, tg.Network+":"+tg.Address)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got %v, want %v", got, c.want)
			}
		})
	}
}

func TestCandidatesExpandGlobs(t *testing.T) {
	dir := t.TempDir()
	cands, err := health.ParseCandidates([]string{"127.0.0.1:9", "unix/" + dir + "/*.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if got := cands.Expand(); len(got) != 1 {
		t.Fatalf("before any socket: %v", got)
	}
	for _, name := range []string{"b.sock", "a.sock", "c.txt"} {
		if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	got := cands.Expand()
	want := []health.Target{{Network: "tcp", Address: "127.0.0.1:9"},
		{Network: "unix", Address: filepath.Join(dir, "a.sock")}, {Network: "unix", Address: filepath.Join(dir, "b.sock")}}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
