package e2e

import (
	"fmt"
	"net"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// SPEC.md, Selection and KubeVirt-style workloads: the JSON form's
// interface names, static IPs and MACs reach the pod exactly as asked.

var _ = Describe("the JSON form", func() {
	It("gives the pod the interface name, static IP and MAC asked for, and lists them in network-status", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		createNAD(ctx, ns, "static", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "capabilities": {"ips": true, "mac": true},
			"ipam": {"type": "static"}}`, netName(ns, "static"), cluster.MacvlanMasters[0]))
		const ip, mac = "10.110.0.17", "02:00:5e:10:00:17"
		pod := busyboxPod(ns, "static", fmt.Sprintf(
			`[{"name": "static", "interface": "data0", "ips": ["%s/24"], "mac": %q}]`, ip, mac))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		out := podExec(ctx, pod, "ip", "-o", "addr", "show", "dev", "data0")
		Expect(out).To(ContainSubstring("inet "+ip+"/24"), out)
		Expect(strings.Fields(podExec(ctx, pod, "cat", "/sys/class/net/data0/address"))).To(Equal([]string{mac}))

		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(2))
		s := statusByInterface(status, "data0")
		Expect(s).NotTo(BeNil(), "no status entry for data0: %+v", status)
		Expect(s.Name).To(Equal(ns + "/static"))
		Expect(s.IPs).To(Equal([]string{ip}))
		Expect(s.Mac).To(Equal(mac))
		Expect(s.Default).To(BeFalse())
	})
})

var _ = Describe("a KubeVirt-style pod", func() {
	It("gets interfaces named pod<hash> with the MACs asked for, found by interface name in network-status", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "vmnet")
		removeHostLocalDirs(network)
		macvlanNAD(ctx, ns, "vmnet", cluster.MacvlanMasters[1], "10.111.0.0/24", `"capabilities": {"mac": true}`)
		// What KubeVirt's virt-controller writes: the interface name is
		// "pod" and the first 11 hex digits of a hash of the VM's network
		// name, and the MAC is the VM's.
		const ifname, mac = "pod16367aacb67", "02:42:ac:11:00:99"
		Expect(ifname).To(MatchRegexp(`^pod[0-9a-f]{11}$`))
		pod := busyboxPod(ns, "virt-launcher-vm1-abcde", fmt.Sprintf(
			`[{"name": "vmnet", "namespace": %q, "interface": %q, "mac": %q}]`, ns, ifname, mac))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		Expect(strings.Fields(podExec(ctx, pod, "cat", "/sys/class/net/"+ifname+"/address"))).To(Equal([]string{mac}))
		status := networkStatus(ctx, pod)
		s := statusByInterface(status, ifname)
		Expect(s).NotTo(BeNil(), "no status entry for %s: %+v", ifname, status)
		Expect(s.Name).To(Equal(ns + "/vmnet"))
		Expect(s.Mac).To(Equal(mac))
		Expect(s.IPs).To(HaveLen(1))
		_, subnet, _ := net.ParseCIDR("10.111.0.0/24")
		Expect(subnet.Contains(net.ParseIP(s.IPs[0]))).To(BeTrue(), "%s not in %s", s.IPs[0], subnet)
	})
})

var _ = Describe("default-route in a selection", func() {
	It("leaves the pod exactly one default route, via the gateway asked for on that network's interface", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "gw")
		removeHostLocalDirs(network)
		macvlanNAD(ctx, ns, "gw", cluster.MacvlanMasters[0], "10.112.0.0/24", "")
		pod := busyboxPod(ns, "routed", `[{"name": "gw", "interface": "net1", "default-route": ["10.112.0.1"]}]`)
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		out := podExec(ctx, pod, "ip", "-4", "route", "show", "default")
		var defaults []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if strings.HasPrefix(l, "default") {
				defaults = append(defaults, strings.Join(strings.Fields(l), " "))
			}
		}
		Expect(defaults).To(HaveLen(1), "ip route: %s", out)
		Expect(defaults[0]).To(HavePrefix("default via 10.112.0.1 dev net1"))
	})
})

var _ = Describe("the v1.multus-cni.io/default-network annotation", func() {
	// A bare name is looked up in the default-network namespace
	// (kube-system), never the pod's, and namespace isolation (on in the
	// harness) does not apply to this administrator's network, as under
	// Multus.
	It("replaces the pod's eth0 by the named definition of kube-system, named in the default status entry", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		// Unique per spec run: kube-system outlives the spec's namespace.
		name := ns + "-altdef"
		network := netName("kube-system", name)
		removeHostLocalDirs(network)
		// A bridge of its own: the default network is the pod's only way
		// to the node.
		createNAD(ctx, "kube-system", name, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "bridge",
			"bridge": "plxe2e-alt0", "isGateway": true, "ipam": {"type": "host-local", "subnet": "10.113.0.0/24"}}`, network))
		DeferCleanup(func(ctx SpecContext) {
			nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "kube-system", Name: name}}
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, nad))).To(Succeed())
		})
		DeferCleanup(func() {
			if l, err := netlink.LinkByName("plxe2e-alt0"); err == nil {
				Expect(netlink.LinkDel(l)).To(Succeed())
			}
		})
		// The pod's own namespace holds a definition of that name too: a
		// bare name must not find it.
		createNAD(ctx, ns, name, `{"cniVersion": "1.0.0", "type": "not-this-one"}`)
		pod := busyboxPod(ns, "altdef", "")
		delete(pod.Annotations, nadv1.NetworkAttachmentAnnot)
		pod.Annotations["v1.multus-cni.io/default-network"] = name
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		addrs := podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr"))
		Expect(addrs).To(HaveKey("eth0"))
		_, subnet, _ := net.ParseCIDR("10.113.0.0/24")
		Expect(subnet.Contains(addrs["eth0"])).To(BeTrue(), "eth0 has %s, not in %s", addrs["eth0"], subnet)
		Expect(pod.Status.PodIP).To(Equal(addrs["eth0"].String()))

		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(1))
		Expect(status[0].Default).To(BeTrue())
		Expect(status[0].Interface).To(Equal("eth0"))
		Expect(status[0].Name).To(Equal("kube-system/" + name))
	})
})

