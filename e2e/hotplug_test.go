package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Hot-plug as KubeVirt drives it: it edits the launcher pod's networks
// annotation, naming each interface "pod" and 11 hex characters and
// asking for the VM's MAC, and waits for the pod's network-status.

// vmElement is one element of a KubeVirt launcher pod's networks
// annotation.
type vmElement struct {
	Name      string   `json:"name"`
	Namespace string   `json:"namespace"`
	Interface string   `json:"interface,omitempty"`
	MAC       string   `json:"mac,omitempty"`
	IPs       []string `json:"ips,omitempty"`
}

func vmNetworks(elements ...vmElement) string {
	if elements == nil {
		elements = []vmElement{}
	}
	b, err := json.Marshal(elements)
	Expect(err).NotTo(HaveOccurred())
	return string(b)
}

// setNetworks changes a pod's networks annotation and returns when.
func setNetworks(ctx context.Context, pod *corev1.Pod, value string) time.Time {
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{nadv1.NetworkAttachmentAnnot: value}}})
	Expect(err).NotTo(HaveOccurred())
	start := time.Now()
	Expect(k8s.Patch(ctx, pod, client.RawPatch(k8stypes.MergePatchType, patch))).To(Succeed())
	return start
}

// waitStatus waits until the pod's network-status lists exactly the
// interfaces want ("network@interface", the default network first), and
// returns how long after since that was first seen, and the status.
func waitStatus(ctx context.Context, pod *corev1.Pod, since time.Time, want ...string) (time.Duration, []nadv1.NetworkStatus) {
	var status []nadv1.NetworkStatus
	var took time.Duration
	Eventually(func(g Gomega) {
		got := &corev1.Pod{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		took = time.Since(since)
		status = nil
		g.Expect(json.Unmarshal([]byte(got.Annotations[nadv1.NetworkStatusAnnot]), &status)).To(Succeed())
		var names []string
		for _, s := range status {
			names = append(names, s.Name+"@"+s.Interface)
		}
		g.Expect(names).To(Equal(want), "network-status of %s/%s; events:%s", pod.Namespace, pod.Name, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(50 * time.Millisecond).Should(Succeed())
	return took, status
}

// podLink is one interface in a pod, from `ip -o addr` and `ip -o link`.
type podLink struct {
	MAC   string
	Addrs []string
}

func podLinks(ctx context.Context, pod *corev1.Pod) map[string]podLink {
	links := map[string]podLink{}
	for _, l := range strings.Split(podExec(ctx, pod, "ip", "-o", "link"), "\n") {
		f := strings.Fields(l)
		if len(f) < 2 {
			continue
		}
		name, _, _ := strings.Cut(strings.TrimSuffix(f[1], ":"), "@")
		link := podLink{}
		for i := range f {
			if f[i] == "link/ether" && i+1 < len(f) {
				link.MAC = f[i+1]
			}
		}
		links[name] = link
	}
	for name, ip := range podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr")) {
		l := links[name]
		l.Addrs = append(l.Addrs, ip.String())
		links[name] = l
	}
	return links
}

// bridgePorts lists the links enslaved to bridge on the node.
func bridgePorts(bridge string) []string {
	br, err := netlink.LinkByName(bridge)
	Expect(err).NotTo(HaveOccurred())
	links, err := netlink.LinkList()
	Expect(err).NotTo(HaveOccurred())
	var ports []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			ports = append(ports, l.Attrs().Name)
		}
	}
	return ports
}

// hostLocalHolders counts the addresses of network held by each sandbox.
func hostLocalHolders(network string) map[string]int {
	out := map[string]int{}
	for alloc, holder := range allocations() {
		if in, _, _ := strings.Cut(alloc, "/"); in == network {
			id, _, _ := strings.Cut(holder, " ")
			out[id]++
		}
	}
	return out
}

// recordIfnames lists the interfaces of the pod's records, all sandboxes.
func recordIfnames(uid string) []string {
	var out []string
	for _, f := range recordsOf(uid) {
		var rec struct {
			Attachments []struct {
				IfName string `json:"ifname"`
			} `json:"attachments"`
		}
		b, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(b, &rec)).To(Succeed())
		for _, a := range rec.Attachments {
			out = append(out, a.IfName)
		}
	}
	return out
}

