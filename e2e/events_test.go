package e2e

import (
	"context"
	"fmt"
	"regexp"
	"sort"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// SPEC.md, Events: AddedInterface per interface and a Warning for a
// missing network, as Multus writes them, by the node's daemon.

// podEvents waits until pod has want Events of reason and returns them,
// sorted by message.
func podEvents(ctx context.Context, pod *corev1.Pod, reason string, want int) []corev1.Event {
	var found []corev1.Event
	Eventually(func(g Gomega) {
		list := &corev1.EventList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(pod.Namespace))).To(Succeed())
		found = found[:0]
		for _, e := range list.Items {
			if e.InvolvedObject.Kind == "Pod" && e.InvolvedObject.Name == pod.Name && e.Reason == reason {
				found = append(found, e)
			}
		}
		g.Expect(found).To(HaveLen(want), "%s Events of %s/%s:%s", reason, pod.Namespace, pod.Name, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	sort.Slice(found, func(i, j int) bool { return found[i].Message < found[j].Message })
	return found
}

var _ = Describe("Events on pods", func() {
	It("puts an AddedInterface per interface on a pod with two extra networks, from plexus on its node", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		var networks []string
		for i, name := range []string{"ev1", "ev2"} {
			networks = append(networks, macvlanNAD(ctx, ns, name, cluster.MacvlanMasters[i], fmt.Sprintf("10.16%d.0.0/24", i+1), ""))
		}
		removeHostLocalDirs(networks...)
		pod := busyboxPod(ns, "two-nets", "ev1,ev2")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)

		got := podEvents(ctx, pod, "AddedInterface", 3)
		want := []*regexp.Regexp{ // sorted by message
			regexp.MustCompile(fmt.Sprintf(`^Add eth0 \[[^\]]+\] from %s$`, regexp.QuoteMeta(cluster.DefaultNetwork))),
			regexp.MustCompile(fmt.Sprintf(`^Add net1 \[10\.161\.0\.\d+/24\] from %s/ev1$`, ns)),
			regexp.MustCompile(fmt.Sprintf(`^Add net2 \[10\.162\.0\.\d+/24\] from %s/ev2$`, ns)),
		}
		for i, e := range got {
			Expect(e.Message).To(MatchRegexp(want[i].String()))
			Expect(e.Type).To(Equal(corev1.EventTypeNormal))
			Expect(e.InvolvedObject.UID).To(Equal(pod.UID), "the Event is on the pod as the API server knows it")
			Expect(e.Source.Component).To(Equal("plexus"))
			Expect(e.Source.Host).To(Equal(cluster.NodeName))
		}
		Expect(got[0].Message).To(ContainSubstring(pod.Status.PodIP + "/"))
	})

	It("puts a NoNetworkFound Warning on a pod naming a network that does not exist", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		pod := busyboxPod(ns, "lost", "nowhere")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		warning := podEvents(ctx, pod, "NoNetworkFound", 1)[0]
		Expect(warning.Type).To(Equal(corev1.EventTypeWarning))
		Expect(warning.Message).To(ContainSubstring(ns + "/nowhere not found"))
		Expect(warning.Source.Component).To(Equal("plexus"))
		got := &corev1.Pod{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		Expect(warning.InvolvedObject.UID).To(Equal(got.UID))
		Expect(got.Status.Phase).To(Equal(corev1.PodPending))
	})
})
