package e2e

import (
	"fmt"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// SPEC.md, Selection and Default network: inputs written for Multus work
// unchanged: ips and mac reach delegates that declare no capability, and
// default-route moves only its own address family's route.

// deleteLinkAfter removes a host link a delegate makes (a bridge) when the
// spec ends; registered before newNamespace, it runs after the spec's pods
// are gone.
func deleteLinkAfter(name string) {
	DeferCleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			Expect(netlink.LinkDel(l)).To(Succeed())
		}
	})
}

// defaultRoutes is the "default via ..." lines of `ip <family> route` in
// pod, spaces normalised.
func defaultRoutes(ctx SpecContext, pod *corev1.Pod, family string) []string {
	out := podExec(ctx, pod, "ip", family, "route", "show", "default")
	var defaults []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(l, "default") {
			defaults = append(defaults, strings.Join(strings.Fields(l), " "))
		}
	}
	return defaults
}

var _ = Describe("KubeVirt's usual bridge definition, which declares no capability", func() {
	It("starts the pod with the MAC asked for, passed as MAC= in CNI_ARGS", func(ctx SpecContext) {
		deleteLinkAfter("vmbr0") // registered first: runs once the pod is gone
		ns := newNamespace(ctx)
		createNAD(ctx, ns, "meganet", `{"cniVersion":"1.0.0","name":"meganet","type":"bridge","bridge":"vmbr0"}`)
		const ifname, mac = "pod7e0055a6880", "02:87:f5:51:4c:5d"
		pod := busyboxPod(ns, "virt-launcher-vm1-x7k2p", fmt.Sprintf(`[{"name":"meganet","interface":%q,"mac":%q}]`, ifname, mac))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		Expect(strings.Fields(podExec(ctx, pod, "cat", "/sys/class/net/"+ifname+"/address"))).To(Equal([]string{mac}))
		s := statusByInterface(networkStatus(ctx, pod), ifname)
		Expect(s).NotTo(BeNil(), "no status entry for %s", ifname)
		Expect(s.Name).To(Equal(ns + "/meganet"))
		Expect(s.Mac).To(Equal(mac))
	})
})

var _ = Describe("a macvlan definition with static IPAM and no capabilities", func() {
	It("gives the pod the address its selection asks for, passed as IP= in CNI_ARGS", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		createNAD(ctx, ns, "static", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "ipam": {"type": "static"}}`, netName(ns, "static"), cluster.MacvlanMasters[0]))
		const ip = "10.118.0.7"
		pod := busyboxPod(ns, "static", fmt.Sprintf(`[{"name": "static", "ips": ["%s/24"]}]`, ip))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		out := podExec(ctx, pod, "ip", "-o", "-4", "addr", "show", "dev", "net1")
		Expect(out).To(ContainSubstring("inet "+ip+"/24"), out)
		s := statusByInterface(networkStatus(ctx, pod), "net1")
		Expect(s).NotTo(BeNil())
		Expect(s.IPs).To(Equal([]string{ip}))
	})
})

var _ = Describe("an IPv6-only default-route on a secondary network", func() {
	It("moves the IPv6 default route and leaves eth0's IPv4 default route", func(ctx SpecContext) {
		deleteLinkAfter("plxe2e-v4d0")
		ns := newNamespace(ctx)
		// The cluster network gives eth0 no default route; this default
		// network does, so that there is one to keep.
		removeHostLocalDirs(netName(ns, "v4def"), netName(ns, "v6"))
		createNAD(ctx, ns, "v4def", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "bridge",
			"bridge": "plxe2e-v4d0", "isGateway": true, "ipam": {"type": "host-local", "subnet": "10.119.0.0/24",
			"routes": [{"dst": "0.0.0.0/0"}]}}`, netName(ns, "v4def")))
		createNAD(ctx, ns, "v6", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": "fd00:120::/64",
			"gateway": "fd00:120::1"}}`, netName(ns, "v6"), cluster.MacvlanMasters[1]))
		pod := busyboxPod(ns, "routed", `[{"name": "v6", "default-route": ["fd00:120::1"]}]`)
		// ns/name: the pod's own namespace, however bare names are read.
		pod.Annotations["v1.multus-cni.io/default-network"] = ns + "/v4def"
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		Expect(defaultRoutes(ctx, pod, "-4")).To(ConsistOf(HavePrefix("default via 10.119.0.1 dev eth0")))
		Expect(defaultRoutes(ctx, pod, "-6")).To(ConsistOf(HavePrefix("default via fd00:120::1 dev net1")))
		status := networkStatus(ctx, pod)
		eth0, net1 := statusByInterface(status, "eth0"), statusByInterface(status, "net1")
		Expect(eth0).NotTo(BeNil(), "status: %+v", status)
		Expect(net1).NotTo(BeNil(), "status: %+v", status)
		Expect(eth0.Gateway).To(Equal([]string{"10.119.0.1"}))
		Expect(net1.Gateway).To(Equal([]string{"fd00:120::1"}))
	})
})
