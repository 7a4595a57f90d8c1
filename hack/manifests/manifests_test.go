package manifests

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestSplit: documents are grouped by their template in helm's order, and
// helm's own labels are made kustomize's.
func TestSplit(t *testing.T) {
	out := `---
# Source: plexus/templates/role.yaml
kind: Role
metadata:
  labels:
    helm.sh/chart: plexus-0.1.0
    app.kubernetes.io/managed-by: Helm
---
# Source: plexus/templates/daemonset.yaml
# The daemon.
kind: DaemonSet
---
# Source: plexus/templates/role.yaml
kind: RoleBinding
`
	docs, err := Split([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"role.yaml":      {"kind: Role\nmetadata:\n  labels:\n    app.kubernetes.io/managed-by: kustomize\n", "kind: RoleBinding\n"},
		"daemonset.yaml": {"# The daemon.\nkind: DaemonSet\n"},
	}
	if len(docs) != len(want) {
		t.Fatalf("templates %q, want %d", docs, len(want))
	}
	for tmpl, w := range want {
		if !slices.Equal(docs[tmpl], w) {
			t.Errorf("%s: %q, want %q", tmpl, docs[tmpl], w)
		}
	}
	if _, err := Split([]byte("---\nkind: Role\n")); err == nil || !strings.Contains(err.Error(), "without a # Source: line") {
		t.Errorf("a document without its template: %v, want an error", err)
	}
}

// TestComponents: every template of the chart is in one component, so
// that values which render more templates need no change here.
func TestComponents(t *testing.T) {
	entries, err := os.ReadDir(filepath.Join("..", "..", "charts", "plexus", "templates"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), ".yaml") && componentOf(e.Name()) == "" {
			t.Errorf("charts/plexus/templates/%s is in no component", e.Name())
		}
	}
	seen := map[string]string{}
	for _, c := range Components {
		for _, tmpl := range c.Templates {
			if other, ok := seen[tmpl]; ok {
				t.Errorf("%s is in %s and %s", tmpl, other, c.Dir)
			}
			seen[tmpl] = c.Dir
		}
	}
}