// SPEC.md, Resolution: a missing definition and namespace isolation fail
// the ADD with a clear message, which kubelet shows as an Event and retries.

var _ = Describe("a pod asking for a definition that does not exist", func() {
	It("stays ContainerCreating with an Event naming it, and starts once the definition is created", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "late")
		removeHostLocalDirs(network)
		pod := busyboxPod(ns, "early", "late")
		Expect(k8s.Create(ctx, pod)).To(Succeed())

		ev := waitEvent(ctx, pod, fmt.Sprintf("network %s/late not found", ns))
		Expect(ev).To(HavePrefix("FailedCreatePodSandBox"))
		Expect(phaseOf(ctx, pod)).To(Equal(corev1.PodPending))
		waiting := containerWaitingReason(ctx, pod)
		Expect(waiting).To(Equal("ContainerCreating"))

		macvlanNAD(ctx, ns, "late", cluster.MacvlanMasters[0], "10.114.0.0/24", "")
		// kubelet retries the sandbox with a backoff of its own.
		got := &corev1.Pod{}
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
			g.Expect(got.Status.Phase).To(Equal(corev1.PodRunning))
		}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(2 * time.Second).Should(Succeed())
		Expect(statusByInterface(networkStatus(ctx, pod), "net1")).NotTo(BeNil())
	})
})

var _ = Describe("namespace isolation", func() {
	// The admission webhook refuses the pod when it is created; the node's
	// own refusal, for when the webhook is down, is the "Admission
	// webhook" specs'.
	It("refuses a definition of another namespace when the pod is created, and allows one of default", func(ctx SpecContext) {
		waitWebhookServing(ctx)
		nsA := newNamespace(ctx)
		nsB := newNamespace(ctx)
		macvlanNAD(ctx, nsB, "net", cluster.MacvlanMasters[0], "10.115.0.0/24", "")

		refused := busyboxPod(nsA, "refused", nsB+"/net")
		err := k8s.Create(ctx, refused)
		Expect(err).To(HaveOccurred(), "a pod naming another namespace's network was admitted")
		Expect(err.Error()).To(And(ContainSubstring("namespace isolation"), ContainSubstring(nsB+"/net")))

		// A definition in default is global: any namespace may use it.
		name := "e2e-global-" + strings.TrimPrefix(nsA, "e2e-")
		network := netName("default", name)
		removeHostLocalDirs(network)
		macvlanNAD(ctx, "default", name, cluster.MacvlanMasters[1], "10.116.0.0/24", "")
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &nadv1.NetworkAttachmentDefinition{
				ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}))).To(Succeed())
		})
		allowed := busyboxPod(nsA, "allowed", "default/"+name)
		Expect(k8s.Create(ctx, allowed)).To(Succeed())
		allowed = waitRunning(ctx, allowed)
		s := statusByInterface(networkStatus(ctx, allowed), "net1")
		Expect(s).NotTo(BeNil())
		Expect(s.Name).To(Equal("default/" + name))
	})
})

// containerWaitingReason is the waiting reason of the pod's container.
func containerWaitingReason(ctx SpecContext, pod *corev1.Pod) string {
	var reason string
	Eventually(func(g Gomega) {
		got := &corev1.Pod{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		g.Expect(got.Status.ContainerStatuses).To(HaveLen(1))
		g.Expect(got.Status.ContainerStatuses[0].State.Waiting).NotTo(BeNil())
		reason = got.Status.ContainerStatuses[0].State.Waiting.Reason
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	return reason
}
