package deploy

import (
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// caddyfilePath is where the pods mount the ConfigMap's Caddyfile.
const caddyfilePath = "/etc/caddy/Caddyfile"

// pod is a rendered Deployment's pod with its Caddy container and
// Caddyfile found.
type pod struct {
	spec      corev1.PodSpec
	caddy     corev1.Container
	sidecar   bool // Caddy runs as a native sidecar
	app       *corev1.Container
	caddyfile string
	config    adapted
}

// inspect finds Caddy and its Caddyfile in a rendering and checks what
// every mode shares: the Caddyfile adapts, the ports and probes agree
// with it, the Service, autoscaler and disruption budget point at the
// pods, and the pods run locked down.
func inspect(t *testing.T, o *objects) pod {
	t.Helper()
	what := o.description
	spec := o.deployment.Spec.Template.Spec
	var p pod
	p.spec = spec
	found := 0
	for _, c := range spec.InitContainers {
		if c.Name == "caddy" {
			if c.RestartPolicy == nil || *c.RestartPolicy != corev1.ContainerRestartPolicyAlways {
				t.Errorf("%s: Caddy is an init container without restartPolicy Always: not a native sidecar", what)
			}
			p.caddy, p.sidecar = c, true
			found++
		}
	}
	for i, c := range spec.Containers {
		switch c.Name {
		case "caddy":
			p.caddy = c
			found++
		default:
			p.app = &spec.Containers[i]
		}
	}
	if found != 1 {
		t.Fatalf("%s: %d containers named caddy, want 1", what, found)
	}

	// The Caddyfile: the ConfigMap that the caddyfile volume names,
	// mounted where Caddy's arguments read it.
	if !slices.Equal(p.caddy.Command, []string{"/usr/bin/caddy"}) ||
		!slices.Equal(p.caddy.Args, []string{"run", "--config", caddyfilePath, "--adapter", "caddyfile"}) {
		t.Errorf("%s: Caddy runs %q %q, want /usr/bin/caddy run --config %s --adapter caddyfile", what, p.caddy.Command, p.caddy.Args, caddyfilePath)
	}
	mounted := false
	for _, m := range p.caddy.VolumeMounts {
		if m.Name == "caddyfile" && m.MountPath+"/Caddyfile" == caddyfilePath && m.ReadOnly {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("%s: the caddyfile volume is not mounted read-only at /etc/caddy", what)
	}
	for _, v := range spec.Volumes {
		if v.Name == "caddyfile" && v.ConfigMap != nil {
			cm := o.configMaps[v.ConfigMap.Name]
			if cm == nil {
				t.Fatalf("%s: the caddyfile volume names ConfigMap %q, which is not rendered", what, v.ConfigMap.Name)
			}
			p.caddyfile = cm.Data["Caddyfile"]
		}
	}
	if p.caddyfile == "" {
		t.Fatalf("%s: no Caddyfile in the ConfigMap of the caddyfile volume", what)
	}
	p.config = adaptCaddyfile(t, what, p.caddyfile)
	if !p.config.Admin.Disabled {
		t.Errorf("%s: the admin endpoint is on, on a loopback that the pod's containers share", what)
	}
	for name, s := range p.config.Apps.HTTP.Servers {
		if missing := s.guarded(); len(missing) > 0 {
			t.Errorf("%s: server %s %v lacks %s", what, name, s.Listen, strings.Join(missing, " and "))
		}
	}

	// Container ports are Caddy's listeners, no more, no fewer.
	var cports []int
	named := map[string]int{}
	for _, cp := range p.caddy.Ports {
		cports = append(cports, int(cp.ContainerPort))
		named[cp.Name] = int(cp.ContainerPort)
	}
	slices.Sort(cports)
	if got := p.config.ports(t); !slices.Equal(cports, got) {
		t.Errorf("%s: Caddy's container ports %v, its Caddyfile listens on %v", what, cports, got)
	}
	site, ok := named["http"]
	if !ok || !p.config.serves(site, "/", "worker_pool") {
		t.Errorf("%s: the port named http (%d) does not serve / with worker_pool", what, site)
	}

	// Every HTTP probe, of any container, asks a Caddy listener for a
	// path that worker_pool_health answers.
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		for kind, pr := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe, "startup": c.StartupProbe} {
			if pr == nil {
				continue
			}
			if pr.HTTPGet == nil {
				t.Errorf("%s: %s probe of %s is not an HTTP GET", what, kind, c.Name)
				continue
			}
			port := portOf(t, pr.HTTPGet.Port, c)
			if !p.config.serves(port, pr.HTTPGet.Path, "worker_pool_health") {
				t.Errorf("%s: %s probe of %s asks port %d for %s, which the Caddyfile does not answer with worker_pool_health", what, kind, c.Name, port, pr.HTTPGet.Path)
			}
			if kind == "startup" && p.sidecar && c.Name == "caddy" {
				t.Errorf("%s: a startup probe on the sidecar on the workers' health holds back the app that starts them", what)
			}
		}
	}
	if p.caddy.ReadinessProbe == nil {
		t.Errorf("%s: Caddy has no readiness probe", what)
	}

	// The Service sends traffic to Caddy's site, for these pods.
	podLabels := labels.Set(o.deployment.Spec.Template.Labels)
	if sel := labels.SelectorFromSet(o.service.Spec.Selector); len(o.service.Spec.Selector) == 0 || !sel.Matches(podLabels) {
		t.Errorf("%s: the Service's selector %v does not select the pods %v", what, o.service.Spec.Selector, podLabels)
	}
	for _, sp := range o.service.Spec.Ports {
		if tp := portOf(t, sp.TargetPort, p.caddy); tp != site {
			t.Errorf("%s: Service port %d targets %d, not the site's port %d", what, sp.Port, tp, site)
		}
	}
	if dsel := o.deployment.Spec.Selector; dsel == nil || !labels.SelectorFromSet(dsel.MatchLabels).Matches(podLabels) {
		t.Errorf("%s: the Deployment's selector does not select its pods", what)
	}
	if o.hpa != nil {
		ref := o.hpa.Spec.ScaleTargetRef
		if ref.Kind != "Deployment" || ref.Name != o.deployment.Name || ref.APIVersion != "apps/v1" {
			t.Errorf("%s: the autoscaler scales %v, not Deployment %s", what, ref, o.deployment.Name)
		}
		if len(o.hpa.Spec.Metrics) == 0 || o.hpa.Spec.Metrics[0].Resource == nil || o.hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
			t.Errorf("%s: the autoscaler does not scale on CPU", what)
		}
		if o.deployment.Spec.Replicas != nil {
			t.Errorf("%s: the Deployment sets replicas, which fights the autoscaler on every apply", what)
		}
	}
	if o.pdb != nil {
		if s := o.pdb.Spec.Selector; s == nil || !labels.SelectorFromSet(s.MatchLabels).Matches(podLabels) {
			t.Errorf("%s: the PodDisruptionBudget does not select the pods", what)
		}
	}

	// Locked down: not root, no privilege escalation, no capabilities,
	// read-only root filesystems; every container has requests and
	// limits.
	if sc := spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot ||
		sc.RunAsUser == nil || *sc.RunAsUser == 0 || sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: the pod does not run as a non-root user with the runtime's seccomp profile", what)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the pod mounts a service account token it does not need", what)
	}
	for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
		sc := c.SecurityContext
		if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
			sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
			t.Errorf("%s: container %s may escalate privileges, write its root filesystem or keep capabilities", what, c.Name)
		}
		for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
			if _, ok := c.Resources.Requests[r]; !ok {
				t.Errorf("%s: container %s has no %s request", what, c.Name, r)
			}
			if _, ok := c.Resources.Limits[r]; !ok {
				t.Errorf("%s: container %s has no %s limit", what, c.Name, r)
			}
		}
	}
	return p
}

