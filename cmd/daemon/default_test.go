package daemon_test

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// ADD takes the default network from the node config rather than reading
// the conf dir; a change on disk must still reach the next ADD, through the
// node config's watch of the conf dir (the periodic resync is set out of
// reach here).
func TestAChangedDefaultNetworkReachesTheNextAdd(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.opts.Resync = time.Hour })
	netns := plugintest.NewNS(t)
	// addThenDel checks the address ADD gives eth0, then undoes the ADD.
	addThenDel := func(want string) {
		t.Helper()
		if _, err := f.cni("ADD", "c1", netns, nil); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		if l, ok := plugintest.LinkIn(t, netns, "eth0"); !ok || len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], want) {
			t.Errorf("eth0 %+v (present %v), want one address %sx", l, ok, want)
		}
		if _, err := f.cni("DEL", "c1", netns, nil); err != nil {
			t.Fatalf("DEL: %v", err)
		}
	}
	addThenDel("10.240.0.")

	// The default network's daemon rewrites its file: same name, another
	// bridge and subnet.
	bridge := plugintest.Name("plxb")
	plugintest.DeleteLinkOnCleanup(t, bridge)
	changed := plugintest.BridgeList("defnet", "1.0.0", bridge, "10.249.0.0/24", f.ipamDir())
	if err := os.WriteFile(filepath.Join(f.opts.CNIConfDir, "10-default.conflist"), []byte(changed), 0o644); err != nil {
		t.Fatal(err)
	}
	f.eventually("the node config to see the new default network", func() bool {
		def := f.daemon.Node.State().Default
		return def != nil && bytes.Contains(def.List.Bytes, []byte("10.249.0.0/24"))
	})
	addThenDel("10.249.0.")
	f.assertClean(netns, "defnet")
}
