package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue 14, migration from Multus: the files an uninstalled Multus leaves
// on a node, and a Multus still installed.

// multusConf is where a thin Multus's install writes its config; it sorts
// before plexus's 00-plexus.conflist.
var multusConf = filepath.Join(cluster.CNIConfDir, "00-multus.conf")

// leftoverMultus is 00-multus.conf as a thin Multus writes it, with the
// node's default network as its delegate.
func leftoverMultus() []byte {
	def, err := os.ReadFile(cluster.DefaultConflist)
	Expect(err).NotTo(HaveOccurred())
	return []byte(fmt.Sprintf(`{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",`+
		`"kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[%s]}`, def))
}

// restoreMultusFiles removes, when the spec ends, 00-multus.conf, its
// set-aside copies and the binaries named, so the node is as before.
func restoreMultusFiles(binaries ...string) {
	DeferCleanup(func() {
		copies, err := filepath.Glob(multusConf + "*")
		Expect(err).NotTo(HaveOccurred())
		for _, p := range copies {
			Expect(os.Remove(p)).To(Succeed())
		}
		for _, b := range binaries {
			Expect(os.RemoveAll(filepath.Join(cluster.CNIBinDir, b))).To(Succeed())
		}
	})
}

func nodeCondition(g Gomega, ctx SpecContext, t string) *metav1.Condition {
	nns := &v1alpha1.NodeNetworkStatus{}
	g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
	c := meta.FindStatusCondition(nns.Status.Conditions, t)
	g.Expect(c).NotTo(BeNil(), "no %s condition", t)
	return c
}