// portOf resolves a probe's or Service's port, a number or the name of a
// port of container c.
func portOf(t *testing.T, port intstr.IntOrString, c corev1.Container) int {
	t.Helper()
	if port.Type == intstr.Int {
		return port.IntValue()
	}
	for _, cp := range c.Ports {
		if cp.Name == port.StrVal {
			return int(cp.ContainerPort)
		}
	}
	t.Errorf("port %q is not a port of container %s", port.StrVal, c.Name)
	return 0
}

// env returns a container's literal environment variable.
func env(c corev1.Container, name string) (string, bool) {
	for _, e := range c.Env {
		if e.Name == name && e.ValueFrom == nil {
			return e.Value, true
		}
	}
	return "", false
}

// preStopSleep is the seconds of a container's preStop sleep action.
func preStopSleep(c corev1.Container) int64 {
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
		return 0
	}
	return c.Lifecycle.PreStop.Sleep.Seconds
}

// checkSidecar checks sidecar mode: the app starts WORKERS workers from
// PORT_BASE on, exactly the loopback ports that Caddy discovers; the app
// container stops first and waits for the endpoints to go; the grace
// period covers the whole stop.
func checkSidecar(t *testing.T, p pod) {
	t.Helper()
	if !p.sidecar || p.app == nil {
		t.Fatal("sidecar mode: want Caddy as a native sidecar and an app container")
	}
	pools := p.config.pools(t)
	if len(pools) != 1 || len(pools[0].Discover) == 0 {
		t.Fatalf("sidecar mode: want one worker_pool with discover, have %+v", pools)
	}
	workers, _ := env(*p.app, "WORKERS")
	base, _ := env(*p.app, "PORT_BASE")
	n, err1 := strconv.Atoi(workers)
	first, err2 := strconv.Atoi(base)
	if err1 != nil || err2 != nil {
		t.Fatalf("sidecar mode: the app container's WORKERS %q and PORT_BASE %q are not numbers", workers, base)
	}
	var want []int
	for i := range n {
		want = append(want, first+i)
	}
	if got := discoverPorts(t, pools[0]); !slices.Equal(got, want) {
		t.Errorf("sidecar mode: Caddy discovers ports %v, the app starts workers on %v", got, want)
	}
	if limit := p.app.Resources.Limits.Cpu(); limit.Cmp(*resource.NewQuantity(int64(n), resource.DecimalSI)) != 0 {
		t.Errorf("sidecar mode: %d workers for a CPU limit of %s: give one single-threaded worker per core", n, limit)
	}
	appSleep := preStopSleep(*p.app)
	if appSleep < 1 {
		t.Error("sidecar mode: the app container, which stops first, has no preStop sleep to leave the endpoints before its workers stop")
	}
	stopMS, _ := env(*p.app, "STOP_TIMEOUT_MS")
	ms, err := strconv.Atoi(stopMS)
	if err != nil {
		t.Fatalf("sidecar mode: the app's STOP_TIMEOUT_MS %q", stopMS)
	}
	stop := time.Duration(appSleep)*time.Second + time.Duration(ms)*time.Millisecond +
		p.config.Apps.HTTP.GracePeriod + time.Duration(pools[0].StopTimeout)
	checkGrace(t, p, stop)
}

