package plugin_test

import (
	"slices"
	"strings"
	"testing"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// Networks of --default-networks come after the default network and before
// the pod's own, numbered as Multus numbers its delegates: net1 is the
// first default network and the pod's unnamed networks continue after the
// last. Namespace isolation does not apply to them; system namespaces do
// not get them.
func TestDefaultNetworksComeBeforeThePodsOwn(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("kube-system", "mgmt", f.hostLocalNet("10.247.0.0/24"))
	f.addNAD("infra", "storage", f.hostLocalNet("10.248.0.0/24"))
	f.addNAD("team", "data", f.hostLocalNet("10.249.0.0/24"))
	f.engine.DefaultNetworks = []k8stypes.NamespacedName{{Namespace: "kube-system", Name: "mgmt"}, {Namespace: "infra", Name: "storage"}}
	f.engine.SystemNamespaces = []string{"kube-system"}

	type iface struct{ name, network string }
	attached := func(id string) []iface {
		t.Helper()
		rec, err := f.engine.Store.Load(id)
		if err != nil {
			t.Fatal(err)
		}
		var out []iface
		for _, a := range rec.Attachments {
			out = append(out, iface{a.IfName, a.Network})
		}
		return out
	}

	// A pod without annotation gets both, across namespace isolation.
	plain := f.addPod("team", "plain", nil)
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, plain))
	want := []iface{{"eth0", "defnet"}, {"net1", "kube-system/mgmt"}, {"net2", "infra/storage"}}
	if got := attached("c1"); !slices.Equal(got, want) {
		t.Errorf("pod without annotation: %v, want %v", got, want)
	}
	if links := plugintest.Links(t, netns); !slices.Equal(links, []string{"lo", "eth0", "net1", "net2"}) {
		t.Errorf("links %v", links)
	}
	if s := f.published.status["c1"]; len(s) != 3 || s[1].Name != "kube-system/mgmt" || s[1].Interface != "net1" {
		t.Errorf("status %+v", s)
	}
	f.mustDo(f.req("DEL", "c1", netns, plain))
	f.assertClean(netns, "c1", "mgmt", "storage")

	// The pod's unnamed network is net3; a named one keeps its name.
	own := f.addPod("team", "own", map[string]string{"k8s.v1.cni.cncf.io/networks": "data, data@extra"})
	netns2 := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c2", netns2, own))
	want = []iface{{"eth0", "defnet"}, {"net1", "kube-system/mgmt"}, {"net2", "infra/storage"}, {"net3", "team/data"}, {"extra", "team/data"}}
	if got := attached("c2"); !slices.Equal(got, want) {
		t.Errorf("pod with annotation: %v, want %v", got, want)
	}
	f.mustDo(f.req("DEL", "c2", netns2, own))
	f.assertClean(netns2, "c2", "mgmt", "storage", "data")

	// A pod naming net1 itself collides with the first default network.
	clash := f.addPod("team", "clash", map[string]string{"k8s.v1.cni.cncf.io/networks": "data@net1"})
	netns3 := plugintest.NewNS(t)
	_, err := f.do(f.req("ADD", "c3", netns3, clash))
	if err == nil || !strings.Contains(err.Error(), `"net1" is already used by network kube-system/mgmt`) {
		t.Errorf("ADD naming net1: %v", err)
	}
	f.assertClean(netns3, "c3")

	// Two default-routes of one family: the refusal names the interfaces
	// as they would have been numbered, after the default networks.
	routes := f.addPod("team", "routes", map[string]string{"k8s.v1.cni.cncf.io/networks": `[
	  {"name":"data","default-route":["10.249.0.1"]},{"name":"data","default-route":["10.249.0.2"]}]`})
	netns5 := plugintest.NewNS(t)
	_, err = f.do(f.req("ADD", "c5", netns5, routes))
	if err == nil || !strings.Contains(err.Error(), "team/data (net3)") || !strings.Contains(err.Error(), "team/data (net4)") {
		t.Errorf("ADD with two IPv4 default-routes: %v", err)
	}
	f.assertClean(netns5, "c5")

	// A system namespace's pod gets none of them.
	sys := f.addPod("kube-system", "dns", nil)
	netns4 := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c4", netns4, sys))
	if got := attached("c4"); !slices.Equal(got, []iface{{"eth0", "defnet"}}) {
		t.Errorf("pod in kube-system: %v, want the default network only", got)
	}
	f.mustDo(f.req("DEL", "c4", netns4, sys))

	// A default network that does not exist fails the pod, saying where it
	// is configured.
	f.engine.DefaultNetworks = append(f.engine.DefaultNetworks, k8stypes.NamespacedName{Namespace: "kube-system", Name: "gone"})
	_, err = f.do(f.req("ADD", "c5", plugintest.NewNS(t), plain))
	if err == nil || !strings.Contains(err.Error(), "kube-system/gone not found") || !strings.Contains(err.Error(), "defaultNetworks") {
		t.Errorf("ADD with a missing default network: %v", err)
	}
	f.assertClean(nil, "c5", "mgmt", "storage")
}

// A bare name in the default-network annotation is looked up in the
// default-network namespace, never the pod's, and isolation does not apply
// there; "ns/name" keeps the rules of any selected network.
func TestDefaultNetworkAnnotationLooksBareNamesUpInItsNamespace(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.engine.DefaultNetworkNamespace = "kube-system"
	f.addNAD("kube-system", "alt-primary", f.hostLocalNet("10.250.0.0/24"))
	// A network of the same name in the pod's namespace is not the one.
	f.addNAD("team", "alt-primary", f.hostLocalNet("10.251.0.0/24"))

	pod := f.addPod("team", "web", map[string]string{"v1.multus-cni.io/default-network": "alt-primary"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	eth0, _ := plugintest.LinkIn(t, netns, "eth0")
	if len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], "10.250.0.") {
		t.Errorf("eth0 %+v, want kube-system/alt-primary's 10.250.0.x", eth0)
	}
	if s := f.published.status["c1"]; len(s) != 1 || s[0].Name != "kube-system/alt-primary" {
		t.Errorf("status %+v", s)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "alt-primary")

	// Naming the namespace keeps namespace isolation.
	named := f.addPod("team", "named", map[string]string{"v1.multus-cni.io/default-network": "kube-system/alt-primary"})
	_, err := f.do(f.req("ADD", "c2", plugintest.NewNS(t), named))
	if err == nil || !strings.Contains(err.Error(), "namespace isolation") {
		t.Errorf("ADD naming kube-system/alt-primary from team: %v, want the isolation refusal", err)
	}
	own := f.addPod("team", "own", map[string]string{"v1.multus-cni.io/default-network": "team/alt-primary"})
	netns3 := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c3", netns3, own))
	eth0, _ = plugintest.LinkIn(t, netns3, "eth0")
	if len(eth0.Addrs) != 1 || !strings.HasPrefix(eth0.Addrs[0], "10.251.0.") {
		t.Errorf("eth0 %+v, want team/alt-primary's 10.251.0.x", eth0)
	}
	f.mustDo(f.req("DEL", "c3", netns3, own))
}
