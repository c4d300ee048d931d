package deploy

import (
	"bytes"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// objects are the Kubernetes objects of one rendering (a kustomize
// overlay or the chart with some values), each decoded strictly into its
// k8s.io/api type: a field that the type does not have fails the test,
// as it would fail `kubectl apply --validate=strict`.
type objects struct {
	deployment  *appsv1.Deployment
	service     *corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	hpa         *autoscalingv2.HorizontalPodAutoscaler
	pdb         *policyv1.PodDisruptionBudget
	description string // which rendering, for failure messages
}

// kinds maps the apiVersion and kind that the deploy files may hold to a
// place for the decoded object.
func (o *objects) target(tm metav1.TypeMeta) (any, func(), error) {
	switch tm.APIVersion + " " + tm.Kind {
	case "apps/v1 Deployment":
		d := new(appsv1.Deployment)
		return d, func() { o.deployment = d }, o.once(o.deployment == nil, tm)
	case "v1 Service":
		s := new(corev1.Service)
		return s, func() { o.service = s }, o.once(o.service == nil, tm)
	case "v1 ConfigMap":
		c := new(corev1.ConfigMap)
		return c, func() { o.configMaps[c.Name] = c }, nil
	case "autoscaling/v2 HorizontalPodAutoscaler":
		h := new(autoscalingv2.HorizontalPodAutoscaler)
		return h, func() { o.hpa = h }, o.once(o.hpa == nil, tm)
	case "policy/v1 PodDisruptionBudget":
		p := new(policyv1.PodDisruptionBudget)
		return p, func() { o.pdb = p }, o.once(o.pdb == nil, tm)
	}
	return nil, nil, fmt.Errorf("unexpected object %s %s", tm.APIVersion, tm.Kind)
}

func (o *objects) once(first bool, tm metav1.TypeMeta) error {
	if !first {
		return fmt.Errorf("a second %s", tm.Kind)
	}
	return nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// decodeAll splits a multi-document YAML stream and decodes each object
// strictly.
func decodeAll(t *testing.T, description string, stream []byte) *objects {
	t.Helper()
	o := &objects{configMaps: map[string]*corev1.ConfigMap{}, description: description}
	for _, doc := range docSeparator.Split(string(stream), -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("%s: %v in\n%s", description, err, doc)
		}
		into, keep, err := o.target(tm)
		if err != nil {
			t.Fatalf("%s: %v", description, err)
		}
		if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
			t.Fatalf("%s: %s %s does not decode strictly: %v\n%s", description, tm.APIVersion, tm.Kind, err, doc)
		}
		keep()
	}
	if o.deployment == nil || o.service == nil {
		t.Fatalf("%s: no Deployment or no Service in\n%s", description, stream)
	}
	return o
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

// kustomize renders an overlay under kubernetes/overlays as
// `kubectl kustomize` does.
func kustomize(t *testing.T, overlay string) *objects {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	dir, err := filepath.Abs(filepath.Join("kubernetes", "overlays", overlay))
	if err != nil {
		t.Fatal(err)
	}
	m, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize %s: %v", overlay, err)
	}
	out, err := m.AsYaml()
	if err != nil {
		t.Fatal(err)
	}
	return decodeAll(t, "overlay "+overlay, out)
}

// chartDir is the Helm chart.
const chartDir = "helm/caddy-workerpool"

// helmTemplate renders the chart with values (merged over its
// values.yaml) as `helm template` does, for a cluster of kubeVersion.
func helmTemplate(t *testing.T, kubeVersion string, values map[string]any) (*objects, error) {
	t.Helper()
	chrt, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := chartutil.ParseKubeVersion(kubeVersion)
	if err != nil {
		t.Fatal(err)
	}
	install := action.NewInstall(&action.Configuration{})
	install.DryRun = true
	install.ClientOnly = true
	install.ReleaseName = "web"
	install.Namespace = "default"
	install.KubeVersion = kv
	rel, err := install.Run(chrt, values)
	if err != nil {
		return nil, err
	}
	for i, line := range strings.Split(rel.Manifest, "\n") {
		if strings.TrimRight(line, " \t") != line {
			t.Errorf("chart with %v: line %d of the output ends in white space: %q", values, i+1, line)
		}
	}
	return decodeAll(t, fmt.Sprintf("chart with %v", values), []byte(rel.Manifest)), nil
}

func mustHelmTemplate(t *testing.T, values map[string]any) *objects {
	t.Helper()
	o, err := helmTemplate(t, "v1.30.0", values)
	if err != nil {
		t.Fatalf("helm template with %v: %v", values, err)
	}
	return o
}

func TestRenderingsDecodeStrictly(t *testing.T) {
	// A field misspelt in a manifest is refused, as the API server would.
	var bad bytes.Buffer
	bad.WriteString("apiVersion: v1\nkind: Service\nmetadata:\n  name: x\nspec:\n  prots: []\n")
	var svc corev1.Service
	if err := yaml.UnmarshalStrict(bad.Bytes(), &svc); err == nil {
		t.Fatal("a misspelt field decoded: the strict decoding is not strict")
	}
	for _, overlay := range []string{"sidecar", "spawn"} {
		o := kustomize(t, overlay)
		if o.hpa == nil || o.pdb == nil || len(o.configMaps) != 1 {
			t.Errorf("overlay %s: want a Deployment, Service, HorizontalPodAutoscaler, PodDisruptionBudget and one ConfigMap", overlay)
		}
	}
}
