package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

type M = plugintest.M

// pods and networks stand in for the API server: the core takes them
// through interfaces, and the daemon's tests cover the real one.
type pods map[string]*plugin.Pod

func (p pods) Pod(_ context.Context, ns, name, uid string) (*plugin.Pod, error) {
	pod, ok := p[ns+"/"+name]
	if !ok || (uid != "" && pod.UID != uid) {
		return nil, errors.New("pod not found")
	}
	return pod, nil
}

type networks struct {
	mu   sync.Mutex
	nads map[k8stypes.NamespacedName]*nadv1.NetworkAttachmentDefinition
}

func (n *networks) Network(_ context.Context, key k8stypes.NamespacedName) (*nadv1.NetworkAttachmentDefinition, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	nad, ok := n.nads[key]
	if !ok {
		return nil, plugin.ErrNetworkNotFound
	}
	return nad, nil
}

type published struct {
	mu        sync.Mutex
	status    map[string][]nadv1.NetworkStatus
	retracted []string
}

func (p *published) Publish(_ record.PodRef, id string, s []nadv1.NetworkStatus) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.status[id] = s
}

func (p *published) Retract(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.retracted = append(p.retracted, id)
}

type fixture struct {
	t         testing.TB
	engine    *plugin.Engine
	version   string
	confDir   string
	dataDir   string
	stateDir  string
	nets      *networks
	pods      pods
	published *published
}

func newFixture(t testing.TB, version string) *fixture {
	t.Helper()
	plugintest.RequireRoot(t)
	binDir := plugintest.PluginsDir(t)
	root := t.TempDir()
	f := &fixture{
		t:         t,
		version:   version,
		confDir:   filepath.Join(root, "net.d"),
		dataDir:   filepath.Join(root, "ipam"),
		stateDir:  filepath.Join(root, "state"),
		nets:      &networks{nads: map[k8stypes.NamespacedName]*nadv1.NetworkAttachmentDefinition{}},
		pods:      pods{},
		published: &published{status: map[string][]nadv1.NetworkStatus{}},
	}
	if err := os.MkdirAll(f.confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bridge := plugintest.Name("plxb")
	plugintest.DeleteLinkOnCleanup(t, bridge)
	f.writeConf("10-default.conflist", plugintest.BridgeList("defnet", version, bridge, "10.240.0.0/24", f.dataDir))
	store, err := record.NewStore(f.stateDir)
	if err != nil {
		t.Fatal(err)
	}
	f.engine = &plugin.Engine{
		CNI:       libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(root, "cache"), nil),
		Store:     store,
		ConfDir:   f.confDir,
		Pods:      f.pods,
		Networks:  f.nets,
		Status:    f.published,
		PodPolicy: plugin.PodPolicy{IsolateNamespaces: true, GlobalNamespaces: []string{"default"}},
	}
	return f
}

