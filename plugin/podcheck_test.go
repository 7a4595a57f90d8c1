package plugin_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// CheckPodNetworks is what the admission webhook runs when a pod is
// created: each refusal must be, word for word, what the pod's ADD on a
// node returns, and it must come before the ADD looks anything up.
func TestCheckPodNetworksIsWhatTheADDRefuses(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.engine.DefaultNetworks = []k8stypes.NamespacedName{{Namespace: "kube-system", Name: "mgmt"}}
	f.engine.SystemNamespaces = []string{"kube-system"}
	f.engine.DefaultNetworkNamespace = "kube-system"
	nets, def := selection.NetworksAnnotation, selection.DefaultNetworkAnnotation
	cases := []struct {
		name        string
		annotations map[string]string
		want        []string
	}{
		{"unparsable networks annotation", map[string]string{nets: `[{"name":"hl-net"`}, []string{"pod team/web", "JSON"}},
		{"namespace isolation", map[string]string{nets: "other/private"}, []string{"other/private", "namespace isolation", `add "other" to globalNamespaces`}},
		{"namespace isolation of the default network", map[string]string{def: "other/private"}, []string{"other/private", "namespace isolation"}},
		{"duplicate interface names", map[string]string{nets: `[{"name":"hl-net","interface":"a1"},{"name":"hl-net","interface":"a1"}]`},
			[]string{`"a1" is already used by network team/hl-net`}},
		{"the default network's eth0", map[string]string{nets: `[{"name":"hl-net","interface":"eth0"}]`}, []string{`"eth0" is already used by the default network`}},
		{"a default network's net1", map[string]string{nets: `[{"name":"hl-net","interface":"net1"}]`}, []string{`"net1" is already used by network kube-system/mgmt`}},
		{"invalid interface name", map[string]string{nets: `[{"name":"hl-net","interface":"a/b"}]`}, []string{"team/hl-net", `field "interface"`}},
		{"bad default-network annotation", map[string]string{def: "a/b/c"}, []string{"annotation " + def}},
		{"two default routes", map[string]string{nets: `[{"name":"hl-net","default-route":[]},{"name":"hl-net","default-route":[]}]`}, []string{"default-route"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := f.addPod("team", "web", c.annotations)
			_, checked := f.engine.CheckPodNetworks(pod, plugin.PodIfName)
			if checked == nil {
				t.Fatal("CheckPodNetworks accepted it")
			}
			for _, w := range c.want {
				if !strings.Contains(checked.Error(), w) {
					t.Errorf("%q does not mention %q", checked, w)
				}
			}
			var te *types.Error
			if !errors.As(checked, &te) || te.Code != types.ErrInvalidNetworkConfig {
				t.Errorf("%#v is not a CNI error with code %d", checked, types.ErrInvalidNetworkConfig)
			}
			netns := plugintest.NewNS(t)
			id := "chk" + string(rune('a'+i))
			_, added := f.do(f.req("ADD", id, netns, pod))
			if added == nil || added.Error() != checked.Error() {
				t.Errorf("ADD: %v\nwant the check's error: %v", added, checked)
			}
			f.assertClean(netns, id, "hl-net")
		})
	}

	// What passes is what ADD attaches: the default networks (none in a
	// system namespace), then the selections.
	pod := &plugin.Pod{Namespace: "team", Name: "ok", Annotations: map[string]string{nets: "hl-net,default/shared@x1", def: "special"}}
	got, err := f.engine.CheckPodNetworks(pod, plugin.PodIfName)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.DefaultNetworks) != 1 || len(got.Selections) != 2 || got.Selections[1].Interface != "x1" ||
		got.DefaultNetwork == nil || got.DefaultNetwork.String() != "kube-system/special" || !got.DefaultNetworkBare {
		t.Errorf("checked %+v", got)
	}
	pod.Namespace = "kube-system"
	if got, err := f.engine.CheckPodNetworks(pod, plugin.PodIfName); err != nil || len(got.DefaultNetworks) != 0 {
		t.Errorf("system namespace pod: %+v, %v, want no default networks", got, err)
	}
}
