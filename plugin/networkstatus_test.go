package plugin_test

import (
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// A delegate may answer ADD with no interface at all ({"cniVersion":
// "1.0.0"}, as the faulty test plugin does when alone): the attachment
// still gets its network-status entry, with the network's name and the
// interface plexus asked for.
func TestStatusHasAnEntryPerAttachmentEvenWithoutInterfaces(t *testing.T) {
	f := newFixture(t, "1.0.0")
	binDir := plugintest.BinDir(t)
	plugintest.InstallFaulty(t, binDir)
	f.engine.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(t.TempDir(), "cache"), nil)
	f.addNAD("team", "bare", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "bare",
		"plugins": []M{plugintest.Faulty("", 0, t.TempDir())}}))
	f.addNAD("team", "real", f.hostLocalNet("10.242.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "bare, real"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	status := f.published.status["c1"]
	type entry struct {
		name, iface string
		ips         int
	}
	var got []entry
	for _, s := range status {
		got = append(got, entry{s.Name, s.Interface, len(s.IPs)})
	}
	want := []entry{{"defnet", "eth0", 1}, {"team/bare", "net1", 0}, {"team/real", "net2", 1}}
	if len(got) != len(want) {
		t.Fatalf("status %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("entry %d: %+v, want %+v", i, got[i], want[i])
		}
	}
	if status[1].Default || status[1].IPs == nil {
		t.Errorf("bare entry %+v: want not default and an empty (not null) ips list", status[1])
	}
	// The record alone rebuilds the same status (the daemon's republish).
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := plugin.NetworkStatus(rec)
	if err != nil || len(again) != 3 || again[1].Interface != "net1" {
		t.Errorf("status rebuilt from the record: %+v (%v)", again, err)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "real")
}
