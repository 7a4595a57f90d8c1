package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"

	"github.com/plexus-cni/plexus/cmd/daemon"
)

// With --host-prefix, delegates run chrooted into it: the daemon refuses
// to start on a prefix that is not the node's root (one holding only the
// CNI dirs, as the chart mounted before delegates ran there), and a bin
// dir outside it, each with a message saying what to mount.
func TestHostPrefixMustBeTheNodesRoot(t *testing.T) {
	partial := t.TempDir()
	for _, d := range []string{"etc/cni/net.d", "opt/cni/bin"} {
		if err := os.MkdirAll(filepath.Join(partial, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ name, prefix, binDir, want string }{
		{"only the CNI dirs", partial, filepath.Join(partial, "opt/cni/bin"), "is not the node's root filesystem"},
		{"bin dir outside", "/", "../opt/cni/bin", "is not under --host-prefix"},
		{"the root", "/", "/opt/cni/bin", "connection refused"}, // past the check, at the API server
	} {
		t.Run(c.name, func(t *testing.T) {
			o := daemon.Defaults()
			o.NodeName, o.StateDir, o.HostPrefix, o.CNIBinDir = "node-a", t.TempDir(), c.prefix, c.binDir
			o.MetricsAddr, o.ProbeAddr = "0", "0"
			_, err := daemon.New(&rest.Config{Host: "https://127.0.0.1:1"}, o)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("New: %v, want an error saying it %s", err, c.want)
			}
		})
	}
}
