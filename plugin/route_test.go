package plugin_test

import (
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// SPEC.md, Default network: one default route per address family; a
// selection's default-route moves only its own family's.

// v6Net is a macvlan definition with host-local IPv6 addresses from
// subnet, whose gateway is gw.
func (f *fixture) v6Net(subnet, gw string) string {
	ipam := plugintest.HostLocal(subnet, f.dataDir)
	ipam["gateway"] = gw
	return plugintest.Conf(M{"cniVersion": f.version, "type": "macvlan", "master": plugintest.Veth(f.t),
		"mode": "bridge", "ipam": ipam})
}

func TestIPv6DefaultRouteLeavesTheIPv4One(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "v6", f.v6Net("fd00:241::/64", "fd00:241::1"))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"v6","default-route":["fd00:241::1"]}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if got := plugintest.DefaultRoutesOf(t, netns, netlink.FAMILY_V4); len(got) != 1 || !strings.HasSuffix(got[0], " eth0") {
		t.Errorf("IPv4 default routes %v, want eth0's alone", got)
	}
	if got := plugintest.DefaultRoutesOf(t, netns, netlink.FAMILY_V6); !slices.Equal(got, []string{"fd00:241::1 net1"}) {
		t.Errorf("IPv6 default routes %v, want exactly one via fd00:241::1 on net1", got)
	}
	status := f.published.status["c1"]
	if len(status) != 2 || len(status[0].Gateway) != 1 || !slices.Equal(status[1].Gateway, []string{"fd00:241::1"}) {
		t.Errorf("status gateways: %+v", status)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "v6")
}

func TestOneDefaultRoutePerFamilyOnTwoNetworks(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "v4", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "v6", f.v6Net("fd00:242::/64", "fd00:242::1"))
	pod := f.addPod("team", "web", map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"v4","default-route":["10.241.0.254"]},{"name":"v6","default-route":["fd00:242::1"]}]`,
	})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if got := plugintest.DefaultRoutesOf(t, netns, netlink.FAMILY_V4); !slices.Equal(got, []string{"10.241.0.254 net1"}) {
		t.Errorf("IPv4 default routes %v, want exactly one via 10.241.0.254 on net1", got)
	}
	if got := plugintest.DefaultRoutesOf(t, netns, netlink.FAMILY_V6); !slices.Equal(got, []string{"fd00:242::1 net2"}) {
		t.Errorf("IPv6 default routes %v, want exactly one via fd00:242::1 on net2", got)
	}
	status := f.published.status["c1"]
	if len(status) != 3 || len(status[0].Gateway) != 0 ||
		!slices.Equal(status[1].Gateway, []string{"10.241.0.254"}) || !slices.Equal(status[2].Gateway, []string{"fd00:242::1"}) {
		t.Errorf("status gateways: %+v", status)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "v4", "v6")
}

func TestDefaultRouteClaimsAreRefusedBeforeAnythingRuns(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "a", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "b", f.hostLocalNet("10.242.0.0/24"))
	cases := []struct {
		name, annotation string
		want             []string
	}{
		{"two IPv4 gateways in one element", `[{"name":"a","default-route":["10.241.0.1","10.241.0.2"]}]`,
			[]string{"team/a", `"default-route"`, "two IPv4 gateways"}},
		{"two networks claim IPv4", `[{"name":"a","default-route":["10.241.0.1"]},{"name":"b","default-route":["10.242.0.1"]}]`,
			[]string{`"default-route"`, "team/a", "team/b", "IPv4"}},
		{"two networks claim IPv6", `[{"name":"a","default-route":["fd00::1","10.241.0.1"]},{"name":"b","default-route":["fd00::2"]}]`,
			[]string{`"default-route"`, "team/a", "team/b", "IPv6"}},
		{"a gateway from the result claims every family", `[{"name":"a","default-route":[]},{"name":"b","default-route":["fd00::2"]}]`,
			[]string{`"default-route"`, "team/a", "team/b", "IPv6"}},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": c.annotation})
			netns := plugintest.NewNS(t)
			id := fmt.Sprintf("gw%d", i)
			_, err := f.do(f.req("ADD", id, netns, pod))
			if err == nil {
				t.Fatal("ADD succeeded")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
			// Refused in the plan: no delegate ran, so not even the
			// default network's address was taken.
			f.assertClean(netns, id, "a", "b", "defnet")
		})
	}
}
