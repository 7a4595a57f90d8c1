package e2e

import (
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// fakeNode makes a Node object no kubelet stands behind, tainted so that
// the scheduler places nothing there, and removes it and every pod bound
// to it (the DaemonSet's daemon pod among them) when the spec ends.
func fakeNode(ctx context.Context, name string) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/hostname": name}},
		Spec:       corev1.NodeSpec{Taints: []corev1.Taint{{Key: "plexus.cni.dev/e2e-fake-node", Effect: corev1.TaintEffectNoSchedule}}},
	}
	Expect(k8s.Create(ctx, node)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, node))).To(Succeed())
		// No kubelet confirms these pods' end: they go at once, forced.
		Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8s.List(ctx, pods, client.MatchingFields{"spec.nodeName": name})).To(Succeed())
			for i := range pods.Items {
				g.Expect(client.IgnoreNotFound(k8s.Delete(ctx, &pods.Items[i], client.GracePeriodSeconds(0)))).To(Succeed())
			}
			g.Expect(pods.Items).To(BeEmpty(), "pods bound to %s left", name)
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: name}}))).To(Succeed())
	})
}

// daemonClient is a client that authenticates with token only.
func daemonClient(token string) client.Client {
	admin, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	cfg := rest.AnonymousClientConfig(admin)
	cfg.BearerToken = token
	c, err := client.New(cfg, client.Options{Scheme: k8s.Scheme()})
	Expect(err).NotTo(HaveOccurred())
	return c
}

// daemonToken is a token of the daemon's ServiceAccount, bound to pod when
// it is not nil (so it names pod's node, as the daemon's own token names
// its node).
func daemonToken(ctx context.Context, pod *corev1.Pod) string {
	args := []string{"create", "token", cluster.Release, "-n", cluster.PlexusNamespace, "--duration=10m"}
	if pod != nil {
		args = append(args, "--bound-object-kind=Pod", "--bound-object-name="+pod.Name, "--bound-object-uid="+string(pod.UID))
	}
	out, err := kubectl(ctx, args...)
	Expect(err).NotTo(HaveOccurred())
	return strings.TrimSpace(out)
}

// statusPatch is the merge patch the daemon writes a network-status with.
func statusPatch(value string) client.Patch {
	return client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"plexus.cni.dev/e2e-node-scope":"`+value+`"}}}`))
}

var _ = Describe("NodeScope: the daemon's ServiceAccount, bound to a pod of another node", func() {
	It("may write that node's pod status and NodeNetworkStatus, and not this node's; an unbound token neither", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		other := "plexus-e2e-other-" + strings.TrimPrefix(ns, "e2e-")
		fakeNode(ctx, other)

		// A pod on this node, and one bound to the other node: a token
		// can be bound only to a pod of the ServiceAccount's namespace.
		here := busyboxPod(ns, "here", "")
		delete(here.Annotations, "k8s.v1.cni.cncf.io/networks")
		Expect(k8s.Create(ctx, here)).To(Succeed())
		here = waitRunning(ctx, here)
		Expect(here.Spec.NodeName).To(Equal(cluster.NodeName))
		there := busyboxPod(cluster.PlexusNamespace, "e2e-node-scope-"+strings.TrimPrefix(ns, "e2e-"), "")
		delete(there.Annotations, "k8s.v1.cni.cncf.io/networks")
		there.Spec.NodeName = other
		there.Spec.ServiceAccountName = cluster.Release // a token binds only to a pod of its ServiceAccount
		Expect(k8s.Create(ctx, there)).To(Succeed())

		c := daemonClient(daemonToken(ctx, there))

		// This node's pod: refused by the policy, saying why.
		err := c.Status().Patch(ctx, here.DeepCopy(), statusPatch("from-"+other))
		Expect(apierrors.IsForbidden(err) || apierrors.IsInvalid(err)).To(BeTrue(), "patching this node's pod status: %v", err)
		Expect(err.Error()).To(And(ContainSubstring("plexus-node-scope"),
			ContainSubstring("the plexus daemon of node "+other+" may write the status of pods on that node only"),
			ContainSubstring("pod "+ns+"/here is on node "+cluster.NodeName)))

		// This node's NodeNetworkStatus: neither its status nor the object.
		nns := &v1alpha1.NodeNetworkStatus{}
		Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
		err = c.Status().Update(ctx, nns.DeepCopy())
		Expect(err).To(HaveOccurred(), "updating this node's NodeNetworkStatus status")
		Expect(err.Error()).To(ContainSubstring("may write only the NodeNetworkStatus " + other + ", not " + cluster.NodeName))
		err = c.Update(ctx, nns.DeepCopy())
		Expect(err).To(HaveOccurred(), "updating this node's NodeNetworkStatus")
		Expect(err.Error()).To(ContainSubstring("may write only the NodeNetworkStatus " + other + ", not " + cluster.NodeName))
		err = c.Create(ctx, &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: "plexus-e2e-nowhere"}})
		Expect(err).To(HaveOccurred(), "creating another node's NodeNetworkStatus")
		Expect(err.Error()).To(ContainSubstring("may write only the NodeNetworkStatus " + other + ", not plexus-e2e-nowhere"))

		// Its own node's pod and NodeNetworkStatus: allowed.
		Expect(c.Status().Patch(ctx, there.DeepCopy(), statusPatch("own-node"))).To(Succeed())
		got := &corev1.Pod{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(there), got)).To(Succeed())
		Expect(got.Annotations).To(HaveKeyWithValue("plexus.cni.dev/e2e-node-scope", "own-node"))
		Expect(c.Create(ctx, &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: other}})).To(Succeed())

		// A token bound to no pod names no node: refused even there.
		unbound := daemonClient(daemonToken(ctx, nil))
		err = unbound.Status().Patch(ctx, there.DeepCopy(), statusPatch("unbound"))
		Expect(err).To(HaveOccurred(), "an unbound token patched a pod's status")
		Expect(err.Error()).To(ContainSubstring("the plexus daemon's token names no node"))

		// Others are not matched: the admin still writes any pod's status.
		Expect(k8s.Status().Patch(ctx, here.DeepCopy(), statusPatch("admin"))).To(Succeed())
	})
})
