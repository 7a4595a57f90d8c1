package e2e

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
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

// SPEC.md, Teardown: DEL frees everything without the definition, without
// the API server and across daemon crashes. Leaks are looked for on the
// node's disk (host-local's folders, plexus's records) and links.

var _ = Describe("a definition deleted while its pod runs", func() {
	It("leaves no address and no record once the pod is deleted", func(ctx SpecContext) {
		ns, network, pod := podOnOneNetwork(ctx, "doomed", cluster.MacvlanMasters[0], "10.120.0.0/24", "orphan")
		uid := string(pod.UID)
		Expect(heldAddresses(network)).To(HaveLen(1))
		Expect(recordsOf(uid)).To(HaveLen(1))

		Expect(k8s.Delete(ctx, &nadv1.NetworkAttachmentDefinition{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "doomed"}})).To(Succeed())
		// Let the daemon's cache and store see the deletion first.
		time.Sleep(3 * time.Second)
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, time.Minute)
		Eventually(func(g Gomega) {
			g.Expect(heldAddresses(network)).To(BeEmpty(), "host-local allocations left")
			g.Expect(heldAddresses(cluster.DefaultNetwork)).NotTo(ContainElement(pod.Status.PodIP))
			g.Expect(recordsOf(uid)).To(BeEmpty(), "records left")
		}).WithContext(ctx).WithTimeout(20 * time.Second).Should(Succeed())
	})
})

// burst creates n pods at once and returns them.
func burst(ctx context.Context, ns, prefix string, n int, networks string, edit func(*corev1.Pod)) []*corev1.Pod {
	pods := make([]*corev1.Pod, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range pods {
		pods[i] = busyboxPod(ns, fmt.Sprintf("%s-%02d", prefix, i), networks)
		if edit != nil {
			edit(pods[i])
		}
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			errs[i] = k8s.Create(ctx, pods[i])
		}(i)
	}
	wg.Wait()
	for _, err := range errs {
		Expect(err).NotTo(HaveOccurred())
	}
	return pods
}

// deleteAll deletes the pods at once and waits for them to be gone.
func deleteAll(ctx context.Context, pods []*corev1.Pod) {
	for _, p := range pods {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, p))).To(Succeed())
	}
	for _, p := range pods {
		waitGone(ctx, p, 3*time.Minute)
	}
}

// removeLinkAfter deletes a link the spec's delegates create (a bridge)
// when the spec ends.
func removeLinkAfter(name string) {
	DeferCleanup(func() {
		if l, err := netlink.LinkByName(name); err == nil {
			Expect(netlink.LinkDel(l)).To(Succeed())
		}
	})
}

