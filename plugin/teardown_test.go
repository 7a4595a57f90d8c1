package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// countingCNI counts the DELs it runs.
type countingCNI struct {
	*libcni.CNIConfig
	dels int
}

func (c *countingCNI) DelNetworkList(ctx context.Context, list *libcni.NetworkConfigList, rt *libcni.RuntimeConf) error {
	c.dels++
	return c.CNIConfig.DelNetworkList(ctx, list, rt)
}

// runtimeAdd attaches a sandbox to the node's default network the way the
// runtime does without plexus: libcni straight on the default conflist,
// with the runtime's own result cache.
func (f *fixture) runtimeAdd(runtime *libcni.CNIConfig, id string, r *libcni.RuntimeConf) *libcni.NetworkConfigList {
	f.t.Helper()
	list, err := libcni.NetworkConfFromFile(filepath.Join(f.confDir, "10-default.conflist"))
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := runtime.AddNetworkList(context.Background(), list, r); err != nil {
		f.t.Fatalf("the runtime's own ADD of %s: %v", id, err)
	}
	if got := plugintest.Allocations(f.t, f.dataDir, "defnet"); len(got) != 1 {
		f.t.Fatalf("default network allocations after the runtime's ADD: %v", got)
	}
	return list
}

// withDefaultConfig is the runtime's stdin when the node conflist carries
// the default network's config, as the daemon renders it.
func withDefaultConfig(r []byte, list []byte) []byte {
	conf := map[string]interface{}{}
	if err := json.Unmarshal(r, &conf); err != nil {
		panic(err)
	}
	conf["defaultNetworkConfig"] = json.RawMessage(list)
	out, err := json.Marshal(conf)
	if err != nil {
		panic(err)
	}
	return out
}

// A pod that was attached by the runtime alone (it ran before plexus was
// installed, or while the node conflist was absent) is deleted through
// plexus: its DEL has no record, and must release the default network's
// address as the runtime would have, with the runtime's cached result.
// The default network comes from the config the node conflist carries
// (even when its file has gone from the conf dir meanwhile), else from the
// conf dir. A second DEL has nothing left to undo and succeeds.
func TestDelWithoutARecordReleasesTheDefaultNetwork(t *testing.T) {
	for _, embedded := range []bool{true, false} {
		name := map[bool]string{true: "from the node conflist", false: "from the conf dir"}[embedded]
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, "1.0.0")
			runtime := libcni.NewCNIConfigWithCacheDir([]string{plugintest.PluginsDir(t)}, t.TempDir(), nil)
			counted := &countingCNI{CNIConfig: runtime}
			f.engine.RuntimeCNI = counted
			pod := f.addPod("team", "old", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
			netns := plugintest.NewNS(t)
			del := f.req("DEL", "c-old", netns, pod)
			rt := &libcni.RuntimeConf{ContainerID: "c-old", NetNS: netns.Path(), IfName: "eth0"}
			for _, kv := range strings.Split(del.Args, ";") {
				k, v, _ := strings.Cut(kv, "=")
				rt.Args = append(rt.Args, [2]string{k, v})
			}
			list := f.runtimeAdd(runtime, "c-old", rt)
			if cached, err := runtime.GetNetworkListCachedResult(list, rt); err != nil || cached == nil {
				t.Fatalf("the runtime's cached result: %v, %v", cached, err)
			}
			if embedded {
				del.Config = withDefaultConfig(del.Config, list.Bytes)
				// The default network's daemon rewrites its file: the
				// node conflist still carries the config it wrapped.
				if err := os.Remove(filepath.Join(f.confDir, "10-default.conflist")); err != nil {
					t.Fatal(err)
				}
			}

			f.mustDo(del)
			f.assertClean(netns, "c-old")
			if cached, _ := runtime.GetNetworkListCachedResult(list, rt); cached != nil {
				t.Errorf("the runtime's cached result is still there: %v", cached)
			}
			f.mustDo(del)
			f.assertClean(netns, "c-old")
			if counted.dels != 1 {
				t.Errorf("the default network's DEL ran %d times for two DELs of the sandbox, want once", counted.dels)
			}
		})
	}
}

