package e2e

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

var _ = Describe("the node", func() {
	It("reports a Ready NodeNetworkStatus wrapping the node's default network", func(ctx SpecContext) {
		nns := &v1alpha1.NodeNetworkStatus{}
		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
			ready := meta.FindStatusCondition(nns.Status.Conditions, "Ready")
			g.Expect(ready).NotTo(BeNil(), "no Ready condition in %+v", nns.Status.Conditions)
			g.Expect(ready.Status).To(BeEquivalentTo("True"), "Ready: %s %s", ready.Reason, ready.Message)
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
		Expect(nns.Status.DefaultNetwork).NotTo(BeNil())
		Expect(nns.Status.DefaultNetwork.Name).To(Equal(cluster.DefaultNetwork))
		// Paths as the node sees them, not as the daemon's container does.
		Expect(nns.Status.DefaultNetwork.File).To(Equal(cluster.DefaultConflist))
		Expect(nns.Status.ConfigFile).To(Equal(cluster.PlexusConflist))
		shim := meta.FindStatusCondition(nns.Status.Conditions, "ShimInstalled")
		Expect(shim).NotTo(BeNil())
		Expect(shim.Message).To(Equal(cluster.CNIBinDir + "/plexus"))
	})
})

var _ = Describe("a pod asking for two networks in the short form", Ordered, func() {
	var (
		ns       string
		pod      *corev1.Pod
		networks [2]string // host-local network names, hence host-local's folders
		subnets  = [2]string{"10.101.0.0/24", "10.102.0.0/24"}
	)

	BeforeAll(func(ctx SpecContext) {
		// Runs last (cleanups run in reverse): once the namespace and its
		// pods are gone, host-local's folders of the spec's networks go too.
		DeferCleanup(func() {
			for _, n := range networks {
				if n != "" {
					Expect(os.RemoveAll(filepath.Join(cluster.HostLocalDir, n))).To(Succeed())
				}
			}
		})
		ns = newNamespace(ctx)
		for i, name := range []string{"mv1", "mv2"} {
			networks[i] = ns + "-" + name
			createNAD(ctx, ns, name, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
				"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": %q}}`,
				networks[i], cluster.MacvlanMasters[i], subnets[i]))
		}
		pod = busyboxPod(ns, "two-nets", "mv1,mv2")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
	})

	It("has net1 and net2 with addresses from their networks", func(ctx SpecContext) {
		out, err := kubectl(ctx, "exec", "-n", ns, pod.Name, "--", "ip", "-o", "-4", "addr")
		Expect(err).NotTo(HaveOccurred())
		addrs := podAddresses(out)
		Expect(addrs).To(HaveKey("eth0"), out)
		for i, ifname := range []string{"net1", "net2"} {
			Expect(addrs).To(HaveKey(ifname), out)
			_, subnet, _ := net.ParseCIDR(subnets[i])
			Expect(subnet.Contains(addrs[ifname])).To(BeTrue(), "%s has %s, not in %s", ifname, addrs[ifname], subnets[i])
		}
	})

	It("lists three interfaces in network-status, the default network first", func(ctx SpecContext) {
		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(3))
		Expect(status[0].Default).To(BeTrue())
		Expect(status[0].Name).To(Equal(cluster.DefaultNetwork))
		Expect(status[0].Interface).To(Equal("eth0"))
		for i, want := range []struct{ name, ifname string }{{ns + "/mv1", "net1"}, {ns + "/mv2", "net2"}} {
			s := status[i+1]
			Expect(s.Default).To(BeFalse())
			Expect(s.Name).To(Equal(want.name))
			Expect(s.Interface).To(Equal(want.ifname))
			Expect(s.IPs).To(HaveLen(1))
		}
	})

	It("leaves no address allocated and no attachment record once deleted", func(ctx SpecContext) {
		got := &corev1.Pod{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		uid := string(got.UID)
		Expect(heldAddresses(networks[0], networks[1], cluster.DefaultNetwork)).To(ContainElement(got.Status.PodIP))
		Expect(recordsOf(uid)).NotTo(BeEmpty(), "no attachment record for the running pod")

		// One second of grace: the API server drops the pod only after
		// kubelet stopped its sandbox, which is when the CNI DEL runs.
		Expect(k8s.Delete(ctx, got, client.GracePeriodSeconds(1))).To(Succeed())
		Eventually(func() bool {
			return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}))
		}).WithContext(ctx).WithTimeout(time.Minute).Should(BeTrue())

		Eventually(func(g Gomega) {
			g.Expect(heldAddresses(networks[0], networks[1])).To(BeEmpty(), "host-local allocations left in %s", cluster.HostLocalDir)
			g.Expect(heldAddresses(cluster.DefaultNetwork)).NotTo(ContainElement(got.Status.PodIP))
			g.Expect(recordsOf(uid)).To(BeEmpty(), "attachment records left in %s", cluster.PlexusRecordsDir)
		}).WithContext(ctx).WithTimeout(10 * time.Second).Should(Succeed())
	})
})

// podAddresses parses `ip -o -4 addr` into interface -> address.
func podAddresses(out string) map[string]net.IP {
	line := regexp.MustCompile(`^\d+:\s+(\S+)\s+inet\s+(\S+)`)
	addrs := map[string]net.IP{}
	for _, l := range strings.Split(out, "\n") {
		if m := line.FindStringSubmatch(l); m != nil {
			if ip, _, err := net.ParseCIDR(m[2]); err == nil {
				addrs[m[1]] = ip
			}
		}
	}
	return addrs
}

// heldAddresses lists the addresses host-local holds for the networks: one
// file per address, named after it, in the network's folder.
func heldAddresses(networks ...string) []string {
	var held []string
	for _, n := range networks {
		entries, err := os.ReadDir(filepath.Join(cluster.HostLocalDir, n))
		if err != nil && !os.IsNotExist(err) {
			Fail(err.Error())
		}
		for _, e := range entries {
			if net.ParseIP(e.Name()) != nil {
				held = append(held, e.Name())
			}
		}
	}
	return held
}

// recordsOf lists plexus's attachment records on the node that name the
// pod with this UID.
func recordsOf(uid string) []string {
	files, err := filepath.Glob(filepath.Join(cluster.PlexusRecordsDir, "*.json"))
	Expect(err).NotTo(HaveOccurred())
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err == nil && strings.Contains(string(b), uid) {
			out = append(out, f)
		}
	}
	return out
}
