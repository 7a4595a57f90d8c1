package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue #14: what Multus users rely on, on the real node.

var _ = Describe("defaultNetworks", Ordered, Serial, func() {
	BeforeAll(reinstallAfter)

	It("attaches the listed networks to every pod as net1.., before the pod's own, and none in kube-system", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		// A network of the administrator's, in the default-network
		// namespace; pods of other namespaces get it despite isolation.
		shared := "dn-" + ns
		sharedNet := netName(cluster.PlexusNamespace, shared)
		removeHostLocalDirs(sharedNet, netName(ns, "own"))
		macvlanNAD(ctx, cluster.PlexusNamespace, shared, cluster.MacvlanMasters[0], "10.130.0.0/24", "")
		DeferCleanup(func(ctx SpecContext) {
			nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: cluster.PlexusNamespace, Name: shared}}
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, nad))).To(Succeed())
		})
		macvlanNAD(ctx, ns, "own", cluster.MacvlanMasters[1], "10.131.0.0/24", "")

		old := daemonPod(Default, ctx)
		install(ctx, "--set", "defaultNetworks={"+shared+"}")
		rolledOut(ctx)
		waitNewDaemon(ctx, old.UID)
		waitNodeConfigured(ctx, time.Time{})

		plain := busyboxPod(ns, "plain", "")
		delete(plain.Annotations, nadv1.NetworkAttachmentAnnot)
		Expect(k8s.Create(ctx, plain)).To(Succeed())
		plain = waitRunning(ctx, plain)
		status := networkStatus(ctx, plain)
		Expect(status).To(HaveLen(2), "%+v", status)
		Expect(status[1].Name).To(Equal(cluster.PlexusNamespace + "/" + shared))
		Expect(status[1].Interface).To(Equal("net1"))
		Expect(podAddresses(podExec(ctx, plain, "ip", "-o", "-4", "addr"))).To(HaveKey("net1"))

		own := busyboxPod(ns, "own", "own")
		Expect(k8s.Create(ctx, own)).To(Succeed())
		own = waitRunning(ctx, own)
		status = networkStatus(ctx, own)
		Expect(status).To(HaveLen(3), "%+v", status)
		Expect([]string{status[1].Interface, status[2].Interface}).To(Equal([]string{"net1", "net2"}))
		Expect(status[2].Name).To(Equal(ns + "/own"))

		// A system namespace's pod gets the default network only.
		sys := busyboxPod(cluster.PlexusNamespace, "dn-sys-"+ns, "")
		delete(sys.Annotations, nadv1.NetworkAttachmentAnnot)
		Expect(k8s.Create(ctx, sys)).To(Succeed())
		DeferCleanup(func(ctx SpecContext) {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, sys))).To(Succeed())
			waitGone(ctx, sys, time.Minute)
		})
		sys = waitRunning(ctx, sys)
		Expect(networkStatus(ctx, sys)).To(HaveLen(1))
		Expect(podAddresses(podExec(ctx, sys, "ip", "-o", "-4", "addr"))).NotTo(HaveKey("net1"))
	})
})

var _ = Describe("a static pod", func() {
	It("gets the networks of its annotation, and its mirror pod their network-status", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "static-net")
		removeHostLocalDirs(network)
		macvlanNAD(ctx, ns, "static-net", cluster.MacvlanMasters[0], "10.132.0.0/24", "")

		static := busyboxPod(ns, "web", "static-net")
		static.TypeMeta = metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}
		manifest, err := yaml.Marshal(static)
		Expect(err).NotTo(HaveOccurred())
		file := filepath.Join(cluster.StaticPodDir, ns+"-web.yaml")
		Expect(os.WriteFile(file, manifest, 0o644)).To(Succeed())
		mirror := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-" + cluster.NodeName}}
		// Registered after newNamespace, so it runs first: kubelet brings
		// a mirror pod back while its manifest is there.
		DeferCleanup(func(ctx SpecContext) {
			Expect(os.Remove(file)).To(Succeed())
			Eventually(func() bool {
				return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(mirror), &corev1.Pod{}))
			}).WithContext(ctx).WithTimeout(2*time.Minute).Should(BeTrue(), "mirror pod %s/%s not gone", ns, mirror.Name)
		})

		Eventually(func(g Gomega) {
			g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(mirror), mirror)).To(Succeed())
			g.Expect(mirror.Status.Phase).To(Equal(corev1.PodRunning), "static pod: %s", events(ctx, mirror))
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
		// The runtime knows the static pod by another UID than the API's.
		Expect(mirror.Annotations).To(HaveKey(corev1.MirrorPodAnnotationKey))
		Expect(mirror.Annotations[corev1.MirrorPodAnnotationKey]).NotTo(Equal(string(mirror.UID)))

		status := networkStatus(ctx, mirror)
		Expect(status).To(HaveLen(2), "%+v", status)
		s := statusByInterface(status, "net1")
		Expect(s).NotTo(BeNil(), "no net1 in %+v", status)
		Expect(s.Name).To(Equal(ns + "/static-net"))
		Expect(s.IPs).To(HaveLen(1))
		out := podExec(ctx, mirror, "ip", "-o", "-4", "addr", "show", "dev", "net1")
		Expect(out).To(ContainSubstring(fmt.Sprintf("inet %s/24", s.IPs[0])))
	})
})