func (f *fixture) writeConf(name, content string) {
	f.t.Helper()
	if err := os.WriteFile(filepath.Join(f.confDir, name), []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) addNAD(ns, name, config string) {
	f.nets.mu.Lock()
	defer f.nets.mu.Unlock()
	f.nets.nads[k8stypes.NamespacedName{Namespace: ns, Name: name}] = &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

func (f *fixture) addPod(ns, name string, annotations map[string]string) *plugin.Pod {
	p := &plugin.Pod{Namespace: ns, Name: name, UID: "uid-" + name, Annotations: annotations}
	f.pods[ns+"/"+name] = p
	return p
}

// staticNet is macvlan with static IPAM that honours the "ips" and "mac"
// capabilities; hostLocalNet is a plain .conf (one plugin) with host-local.
func (f *fixture) staticNet(name string) string {
	return plugintest.Conf(M{"cniVersion": f.version, "name": name, "plugins": []M{{
		"type": "macvlan", "master": plugintest.Veth(f.t), "mode": "bridge",
		"capabilities": M{"ips": true, "mac": true},
		"ipam":         M{"type": "static"},
	}}})
}

func (f *fixture) hostLocalNet(subnet string) string {
	return plugintest.Conf(M{"cniVersion": f.version, "type": "macvlan", "master": plugintest.Veth(f.t),
		"mode": "bridge", "ipam": plugintest.HostLocal(subnet, f.dataDir)})
}

func (f *fixture) req(cmd, id string, netns ns.NetNS, pod *plugin.Pod) *plugin.Request {
	r := &plugin.Request{
		Command:     cmd,
		ContainerID: id,
		IfName:      "eth0",
		Config:      []byte(plugintest.Conf(M{"cniVersion": f.version, "name": "plexus", "type": "plexus"})),
	}
	if netns != nil {
		r.NetNS = netns.Path()
	}
	if pod != nil {
		r.Args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + pod.Namespace + ";K8S_POD_NAME=" + pod.Name +
			";K8S_POD_INFRA_CONTAINER_ID=" + id + ";K8S_POD_UID=" + pod.UID
	}
	return r
}

func (f *fixture) do(r *plugin.Request) (types.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.engine.Do(ctx, r)
}

func (f *fixture) mustDo(r *plugin.Request) types.Result {
	f.t.Helper()
	res, err := f.do(r)
	if err != nil {
		f.t.Fatalf("%s: %v", r.Command, err)
	}
	return res
}

// assertClean checks that nothing of a sandbox is left: no interface but
// lo in its netns, no IPAM allocation, no record.
func (f *fixture) assertClean(netns ns.NetNS, id string, ipamNetworks ...string) {
	f.t.Helper()
	if netns != nil {
		if links := plugintest.Links(f.t, netns); !slices.Equal(links, []string{"lo"}) {
			f.t.Errorf("links left in the pod netns: %v", links)
		}
	}
	for _, n := range append([]string{"defnet"}, ipamNetworks...) {
		if ips := plugintest.Allocations(f.t, f.dataDir, n); len(ips) > 0 {
			f.t.Errorf("host-local allocations leaked in %s: %v", n, ips)
		}
	}
	if _, err := f.engine.Store.Load(id); !errors.Is(err, os.ErrNotExist) {
		f.t.Errorf("record of %s still there (err %v)", id, err)
	}
}

func TestAddAttachesEveryNetworkInOrder(t *testing.T) {
	for _, version := range []string{"0.3.1", "0.4.0", "1.0.0", "1.1.0"} {
		t.Run(version, func(t *testing.T) {
			f := newFixture(t, version)
			f.addNAD("team", "static-net", f.staticNet("static-net"))
			f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
			f.addNAD("default", "shared-net", f.hostLocalNet("10.242.0.0/24"))
			pod := f.addPod("team", "web", map[string]string{
				"k8s.v1.cni.cncf.io/networks": `[
				  {"name":"static-net","ips":["192.168.77.5/24"],"mac":"02:aa:bb:cc:dd:01"},
				  {"name":"hl-net","interface":"data0"},
				  {"name":"shared-net","namespace":"default"}]`,
			})
			netns := plugintest.NewNS(t)
			res := f.mustDo(f.req("ADD", "c1", netns, pod))

			if res.Version() != version {
				t.Errorf("result version %s, want the runtime's %s", res.Version(), version)
			}
			eth0, ok := plugintest.LinkIn(t, netns, "eth0")
			if !ok || len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], "10.240.0.") {
				t.Errorf("eth0 = %+v (present %v), want one 10.240.0.x address", eth0, ok)
			}
			net1, ok := plugintest.LinkIn(t, netns, "net1")
			if !ok || net1.MAC != "02:aa:bb:cc:dd:01" || !slices.Equal(net1.Addrs, []string{"192.168.77.5/24"}) {
				t.Errorf("net1 = %+v (present %v), want MAC 02:aa:bb:cc:dd:01 and 192.168.77.5/24", net1, ok)
			}
			data0, ok := plugintest.LinkIn(t, netns, "data0")
			if !ok || len(data0.Addrs) != 1 || !strings.HasPrefix(data0.Addrs[0], "10.241.0.") {
				t.Errorf("data0 = %+v (present %v), want a 10.241.0.x address", data0, ok)
			}
			if _, ok := plugintest.LinkIn(t, netns, "net3"); !ok {
				t.Errorf("net3 (third selection, no interface asked) missing: %v", plugintest.Links(t, netns))
			}

			// The runtime gets the default network's IPs and every interface.
			cur, err := current.NewResultFromResult(res)
			if err != nil {
				t.Fatal(err)
			}
			var sandboxIfs []string
			for _, i := range cur.Interfaces {
				if i.Sandbox != "" {
					sandboxIfs = append(sandboxIfs, i.Name)
				}
			}
			if !slices.Equal(sandboxIfs, []string{"eth0", "net1", "data0", "net3"}) {
				t.Errorf("result sandbox interfaces %v", sandboxIfs)
			}
			if len(cur.IPs) != 1 || !strings.HasPrefix(cur.IPs[0].Address.String(), "10.240.0.") {
				t.Errorf("result IPs %v, want the default network's only", cur.IPs)
			}

			status := f.published.status["c1"]
			var names []string
			for _, s := range status {
				names = append(names, s.Name+"@"+s.Interface)
			}
			want := []string{"defnet@eth0", "team/static-net@net1", "team/hl-net@data0", "default/shared-net@net3"}
			if !slices.Equal(names, want) {
				t.Fatalf("status entries %v, want %v", names, want)
			}
			if !slices.Equal(status[0].Gateway, []string{"10.240.0.1"}) {
				t.Errorf("default network gateway %v, want the bridge's 10.240.0.1", status[0].Gateway)
			}
			if !status[0].Default || status[1].Default || status[1].Mac != "02:aa:bb:cc:dd:01" ||
				!slices.Equal(status[1].IPs, []string{"192.168.77.5"}) {
				t.Errorf("status entries %+v", status)
			}

			f.mustDo(f.req("CHECK", "c1", netns, pod))
			f.mustDo(f.req("DEL", "c1", netns, pod))
			f.assertClean(netns, "c1", "hl-net", "shared-net")
			if !slices.Contains(f.published.retracted, "c1") {
				t.Errorf("status of a deleted sandbox not retracted")
			}
		})
	}
}

