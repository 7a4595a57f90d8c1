package e2e

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// SPEC.md, Default network, with the conflist names of Flannel and Calico:
// their daemons cannot run here, so their files are backed by the
// reference bridge plugin, with the network names and file names they
// install. plexus picks the lexically first config of the conf dir.
//
// This changes the node's default network for every pod started meanwhile,
// so it runs Serial, and puts the harness's 10-bridge.conflist back (and
// waits for plexus to pick it again) whatever happens.
var _ = Describe("Flannel- and Calico-style default networks", Serial, Ordered, func() {
	type defnet struct{ file, name, bridge, subnet string }
	var (
		calico  = defnet{"10-calico.conflist", "k8s-pod-network", "plxe2e-ca0", "10.127.0.0/24"}
		flannel = defnet{"10-flannel.conflist", "cbr0", "plxe2e-fl0", "10.126.0.0/24"}
		ns      string
		pods    []*corev1.Pod
	)

	write := func(d defnet) {
		conf := fmt.Sprintf(`{"cniVersion": "0.3.1", "name": %q, "plugins": [{"type": "bridge",
			"bridge": %q, "isGateway": true, "hairpinMode": true,
			"ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]]}}]}`, d.name, d.bridge, d.subnet)
		Expect(os.WriteFile(filepath.Join(cluster.CNIConfDir, d.file), []byte(conf), 0o644)).To(Succeed())
	}

	BeforeAll(func(ctx SpecContext) {
		saved, err := os.ReadFile(cluster.DefaultConflist)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func(ctx SpecContext) {
			for _, d := range []defnet{calico, flannel} {
				Expect(os.RemoveAll(filepath.Join(cluster.CNIConfDir, d.file))).To(Succeed())
				Expect(os.RemoveAll(filepath.Join(cluster.HostLocalDir, d.name))).To(Succeed())
				if l, err := netlink.LinkByName(d.bridge); err == nil {
					Expect(netlink.LinkDel(l)).To(Succeed())
				}
			}
			Expect(os.WriteFile(cluster.DefaultConflist, saved, 0o644)).To(Succeed())
			waitDefaultNetwork(ctx, cluster.DefaultNetwork, cluster.DefaultConflist)
		})
		ns = newNamespace(ctx)
	})

	It("keeps the harness's 10-bridge.conflist, lexically first, beside 10-calico and 10-flannel", func(ctx SpecContext) {
		write(calico)
		write(flannel)
		Consistently(func(g Gomega) {
			nns := &v1alpha1.NodeNetworkStatus{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
			g.Expect(nns.Status.DefaultNetwork).NotTo(BeNil())
			g.Expect(nns.Status.DefaultNetwork.Name).To(Equal(cluster.DefaultNetwork))
		}).WithContext(ctx).WithTimeout(5 * time.Second).Should(Succeed())
	})

	// check starts a pod and checks its eth0 and default status entry come
	// from d.
	check := func(ctx context.Context, d defnet, podName string) {
		pod := busyboxPod(ns, podName, "")
		delete(pod.Annotations, "k8s.v1.cni.cncf.io/networks")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		pods = append(pods, pod)
		addrs := podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr"))
		_, subnet, _ := net.ParseCIDR(d.subnet)
		Expect(subnet.Contains(addrs["eth0"])).To(BeTrue(), "eth0 has %s, not in %s", addrs["eth0"], d.subnet)
		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(1))
		Expect(status[0].Default).To(BeTrue())
		Expect(status[0].Name).To(Equal(d.name))
	}

	It("picks 10-calico.conflist (k8s-pod-network) once it is the lexically first", func(ctx SpecContext) {
		Expect(os.Remove(cluster.DefaultConflist)).To(Succeed())
		waitDefaultNetwork(ctx, calico.name, filepath.Join(cluster.CNIConfDir, calico.file))
		check(ctx, calico, "on-calico")
	})

	It("picks 10-flannel.conflist (cbr0) once Calico's file is gone", func(ctx SpecContext) {
		Expect(os.Remove(filepath.Join(cluster.CNIConfDir, calico.file))).To(Succeed())
		waitDefaultNetwork(ctx, flannel.name, filepath.Join(cluster.CNIConfDir, flannel.file))
		check(ctx, flannel, "on-flannel")
	})

	It("frees the addresses of pods started on either, once deleted", func(ctx SpecContext) {
		Expect(pods).To(HaveLen(2))
		deleteAll(ctx, pods)
		Eventually(func(g Gomega) {
			g.Expect(heldAddresses(calico.name, flannel.name)).To(BeEmpty())
			for _, p := range pods {
				g.Expect(recordsOf(string(p.UID))).To(BeEmpty())
			}
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})
})

// waitDefaultNetwork waits until the node's NodeNetworkStatus names the
// default network and its file, with the node's conflist written for it.
func waitDefaultNetwork(ctx context.Context, name, file string) {
	Eventually(func(g Gomega) {
		nns := &v1alpha1.NodeNetworkStatus{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
		g.Expect(nns.Status.DefaultNetwork).NotTo(BeNil())
		g.Expect(nns.Status.DefaultNetwork.Name).To(Equal(name))
		// By base name: the daemon reports the path it sees the file at in
		// its container (/host/etc/cni/net.d/...), not the node's.
		g.Expect(filepath.Base(nns.Status.DefaultNetwork.File)).To(Equal(filepath.Base(file)))
		b, err := os.ReadFile(cluster.PlexusConflist)
		g.Expect(err).NotTo(HaveOccurred())
		g.Expect(string(b)).To(ContainSubstring(fmt.Sprintf("%q", name)))
	}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
}