// waitEventsWith waits for events of pod with this reason whose message
// holds substring, and returns them.
func waitEventsWith(ctx context.Context, pod *corev1.Pod, reason, substring string) []corev1.Event {
	var found []corev1.Event
	Eventually(func(g Gomega) {
		list := &corev1.EventList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(pod.Namespace))).To(Succeed())
		found = nil
		for _, e := range list.Items {
			if e.InvolvedObject.Name == pod.Name && e.Reason == reason && strings.Contains(e.Message, substring) {
				found = append(found, e)
			}
		}
		g.Expect(found).NotTo(BeEmpty(), "no %s event of %s/%s holding %q:%s", reason, pod.Namespace, pod.Name, substring, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	return found
}

// daemonRestarts is how often kubelet restarted the daemon's container.
func daemonRestarts(g Gomega, ctx context.Context) int32 {
	for _, cs := range daemonPod(g, ctx).Status.ContainerStatuses {
		if cs.Name == "plexus" {
			return cs.RestartCount
		}
	}
	g.Expect("no container status").To(BeEmpty(), "the daemon pod has no plexus container")
	return 0
}

// KubeVirt's interface names: "pod" and 11 hex characters.
const (
	hpIfBlue  = "pod16477688c0e"
	hpIfGreen = "pod9f86d081884"
	hpIfRed   = "podb5a3b5bc3ee"
)

var _ = Describe("Hotplug on a KubeVirt-shaped pod", Serial, func() {
	It("appends, removes and replaces interfaces: links, addresses, network-status, and nothing left", func(ctx SpecContext) {
		const bridge = "plxe2e-hp0"
		removeLinkAfter(bridge)
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		blue := macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.141.0.0/24", `"capabilities": {"mac": true}`)
		red := macvlanNAD(ctx, ns, "red", cluster.MacvlanMasters[1], "10.143.0.0/24", `"capabilities": {"mac": true}`)
		green := netName(ns, "green")
		createNAD(ctx, ns, "green", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "bridge", "bridge": %q,
			"ipam": {"type": "host-local", "subnet": "10.142.0.0/24"}}`, green, bridge))
		// The bridge stays once made: make it now, so that the node's
		// links before and after differ only by leaks.
		Expect(netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}})).To(Succeed())
		before := settled(ctx)

		pod := busyboxPod(ns, "virt-launcher-vm1", vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue, MAC: "02:00:00:14:01:01"}))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		def := cluster.DefaultNetwork + "@eth0"
		waitStatus(ctx, pod, time.Now(), def, ns+"/blue@"+hpIfBlue)

		By("appending green")
		start := setNetworks(ctx, pod, vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue, MAC: "02:00:00:14:01:01"},
			vmElement{Name: "green", Namespace: ns, Interface: hpIfGreen}))
		took, status := waitStatus(ctx, pod, start, def, ns+"/blue@"+hpIfBlue, ns+"/green@"+hpIfGreen)
		AddReportEntry("hot-plug: annotation change to network-status entry", took.String())
		By(fmt.Sprintf("green in network-status %s after the annotation changed", took))
		links := podLinks(ctx, pod)
		Expect(links).To(HaveKey(hpIfGreen))
		Expect(links[hpIfGreen].Addrs).To(HaveLen(1))
		Expect(statusByInterface(status, hpIfGreen).IPs).To(Equal(links[hpIfGreen].Addrs))
		_, subnet, _ := net.ParseCIDR("10.142.0.0/24")
		Expect(subnet.Contains(net.ParseIP(links[hpIfGreen].Addrs[0]))).To(BeTrue(), "green's address %v", links[hpIfGreen].Addrs)
		Expect(bridgePorts(bridge)).To(HaveLen(1), "the host end of green's veth")
		Expect(waitEventsWith(ctx, pod, "AddedInterface", hpIfGreen)[0].Message).To(ContainSubstring("from " + ns + "/green"))

		By("removing blue, the pod's first network")
		start = setNetworks(ctx, pod, vmNetworks(vmElement{Name: "green", Namespace: ns, Interface: hpIfGreen}))
		took, _ = waitStatus(ctx, pod, start, def, ns+"/green@"+hpIfGreen)
		AddReportEntry("hot-unplug: annotation change to network-status without the entry", took.String())
		Expect(podLinks(ctx, pod)).NotTo(HaveKey(hpIfBlue))
		Expect(heldAddresses(blue)).To(BeEmpty(), "blue's address released")
		Expect(waitEventsWith(ctx, pod, "RemovedInterface", hpIfBlue)[0].Message).To(ContainSubstring("from " + ns + "/blue"))

		By("replacing the whole list")
		start = setNetworks(ctx, pod, vmNetworks(vmElement{Name: "red", Namespace: ns, Interface: hpIfRed, MAC: "02:00:00:14:03:03"},
			vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue, MAC: "02:00:00:14:01:02"}))
		took, _ = waitStatus(ctx, pod, start, def, ns+"/red@"+hpIfRed, ns+"/blue@"+hpIfBlue)
		AddReportEntry("hot-plug: whole list replaced, to network-status", took.String())
		links = podLinks(ctx, pod)
		Expect(links).NotTo(HaveKey(hpIfGreen))
		Expect(links[hpIfRed].MAC).To(Equal("02:00:00:14:03:03"))
		Expect(links[hpIfBlue].MAC).To(Equal("02:00:00:14:01:02"))
		Expect(heldAddresses(green)).To(BeEmpty(), "green's address released")
		Expect(heldAddresses(red)).To(HaveLen(1))
		Expect(bridgePorts(bridge)).To(BeEmpty(), "the host end of green's veth is gone with it")
		Expect(recordIfnames(string(pod.UID))).To(ConsistOf("eth0", hpIfRed, hpIfBlue))

		deleteAll(ctx, []*corev1.Pod{pod})
		expectNoLeaks(ctx, before)
	})

	It("hot-plugs with ips and mac: the status entry holds exactly those", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		blue := macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.141.0.0/24", "")
		removeHostLocalDirs(blue)
		createNAD(ctx, ns, "static", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "capabilities": {"ips": true, "mac": true},
			"ipam": {"type": "static"}}`, netName(ns, "static"), cluster.MacvlanMasters[1]))
		pod := busyboxPod(ns, "virt-launcher-vm2", vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		def := cluster.DefaultNetwork + "@eth0"
		waitStatus(ctx, pod, time.Now(), def, ns+"/blue@"+hpIfBlue)

		start := setNetworks(ctx, pod, vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue},
			vmElement{Name: "static", Namespace: ns, Interface: hpIfRed, IPs: []string{"10.144.0.7/24"}, MAC: "02:00:00:14:04:07"}))
		_, status := waitStatus(ctx, pod, start, def, ns+"/blue@"+hpIfBlue, ns+"/static@"+hpIfRed)
		s := statusByInterface(status, hpIfRed)
		Expect(s.IPs).To(Equal([]string{"10.144.0.7"}))
		Expect(s.Mac).To(Equal("02:00:00:14:04:07"))
		links := podLinks(ctx, pod)
		Expect(links[hpIfRed]).To(Equal(podLink{MAC: "02:00:00:14:04:07", Addrs: []string{"10.144.0.7"}}))
		deleteAll(ctx, []*corev1.Pod{pod})
	})

	It("refuses an element without an interface name: a Warning, and no change", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		removeHostLocalDirs(macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.141.0.0/24", ""))
		removeHostLocalDirs(macvlanNAD(ctx, ns, "green", cluster.MacvlanMasters[1], "10.142.0.0/24", ""))
		pod := busyboxPod(ns, "virt-launcher-vm3", vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		def := cluster.DefaultNetwork + "@eth0"
		waitStatus(ctx, pod, time.Now(), def, ns+"/blue@"+hpIfBlue)
		linksBefore := podLinks(ctx, pod)

		start := setNetworks(ctx, pod, vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}, vmElement{Name: "green", Namespace: ns}))
		w := waitEventWithReason(ctx, "Pod", ns, pod.Name, "HotplugRefused", start)
		By("the Warning: " + w.Message)
		Expect(w.Type).To(Equal(corev1.EventTypeWarning))
		Expect(w.Message).To(And(ContainSubstring("pod "+ns+"/"+pod.Name), ContainSubstring("network "+ns+"/green"),
			ContainSubstring(`field "interface"`), ContainSubstring(ns+"/green@<name>")))
		waitStatus(ctx, pod, start, def, ns+"/blue@"+hpIfBlue)
		Expect(podLinks(ctx, pod)).To(Equal(linksBefore))
		Expect(recordIfnames(string(pod.UID))).To(ConsistOf("eth0", hpIfBlue))
		deleteAll(ctx, []*corev1.Pod{pod})
	})

	It("warns a host-network pod, and does nothing else", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		pod := busyboxPod(ns, "host", "blue@data0")
		pod.Spec.HostNetwork = true
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		setNetworks(ctx, pod, "blue@data0, green@data1")
		w := waitEventsWith(ctx, pod, "HotplugRefused", "hostNetwork")[0]
		Expect(w.Type).To(Equal(corev1.EventTypeWarning))
		Expect(w.Message).To(ContainSubstring("pod " + ns + "/host"))
		Expect(recordsOf(string(pod.UID))).To(BeEmpty())
	})

	It("attaches after a daemon SIGKILL between the annotation change and the attach, once", func(ctx SpecContext) {
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.141.0.0/24", "")
		green := macvlanNAD(ctx, ns, "green", cluster.MacvlanMasters[1], "10.142.0.0/24", "")
		pod := busyboxPod(ns, "virt-launcher-vm4", vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}))
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		def := cluster.DefaultNetwork + "@eth0"
		waitStatus(ctx, pod, time.Now(), def, ns+"/blue@"+hpIfBlue)

		// Stopped, the daemon sees the change but cannot act on it; then
		// it dies, and kubelet starts its container again.
		pid, restarts := daemonPid(ctx), daemonRestarts(Default, ctx)
		signal(pid, syscall.SIGSTOP)
		DeferCleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		start := setNetworks(ctx, pod, vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}, vmElement{Name: "green", Namespace: ns, Interface: hpIfGreen}))
		time.Sleep(500 * time.Millisecond) // the watch event reaches the stopped daemon's socket
		signal(pid, syscall.SIGKILL)
		Eventually(func(g Gomega) {
			g.Expect(daemonRestarts(g, ctx)).To(BeNumerically(">", restarts), "the daemon's container restarted")
			g.Expect(podReady(daemonPod(g, ctx))).To(BeTrue(), "the daemon Ready again")
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
		Expect(daemonPid(ctx)).NotTo(Equal(pid))
		took, _ := waitStatus(ctx, pod, start, def, ns+"/blue@"+hpIfBlue, ns+"/green@"+hpIfGreen)
		By(fmt.Sprintf("green attached %s after the annotation changed, the daemon killed meanwhile", took))
		Expect(podLinks(ctx, pod)).To(HaveKey(hpIfGreen))
		Expect(recordIfnames(string(pod.UID))).To(ConsistOf("eth0", hpIfBlue, hpIfGreen), "green attached once")
		Expect(hostLocalHolders(green)).To(HaveLen(1))
		for id, n := range hostLocalHolders(green) {
			Expect(n).To(Equal(1), "sandbox %s holds %d addresses of green", id, n)
		}
		added := waitEventsWith(ctx, pod, "AddedInterface", hpIfGreen)
		Expect(added).To(HaveLen(1))
		Expect(added[0].Count).To(BeNumerically("<=", 1), "green announced once")
		deleteAll(ctx, []*corev1.Pod{pod})
	})

	It("leaves nothing when pods are deleted during a hot-plug", func(ctx SpecContext) {
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.141.0.0/24", "")
		macvlanNAD(ctx, ns, "green", cluster.MacvlanMasters[1], "10.142.0.0/24", "")
		before := settled(ctx)
		var pods []*corev1.Pod
		for i := range 4 {
			p := busyboxPod(ns, fmt.Sprintf("virt-launcher-vm-del%d", i), vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}))
			Expect(k8s.Create(ctx, p)).To(Succeed())
			pods = append(pods, p)
		}
		for i, p := range pods {
			pods[i] = waitRunning(ctx, p)
		}
		zero := int64(0)
		for i, p := range pods {
			setNetworks(ctx, p, vmNetworks(vmElement{Name: "blue", Namespace: ns, Interface: hpIfBlue}, vmElement{Name: "green", Namespace: ns, Interface: hpIfGreen}))
			// Deleted at once, a little later each time: before, during
			// and after the attach.
			time.Sleep(time.Duration(i) * 150 * time.Millisecond)
			Expect(k8s.Delete(ctx, p, &client.DeleteOptions{GracePeriodSeconds: &zero})).To(Succeed())
		}
		deleteAll(ctx, pods)
		expectNoLeaks(ctx, before)
	})
})
