package plugin_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// SPEC.md, Selection: ips and mac reach a delegate as runtimeConfig where
// it declares the capability, and as IP=/MAC= in CNI_ARGS (with
// IgnoreUnknown) otherwise, as Multus does.

// argsOf is a recorded attachment's CNI_ARGS as "K=V" items.
func argsOf(a record.Attachment) []string {
	var out []string
	for _, kv := range a.Args {
		out = append(out, kv[0]+"="+kv[1])
	}
	return out
}

func TestKubeVirtBridgeDefinitionGetsTheMACThroughCNIArgs(t *testing.T) {
	f := newFixture(t, "1.0.0")
	bridge := plugintest.Name("plxv")
	plugintest.DeleteLinkOnCleanup(t, bridge)
	// KubeVirt's usual bridge definition: no IPAM, no capabilities.
	f.addNAD("team", "meganet", `{"cniVersion":"1.0.0","name":"meganet","type":"bridge","bridge":"`+bridge+`"}`)
	pod := f.addPod("team", "virt-launcher", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"meganet","interface":"pod7e0055a6880","mac":"02:87:f5:51:4c:5d"}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	l, ok := plugintest.LinkIn(t, netns, "pod7e0055a6880")
	if !ok || l.MAC != "02:87:f5:51:4c:5d" {
		t.Errorf("pod7e0055a6880: %+v present=%v, want MAC 02:87:f5:51:4c:5d", l, ok)
	}
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	args := argsOf(rec.Attachments[1])
	if args[0] != "IgnoreUnknown=true" || !slices.Contains(args, "MAC=02:87:f5:51:4c:5d") ||
		!slices.Contains(args, "K8S_POD_NAME=virt-launcher") || slices.Contains(args, "IgnoreUnknown=1") {
		t.Errorf("CNI_ARGS of meganet: %v", args)
	}
	if len(rec.Attachments[1].CapabilityArgs) != 0 {
		t.Errorf("runtimeConfig for a delegate declaring nothing: %v", rec.Attachments[1].CapabilityArgs)
	}
	// The default network is not asked for anything: the runtime's args.
	if def := argsOf(rec.Attachments[0]); def[0] != "IgnoreUnknown=1" || slices.ContainsFunc(def, func(s string) bool { return strings.HasPrefix(s, "MAC=") }) {
		t.Errorf("CNI_ARGS of the default network: %v", def)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1")
}

func TestIPsReachStaticAndHostLocalWithoutCapabilities(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "static", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "static", "type": "macvlan",
		"master": plugintest.Veth(t), "mode": "bridge", "ipam": M{"type": "static"}}))
	f.addNAD("team", "hl", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{
		// Two addresses for static, joined with "," as Multus joins them;
		// one bare address for host-local, which knows its subnet.
		"k8s.v1.cni.cncf.io/networks": `[{"name":"static","ips":["10.246.0.5/24","fd00:246::5/64"]},{"name":"hl","ips":["10.241.0.9"]}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if l, _ := plugintest.LinkIn(t, netns, "net1"); !slices.Equal(l.Addrs, []string{"10.246.0.5/24", "fd00:246::5/64"}) {
		t.Errorf("net1 addresses %v, want the two asked for", l.Addrs)
	}
	if l, _ := plugintest.LinkIn(t, netns, "net2"); !slices.Equal(l.Addrs, []string{"10.241.0.9/24"}) {
		t.Errorf("net2 addresses %v, want 10.241.0.9/24", l.Addrs)
	}
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if args := argsOf(rec.Attachments[1]); !slices.Contains(args, "IP=10.246.0.5/24,fd00:246::5/64") {
		t.Errorf("CNI_ARGS of static: %v", args)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl")
}

func TestDeclaredCapabilitiesStillGetRuntimeConfigOnly(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "static", f.staticNet("static"))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"static","ips":["10.246.0.6/24"],"mac":"02:00:00:00:00:06"}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if l, _ := plugintest.LinkIn(t, netns, "net1"); l.MAC != "02:00:00:00:00:06" || !slices.Equal(l.Addrs, []string{"10.246.0.6/24"}) {
		t.Errorf("net1 %+v", l)
	}
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	a := rec.Attachments[1]
	if args := argsOf(a); slices.ContainsFunc(args, func(s string) bool { return strings.HasPrefix(s, "IP=") || strings.HasPrefix(s, "MAC=") }) {
		t.Errorf("CNI_ARGS carry what runtimeConfig carries: %v", args)
	}
	if a.CapabilityArgs["mac"] != "02:00:00:00:00:06" || a.CapabilityArgs["ips"] == nil {
		t.Errorf("runtimeConfig %v", a.CapabilityArgs)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1")
}

func TestADelegatesOwnRefusalOfABareAddressRollsBack(t *testing.T) {
	f := newFixture(t, "1.0.0")
	// static wants a prefix and says so itself; plexus passes the bare
	// address on as Multus does.
	f.addNAD("team", "static", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "static", "type": "macvlan",
		"master": plugintest.Veth(t), "mode": "bridge", "ipam": M{"type": "static"}}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": `[{"name":"static","ips":["10.246.0.7"]}]`})
	netns := plugintest.NewNS(t)
	_, err := f.do(f.req("ADD", "c1", netns, pod))
	if err == nil || !strings.Contains(err.Error(), "team/static") || !strings.Contains(err.Error(), "CIDR") {
		t.Fatalf("ADD error %v, want static's own refusal, naming the network", err)
	}
	f.assertClean(netns, "c1", "defnet")
}

func TestIPAMClaimReferenceReachesTheDelegateInArgsCNI(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "hl", "plugins": []M{
		{"type": "macvlan", "master": plugintest.Veth(t), "mode": "bridge", "ipam": plugintest.HostLocal("10.241.0.0/24", f.dataDir)},
		{"type": "tuning"},
	}}))
	pod := f.addPod("team", "vm", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"hl","ipam-claim-reference":"vm1.data","cni-args":{"extra":1}}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	rec, err := f.engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	// What libcni handed the delegates, from its cache of the ADD.
	got, _, err := f.engine.CNI.GetNetworkListCachedConfig(mustList(t, rec.Attachments[1].Config), &libcni.RuntimeConf{ContainerID: "c1", IfName: "net1"})
	if err != nil || got == nil {
		t.Fatalf("cached config: %v", err)
	}
	var list struct {
		Plugins []struct {
			Type string `json:"type"`
			Args struct {
				CNI map[string]interface{} `json:"cni"`
			} `json:"args"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(got, &list); err != nil {
		t.Fatal(err)
	}
	for _, p := range list.Plugins {
		if p.Args.CNI["ipam-claim-reference"] != "vm1.data" || p.Args.CNI["extra"] != float64(1) {
			t.Errorf("plugin %s got args.cni %v, want the claim and the pod's cni-args", p.Type, p.Args.CNI)
		}
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl")

	pod = f.addPod("team", "vm", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"hl","ipam-claim-reference":"vm1.data","cni-args":{"ipam-claim-reference":"other"}}]`,
	})
	if _, err := f.do(f.req("ADD", "c2", netns, pod)); err == nil || !strings.Contains(err.Error(), `"ipam-claim-reference" is "vm1.data"`) {
		t.Errorf("ADD error %v, want the two claims named", err)
	}
	f.assertClean(netns, "c2", "hl")
}

// Multus passes IP=a,b in CNI_ARGS even to a delegate that declares the
// ips capability, and host-local, which reads one address there, then
// refuses every dual-stack request (Multus issue 647). Here a declared
// capability gets runtimeConfig alone.
func TestDualStackIPsReachHostLocalThroughTheCapability(t *testing.T) {
	f := newFixture(t, "1.0.0")
	ipam := M{"type": "host-local", "dataDir": f.dataDir,
		"ranges": [][]M{{{"subnet": "10.243.0.0/24"}}, {{"subnet": "fd00:243::/64"}}}}
	f.addNAD("team", "ds", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "ds", "type": "macvlan",
		"master": plugintest.Veth(t), "mode": "bridge", "capabilities": M{"ips": true}, "ipam": ipam}))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"ds","ips":["10.243.0.9","fd00:243::9"]}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if l, _ := plugintest.LinkIn(t, netns, "net1"); !slices.Equal(l.Addrs, []string{"10.243.0.9/24", "fd00:243::9/64"}) {
		t.Errorf("net1 addresses %v, want the two asked for", l.Addrs)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "ds")
}

// Multus's short-form spellings: "/name" is the pod's namespace and
// "name@" the default interface name.
func TestShortFormEmptyPartsReadAsMultusReadsThem(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl", f.hostLocalNet("10.241.0.0/24"))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": "/hl@, hl@ , /hl"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	for _, ifname := range []string{"net1", "net2", "net3"} {
		if l, ok := plugintest.LinkIn(t, netns, ifname); !ok || len(l.Addrs) != 1 {
			t.Errorf("%s: %+v present=%v", ifname, l, ok)
		}
	}
	if status := f.published.status["c1"]; len(status) != 4 || status[1].Name != "team/hl" {
		t.Errorf("status %+v", status)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl")
}