var _ = Describe("a node that Multus was uninstalled from", Serial, func() {
	It("gets plexus on helm install: the leftover 00-multus.conf is set aside, Multus-style pods get their networks", func(ctx SpecContext) {
		reinstallAfter()
		cleanHostLocalAfter()
		restoreMultusFiles()
		Expect(filepath.Join(cluster.CNIBinDir, "multus")).NotTo(BeAnExistingFile(), "a multus binary on the node")
		ns := newNamespace(ctx)
		// Multus-style definitions: a bare conf, and one without cniVersion
		// (Multus assumes one).
		first := macvlanNAD(ctx, ns, "first", cluster.MacvlanMasters[0], "10.151.0.0/24", "")
		second := netName(ns, "second")
		createNAD(ctx, ns, "second", fmt.Sprintf(`{"name": %q, "type": "macvlan", "master": %q, "mode": "bridge",
			"ipam": {"type": "host-local", "subnet": "10.152.0.0/24"}}`, second, cluster.MacvlanMasters[1]))
		before := settled(ctx)

		uninstallFromNode(ctx)
		leftover := leftoverMultus()
		Expect(os.WriteFile(multusConf, leftover, 0o600)).To(Succeed())

		start := time.Now()
		install(ctx)
		waitNodeConfigured(ctx, start)

		Expect(multusConf).NotTo(BeAnExistingFile(), "the leftover is still where the runtime reads it")
		aside := multusConf + ".plexus-set-aside"
		Expect(os.ReadFile(aside)).To(Equal(leftover), "the set-aside copy is the leftover, byte for byte")
		e := waitEventWithReason(ctx, "NodeNetworkStatus", "", cluster.NodeName, "LeftoverSetAside", start)
		Expect(e.Type).To(Equal(corev1.EventTypeNormal))
		Expect(e.Message).To(ContainSubstring("mv "+aside+" "+multusConf), "the event says how to restore it")
		By("the event: " + e.Message)
		nns := &v1alpha1.NodeNetworkStatus{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
		Expect(nns.Status.DefaultNetwork).NotTo(BeNil())
		Expect(nns.Status.DefaultNetwork.File).To(Equal(cluster.DefaultConflist), "the default network is the node's own, not Multus's")

		short := busyboxPod(ns, "short", "first, "+ns+"/second@stor0")
		long := busyboxPod(ns, "long", `[{"name":"first","interface":"data0"},{"name":"second","namespace":"`+ns+`"}]`)
		for _, p := range []*corev1.Pod{short, long} {
			Expect(k8s.Create(ctx, p)).To(Succeed())
		}
		short, long = waitRunning(ctx, short), waitRunning(ctx, long)
		for pod, ifnames := range map[*corev1.Pod][]string{short: {"net1", "stor0"}, long: {"data0", "net2"}} {
			status := networkStatus(ctx, pod)
			Expect(status).To(HaveLen(3), "pod %s: %+v", pod.Name, status)
			Expect(status[0].Default).To(BeTrue())
			Expect(status[0].Name).To(Equal(cluster.DefaultNetwork))
			for i, ifname := range ifnames {
				s := statusByInterface(status, ifname)
				Expect(s).NotTo(BeNil(), "pod %s: no %s in %+v", pod.Name, ifname, status)
				Expect(s.Name).To(Equal(ns + "/" + []string{"first", "second"}[i]))
			}
		}
		Expect(heldAddresses(first)).To(HaveLen(2))
		Expect(heldAddresses(second)).To(HaveLen(2))
		deleteAll(ctx, []*corev1.Pod{short, long})
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("a node where Multus is still installed", Serial, func() {
	It("is not Ready while Multus's config sorts first, and the file is left alone", func(ctx SpecContext) {
		restoreMultusFiles("multus")
		// Removed before the binary (DeferCleanup runs last first), so that
		// plexus never sees a leftover; the node is then Ready again.
		DeferCleanup(func(ctx SpecContext) { waitNodeConfigured(ctx, time.Time{}) })
		DeferCleanup(func() { Expect(os.Remove(multusConf)).To(Succeed()) })
		Expect(os.WriteFile(filepath.Join(cluster.CNIBinDir, "multus"), []byte("#!/bin/sh\necho multus is a stand-in here >&2\nexit 1\n"), 0o755)).To(Succeed())
		leftover := leftoverMultus()
		start := time.Now()
		Expect(os.WriteFile(multusConf, leftover, 0o600)).To(Succeed())
		written, err := os.Stat(multusConf)
		Expect(err).NotTo(HaveOccurred())

		Eventually(func(g Gomega) {
			c := nodeCondition(g, ctx, "ConfigFirst")
			g.Expect(c.Status).To(BeEquivalentTo("False"))
			g.Expect(c.Reason).To(Equal("MetaPluginInstalled"))
			g.Expect(c.Message).To(ContainSubstring(multusConf))
			g.Expect(c.Message).To(ContainSubstring("uninstall multus first"))
			ready := nodeCondition(g, ctx, "Ready")
			g.Expect(ready.Status).To(BeEquivalentTo("False"))
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
		e := waitEventWithReason(ctx, "NodeNetworkStatus", "", cluster.NodeName, "MetaPluginInstalled", start)
		Expect(e.Type).To(Equal(corev1.EventTypeWarning))
		Expect(e.Message).To(ContainSubstring(multusConf))
		By("the event: " + e.Message)
		Eventually(func(g Gomega) {
			g.Expect(podReady(daemonPod(g, ctx))).To(BeFalse(), "the daemon pod is Ready")
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())

		// Every sync since the condition turned False (the daemon pod's
		// probes failing took several) left it alone.
		now, err := os.Stat(multusConf)
		Expect(err).NotTo(HaveOccurred())
		Expect(now.ModTime()).To(Equal(written.ModTime()))
		Expect(os.ReadFile(multusConf)).To(Equal(leftover), "the installed meta-plugin's config, byte for byte")
		_, err = os.Stat(multusConf + ".plexus-set-aside")
		Expect(errors.Is(err, fs.ErrNotExist)).To(BeTrue(), "a set-aside copy of an installed meta-plugin's config")
	})
})