func TestFailedDelegateRollsBackEverything(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "broken", plugintest.Conf(M{"cniVersion": "1.0.0", "type": "macvlan",
		"master": "plxnosuchlink0", "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net, hl-net, broken"})
	netns := plugintest.NewNS(t)

	_, err := f.do(f.req("ADD", "c1", netns, pod))
	var cniErr *types.Error
	if !errors.As(err, &cniErr) {
		t.Fatalf("ADD error %v is not a CNI error", err)
	}
	if !strings.Contains(err.Error(), "team/broken") || !strings.Contains(err.Error(), "macvlan") ||
		!strings.Contains(err.Error(), "net3") || !strings.Contains(err.Error(), "Link not found") {
		t.Errorf("error %q does not say which network, delegate, interface and why", err)
	}
	f.assertClean(netns, "c1", "hl-net", "broken")
	if len(f.published.status) != 0 {
		t.Errorf("status published for a failed ADD: %v", f.published.status)
	}
}

func TestDelIsIdempotentAndNeedsNothingButTheRecord(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})

	t.Run("twice", func(t *testing.T) {
		netns := plugintest.NewNS(t)
		f.mustDo(f.req("ADD", "twice", netns, pod))
		f.mustDo(f.req("DEL", "twice", netns, pod))
		f.mustDo(f.req("DEL", "twice", netns, pod))
		f.assertClean(netns, "twice", "hl-net")
	})
	t.Run("netns gone", func(t *testing.T) {
		netns := plugintest.NewNS(t)
		f.mustDo(f.req("ADD", "gone", netns, pod))
		r := f.req("DEL", "gone", nil, pod)
		if err := netns.Close(); err != nil {
			t.Fatal(err)
		}
		f.mustDo(r)
		f.assertClean(nil, "gone", "hl-net")
	})
	t.Run("definition changed then deleted", func(t *testing.T) {
		netns := plugintest.NewNS(t)
		f.mustDo(f.req("ADD", "changed", netns, pod))
		f.addNAD("team", "hl-net", f.hostLocalNet("10.250.0.0/24"))
		f.nets.mu.Lock()
		f.nets.nads = map[k8stypes.NamespacedName]*nadv1.NetworkAttachmentDefinition{}
		f.nets.mu.Unlock()
		f.pods = pods{}
		f.engine.Pods = f.pods
		f.mustDo(f.req("DEL", "changed", netns, pod))
		f.assertClean(netns, "changed", "hl-net")
	})
	t.Run("no record", func(t *testing.T) {
		f.mustDo(f.req("DEL", "never-added", nil, pod))
	})
}

