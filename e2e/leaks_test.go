package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue 12, teardown never leaks: sandboxes plexus never attached (pods
// started while it was not installed), ADDs whose rollback a delegate
// refused, and a node conflist that disappeared. Each spec compares the
// node's whole state (every network's host-local allocations, the default
// network's included, records, cached results, links) after its pods are
// gone with the state before it made them.

// defaultNetworkAnnot replaces a pod's default network by a definition.
const defaultNetworkAnnot = "v1.multus-cni.io/default-network"

var _ = Describe("pods started while plexus was not installed", Serial, func() {
	It("get NetworksNotAttached if they asked for networks, and leave nothing once deleted after the install", func(ctx SpecContext) {
		reinstallAfter()
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		extra := macvlanNAD(ctx, ns, "extra", cluster.MacvlanMasters[0], "10.132.0.0/24", "")
		before := settled(ctx)

		uninstallFromNode(ctx)

		plain := busyboxPod(ns, "plain", "")
		delete(plain.Annotations, nadv1.NetworkAttachmentAnnot)
		asking := busyboxPod(ns, "asking", "extra")
		Expect(k8s.Create(ctx, plain)).To(Succeed())
		Expect(k8s.Create(ctx, asking)).To(Succeed())
		plain, asking = waitRunning(ctx, plain), waitRunning(ctx, asking)
		// The runtime attached both to the default network alone.
		Expect(heldAddresses(cluster.DefaultNetwork)).To(ContainElements(plain.Status.PodIP, asking.Status.PodIP))
		Expect(heldAddresses(extra)).To(BeEmpty())
		Expect(append(recordsOf(string(plain.UID)), recordsOf(string(asking.UID))...)).To(BeEmpty())
		Expect(asking.Annotations).NotTo(HaveKey(nadv1.NetworkStatusAnnot))

		start := time.Now()
		install(ctx)
		waitNodeConfigured(ctx, start)

		warning := waitEventWithReason(ctx, "Pod", asking.Namespace, asking.Name, "NetworksNotAttached", time.Time{})
		Expect(warning.Type).To(Equal(corev1.EventTypeWarning))
		Expect(warning.Message).To(ContainSubstring(ns+"/extra"), "the event names the network the pod misses")
		By("the event: " + warning.Message)
		Eventually(func() (string, error) {
			return kubectl(ctx, "get", "nodenetworkstatuses", cluster.NodeName, "-o", "jsonpath={.status.bypassedPods}")
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Equal("1"), "NodeNetworkStatus counts the pod that bypassed plexus")
		Expect(events(ctx, plain)).NotTo(ContainSubstring("NetworksNotAttached"), "the pod asking for no network misses none")
		// plexus reports them and leaves them running.
		Expect(phaseOf(ctx, plain)).To(Equal(corev1.PodRunning))
		Expect(phaseOf(ctx, asking)).To(Equal(corev1.PodRunning))

		// The runtime now tears them down through plexus, which has no
		// record of them.
		deleteAll(ctx, []*corev1.Pod{plain, asking})
		expectNoLeaks(ctx, before)
	})
})

var _ = Describe("a network whose last plugin fails its ADD and its first DEL", Serial, func() {
	// Each failed ADD of the pod's sandbox allocated an address from the
	// network's bridge+host-local before faulty refused; plexus's rollback
	// DEL is refused too (faulty's first DEL), so only the runtime's DEL
	// that follows, or plexus's sweep, can release it. kubelet meanwhile
	// retries the sandbox every 10-20 s.
	retried := func(ctx context.Context, asDefault bool) {
		const bridge = "plxe2e-fy0"
		cleanHostLocalAfter()
		removeLinkAfter(bridge)
		// faulty's count of the DELs it refused, per sandbox and interface.
		// Under the node's CNI data dir, which no pod may have made yet on
		// a fresh node (the specs run in random order).
		Expect(os.MkdirAll("/var/lib/cni", 0o755)).To(Succeed())
		counters, err := os.MkdirTemp("/var/lib/cni", "faulty-e2e-")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(func() { Expect(os.RemoveAll(counters)).To(Succeed()) })
		ns := newNamespace(ctx)
		network := netName(ns, "faulty")
		createNAD(ctx, ns, "faulty", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "plugins": [
			{"type": "bridge", "bridge": %q, "ipam": {"type": "host-local", "subnet": "10.133.0.0/24"}},
			{"type": "faulty", "failAdd": "refused on purpose", "failDels": 1, "stateDir": %q}]}`,
			network, bridge, counters))
		// The bridge stays once made: make it now, so that the links
		// before and after differ only by leaks.
		Expect(netlink.LinkAdd(&netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: bridge}})).To(Succeed())
		before := settled(ctx)

		pod := busyboxPod(ns, "retried", "faulty")
		if asDefault {
			pod.Annotations = map[string]string{defaultNetworkAnnot: ns + "/faulty"}
		}
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		waitEvent(ctx, pod, "refused on purpose")
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), pod)).To(Succeed())

		// One attempt in flight holds one address of the network (and, for
		// an extra network, one of the default network) until its
		// rollback and the runtime's DEL are done; never more.
		var maxNet, maxDefault, maxRecords, lastNet, lastDefault int
		holders := map[string]bool{}
		for start := time.Now(); time.Since(start) < 60*time.Second; time.Sleep(200 * time.Millisecond) {
			lastNet, lastDefault = 0, 0
			for alloc, holder := range allocations() {
				if before.Allocations[alloc] == holder {
					continue
				}
				switch in, _, _ := strings.Cut(alloc, "/"); in {
				case network:
					lastNet++
				case cluster.DefaultNetwork:
					lastDefault++
				default:
					Fail(fmt.Sprintf("an allocation in a network the pod does not use: %s (%s)", alloc, holder))
				}
				id, _, _ := strings.Cut(holder, " ")
				holders[id] = true
			}
			maxNet, maxDefault = max(maxNet, lastNet), max(maxDefault, lastDefault)
			maxRecords = max(maxRecords, len(recordsOf(string(pod.UID))))
		}
		attempts := sandboxFailures(ctx, pod)
		report := fmt.Sprintf("%d failed sandbox attempts in 60 s, %d sandboxes seen holding addresses; "+
			"allocations at most %d in %s and %d new in %s at once, %d and %d at the end; %d records at most",
			attempts, len(holders), maxNet, network, maxDefault, cluster.DefaultNetwork, lastNet, lastDefault, maxRecords)
		AddReportEntry("allocations while kubelet retried", report)
		By(report)
		Expect(phaseOf(ctx, pod)).To(Equal(corev1.PodPending))
		Expect(attempts).To(BeNumerically(">=", 2), "kubelet retried the sandbox: %s", events(ctx, pod))
		Expect(maxNet).To(BeNumerically("<=", 1), "allocations in %s grew with the retries", network)
		Expect(maxDefault).To(BeNumerically("<=", 1), "allocations in %s grew with the retries", cluster.DefaultNetwork)
		Expect(maxRecords).To(BeNumerically("<=", 1), "records of the pod")

		deleteAll(ctx, []*corev1.Pod{pod})
		expectNoLeaks(ctx, before)
		left, err := os.ReadDir(counters)
		Expect(err).NotTo(HaveOccurred())
		Expect(left).To(BeEmpty(), "faulty's counts of refused DELs: sandboxes whose DEL never succeeded")
	}

	It("as the pod's default network (v1.multus-cni.io/default-network): allocations do not grow with kubelet's retries, none once the pod is deleted", func(ctx SpecContext) {
		retried(ctx, true)
	})
	It("as an extra network (k8s.v1.cni.cncf.io/networks): allocations do not grow with kubelet's retries, none once the pod is deleted", func(ctx SpecContext) {
		retried(ctx, false)
	})
})

var _ = Describe("the node conflist renamed away while the daemon runs", Serial, func() {
	It("is back within seconds, byte for byte, with a ConfigRestored event", func(ctx SpecContext) {
		want, err := os.ReadFile(cluster.PlexusConflist)
		Expect(err).NotTo(HaveOccurred())
		// Out of the conf dir, under a name no runtime reads.
		moved := filepath.Join(os.TempDir(), fmt.Sprintf("plexus-e2e-%d-00-plexus", os.Getpid()))
		DeferCleanup(func() {
			// Put it back if plexus did not, for the specs that follow.
			if _, err := os.Stat(cluster.PlexusConflist); errors.Is(err, fs.ErrNotExist) {
				Expect(os.Rename(moved, cluster.PlexusConflist)).To(Succeed())
			}
			Expect(os.RemoveAll(moved)).To(Succeed())
		})

		renamed := time.Now()
		Expect(os.Rename(cluster.PlexusConflist, moved)).To(Succeed())
		Eventually(func() ([]byte, error) { return os.ReadFile(cluster.PlexusConflist) }).
			WithContext(ctx).WithTimeout(30*time.Second).WithPolling(50*time.Millisecond).
			Should(Equal(want), "%s restored as it was", cluster.PlexusConflist)
		AddReportEntry("conflist restored after", time.Since(renamed).Round(10*time.Millisecond).String())

		e := waitEventWithReason(ctx, "NodeNetworkStatus", "", cluster.NodeName, "ConfigRestored", renamed)
		Expect(e.Type).To(Equal(corev1.EventTypeWarning))
		Expect(e.Message).To(ContainSubstring(cluster.PlexusConflist), "the event names the node's file")
		By("the event: " + e.Message)
		// ConfigWritten stays True; its reason and transition time say the
		// file came back.
		Eventually(func(g Gomega) {
			nns := &v1alpha1.NodeNetworkStatus{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
			written := meta.FindStatusCondition(nns.Status.Conditions, "ConfigWritten")
			g.Expect(written).NotTo(BeNil())
			g.Expect(written.Status).To(BeEquivalentTo("True"))
			g.Expect(written.Reason).To(Equal("Restored"), "ConfigWritten: %+v", written)
			g.Expect(written.LastTransitionTime.Time).To(BeTemporally(">=", renamed.Truncate(time.Second)),
				"ConfigWritten did not change with the restore: %+v", written)
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	})
})

// waitEventWithReason waits for an event with this reason about the object
// (kind, namespace — "" for a cluster-scoped one, whose events may be in
// any namespace — and name), last seen at or after since, and returns it.
func waitEventWithReason(ctx context.Context, kind, namespace, name, reason string, since time.Time) corev1.Event {
	var found *corev1.Event
	Eventually(func(g Gomega) {
		list := &corev1.EventList{}
		var opts []client.ListOption
		if namespace != "" {
			opts = append(opts, client.InNamespace(namespace))
		}
		g.Expect(k8s.List(ctx, list, opts...)).To(Succeed())
		var seen []string
		for i, e := range list.Items {
			o := e.InvolvedObject
			if o.Kind != kind || o.Name != name || (namespace != "" && o.Namespace != namespace) {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s %s (%s): %s", e.Type, e.Reason, eventTime(&e).Format(time.RFC3339), e.Message))
			if e.Reason == reason && !eventTime(&e).Before(since.Truncate(time.Second)) {
				found = &list.Items[i]
				return
			}
		}
		g.Expect(found).NotTo(BeNil(), "no %s event of %s %s since %s; its events:\n%s",
			reason, kind, name, since.Format(time.RFC3339), strings.Join(seen, "\n"))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	return *found
}

// eventTime is when an event was last seen, whichever API wrote it.
func eventTime(e *corev1.Event) time.Time {
	t := e.CreationTimestamp.Time
	for _, u := range []time.Time{e.FirstTimestamp.Time, e.LastTimestamp.Time, e.EventTime.Time} {
		if u.After(t) {
			t = u
		}
	}
	if e.Series != nil && e.Series.LastObservedTime.After(t) {
		t = e.Series.LastObservedTime.Time
	}
	return t
}

// sandboxFailures counts the pod's failed sandbox creations kubelet
// reported (an event counts each repetition).
func sandboxFailures(ctx context.Context, pod *corev1.Pod) int {
	list := &corev1.EventList{}
	Expect(k8s.List(ctx, list, client.InNamespace(pod.Namespace))).To(Succeed())
	n := 0
	for _, e := range list.Items {
		if e.InvolvedObject.Name == pod.Name && e.Reason == "FailedCreatePodSandBox" {
			n += int(max(e.Count, 1))
		}
	}
	return n
}

// cleanHostLocalAfter, called before newNamespace so that it runs once
// the namespace's pods are gone, removes every host-local folder and
// allocation that appeared after the call: the spec's networks' folders,
// and any leak the spec has failed on already, which the specs that
// follow must not fail on too. It first waits for the runtime to drop
// every sandbox holding such an allocation: the API server forgets a pod
// before its sandbox is torn down.
func cleanHostLocalAfter() {
	held := allocations()
	dirs := map[string]bool{}
	// On a fresh node no pod has had an address yet: no dir at all.
	entries, err := os.ReadDir(cluster.HostLocalDir)
	if !os.IsNotExist(err) {
		Expect(err).NotTo(HaveOccurred())
	}
	for _, e := range entries {
		dirs[e.Name()] = true
	}
	DeferCleanup(func(ctx SpecContext) {
		var leaked []string
		Eventually(func(g Gomega) {
			sandboxes := runtimeSandboxes(ctx)
			// The webhook's pods of a reinstalled plexus are new, and live.
			webhook := webhookHeld(ctx)
			leaked = nil
			for alloc, holder := range allocations() {
				if held[alloc] == holder || webhook.holds(holder) {
					continue
				}
				id, _, _ := strings.Cut(holder, " ")
				g.Expect(sandboxes).NotTo(HaveKey(id), "%s is held by a sandbox the runtime still has", alloc)
				leaked = append(leaked, alloc)
			}
		}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(time.Second).Should(Succeed())
		for _, a := range leaked {
			Expect(os.RemoveAll(filepath.Join(cluster.HostLocalDir, a))).To(Succeed())
		}
		entries, err := os.ReadDir(cluster.HostLocalDir)
		if !os.IsNotExist(err) {
			Expect(err).NotTo(HaveOccurred())
		}
		for _, e := range entries {
			if !dirs[e.Name()] {
				Expect(os.RemoveAll(filepath.Join(cluster.HostLocalDir, e.Name()))).To(Succeed())
			}
		}
	})
}

// runtimeSandboxes lists the ids of the pod sandboxes containerd holds,
// running or stopped but not yet removed.
func runtimeSandboxes(ctx context.Context) map[string]bool {
	out, err := exec.CommandContext(ctx, "ctr", "--address", cluster.ContainerdSocket, "-n", "k8s.io",
		"containers", "ls", "-q", `labels."io.cri-containerd.kind"==sandbox`).CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	ids := map[string]bool{}
	for _, id := range strings.Fields(string(out)) {
		ids[id] = true
	}
	return ids
}
