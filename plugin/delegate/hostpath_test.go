package delegate_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/plexus-cni/plexus/plugin/delegate"
)

// HostPath follows the node's links as the node does: an absolute target
// starts again at the node's root, never at the caller's, and nothing leads
// out of the root.
func TestHostPathFollowsTheNodesLinksInsideItsRoot(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"run", "var", "opt/real"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for link, target := range map[string]string{"var/run": "/run", "opt/rel": "real", "opt/up": "../../../../.."} {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ root, path, want string }{
		{root, "/var/run/k8s.cni.cncf.io/devinfo/cni/f", root + "/run/k8s.cni.cncf.io/devinfo/cni/f"},
		{root, "/opt/rel/x", root + "/opt/real/x"},
		{root, "/opt/up/etc/passwd", root + "/etc/passwd"},
		{root, "/../../etc", root + "/etc"},
		{"", "/var/run/x", "/var/run/x"},
		{"/", "/var/run/x", "/var/run/x"},
	} {
		got, err := delegate.HostPath(c.root, c.path)
		if err != nil || got != c.want {
			t.Errorf("HostPath(%q, %q) = %q, %v; want %q", c.root, c.path, got, err, c.want)
		}
	}
	if err := os.Symlink("/loop", filepath.Join(root, "loop")); err != nil {
		t.Fatal(err)
	}
	if _, err := delegate.HostPath(root, "/loop/x"); err == nil {
		t.Error("a link loop resolved")
	}
}