func TestDefaultRouteMovesToTheSelectedNetwork(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"hl-net","default-route":["10.241.0.254"]}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if routes := plugintest.DefaultRoutes(t, netns); !slices.Equal(routes, []string{"10.241.0.254 net1"}) {
		t.Errorf("default routes %v, want exactly one via 10.241.0.254 on net1", routes)
	}
	status := f.published.status["c1"]
	if len(status) != 2 || len(status[0].Gateway) != 0 || !slices.Equal(status[1].Gateway, []string{"10.241.0.254"}) {
		t.Errorf("status gateways: %+v", status)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl-net")

	// Without the selection's field, the default network keeps the route.
	pod2 := f.addPod("team", "plain", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
	netns2 := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c2", netns2, pod2))
	routes := plugintest.DefaultRoutes(t, netns2)
	if len(routes) != 1 || !strings.HasSuffix(routes[0], " eth0") {
		t.Errorf("default routes %v, want one via eth0", routes)
	}
	f.mustDo(f.req("DEL", "c2", netns2, pod2))
}

func TestBadRequestsFailBeforeAnythingIsCreated(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("other", "private", f.hostLocalNet("10.244.0.0/24"))
	f.addNAD("team", "no-type", `{"cniVersion":"1.0.0","name":"x"}`)
	cases := []struct {
		name, annotation string
		want             []string
	}{
		{"missing definition", "nope", []string{"pod team/web", "network team/nope not found", `create NetworkAttachmentDefinition nope in namespace "team"`}},
		{"portMappings without capability", `[{"name":"hl-net","portMappings":[{"containerPort":80,"hostPort":8080}]}]`,
			[]string{"team/hl-net", `field "portMappings"`, "delegate macvlan", "CNI_ARGS cannot carry it", `"type": "portmap"`}},
		{"bandwidth without capability", `[{"name":"hl-net","bandwidth":{"egressRate":1000}}]`,
			[]string{"team/hl-net", `field "bandwidth"`, "delegate macvlan", `"type": "bandwidth"`}},
		{"infiniband-guid without capability", `[{"name":"hl-net","infiniband-guid":"c2:11:22:33:44:55:66:77"}]`,
			[]string{"team/hl-net", `field "infiniband-guid"`, `"infinibandGUID"`, "ib-sriov"}},
		{"duplicate interface", `[{"name":"hl-net","interface":"eth0"}]`, []string{"team/hl-net", `"interface"`, "eth0"}},
		{"duplicate generated name", `[{"name":"hl-net"},{"name":"hl-net","interface":"net1"}]`, []string{"net1", "already used"}},
		{"namespace isolation", "other/private", []string{"other/private", "namespace isolation", "namespaceIsolation: false", "--namespace-isolation=false", `add "other" to globalNamespaces`}},
		{"malformed annotation", `[{"name":"hl-net"`, []string{"pod team/web", "JSON"}},
		{"whitespace-only annotation", " \n ", []string{"pod team/web", "networks annotation", "whitespace only"}},
		{"interfaceRequest against interface", `[{"name":"hl-net","interface":"a1","interfaceRequest":"a2"}]`,
			[]string{"pod team/web", "team/hl-net", `"a1"`, `"a2"`, "interfaceRequest"}},
		{"bad definition", "no-type", []string{"team/no-type", "spec.config"}},
		{"two default routes", `[{"name":"hl-net","default-route":[]},{"name":"hl-net","default-route":[]}]`, []string{"default-route"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": c.annotation})
			netns := plugintest.NewNS(t)
			id := "bad" + string(rune('a'+i))
			_, err := f.do(f.req("ADD", id, netns, pod))
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			f.assertClean(netns, id, "hl-net", "private")
		})
	}
}

func TestDefinitionsFromTheConfDirAndDefaultNetworkOverride(t *testing.T) {
	f := newFixture(t, "1.0.0")
	// Empty spec.config: the file whose network name is the definition's.
	f.writeConf("50-onnode.conf", f.hostLocalNet("10.245.0.0/24")[:0]+plugintest.Conf(M{
		"cniVersion": "1.0.0", "name": "on-node", "type": "macvlan", "master": plugintest.Veth(t),
		"ipam": plugintest.HostLocal("10.245.0.0/24", f.dataDir)}))
	f.addNAD("team", "on-node", "")
	// A definition without name or cniVersion gets both filled in.
	f.addNAD("team", "alt-default", plugintest.Conf(M{"type": "macvlan", "master": plugintest.Veth(t),
		"ipam": plugintest.HostLocal("10.246.0.0/24", f.dataDir)}))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks":      "on-node",
		"v1.multus-cni.io/default-network": "alt-default",
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	eth0, _ := plugintest.LinkIn(t, netns, "eth0")
	net1, _ := plugintest.LinkIn(t, netns, "net1")
	if len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], "10.246.0.") {
		t.Errorf("eth0 %+v, want the overriding default network's 10.246.0.x", eth0)
	}
	if len(net1.Addrs) != 1 || !strings.HasPrefix(net1.Addrs[0], "10.245.0.") {
		t.Errorf("net1 %+v, want the conf-dir network's 10.245.0.x", net1)
	}
	if got := plugintest.Allocations(t, f.dataDir, "defnet"); len(got) != 0 {
		t.Errorf("the replaced default network was called: %v", got)
	}
	status := f.published.status["c1"]
	if len(status) != 2 || status[0].Name != "team/alt-default" || !status[0].Default {
		t.Errorf("status %+v", status)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "alt-default", "on-node")
}

