package deploy

import (
	"bufio"
	"bytes"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// ourCaddy builds our Caddy with deploy/build.sh, the script that the
// Dockerfile's build stage runs, once for all tests.
func ourCaddy(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "deploy-build-")
		if buildErr != nil {
			return
		}
		out, err := exec.Command("./build.sh", filepath.Join(buildDir, "caddy")).CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("deploy/build.sh: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(buildDir, "caddy")
}

// checkOurModules runs `<binary> list-modules` and wants ours and the
// standard modules that the deploy Caddyfiles use.
func checkOurModules(t *testing.T, bin string) {
	t.Helper()
	out, err := exec.Command(bin, "list-modules").CombinedOutput()
	if err != nil {
		t.Fatalf("%s list-modules: %v\n%s", bin, err, out)
	}
	mods := strings.Fields(string(out))
	for _, want := range []string{
		"http.handlers.worker_pool", "http.handlers.worker_pool_health", "admin.api.worker_pool",
		"http.reverse_proxy.upstreams.worker_pool",
		"http.handlers.metrics", "http.handlers.tracing", "http.handlers.reverse_proxy",
	} {
		if !slices.Contains(mods, want) {
			t.Errorf("%s list-modules has no %s", bin, want)
		}
	}
}

func TestBuildScriptMakesAStaticCaddy(t *testing.T) {
	bin := ourCaddy(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// Static: no program interpreter (ld.so) and no dynamic section, so
	// it runs on distroless/static or scratch, which have no libc.
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("the binary has a %v program header: it is dynamically linked", p.Type)
		}
	}
	if f.Section(".dynamic") != nil || f.Section(".interp") != nil {
		t.Error("the binary has a .dynamic or .interp section: it is dynamically linked")
	}
	// -ldflags "-s -w": no symbol table, no DWARF.
	if f.Section(".symtab") != nil || f.Section(".debug_info") != nil {
		t.Error("the binary keeps its symbol table or DWARF: built without -s -w")
	}
	// -trimpath: the build machine's paths are not in the binary.
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, []byte(root+"/")) {
		t.Errorf("the binary holds the path %s: built without -trimpath", root)
	}
	checkOurModules(t, bin)
}

// dockerfile is deploy/Dockerfile read into its stages.
type stage struct {
	from, name string
	lines      []string // instructions, continuation lines joined
}

func readDockerfile(t *testing.T) []stage {
	t.Helper()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var stages []stage
	var cur strings.Builder
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, "\\") {
			cur.WriteString(strings.TrimSuffix(line, "\\") + " ")
			continue
		}
		cur.WriteString(line)
		ins := cur.String()
		cur.Reset()
		f := strings.Fields(ins)
		if strings.EqualFold(f[0], "FROM") {
			s := stage{from: f[1]}
			if len(f) == 4 && strings.EqualFold(f[2], "AS") {
				s.name = f[3]
			}
			stages = append(stages, s)
			continue
		}
		if len(stages) > 0 {
			stages[len(stages)-1].lines = append(stages[len(stages)-1].lines, ins)
		}
	}
	return stages
}

func (s stage) find(instruction string) []string {
	var out []string
	for _, l := range s.lines {
		if f := strings.Fields(l); strings.EqualFold(f[0], instruction) {
			out = append(out, strings.TrimSpace(l[len(f[0]):]))
		}
	}
	return out
}

func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t)
	byName := map[string]stage{}
	for _, s := range stages {
		byName[s.name] = s
	}
	// The build stage runs deploy/build.sh, the script the test above
	// checks, rather than a go build of its own.
	build, ok := byName["build"]
	if !ok {
		t.Fatal("no stage named build")
	}
	var built bool
	for _, r := range build.find("RUN") {
		if strings.Contains(r, "deploy/build.sh /out/caddy") {
			built = true
		}
		if strings.Contains(r, "go build") {
			t.Errorf("the build stage runs go build itself (%q): call deploy/build.sh", r)
		}
	}
	if !built {
		t.Error("the build stage does not run deploy/build.sh /out/caddy")
	}

	listen := map[string][]int{}
	for _, target := range []string{"sidecar", "spawn"} {
		s, ok := byName[target]
		if !ok {
			t.Fatalf("no target %s", target)
		}
		if !slices.Contains(s.find("COPY"), "--from=build /out/caddy /usr/bin/caddy") {
			t.Errorf("%s: our binary is not copied to /usr/bin/caddy", target)
		}
		// A numeric non-root user, so that runAsNonRoot can verify it.
		users := s.find("USER")
		if len(users) != 1 {
			t.Fatalf("%s: USER %v, want one", target, users)
		}
		uid, _, _ := strings.Cut(users[0], ":")
		if n, err := strconv.Atoi(uid); err != nil || n == 0 {
			t.Errorf("%s: USER %s is not a numeric non-root user", target, users[0])
		}
		if e := s.find("ENTRYPOINT"); !slices.Equal(e, []string{`["/usr/bin/caddy"]`}) {
			t.Errorf("%s: ENTRYPOINT %v", target, e)
		}
		if c := s.find("CMD"); !slices.Equal(c, []string{`["run", "--config", "/etc/caddy/Caddyfile", "--adapter", "caddyfile"]`}) {
			t.Errorf("%s: CMD %v", target, c)
		}
		// The baked-in Caddyfile is the overlay's, and EXPOSE lists its
		// listeners.
		src := "deploy/kubernetes/overlays/" + target + "/Caddyfile"
		if !slices.Contains(s.find("COPY"), src+" /etc/caddy/Caddyfile") {
			t.Errorf("%s: %s is not the image's /etc/caddy/Caddyfile", target, src)
		}
		caddyfile, err := os.ReadFile(strings.TrimPrefix(src, "deploy/"))
		if err != nil {
			t.Fatal(err)
		}
		a := adaptCaddyfile(t, src, string(caddyfile))
		listen[target] = a.ports(t)
		var exposed []int
		for _, e := range s.find("EXPOSE") {
			for _, p := range strings.Fields(e) {
				n, _ := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				exposed = append(exposed, n)
			}
		}
		slices.Sort(exposed)
		if !slices.Equal(exposed, listen[target]) {
			t.Errorf("%s: EXPOSE %v, the Caddyfile listens on %v", target, exposed, listen[target])
		}
		if target == "spawn" {
			if !slices.Contains(s.find("COPY"), "examples/node/ /app/") {
				t.Error("spawn: the example app is not in /app")
			}
			hc := s.find("HEALTHCHECK")
			m := regexp.MustCompile(`http://127\.0\.0\.1:(\d+)(/[^'"]*)`).FindStringSubmatch(strings.Join(hc, " "))
			if m == nil {
				t.Fatalf("spawn: HEALTHCHECK %v asks no local URL", hc)
			}
			port, _ := strconv.Atoi(m[1])
			if !a.serves(port, m[2], "worker_pool_health") {
				t.Errorf("spawn: HEALTHCHECK asks :%d%s, which the Caddyfile does not answer with worker_pool_health", port, m[2])
			}
		}
	}
}
