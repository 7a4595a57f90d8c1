// Package chart_test checks the Helm chart charts/plexus, the one place the
// deployment is defined (config/ is generated from it; e2e/manifests checks
// what kustomize makes of that), without a cluster: helm lint, what helm
// template renders with default and non-default values, the values it
// refuses, that the node-scope policy does what it says in a real
// kube-apiserver (envtest), and that docs/install.md's values table is
// current. helm comes from $HELM or `make helm`. Without it the tests skip,
// or fail when PLEXUS_REQUIRE_REAL is set (as `make test` does).
package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	cmdsettings "github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

const (
	chartDir  = "charts/plexus"
	namespace = "kube-system"
	release   = "plexus"
)

// object is one rendered document.
type object = controllertest.Doc

// objects is what one rendering produced, in order.
type objects []object

// decode finds kind ns/name and decodes it strictly into out, so a
// misspelt field fails here.
func (objs objects) decode(t *testing.T, kind, ns, name string, out any) bool {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Namespace == ns && o.Name == name {
			if err := yaml.UnmarshalStrict(o.Raw, out); err != nil {
				t.Fatalf("%s: %v", o.Key(), err)
			}
			return true
		}
	}
	return false
}

// mustDecode is decode that fails the test when the object is absent.
func (objs objects) mustDecode(t *testing.T, kind, ns, name string, out any) {
	t.Helper()
	if !objs.decode(t, kind, ns, name, out) {
		t.Fatalf("no %s %s/%s among %q", kind, ns, name, objs.keys())
	}
}

func (objs objects) ofKind(kind string) objects {
	var out objects
	for _, o := range objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// notWebhook is objs less the webhook's (checked by webhook_test.go).
func (objs objects) notWebhook() objects {
	var out objects
	for _, o := range objs {
		if o.Labels["app.kubernetes.io/component"] != "webhook" {
			out = append(out, o)
		}
	}
	return out
}

func (objs objects) keys() []string {
	var out []string
	for _, o := range objs {
		out = append(out, o.Key())
	}
	sort.Strings(out)
	return out
}

// parse splits a multi-document YAML stream into objects.
func parse(t *testing.T, out []byte) objects { return controllertest.SplitYAML(t, out) }

// template runs `helm template` on the chart with extra arguments
// (--values, --set, --include-crds) and returns what it printed.
func template(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := helmRun(t, slices.Concat([]string{"template", release, chartPath(t), "--namespace", namespace}, args)...)
	if err != nil {
		t.Fatalf("helm template %q: %v\n%s", args, err, out)
	}
	return out
}

// helmRun runs helm with its config, cache and data in a temp dir, so the
// tests neither read nor write the user's helm setup.
func helmRun(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, helm(t), args...)
	home := t.TempDir()
	cmd.Env = append(os.Environ(),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
	)
	return cmd.CombinedOutput()
}

// helmVersionLine is the Makefile's pin of helm, the one place it is set.
var helmVersionLine = regexp.MustCompile(`(?m)^HELM_VERSION\s*:=\s*(\S+)\s*$`)

// helm is $HELM, or the helm `make helm` builds.
func helm(t *testing.T) string {
	t.Helper()
	if h := os.Getenv("HELM"); h != "" {
		return h
	}
	root := repoRoot(t)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := helmVersionLine.FindSubmatch(mk)
	if m == nil {
		t.Fatal("no HELM_VERSION := line in the Makefile")
	}
	h := filepath.Join(root, ".cache", "bin", "helm-"+string(m[1]), "helm")
	plugintest.RequireFile(t, h, "run `make helm`, or set HELM")
	return h
}

func chartPath(t *testing.T) string { return filepath.Join(repoRoot(t), chartDir) }

func testdata(name string) string { return filepath.Join("testdata", name) }

// repoRoot is the module root.
func repoRoot(t *testing.T) string { return plugintest.RepoRoot(t) }

// settings is what the daemon of ds runs with: its --flag=value arguments,
// and the settings of the ConfigMap file its --config names, as
// --setting=value, the command line winning as in the daemon. It fails
// unless that file is in a ConfigMap of objs mounted where --config points.
func settings(t *testing.T, objs objects, ds *appsv1.DaemonSet) map[string]string {
	t.Helper()
	c := container(t, ds)
	out := flags(t, c.Args)
	file, ok := out["--config"]
	if !ok {
		return out
	}
	delete(out, "--config")
	var volume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(file) {
			volume = m.Name
		}
	}
	var cmName string
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName == "" {
		t.Fatalf("--config=%s: no ConfigMap volume mounted at %s", file, path.Dir(file))
	}
	var cm corev1.ConfigMap
	objs.mustDecode(t, "ConfigMap", ds.Namespace, cmName, &cm)
	data, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s (keys %v)", cmName, path.Base(file), cm.Data)
	}
	fromFile, err := cmdsettings.ParseConfig([]byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s, %s: %v", cmName, path.Base(file), err)
	}
	for k, v := range fromFile {
		if _, onCommandLine := out["--"+k]; !onCommandLine {
			out["--"+k] = v
		}
	}
	return out
}

// flags maps --flag=value arguments by flag; a flag given twice fails.
func flags(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(k, "--") {
			t.Errorf("argument %q is not --flag=value", a)
			continue
		}
		if _, dup := out[k]; dup {
			t.Errorf("flag %s given twice in %q", k, args)
		}
		out[k] = v
	}
	return out
}

// same fails when two values differ, printing both as YAML.
func same(t *testing.T, what string, got, want any) {
	t.Helper()
	a, err := yaml.Marshal(got)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s:\n--- got\n%s--- want\n%s", what, a, b)
	}
}

func container(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("DaemonSet %s has %d containers, want 1", ds.Name, len(cs))
	}
	return &cs[0]
}

func checkSelector(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %q does not match the pod labels %v", sel, ds.Spec.Template.Labels)
	}
}