func TestNoKubernetesArgsAttachesTheDefaultNetworkOnly(t *testing.T) {
	f := newFixture(t, "1.1.0")
	// plexus's own entry sorts first in the conf dir and is never the
	// default network.
	f.writeConf("00-plexus.conflist", plugintest.Conf(M{"cniVersion": "1.1.0", "name": "plexus",
		"plugins": []M{{"type": "plexus"}}}))
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, nil))
	if links := plugintest.Links(t, netns); !slices.Equal(links, []string{"lo", "eth0"}) {
		t.Errorf("links %v", links)
	}
	if len(f.published.status) != 0 {
		t.Errorf("status published without a pod")
	}
	f.mustDo(f.req("STATUS", "", nil, nil))
	f.mustDo(f.req("DEL", "c1", netns, nil))
	f.assertClean(netns, "c1")
}

// Meta-plugins' configs left on the node (Multus thin and thick, CNI-Genie,
// DANM), as a .conf or inside a .conflist, sort before the default network
// and are never taken for it: their plugins are absent here, so an ADD
// that called one would fail.
func TestDefaultNetworkIsNeverAMetaPluginsConfig(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.writeConf("00-multus.conf", plugintest.Conf(M{"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus",
		"kubeconfig": "/etc/cni/net.d/multus.d/multus.kubeconfig", "delegates": []M{{"name": "defnet", "type": "bridge"}}}))
	f.writeConf("01-multus-shim.conf", plugintest.Conf(M{"cniVersion": "0.3.1", "name": "multus-cni-network", "type": "multus-shim"}))
	f.writeConf("02-genie.conf", plugintest.Conf(M{"cniVersion": "0.3.1", "name": "k8s-pod-network", "type": "genie"}))
	// DANM's own file has no cniVersion; a chain with a meta-plugin in
	// second place is a meta-plugin's config too.
	f.writeConf("03-danm.conf", plugintest.Conf(M{"name": "meta_cni", "type": "danm"}))
	f.writeConf("04-chained.conflist", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "chained",
		"plugins": []M{{"type": "bridge"}, {"type": "multus"}}}))
	netns := plugintest.NewNS(t)
	res := f.mustDo(f.req("ADD", "c1", netns, nil))
	if links := plugintest.Links(t, netns); !slices.Equal(links, []string{"lo", "eth0"}) {
		t.Errorf("links %v", links)
	}
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if got := rec.Attachments[0].Network; got != "defnet" {
		t.Errorf("default network %q, want defnet (10-default.conflist); result %v", got, res)
	}
	f.mustDo(f.req("DEL", "c1", netns, nil))
	f.assertClean(netns, "c1")
}

func TestGCTearsDownSandboxesTheRuntimeNoLongerHas(t *testing.T) {
	f := newFixture(t, "1.1.0")
	f.addNAD("team", "hl-net", plugintest.Conf(M{"cniVersion": "1.1.0", "type": "macvlan",
		"master": plugintest.Veth(t), "ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
	live, stale := plugintest.NewNS(t), plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "live", live, pod))
	f.mustDo(f.req("ADD", "stale", stale, pod))

	gc := f.req("GC", "", nil, nil)
	gc.Config = []byte(plugintest.Conf(M{"cniVersion": "1.1.0", "name": "plexus", "type": "plexus",
		"cni.dev/valid-attachments": []M{{"containerID": "live", "ifname": "eth0"}}}))
	f.mustDo(gc)

	if _, err := f.engine.Store.Load("stale"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale record kept: %v", err)
	}
	if got := plugintest.Allocations(t, f.dataDir, "defnet"); len(got) != 1 {
		t.Errorf("default network allocations after GC %v, want the live pod's only", got)
	}
	if got := plugintest.Allocations(t, f.dataDir, "hl-net"); len(got) != 1 {
		t.Errorf("hl-net allocations after GC %v, want the live pod's only", got)
	}
	f.mustDo(f.req("DEL", "live", live, pod))
	f.assertClean(live, "live", "hl-net")
}

func TestRecordIsWrittenBeforeDelegatesRun(t *testing.T) {
	f := newFixture(t, "1.0.0")
	// A delegate that is not installed fails after the default network was
	// added: the record must have been there to undo it.
	f.addNAD("team", "missing-plugin", `{"cniVersion":"1.0.0","type":"plxnosuchplugin"}`)
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "missing-plugin"})
	netns := plugintest.NewNS(t)
	_, err := f.do(f.req("ADD", "c1", netns, pod))
	if err == nil || !strings.Contains(err.Error(), "plxnosuchplugin") {
		t.Fatalf("ADD error %v, want the missing plugin named", err)
	}
	f.assertClean(netns, "c1")
}

type devices map[string][]string

