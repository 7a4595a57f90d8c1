// Package chart_test checks the Helm chart charts/plexus without a cluster:
// helm lint, what helm template renders with default and non-default
// values, that the chart and config/ (kustomize) install the same daemon
// with the same RBAC and CRDs, that the node-scope policy does what it says
// in a real kube-apiserver (envtest), and that docs/install.md's values table
// is current. helm comes from $HELM or `make helm`; kubectl from $KUBECTL or
// `make envtest-assets`. Without them the tests skip, or fail when
// PLEXUS_REQUIRE_REAL is set (as `make test` does).
package chart_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

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

// kustomize renders config/default as `kubectl apply -k` would apply it.
func kustomize(t *testing.T) objects { return parse(t, controllertest.Kustomize(t)) }

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