// checkSpawn checks spawn mode: one container, whose Caddy spawns the
// workers, one per CPU of its limit.
func checkSpawn(t *testing.T, p pod) {
	t.Helper()
	if p.sidecar || p.app != nil || len(p.spec.Containers) != 1 {
		t.Fatal("spawn mode: want one container, Caddy's")
	}
	pools := p.config.pools(t)
	if len(pools) != 1 || len(pools[0].Command) == 0 {
		t.Fatalf("spawn mode: want one worker_pool with a command, have %+v", pools)
	}
	if pools[0].Count == 0 {
		// count {$WORKERS:auto}: WORKERS must come from the CPU limit.
		var fromLimit bool
		for _, e := range p.caddy.Env {
			if e.Name == "WORKERS" && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil &&
				e.ValueFrom.ResourceFieldRef.Resource == "limits.cpu" && e.ValueFrom.ResourceFieldRef.ContainerName == "caddy" {
				fromLimit = true
			}
		}
		if !fromLimit || !strings.Contains(p.caddyfile, "{$WORKERS") {
			t.Error("spawn mode: the pool's count is neither set nor taken from WORKERS, the container's CPU limit")
		}
	}
	sleep := preStopSleep(p.caddy)
	if sleep < 1 {
		t.Error("spawn mode: Caddy has no preStop sleep to leave the endpoints before it drains")
	}
	checkGrace(t, p, time.Duration(sleep)*time.Second+p.config.Apps.HTTP.GracePeriod+time.Duration(pools[0].StopTimeout))
}

func checkGrace(t *testing.T, p pod, stop time.Duration) {
	t.Helper()
	if p.config.Apps.HTTP.GracePeriod == 0 {
		t.Error("no grace_period: Caddy would wait for connections without end, past the pod's grace period")
	}
	grace := p.spec.TerminationGracePeriodSeconds
	if grace == nil || time.Duration(*grace)*time.Second <= stop {
		t.Errorf("terminationGracePeriodSeconds %v does not exceed the stop's worst case %v", grace, stop)
	}
}

func TestKustomizeSidecar(t *testing.T) {
	checkSidecar(t, inspect(t, kustomize(t, "sidecar")))
}

func TestKustomizeSpawn(t *testing.T) {
	p := inspect(t, kustomize(t, "spawn"))
	checkSpawn(t, p)
	// With WORKERS set, as the downward API sets it, the count is it.
	t.Setenv("WORKERS", "3")
	if pools := adaptCaddyfile(t, "spawn with WORKERS=3", p.caddyfile).pools(t); len(pools) != 1 || pools[0].Count != 3 {
		t.Errorf("spawn mode with WORKERS=3: pools %+v, want count 3", pools)
	}
}