func (d devices) PodDevices(context.Context, string, string) (map[string][]string, error) {
	return d, nil
}

func TestDevicePluginResourceFillsDeviceID(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.engine.Devices = devices{"example.com/vf": {"0000:01:00.2", "0000:01:00.3"}}
	vfNet := plugintest.Conf(M{"cniVersion": "1.0.0", "name": "vf-net", "plugins": []M{{
		"type": "macvlan", "master": plugintest.Veth(t), "capabilities": M{"deviceID": true},
		"ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)}}})
	f.addNAD("team", "vf-net", vfNet)
	f.nets.nads[k8stypes.NamespacedName{Namespace: "team", Name: "vf-net"}].Annotations =
		map[string]string{plugin.ResourceNameAnnotation: "example.com/vf"}

	// The device plugin describes its first device in an NPWG device-info
	// file, on the node's real path, as a device plugin would.
	devInfo := &nadv1.DeviceInfo{Type: nadv1.DeviceInfoTypePCI, Version: nadv1.DeviceInfoVersion,
		Pci: &nadv1.PciDevice{PciAddress: "0000:01:00.2", PfPciAddress: "0000:01:00.0"}}
	_ = nadutils.CleanDeviceInfoForDP("example.com/vf", "0000:01:00.2")
	if err := nadutils.SaveDeviceInfoForDP("example.com/vf", "0000:01:00.2", devInfo); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = nadutils.CleanDeviceInfoForDP("example.com/vf", "0000:01:00.2") })

	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "vf-net, vf-net"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	status, err := plugin.NetworkStatus(rec)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range status {
		switch s.Interface {
		case "net1":
			if s.DeviceInfo == nil || s.DeviceInfo.Pci == nil || *s.DeviceInfo.Pci != *devInfo.Pci || s.DeviceInfo.Type != "pci" {
				t.Errorf("net1 device-info %+v, want the device plugin's %+v", s.DeviceInfo, devInfo)
			}
		default:
			if s.DeviceInfo != nil {
				t.Errorf("%s has device-info %+v, but its device has no device-info file", s.Interface, s.DeviceInfo)
			}
		}
	}
	for i, want := range []string{"0000:01:00.2", "0000:01:00.3"} {
		a := rec.Attachments[i+1]
		if a.CapabilityArgs["deviceID"] != want {
			t.Errorf("%s runtimeConfig deviceID %v, want %s", a.IfName, a.CapabilityArgs["deviceID"], want)
		}
		var list struct{ Plugins []map[string]interface{} }
		if err := json.Unmarshal(a.Config, &list); err != nil || list.Plugins[0]["deviceID"] != want || list.Plugins[0]["pciBusID"] != want {
			t.Errorf("%s config deviceID/pciBusID %v (%v), want %s in both", a.IfName, list.Plugins, err, want)
		}
		// What the delegate really got: libcni's cache of the ADD.
		cached, _, err := f.engine.CNI.GetNetworkListCachedConfig(mustList(t, a.Config),
			&libcni.RuntimeConf{ContainerID: "c1", IfName: a.IfName})
		if err != nil || !strings.Contains(string(cached), `"deviceID":"`+want+`"`) {
			t.Errorf("%s delegate config %s (%v), want deviceID %s", a.IfName, cached, err, want)
		}
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "vf-net")

	// A third attachment has no device left: attached without one, as
	// Multus does, with a Warning Event on the pod instead of a refusal.
	events := &eventLog{}
	f.engine.Events = events
	pod3 := f.addPod("team", "greedy", map[string]string{"k8s.v1.cni.cncf.io/networks": "vf-net, vf-net, vf-net"})
	netns3 := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c3", netns3, pod3))
	rec3, err := f.engine.Store.Load("c3")
	if err != nil {
		t.Fatal(err)
	}
	third := rec3.Attachments[3]
	if third.CapabilityArgs["deviceID"] != nil || strings.Contains(string(third.Config), `"deviceID":"`) || strings.Contains(string(third.Config), "pciBusID") {
		t.Errorf("net3 got a device: %v %s", third.CapabilityArgs, third.Config)
	}
	var warnings []reported
	for _, e := range events.take() {
		if e.kind == plugin.EventWarning {
			warnings = append(warnings, e)
		}
	}
	if got := warnings; len(got) != 1 || got[0].pod.Name != "greedy" ||
		got[0].reason != plugin.ReasonNoDeviceForNetwork || !strings.Contains(got[0].message, "example.com/vf") || !strings.Contains(got[0].message, "net3") {
		t.Errorf("warnings %+v, want one Warning %s naming the resource and net3", got, plugin.ReasonNoDeviceForNetwork)
	}
	f.mustDo(f.req("DEL", "c3", netns3, pod3))
	f.assertClean(netns3, "c3", "vf-net")
}

func mustList(t testing.TB, config []byte) *libcni.NetworkConfigList {
	t.Helper()
	list, err := libcni.NetworkConfFromBytes(config)
	if err != nil {
		t.Fatal(err)
	}
	return list
}

func TestChainsAndRuntimeConfigGoWhereTheyBelong(t *testing.T) {
	f := newFixture(t, "1.0.0")
	// The default network declares portMappings, as a cluster network does;
	// the extra network declares it too, and must still not get kubelet's.
	f.writeConf("10-default.conflist", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "defnet", "plugins": []M{
		{"type": "bridge", "bridge": plugintest.Name("plxb"), "isGateway": true, "capabilities": M{"portMappings": true},
			"ipam": plugintest.HostLocal("10.240.0.0/24", f.dataDir)}}}))
	// A chain: macvlan, then tuning setting the MTU and a sysctl.
	f.addNAD("team", "tuned", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "tuned", "plugins": []M{
		{"type": "macvlan", "master": plugintest.Veth(t), "capabilities": M{"portMappings": true},
			"ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)},
		{"type": "tuning", "mtu": 1280, "sysctl": M{"net.ipv4.conf.net1.accept_local": "1"}},
	}}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "tuned"})
	netns := plugintest.NewNS(t)
	r := f.req("ADD", "c1", netns, pod)
	kubelet := []M{{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}}
	r.Config = []byte(plugintest.Conf(M{"cniVersion": "1.0.0", "name": "plexus", "type": "plexus",
		"runtimeConfig": M{"portMappings": kubelet}}))
	f.mustDo(r)

	var mtu int
	var sysctl []byte
	if err := netns.Do(func(ns.NetNS) error {
		l, err := netlink.LinkByName("net1")
		if err != nil {
			return err
		}
		mtu = l.Attrs().MTU
		sysctl, err = os.ReadFile("/proc/sys/net/ipv4/conf/net1/accept_local")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if mtu != 1280 || strings.TrimSpace(string(sysctl)) != "1" {
		t.Errorf("net1 mtu %d, accept_local %q: the tuning plugin of the chain did not run", mtu, sysctl)
	}
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	def, extra := rec.Attachments[0], rec.Attachments[1]
	// What libcni handed each delegate, from its cache of the ADDs.
	_, rtDef, err := f.engine.CNI.GetNetworkListCachedConfig(mustList(t, def.Config), &libcni.RuntimeConf{ContainerID: "c1", IfName: "eth0"})
	if err != nil || rtDef == nil || rtDef.CapabilityArgs["portMappings"] == nil {
		t.Errorf("the default network did not get kubelet's portMappings: %+v (%v)", rtDef, err)
	}
	_, rtExtra, err := f.engine.CNI.GetNetworkListCachedConfig(mustList(t, extra.Config), &libcni.RuntimeConf{ContainerID: "c1", IfName: "net1"})
	if err != nil || rtExtra == nil || rtExtra.CapabilityArgs["portMappings"] != nil {
		t.Errorf("an extra network got kubelet's portMappings: %+v (%v)", rtExtra, err)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "tuned")
}

func TestIpvlanWhereTheKernelHasIt(t *testing.T) {
	f := newFixture(t, "1.0.0")
	master := plugintest.Veth(t)
	if err := plugintest.ProbeLinkType("ipvlan", master); err != nil {
		t.Skipf("this kernel has no ipvlan link type (%v); macvlan covers the same paths elsewhere", err)
	}
	f.addNAD("team", "iv", plugintest.Conf(M{"cniVersion": "1.0.0", "type": "ipvlan", "master": master,
		"ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "iv"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if l, ok := plugintest.LinkIn(t, netns, "net1"); !ok || len(l.Addrs) != 1 {
		t.Errorf("net1 %+v present=%v", l, ok)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "iv")
}

// withDefaultNetwork is f.req with the defaultNetwork the node conflist
// names, as the runtime passes it.
func (f *fixture) withDefaultNetwork(r *plugin.Request, name string) *plugin.Request {
	r.Config = []byte(plugintest.Conf(M{"cniVersion": f.version, "name": "plexus", "type": "plexus", "defaultNetwork": name}))
	return r
}

// newBridge names a bridge that is deleted when the test ends.
func newBridge(t testing.TB) string {
	name := plugintest.Name("plxb")
	plugintest.DeleteLinkOnCleanup(t, name)
	return name
}

// eth0Addr is the one address of the pod's eth0.
func eth0Addr(t *testing.T, netns ns.NetNS) string {
	t.Helper()
	eth0, ok := plugintest.LinkIn(t, netns, "eth0")
	if !ok || len(eth0.Addrs) != 1 {
		t.Fatalf("eth0 %+v (found %v), want one address", eth0, ok)
	}
	return eth0.Addrs[0]
}

func TestDefaultNetworkComesFromTheDaemonsNodeConfig(t *testing.T) {
	f := newFixture(t, "1.0.0")
	// Same name as the conf dir's defnet, another bridge and subnet: which
	// one eth0 gets tells which was used.
	found, err := netconf.Load([]byte(plugintest.BridgeList("defnet", "1.0.0", newBridge(t), "10.247.0.0/24", f.dataDir)), "")
	if err != nil {
		t.Fatal(err)
	}
	calls := 0
	var provided *netconf.Network
	f.engine.DefaultFound = func() *netconf.Network { calls++; return provided }
	netns := plugintest.NewNS(t)

	// Nothing found yet: the conf dir is read.
	f.mustDo(f.withDefaultNetwork(f.req("ADD", "c1", netns, nil), "defnet"))
	if got := eth0Addr(t, netns); !strings.HasPrefix(got, "10.240.0.") {
		t.Errorf("eth0 %s, want the conf dir's 10.240.0.x when the provider has nothing", got)
	}
	f.mustDo(f.req("DEL", "c1", netns, nil))

	// Found: it wins over the conf dir, which is then not read at all.
	provided = found
	if err := os.Rename(filepath.Join(f.confDir, "10-default.conflist"), filepath.Join(f.confDir, "10-default.conflist.off")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"defnet", ""} {
		f.mustDo(f.withDefaultNetwork(f.req("ADD", "c1", netns, nil), name))
		if got := eth0Addr(t, netns); !strings.HasPrefix(got, "10.247.0.") {
			t.Errorf("defaultNetwork %q: eth0 %s, want the provided network's 10.247.0.x", name, got)
		}
		f.mustDo(f.req("DEL", "c1", netns, nil))
	}
	if calls != 3 {
		t.Errorf("provider asked %d times, want once per ADD (3)", calls)
	}
	f.assertClean(netns, "c1")
}

func TestDefaultNetworkOverridesStillReadTheConfDir(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.writeConf("20-other.conflist", plugintest.BridgeList("other", "1.0.0", newBridge(t), "10.248.0.0/24", f.dataDir))
	own, err := netconf.Load([]byte(plugintest.Conf(M{"cniVersion": "1.0.0", "name": "defnet", "type": "plexus"})), "")
	if err != nil {
		t.Fatal(err)
	}
	defnet, err := netconf.LoadFile(filepath.Join(f.confDir, "10-default.conflist"))
	if err != nil {
		t.Fatal(err)
	}
	netns := plugintest.NewNS(t)
	for _, tt := range []struct {
		what, name string
		provided   *netconf.Network
		want       string
	}{
		// The runtime's conflist names another network than the one found
		// (a node conflist written before the default network changed).
		{"another name", "other", defnet, "10.248.0."},
		// A provider that hands back plexus itself is never delegated to.
		{"plexus itself", "", own, "10.240.0."},
	} {
		f.engine.DefaultFound = func() *netconf.Network { return tt.provided }
		f.mustDo(f.withDefaultNetwork(f.req("ADD", "c1", netns, nil), tt.name))
		if got := eth0Addr(t, netns); !strings.HasPrefix(got, tt.want) {
			t.Errorf("%s: eth0 %s, want %sx from the conf dir", tt.what, got, tt.want)
		}
		f.mustDo(f.req("DEL", "c1", netns, nil))
	}
	f.assertClean(netns, "c1", "other")
}

// Definitions are parsed once and kept by content: a changed definition
// must still reach the next ADD.
func TestAChangedDefinitionReachesTheNextAdd(t *testing.T) {
	f := newFixture(t, "1.0.0")
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
	netns := plugintest.NewNS(t)
	for _, subnet := range []string{"10.243.0.", "10.244.0.", "10.243.0."} {
		f.addNAD("team", "hl-net", f.hostLocalNet(subnet+"0/24"))
		f.mustDo(f.req("ADD", "c1", netns, pod))
		if net1, ok := plugintest.LinkIn(t, netns, "net1"); !ok || len(net1.Addrs) != 1 || !strings.HasPrefix(net1.Addrs[0], subnet) {
			t.Errorf("net1 %+v (present %v), want %sx", net1, ok, subnet)
		}
		f.mustDo(f.req("DEL", "c1", netns, pod))
	}
	f.assertClean(netns, "c1", "hl-net")
}