// A runtime sends two or three DELs per sandbox. Once plexus has torn a
// sandbox down (or its ADD failed before anything ran), the later DELs
// find its tombstone and run nothing: they are not taken for the DEL of a
// sandbox plexus never attached.
func TestRepeatedDelsOfATornDownSandboxRunNothing(t *testing.T) {
	f := newFixture(t, "1.0.0")
	counted := &countingCNI{CNIConfig: libcni.NewCNIConfigWithCacheDir([]string{plugintest.PluginsDir(t)}, t.TempDir(), nil)}
	f.engine.RuntimeCNI = counted
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
	broken := f.addPod("team", "broken", map[string]string{"k8s.v1.cni.cncf.io/networks": "no-such-net"})

	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	for i := 0; i < 3; i++ {
		f.mustDo(f.req("DEL", "c1", netns, pod))
	}
	f.assertClean(netns, "c1", "hl-net")
	if _, err := f.do(f.req("ADD", "c2", netns, broken)); err == nil {
		t.Fatal("ADD of a missing network succeeded")
	}
	for i := 0; i < 3; i++ {
		f.mustDo(f.req("DEL", "c2", netns, broken))
	}
	if counted.dels != 0 {
		t.Errorf("the default network's DEL ran %d times for sandboxes plexus had torn down, want none", counted.dels)
	}
	if !f.engine.Store.TornDown("c1") || !f.engine.Store.TornDown("c2") {
		t.Errorf("tombstones: c1 %t, c2 %t; want both", f.engine.Store.TornDown("c1"), f.engine.Store.TornDown("c2"))
	}
	// A new ADD of the sandbox starts over: its DEL is from its record.
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if f.engine.Store.TornDown("c1") {
		t.Error("a new record of the sandbox kept its tombstone")
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl-net")
}

// A network whose chain names a plugin the node lacks fails its ADD after
// the plugins before it ran; the rollback undoes those (their DEL runs
// without the missing one, which never ran) and leaves no record, and the
// runtime's DEL that follows succeeds. A DEL stopped by the missing plugin
// would leak the allocation of the plugins before it.
func TestAChainWithAMissingPluginRollsBackWhatRan(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "chained", plugintest.Conf(M{"cniVersion": "1.0.0", "plugins": []M{
		{"type": "macvlan", "master": plugintest.Veth(t), "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)},
		{"type": "plxabsent"},
	}}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "chained"})
	netns := plugintest.NewNS(t)
	_, err := f.do(f.req("ADD", "c1", netns, pod))
	if err == nil || !strings.Contains(err.Error(), "plxabsent") || strings.Contains(err.Error(), "rolling back failed") {
		t.Fatalf("ADD error %v, want the missing plugin named and a clean rollback", err)
	}
	f.assertClean(netns, "c1", "chained")
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "chained")
}

// A chained plugin that fails its ADD and then its first DEL (portmap on a
// node without iptables does both) must not leak what the plugins before
// it hold. The rollback's DEL fails, so the record stays, marked as a
// failed ADD, and the ADD's error says so; the runtime's DEL, which follows
// every failed ADD, finishes the teardown. A kubelet retrying the sandbox
// five times then leaves nothing behind, where dropping the record leaked
// one address per retry. Whether the failing chain is the default network
// or an extra one makes no difference.
func TestARollbackThatFailsKeepsTheRecordForTheRuntimesDel(t *testing.T) {
	for _, placement := range []string{"default network", "extra network"} {
		t.Run(placement, func(t *testing.T) {
			f := newFixture(t, "1.0.0")
			binDir := plugintest.BinDir(t)
			plugintest.InstallFaulty(t, binDir)
			f.engine.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
			faulty := plugintest.Faulty("failed to open iptables", 1, t.TempDir())
			network, annotations := "defnet", map[string]string{}
			if placement == "default network" {
				f.writeConf("10-default.conflist", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "defnet", "plugins": []M{
					{"type": "bridge", "bridge": newBridge(t), "isGateway": true, "ipam": plugintest.HostLocal("10.240.0.0/24", f.dataDir)},
					faulty,
				}}))
			} else {
				network = "chained"
				annotations["k8s.v1.cni.cncf.io/networks"] = "hl-net, chained"
				f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
				f.addNAD("team", "chained", plugintest.Conf(M{"cniVersion": "1.0.0", "plugins": []M{
					{"type": "macvlan", "master": plugintest.Veth(t), "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)},
					faulty,
				}}))
			}
			pod := f.addPod("team", "web", annotations)

			for attempt := 1; attempt <= 5; attempt++ {
				id := "c" + string(rune('0'+attempt))
				netns := plugintest.NewNS(t)
				_, err := f.do(f.req("ADD", id, netns, pod))
				var cniErr *types.Error
				if !errors.As(err, &cniErr) || cniErr.Code != types.ErrInternal ||
					!strings.Contains(err.Error(), "failed to open iptables") || !strings.Contains(err.Error(), "rolling back failed") ||
					!strings.Contains(err.Error(), "faulty: DEL 1") {
					t.Fatalf("attempt %d: ADD error %v, want faulty's ADD error and code, and the failed rollback", attempt, err)
				}
				rec, err := f.engine.Store.Load(id)
				if err != nil || rec.Failed == nil || rec.Failed.Op != "ADD" || rec.Failed.Attempts != 1 {
					t.Fatalf("attempt %d: record after a failed rollback: %+v, %v; want it kept, marked a failed ADD", attempt, rec, err)
				}
				if got := plugintest.Allocations(t, f.dataDir, network); len(got) != 1 {
					t.Fatalf("attempt %d: %s allocations while the teardown is owed: %v, want the one of this attempt", attempt, network, got)
				}
				f.mustDo(f.req("DEL", id, netns, pod))
				f.assertClean(netns, id, network, "hl-net")
			}
		})
	}
}
