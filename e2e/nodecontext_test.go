package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue 13: delegates run as the runtime would run them, in the node's
// root filesystem with the node's PATH. The default network chains
// portmap and bandwidth as Flannel's and Calico's conflists do; portmap
// runs the node's iptables. Other delegates read and write node paths
// that the daemon's container never mounted for them.

const (
	// hostPort is the node port the hostPort spec maps; nothing else on
	// the node listens there.
	hostPort = 31080
	// servedPort is where the spec's pod serves.
	servedPort = 8080
)

var _ = Describe("a pod with a hostPort on the default network (portmap)", func() {
	It("answers on the node's address and on 127.0.0.1 at that port, and its DNAT rules go with it", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		before := settled(ctx)
		natBefore := natTable(ctx)
		reply := "hello from " + ns

		pod := servingPod(ns, "web", reply)
		pod.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: servedPort, HostPort: hostPort, Protocol: corev1.ProtocolTCP}}
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitReady(ctx, pod)
		id := onlySandbox(pod)

		// From the node, as a client on it would: the node's address, the
		// one kubelet reports, and loopback, which portmap's snat makes
		// work (it marks 127.0.0.1 for masquerading and sets route_localnet
		// on the pod's bridge).
		nodeIP := nodeInternalIP(ctx)
		for _, host := range []string{nodeIP, "127.0.0.1"} {
			url := fmt.Sprintf("http://%s/", net.JoinHostPort(host, strconv.Itoa(hostPort)))
			Eventually(func() (string, error) { return httpGet(ctx, url) }).WithContext(ctx).
				WithTimeout(15*time.Second).Should(Equal(reply+"\n"), "GET %s", url)
			By(fmt.Sprintf("GET %s answered %q", url, reply))
		}

		// portmap's rules for this sandbox: a jump from CNI-HOSTPORT-DNAT
		// commented with its container id, into a CNI-DN- chain of its own
		// that DNATs to the pod.
		nat := natTable(ctx)
		mine := rulesNaming(nat, id)
		Expect(mine).NotTo(BeEmpty(), "no nat rule names sandbox %s:\n%s", id, nat)
		chains := dnatChains(mine)
		Expect(chains).To(HaveLen(1), "rules of sandbox %s: %v", id, mine)
		to := fmt.Sprintf("--to-destination %s:%d", pod.Status.PodIP, servedPort)
		Expect(rulesNaming(nat, chains[0])).To(ContainElement(ContainSubstring(to)), "chain %s does not DNAT to the pod:\n%s", chains[0], nat)
		rules := append(mine, added(mine, rulesNaming(nat, chains[0]))...)
		AddReportEntry("portmap's nat rules of the pod", strings.Join(rules, "\n"))

		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, 2*time.Minute)
		Eventually(func(g Gomega) {
			nat := natTable(ctx)
			g.Expect(rulesNaming(nat, id)).To(BeEmpty(), "nat rules naming sandbox %s", id)
			g.Expect(rulesNaming(nat, chains[0])).To(BeEmpty(), "chain %s", chains[0])
			g.Expect(rulesNaming(nat, to)).To(BeEmpty(), "DNAT to the deleted pod")
			g.Expect(dnatChains(strings.Split(nat, "\n"))).To(Equal(dnatChains(strings.Split(natBefore, "\n"))), "CNI-DN- chains before and after")
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		By(fmt.Sprintf("%d nat lines of the pod's sandbox while it ran, none once deleted", len(rules)))
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("a pod with bandwidth annotations on the default network (bandwidth)", func() {
	It("gets a tbf on its host veth for ingress and an ifb with a tbf for egress, all gone once deleted", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		before := settled(ctx)
		pod := busyboxPod(ns, "shaped", "")
		pod.Annotations = map[string]string{
			"kubernetes.io/ingress-bandwidth": "1M",
			"kubernetes.io/egress-bandwidth":  "2M",
		}
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		// The host end of the pod's eth0: its peer's index.
		index, err := strconv.Atoi(strings.TrimSpace(podExec(ctx, pod, "cat", "/sys/class/net/eth0/iflink")))
		Expect(err).NotTo(HaveOccurred())
		veth, err := netlink.LinkByIndex(index)
		Expect(err).NotTo(HaveOccurred())
		Expect(veth.Type()).To(Equal("veth"))

		// Ingress (to the pod) is shaped as the veth's egress: a root tbf
		// at 1 Mbit/s = 125000 bytes/s.
		qdiscs, err := netlink.QdiscList(veth)
		Expect(err).NotTo(HaveOccurred())
		Expect(tbfRates(qdiscs)).To(Equal([]uint64{125000}), "tbf qdiscs on %s: %v", veth.Attrs().Name, qdiscs)

		// Egress (from the pod) enters the veth: an ingress qdisc whose
		// filter redirects it to an ifb device, shaped there at 2 Mbit/s.
		var ingress netlink.Qdisc
		for _, q := range qdiscs {
			if q.Type() == "ingress" {
				ingress = q
			}
		}
		Expect(ingress).NotTo(BeNil(), "no ingress qdisc on %s: %v", veth.Attrs().Name, qdiscs)
		filters, err := netlink.FilterList(veth, ingress.Attrs().Handle)
		Expect(err).NotTo(HaveOccurred())
		ifb := redirectTarget(filters)
		Expect(ifb).NotTo(BeNil(), "no filter on %s's ingress redirects to a link: %v", veth.Attrs().Name, filters)
		Expect(ifb.Type()).To(Equal("ifb"))
		Expect(ifb.Attrs().Name).To(HavePrefix("bwp"))
		ifbQdiscs, err := netlink.QdiscList(ifb)
		Expect(err).NotTo(HaveOccurred())
		Expect(tbfRates(ifbQdiscs)).To(Equal([]uint64{250000}), "tbf qdiscs on %s: %v", ifb.Attrs().Name, ifbQdiscs)
		AddReportEntry("bandwidth's shaping of the pod", fmt.Sprintf("%s: tbf 125000 B/s and an ingress redirect to %s: tbf 250000 B/s",
			veth.Attrs().Name, ifb.Attrs().Name))

		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, 2*time.Minute)
		Eventually(func(g Gomega) {
			_, err := netlink.LinkByName(ifb.Attrs().Name)
			g.Expect(err).To(HaveOccurred(), "ifb %s still there", ifb.Attrs().Name)
			_, err = netlink.LinkByName(veth.Attrs().Name)
			g.Expect(err).To(HaveOccurred(), "veth %s still there", veth.Attrs().Name)
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("host-local with a dataDir in a fresh folder of the node", func() {
	It("keeps its allocation on the node at that path, with no mount for it, and releases it", func(ctx SpecContext) {
		dataDir := filepath.Join(freshNodeDir("/var/lib"), "ipam")
		ns := newNamespace(ctx)
		before := settled(ctx)
		network := netName(ns, "outside")
		createNAD(ctx, ns, "outside", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.141.0.0/24", "dataDir": %q}}`,
			network, cluster.MacvlanMasters[0], dataDir))
		pod := busyboxPod(ns, "outside", "outside")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		s := statusByInterface(networkStatus(ctx, pod), "net1")
		Expect(s).NotTo(BeNil())
		Expect(s.IPs).To(HaveLen(1))
		file := filepath.Join(dataDir, network, s.IPs[0])
		held, err := os.ReadFile(file)
		Expect(err).NotTo(HaveOccurred(), "host-local's allocation is not on the node")
		Expect(string(held)).To(And(HavePrefix(onlySandbox(pod)), HaveSuffix("net1")), "allocation file %s: %q", file, held)
		AddReportEntry("host-local's allocation on the node", file)

		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, 2*time.Minute)
		Eventually(func() error { _, err := os.Stat(file); return err }).WithContext(ctx).
			WithTimeout(30*time.Second).Should(MatchError(os.ErrNotExist), "%s after the pod is gone", file)
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("a Flannel-style default network reading the node's subnet file", func() {
	It("gives the pod its address and MTU from the file, keeps its state on the node, and releases both", func(ctx SpecContext) {
		// The subnet file and the plugin's state, both in fresh folders of
		// the node: /run/flannel and /var/lib/cni/flannel for Flannel.
		run := freshNodeDir("/run")
		dataDir := filepath.Join(freshNodeDir("/var/lib"), "subnetenv")
		const bridge = "plxe2e-se0"
		removeLinkAfter(bridge)
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		subnetFile := filepath.Join(run, "subnet.env")
		Expect(os.MkdirAll(run, 0o755)).To(Succeed())
		Expect(os.WriteFile(subnetFile, []byte("FLANNEL_NETWORK=10.143.0.0/16\nFLANNEL_SUBNET=10.143.7.1/24\nFLANNEL_MTU=1400\nFLANNEL_IPMASQ=false\n"), 0o644)).To(Succeed())
		createNAD(ctx, ns, "flannelish", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "subnetenv",
			"subnetFile": %q, "dataDir": %q, "delegate": {"bridge": %q}}`, netName(ns, "flannelish"), subnetFile, dataDir, bridge))
		// The bridge stays once made: make it now, so that the links
		// before and after differ only by leaks.
		Expect(netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}})).To(Succeed())
		before := settled(ctx)

		pod := busyboxPod(ns, "on-subnet", "")
		pod.Annotations = map[string]string{defaultNetworkAnnot: ns + "/flannelish"}
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		addrs := podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr"))
		_, subnet, _ := net.ParseCIDR("10.143.7.0/24")
		Expect(subnet.Contains(addrs["eth0"])).To(BeTrue(), "eth0 has %s, not in the file's FLANNEL_SUBNET %s", addrs["eth0"], subnet)
		Expect(strings.TrimSpace(podExec(ctx, pod, "cat", "/sys/class/net/eth0/mtu"))).To(Equal("1400"), "eth0's MTU, the file's FLANNEL_MTU")
		Expect(podExec(ctx, pod, "ip", "-4", "route")).To(ContainSubstring("10.143.0.0/16 via 10.143.7.1 dev eth0"), "the file's FLANNEL_NETWORK, through the node")
		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(1))
		Expect(status[0].Default).To(BeTrue())
		Expect(status[0].Name).To(Equal(ns + "/flannelish"))
		saved := filepath.Join(dataDir, onlySandbox(pod))
		Expect(saved).To(BeAnExistingFile(), "the plugin's state is not on the node")
		AddReportEntry("Flannel-style default network", fmt.Sprintf("eth0 %s, MTU 1400, from %s; state in %s", addrs["eth0"], subnetFile, saved))

		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, 2*time.Minute)
		Eventually(func() error { _, err := os.Stat(saved); return err }).WithContext(ctx).
			WithTimeout(30*time.Second).Should(MatchError(os.ErrNotExist), "%s after the pod is gone", saved)
		expectNoLeaks(ctx, before)
	})
})

// servingPod is a busybox pod on the default network alone that answers
// every HTTP GET on servedPort with reply, Ready once it serves.
func servingPod(ns, name, reply string) *corev1.Pod {
	pod := busyboxPod(ns, name, "")
	delete(pod.Annotations, nadv1.NetworkAttachmentAnnot)
	pod.Spec.Containers[0].Command = []string{"sh", "-c", fmt.Sprintf(
		`mkdir -p /tmp/www && echo %q > /tmp/www/index.html && exec httpd -f -p %d -h /tmp/www`, reply, servedPort)}
	pod.Spec.Containers[0].ReadinessProbe = &corev1.Probe{
		ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/", Port: intstr.FromInt32(servedPort)}},
		PeriodSeconds: 1,
	}
	return pod
}

// onlySandbox is the id of pod's one sandbox, from plexus's records.
func onlySandbox(pod *corev1.Pod) string {
	ids := map[string]bool{}
	sandboxIDs(string(pod.UID), ids)
	Expect(ids).To(HaveLen(1), "sandboxes of pod %s/%s", pod.Namespace, pod.Name)
	for id := range ids {
		return id
	}
	return ""
}

// waitReady waits for pod to be Ready and returns it.
func waitReady(ctx context.Context, pod *corev1.Pod) *corev1.Pod {
	got := &corev1.Pod{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		g.Expect(podReady(got)).To(BeTrue(), "pod %s/%s not Ready (%s): %s", pod.Namespace, pod.Name, got.Status.Phase, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	return got
}

// nodeInternalIP is the node's address as kubelet reports it.
func nodeInternalIP(ctx context.Context) string {
	node := &corev1.Node{}
	Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, node)).To(Succeed())
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			return a.Address
		}
	}
	Fail(fmt.Sprintf("node %s reports no InternalIP: %v", node.Name, node.Status.Addresses))
	return ""
}

// httpGet GETs url and returns the body of a 200 answer.
func httpGet(ctx context.Context, url string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", url, resp.Status)
	}
	return string(body), err
}

// natTable is the node's nat table, as iptables-save prints it.
func natTable(ctx context.Context) string {
	out, err := exec.CommandContext(ctx, "iptables-save", "-t", "nat").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "iptables-save: %s", out)
	return string(out)
}

// rulesNaming lists the lines of an iptables-save output holding s.
func rulesNaming(table, s string) []string {
	var out []string
	for _, l := range strings.Split(table, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return out
}

// dnatChains lists the CNI-DN- chains (portmap's, one per sandbox and
// network) that the lines jump to or declare.
func dnatChains(lines []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lines {
		for _, f := range strings.Fields(strings.TrimPrefix(l, ":")) {
			if strings.HasPrefix(f, "CNI-DN-") && !seen[f] {
				seen[f] = true
				out = append(out, f)
			}
		}
	}
	return out
}

// tbfRates lists the rates (bytes/s) of the tbf qdiscs among qdiscs.
func tbfRates(qdiscs []netlink.Qdisc) []uint64 {
	var rates []uint64
	for _, q := range qdiscs {
		if tbf, ok := q.(*netlink.Tbf); ok {
			rates = append(rates, tbf.Rate)
		}
	}
	return rates
}

// redirectTarget is the link a mirred action of the filters redirects to.
func redirectTarget(filters []netlink.Filter) netlink.Link {
	for _, f := range filters {
		u32, ok := f.(*netlink.U32)
		if !ok {
			continue
		}
		for _, a := range u32.Actions {
			if m, ok := a.(*netlink.MirredAction); ok && m.MirredAction == netlink.TCA_EGRESS_REDIR {
				if l, err := netlink.LinkByIndex(m.Ifindex); err == nil {
					return l
				}
			}
		}
	}
	return nil
}

// freshNodeDir is a folder of the node's under parent that did not exist,
// outside every folder the daemon's chart mounts: removed when the spec
// ends (registered first, it runs after the spec's namespace is gone).
func freshNodeDir(parent string) string {
	b := make([]byte, 4)
	_, err := rand.Read(b)
	Expect(err).NotTo(HaveOccurred())
	dir := filepath.Join(parent, "plexus-e2e-"+hex.EncodeToString(b))
	Expect(dir).NotTo(BeADirectory())
	DeferCleanup(func() { Expect(os.RemoveAll(dir)).To(Succeed()) })
	return dir
}