var _ = Describe("30 pods with 3 networks each", Serial, func() {
	It("leak no address, record or link once created and deleted", func(ctx SpecContext) {
		const bridge = "plxe2e-b30"
		removeLinkAfter(bridge)
		ns := newNamespace(ctx)
		networks := []string{netName(ns, "a"), netName(ns, "b"), netName(ns, "c")}
		removeHostLocalDirs(networks...)
		macvlanNAD(ctx, ns, "a", cluster.MacvlanMasters[0], "10.121.0.0/24", "")
		macvlanNAD(ctx, ns, "b", cluster.MacvlanMasters[1], "10.122.0.0/24", "")
		createNAD(ctx, ns, "c", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "bridge",
			"bridge": %q, "ipam": {"type": "host-local", "subnet": "10.123.0.0/24"}}`, networks[2], bridge))
		// The bridge is made by the first ADD and stays: make it now, so
		// that the links before and after differ only by leaks.
		Expect(netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}})).To(Succeed())
		before := settled(ctx)

		start := time.Now()
		pods := burst(ctx, ns, "p", 30, "a,b,c", nil)
		for i, p := range pods {
			pods[i] = waitRunningWithin(ctx, p, 5*time.Minute)
		}
		By(fmt.Sprintf("30 pods Running in %s", time.Since(start).Round(time.Second)))
		Expect(heldAddresses(networks...)).To(HaveLen(90))
		for _, p := range pods {
			Expect(networkStatus(ctx, p)).To(HaveLen(4))
		}

		start = time.Now()
		deleteAll(ctx, pods)
		By(fmt.Sprintf("30 pods gone in %s", time.Since(start).Round(time.Second)))
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("the API server stopped while pods terminate", Serial, func() {
	// What is real here: kubelet cannot learn of a pod's deletion while the
	// API server is down, but it tears down a pod that finished on its own
	// (restartPolicy Never, the container exited) without asking the API
	// server: it stops the sandbox, and containerd calls plexus's DEL. So the
	// pods sleep a few seconds and exit while kube-apiserver is stopped
	// (SIGSTOP to the pid the harness recorded, SIGCONT after), and their
	// addresses must be freed before it comes back.
	It("still frees every address of the pods", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "off")
		removeHostLocalDirs(network)
		macvlanNAD(ctx, ns, "off", cluster.MacvlanMasters[0], "10.124.0.0/24", "")
		pods := burst(ctx, ns, "short", 3, "off", func(p *corev1.Pod) {
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			p.Spec.Containers[0].Command = []string{"sleep", "20"}
		})
		ids := map[string]bool{}
		var podIPs []string
		for i, p := range pods {
			pods[i] = waitRunning(ctx, p)
			sandboxIDs(string(pods[i].UID), ids)
			podIPs = append(podIPs, pods[i].Status.PodIP)
		}
		Expect(heldAddresses(network)).To(HaveLen(3))
		Expect(heldBy(ids)).To(HaveLen(6), "default and extra addresses of the 3 sandboxes %v", ids)

		apiserver := componentPid("kube-apiserver")
		signal(apiserver, syscall.SIGSTOP)
		resumed := false
		resume := func() {
			if !resumed {
				signal(apiserver, syscall.SIGCONT)
				resumed = true
			}
		}
		DeferCleanup(resume)
		// The containers exit about 20 s after they started; kubelet then
		// stops their sandboxes with the API server still stopped.
		Eventually(func(g Gomega) {
			g.Expect(heldBy(ids)).To(BeEmpty(), "allocations of the sandboxes")
			g.Expect(heldAddresses(network)).To(BeEmpty())
			for _, p := range pods {
				g.Expect(recordsOf(string(p.UID))).To(BeEmpty())
			}
		}).WithContext(ctx).WithTimeout(35 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
		resume()
		Expect(heldAddresses(cluster.DefaultNetwork)).NotTo(ContainElements(podIPs))
		// Kubelet reports the pods Succeeded once the API server is back.
		for _, p := range pods {
			Eventually(func() corev1.PodPhase { return phaseOf(ctx, p) }).WithContext(ctx).
				WithTimeout(time.Minute).Should(Equal(corev1.PodSucceeded))
		}
	})
})

var _ = Describe("the daemon killed during a burst of pod creations", Serial, func() {
	It("ends with every pod Running and, once they are deleted, no address left", func(ctx SpecContext) {
		ns := newNamespace(ctx)
		network := netName(ns, "crash")
		removeHostLocalDirs(network)
		macvlanNAD(ctx, ns, "crash", cluster.MacvlanMasters[1], "10.125.0.0/24", "")
		before := settled(ctx)
		pid := daemonPid(ctx)
		DeferCleanup(waitDaemonReady)

		pods := burst(ctx, ns, "b", 10, "crash", nil)
		// Kill it while kubelet is starting the sandboxes: as soon as the
		// first ADD wrote its record, so that some ADDs are under way and
		// others not yet sent.
		Eventually(func() bool {
			for _, f := range allRecords() {
				if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), ns) {
					return true
				}
			}
			return false
		}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(10 * time.Millisecond).Should(BeTrue())
		signal(pid, syscall.SIGKILL)
		for i, p := range pods {
			pods[i] = waitRunningWithin(ctx, p, 4*time.Minute)
		}
		Expect(heldAddresses(network)).To(HaveLen(10))
		retried := 0
		for _, p := range pods {
			if strings.Contains(events(ctx, p), "FailedCreatePodSandBox") {
				retried++
			}
		}
		By(fmt.Sprintf("%d of 10 pods had a failed sandbox retried by kubelet", retried))
		waitDaemonReady(ctx)

		deleteAll(ctx, pods)
		expectNoLeaks(ctx, before)
	})
})

// waitRunningWithin is waitRunning with a timeout of the caller's.
func waitRunningWithin(ctx context.Context, pod *corev1.Pod, timeout time.Duration) *corev1.Pod {
	got := &corev1.Pod{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(corev1.PodRunning), "pod %s/%s: %s", pod.Namespace, pod.Name, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(timeout).WithPolling(time.Second).Should(Succeed())
	return got
}
