package plugin_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// multusNode is a node Multus ran on: its cniDir (the per-sandbox cache
// files and its libcni result cache), and the libcni Multus called its
// delegates with.
type multusNode struct {
	f   *fixture
	dir string
	cni *libcni.CNIConfig
}

func newMultusNode(f *fixture) *multusNode {
	m := &multusNode{f: f, dir: f.t.TempDir()}
	m.cni = libcni.NewCNIConfigWithCacheDir([]string{plugintest.PluginsDir(f.t)}, m.dir, nil)
	f.engine.MultusCacheDir, f.engine.MultusCNI = m.dir, m.cni
	f.engine.RuntimeCNI = libcni.NewCNIConfigWithCacheDir([]string{plugintest.PluginsDir(f.t)}, f.t.TempDir(), nil)
	return m
}

// multusDelegate is one network as Multus attached it: its config as the
// definition held it, and what the pod asked of it.
type multusDelegate struct {
	name, config, ifname string
	ips                  []string
}

// add attaches a sandbox the way Multus did before plexus replaced it:
// the default network (master: the node's, 10-default.conflist, when its
// config is empty) with the runtime's interface name, then each
// delegate as net<i> or the interface it asked for, every one through
// libcni with Multus's result cache, the arguments Multus gives
// (IgnoreUnknown=true and the runtime's CNI_ARGS) and the requests as
// runtimeConfig; and it writes Multus's cache file of the sandbox, in
// Multus's format. It returns the node's default network's conflist.
func (m *multusNode) add(id string, netns ns.NetNS, req *plugin.Request, master multusDelegate, delegates ...multusDelegate) []byte {
	t := m.f.t
	t.Helper()
	def, err := os.ReadFile(filepath.Join(m.f.confDir, "10-default.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	if master.config == "" {
		master.config = string(def)
	}
	args := [][2]string{{"IgnoreUnknown", "true"}}
	for _, kv := range strings.Split(req.Args, ";") {
		if k, v, _ := strings.Cut(kv, "="); k != "IgnoreUnknown" {
			args = append(args, [2]string{k, v})
		}
	}
	ctx := context.Background()
	list, err := libcni.NetworkConfFromBytes([]byte(master.config))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.cni.AddNetworkList(ctx, list, &libcni.RuntimeConf{ContainerID: id, NetNS: netns.Path(), IfName: "eth0", Args: args}); err != nil {
		t.Fatalf("Multus's ADD of the default network: %v", err)
	}
	if master.name == "" {
		master.name = list.Name
	}
	entries := []map[string]interface{}{{"Name": master.name, "Bytes": []byte(master.config), "ConfList": json.RawMessage(master.config)}}
	for i, d := range delegates {
		rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns.Path(), IfName: d.ifname, Args: args, CapabilityArgs: map[string]interface{}{}}
		entry := map[string]interface{}{"Name": d.name, "Bytes": []byte(d.config), "IsFilterV4Gateway": false, "IsFilterV6Gateway": false}
		if d.ifname == "" {
			rt.IfName = "net" + string(rune('1'+i))
		} else {
			entry["ifnameRequest"] = d.ifname
		}
		if len(d.ips) > 0 {
			rt.CapabilityArgs["ips"], entry["ipRequest"] = d.ips, d.ips
		}
		if strings.Contains(d.config, `"plugins"`) {
			l, err := libcni.NetworkConfFromBytes([]byte(d.config))
			if err != nil {
				t.Fatal(err)
			}
			entry["ConfList"] = json.RawMessage(d.config)
			_, err = m.cni.AddNetworkList(ctx, l, rt)
			if err != nil {
				t.Fatalf("Multus's ADD of %s: %v", d.name, err)
			}
		} else {
			c, err := libcni.ConfFromBytes([]byte(d.config))
			if err != nil {
				t.Fatal(err)
			}
			entry["Conf"] = json.RawMessage(d.config)
			if _, err = m.cni.AddNetwork(ctx, c, rt); err != nil {
				t.Fatalf("Multus's ADD of %s: %v", d.name, err)
			}
		}
		entries = append(entries, entry)
	}
	data, err := json.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(m.cacheFile(id), data, 0o600); err != nil {
		t.Fatal(err)
	}
	return def
}

func (m *multusNode) cacheFile(id string) string { return filepath.Join(m.dir, id) }

// results lists libcni's cached results in Multus's cniDir.
func (m *multusNode) results() []string {
	entries, err := os.ReadDir(filepath.Join(m.dir, "results"))
	if err != nil && !os.IsNotExist(err) {
		m.f.t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

// A pod Multus attached, deleted once plexus is the node's plugin: its DEL
// has no record, but Multus's cache file names what Multus attached.
// plexus tears down every network there, as Multus's DEL would have (a
// macvlan+host-local conf as net1, a conflist asking for an interface name
// and an address), then the default network: no address stays allocated,
// no link in the netns, none of Multus's cached results and not its cache
// file. A second DEL runs nothing.
func TestDelOfASandboxMultusAttachedReleasesEveryNetwork(t *testing.T) {
	f := newFixture(t, "1.0.0")
	m := newMultusNode(f)
	pod := f.addPod("team", "old", map[string]string{"k8s.v1.cni.cncf.io/networks": `[{"name":"hl-net"},{"name":"stor","interface":"stor0","ips":["10.242.0.7/24"]}]`})
	netns := plugintest.NewNS(t)
	del := f.req("DEL", "c-multus", netns, pod)
	def := m.add("c-multus", netns, del, multusDelegate{},
		multusDelegate{name: "team/hl-net", config: plugintest.Conf(M{"cniVersion": "1.0.0", "name": "hl-net", "type": "macvlan",
			"master": plugintest.Veth(t), "mode": "bridge", "ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)})},
		multusDelegate{name: "team/stor", ifname: "stor0", ips: []string{"10.242.0.7/24"}, config: plugintest.Conf(M{"cniVersion": "0.4.0", "name": "stor", "plugins": []M{
			{"type": "macvlan", "master": plugintest.Veth(t), "mode": "bridge", "capabilities": M{"ips": true}, "ipam": plugintest.HostLocal("10.242.0.0/24", f.dataDir)},
			{"type": "tuning"},
		}})},
	)
	for net, want := range map[string]string{"defnet": "10.240.0.", "hl-net": "10.241.0.", "stor": "10.242.0.7"} {
		if got := plugintest.Allocations(t, f.dataDir, net); len(got) != 1 || !strings.HasPrefix(got[0], want) {
			t.Fatalf("%s allocations after Multus's ADD: %v", net, got)
		}
	}
	if got := m.results(); len(got) != 3 {
		t.Fatalf("Multus's cached results after its ADD: %v, want one per network", got)
	}
	del.Config = withDefaultConfig(del.Config, def)

	f.mustDo(del)
	f.assertClean(netns, "c-multus", "hl-net", "stor")
	if got := m.results(); len(got) != 0 {
		t.Errorf("Multus's cached results left: %v", got)
	}
	if _, err := os.Stat(m.cacheFile("c-multus")); !os.IsNotExist(err) {
		t.Errorf("Multus's cache file is still there (%v)", err)
	}
	f.mustDo(del)
	f.assertClean(netns, "c-multus", "hl-net", "stor")
}

// A pod whose default network an annotation replaced
// (v1.multus-cni.io/default-network) holds its address on that network,
// not on the node's: plexus runs the DEL of the default network Multus
// recorded, and never the node's, which the pod never had.
func TestDelOfASandboxMultusAttachedWithAnotherDefaultNetwork(t *testing.T) {
	f := newFixture(t, "1.0.0")
	m := newMultusNode(f)
	counted := &countingCNI{CNIConfig: m.cni}
	f.engine.MultusCNI = counted
	pod := f.addPod("team", "alt", map[string]string{"v1.multus-cni.io/default-network": "team/alt-primary"})
	netns := plugintest.NewNS(t)
	del := f.req("DEL", "c-alt", netns, pod)
	alt := plugintest.BridgeList("alt-primary", "1.0.0", newBridge(t), "10.244.0.0/24", f.dataDir)
	del.Config = withDefaultConfig(del.Config, m.add("c-alt", netns, del, multusDelegate{name: "team/alt-primary", config: alt}))
	if got := plugintest.Allocations(t, f.dataDir, "alt-primary"); len(got) != 1 {
		t.Fatalf("alt-primary allocations after Multus's ADD: %v", got)
	}

	f.mustDo(del)
	f.assertClean(netns, "c-alt", "alt-primary")
	if counted.dels != 1 {
		t.Errorf("%d DELs ran, want the one of the default network Multus attached", counted.dels)
	}
	if got := m.results(); len(got) != 0 {
		t.Errorf("Multus's cached results left: %v", got)
	}
}

// A Multus cache file that does not parse never fails a DEL: the default
// network is torn down as for any sandbox plexus never attached, and the
// file stays for the administrator (the log says so).
func TestAMultusCacheThatDoesNotParseStillTearsDownTheDefaultNetwork(t *testing.T) {
	for name, content := range map[string]string{"truncated": `[{"Name":"cbr0","Bytes":"eyJ`, "empty list": `[]`, "empty file": ``} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, "1.0.0")
			m := newMultusNode(f)
			pod := f.addPod("team", "old", nil)
			netns := plugintest.NewNS(t)
			del := f.req("DEL", "c-corrupt", netns, pod)
			del.Config = withDefaultConfig(del.Config, m.add("c-corrupt", netns, del, multusDelegate{}))
			if err := os.WriteFile(m.cacheFile("c-corrupt"), []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			f.mustDo(del)
			f.assertClean(netns, "c-corrupt")
			if _, err := os.Stat(m.cacheFile("c-corrupt")); err != nil {
				t.Errorf("the cache file that does not parse was removed (%v); it is the administrator's to look at", err)
			}
		})
	}
}

// A network Multus attached whose DEL fails fails the sandbox's DEL, so
// the runtime retries; the default network and the other networks are
// still torn down, and Multus's cache file stays for the retry, which
// finishes the job.
func TestAFailedDelOfANetworkMultusAttachedKeepsItsCacheForTheRetry(t *testing.T) {
	f := newFixture(t, "1.0.0")
	binDir := plugintest.BinDir(t)
	plugintest.InstallFaulty(t, binDir)
	m := newMultusNode(f)
	m.cni = libcni.NewCNIConfigWithCacheDir([]string{binDir}, m.dir, nil)
	f.engine.MultusCNI = m.cni
	pod := f.addPod("team", "old", nil)
	netns := plugintest.NewNS(t)
	del := f.req("DEL", "c-fail", netns, pod)
	del.Config = withDefaultConfig(del.Config, m.add("c-fail", netns, del, multusDelegate{},
		multusDelegate{name: "team/hl-net", config: plugintest.Conf(M{"cniVersion": "1.0.0", "name": "hl-net", "type": "macvlan",
			"master": plugintest.Veth(t), "mode": "bridge", "ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)})},
		multusDelegate{name: "team/chained", config: plugintest.Conf(M{"cniVersion": "1.0.0", "name": "chained", "plugins": []M{
			{"type": "macvlan", "master": plugintest.Veth(t), "mode": "bridge", "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)},
			plugintest.Faulty("", 1, t.TempDir()),
		}})},
	))

	_, err := f.do(del)
	if err == nil || !strings.Contains(err.Error(), "team/chained") || !strings.Contains(err.Error(), "faulty: DEL 1") ||
		!strings.Contains(err.Error(), "team/old") {
		t.Fatalf("DEL error %v, want the pod, the network and its plugin's error", err)
	}
	if got := plugintest.Allocations(t, f.dataDir, "defnet"); len(got) != 0 {
		t.Errorf("the default network was not torn down after another network's DEL failed: %v", got)
	}
	if got := plugintest.Allocations(t, f.dataDir, "hl-net"); len(got) != 0 {
		t.Errorf("the other network was not torn down: %v", got)
	}
	if _, err := os.Stat(m.cacheFile("c-fail")); err != nil {
		t.Fatalf("Multus's cache file went with a DEL that failed: %v", err)
	}
	f.mustDo(del)
	f.assertClean(netns, "c-fail", "hl-net", "chained")
	if _, err := os.Stat(m.cacheFile("c-fail")); !os.IsNotExist(err) {
		t.Errorf("Multus's cache file is still there after the retry (%v)", err)
	}
}
