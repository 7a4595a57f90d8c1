package e2e

import (
	"context"
	"fmt"
	"math/big"
	"net"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue 13: whereabouts, the cluster-wide IPAM, keeps its allocations in
// the cluster (IPPool custom resources) and reads its kubeconfig from the
// node (/etc/cni/net.d/whereabouts.d, which e2e/cluster writes as its
// installer would). A Deployment on a whereabouts network is scaled up and
// down three times, once with the daemon killed while the pods start.

// whereaboutsGroup is the API of whereabouts' custom resources.
var whereaboutsGroup = schema.GroupVersion{Group: "whereabouts.cni.cncf.io", Version: "v1alpha1"}

const (
	// whereaboutsReplicas pods share whereaboutsRange's 30 addresses.
	whereaboutsReplicas = 20
	whereaboutsRange    = "10.142.0.0/27"
	whereaboutsRounds   = 3
	// whereaboutsKillRound is the scale-up during which the daemon is
	// killed (counting from 0).
	whereaboutsKillRound = 1
)

var _ = Describe("a Deployment on a whereabouts network", Serial, func() {
	It("scaled 0 → 20 → 0 three times, the daemon killed once: unique addresses from the range, no allocation left", func(ctx SpecContext) {
		var ns string
		// Registered first, so it runs once the namespace is gone: the
		// cluster-scoped state whereabouts keeps for the spec's network,
		// should the spec fail before it is released.
		DeferCleanup(func(ctx SpecContext) { deleteWhereaboutsState(ctx, ns) })
		ns = newNamespace(ctx)
		network := netName(ns, "wb")
		pool := network + "-" + strings.NewReplacer("/", "-").Replace(whereaboutsRange)
		createNAD(ctx, ns, "wb", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "ipam": {"type": "whereabouts", "range": %q, "network_name": %q}}`,
			network, cluster.MacvlanMasters[1], whereaboutsRange, network))
		dep := whereaboutsDeployment(ns, "wb")
		Expect(k8s.Create(ctx, dep)).To(Succeed())
		before := settled(ctx)
		DeferCleanup(waitDaemonReady)

		for round := 0; round < whereaboutsRounds; round++ {
			start := time.Now()
			scale(ctx, dep, whereaboutsReplicas)
			var atKill []whereaboutsAllocation
			if round == whereaboutsKillRound {
				atKill = killDaemonMidWhereabouts(ctx, pool, whereaboutsReplicas/4)
			}
			pods := waitReplicasReady(ctx, ns, whereaboutsReplicas)
			addrs := whereaboutsAddresses(ctx, pods)
			Expect(addrs).To(HaveLen(whereaboutsReplicas), "pods' net1 addresses: %v", addrs)
			_, subnet, _ := net.ParseCIDR(whereaboutsRange)
			unique := map[string]string{}
			for podRef, ip := range addrs {
				Expect(subnet.Contains(net.ParseIP(ip))).To(BeTrue(), "%s has %s, not in %s", podRef, ip, whereaboutsRange)
				Expect(unique).NotTo(HaveKey(ip), "%s and %s both have %s", unique[ip], podRef, ip)
				unique[ip] = podRef
			}
			// The pool holds exactly the pods' addresses, each for its pod.
			held := poolAllocations(ctx, pool)
			Expect(byPodRef(held)).To(Equal(addrs), "IPPool %s/%s vs the pods' addresses", cluster.WhereaboutsNamespace, pool)
			killed := 0
			for _, a := range atKill {
				if !slices.ContainsFunc(held, func(h whereaboutsAllocation) bool { return h.ContainerID == a.ContainerID }) {
					killed++
				}
			}
			retried := 0
			for _, p := range pods {
				if strings.Contains(events(ctx, &p), "FailedCreatePodSandBox") {
					retried++
				}
			}
			up := time.Since(start).Round(time.Second)

			start = time.Now()
			scale(ctx, dep, 0)
			waitReplicasReady(ctx, ns, 0)
			Eventually(func(g Gomega) {
				g.Expect(poolAllocations(ctx, pool)).To(BeEmpty(), "allocations left in IPPool %s/%s", cluster.WhereaboutsNamespace, pool)
				g.Expect(reservationsOf(ctx, ns)).To(BeEmpty(), "OverlappingRangeIPReservations of the namespace's pods")
				g.Expect(recordsNaming(ns)).To(BeEmpty(), "plexus's records of the namespace's pods")
			}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
			report := fmt.Sprintf("round %d: %d pods Ready in %s with %s, %d retried by kubelet; none left %s after scaling to 0",
				round+1, len(pods), up, addressSpan(addrs), retried, time.Since(start).Round(time.Second))
			if round == whereaboutsKillRound {
				report += fmt.Sprintf("; the daemon was killed with %d allocation(s) made, %d of them by sandboxes that did not live on, released",
					len(atKill), killed)
			}
			AddReportEntry("whereabouts", report)
			By(report)
		}
		waitDaemonReady(ctx)
		Expect(poolAllocations(ctx, pool)).To(BeEmpty())
		expectNoLeaks(ctx, before)
	})
})

// whereaboutsDeployment is a Deployment of busybox pods asking for the
// network, with no replicas yet.
func whereaboutsDeployment(ns, network string) *appsv1.Deployment {
	pod := busyboxPod(ns, "", network)
	labels := map[string]string{"app": "whereabouts-e2e"}
	zero := int32(0)
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "wb"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &zero,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: pod.Annotations},
				Spec:       pod.Spec,
			},
		},
	}
}

// scale sets the Deployment's replicas.
func scale(ctx context.Context, dep *appsv1.Deployment, n int) {
	patch := client.RawPatch(types.MergePatchType, []byte(fmt.Sprintf(`{"spec":{"replicas":%d}}`, n)))
	Expect(k8s.Patch(ctx, dep.DeepCopy(), patch)).To(Succeed())
}

// waitReplicasReady waits until the Deployment's namespace has exactly n
// pods, none terminating, every one Ready, and returns them.
func waitReplicasReady(ctx context.Context, ns string, n int) []corev1.Pod {
	var pods []corev1.Pod
	Eventually(func(g Gomega) {
		list := &corev1.PodList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(ns), client.MatchingLabels{"app": "whereabouts-e2e"})).To(Succeed())
		pods = list.Items
		g.Expect(pods).To(HaveLen(n))
		for i := range pods {
			p := &pods[i]
			g.Expect(p.DeletionTimestamp).To(BeNil(), "pod %s terminating", p.Name)
			g.Expect(podReady(p)).To(BeTrue(), "pod %s not Ready (%s): %s", p.Name, p.Status.Phase, events(ctx, p))
		}
	}).WithContext(ctx).WithTimeout(5 * time.Minute).WithPolling(time.Second).Should(Succeed())
	return pods
}

// killDaemonMidWhereabouts SIGKILLs the daemon in the middle of the
// burst: once whereabouts allocated killAfter addresses in the pool, while
// it runs for at least two more ADDs (processes of the daemon's named
// whereabouts). whereabouts serializes its allocations with a Lease, so of
// the ADDs the kill ends, some wait for it and one may have allocated and
// not yet answered. It returns the pool's allocations right after.
func killDaemonMidWhereabouts(ctx context.Context, pool string, killAfter int) []whereaboutsAllocation {
	pid := daemonPid(ctx)
	var running []int
	Eventually(func(g Gomega) {
		obj := whereaboutsObject("IPPool")
		g.Expect(k8s.Get(ctx, client.ObjectKey{Namespace: cluster.WhereaboutsNamespace, Name: pool}, obj)).To(Succeed())
		allocations, _, _ := unstructured.NestedMap(obj.Object, "spec", "allocations")
		g.Expect(len(allocations)).To(BeNumerically(">=", killAfter), "allocations in the pool")
		running = descendantsNamed(pid, "whereabouts")
		g.Expect(len(running)).To(BeNumerically(">=", 2), "whereabouts processes of the daemon's")
	}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(5 * time.Millisecond).Should(Succeed())
	signal(pid, syscall.SIGKILL)
	held := poolAllocations(ctx, pool)
	By(fmt.Sprintf("daemon (pid %d) killed with %d whereabouts processes of its own running and %d allocation(s) in the pool",
		pid, len(running), len(held)))
	return held
}

// descendantsNamed lists the processes under pid whose command is name.
func descendantsNamed(pid int, name string) []int {
	type proc struct {
		ppid int
		comm string
	}
	procs := map[int]proc{}
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		n, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", n))
		if err != nil {
			continue
		}
		open, end := strings.IndexByte(string(b), '('), strings.LastIndexByte(string(b), ')')
		fields := strings.Fields(string(b[end+1:]))
		if open < 0 || end < open || len(fields) < 2 {
			continue
		}
		ppid, _ := strconv.Atoi(fields[1])
		procs[n] = proc{ppid: ppid, comm: string(b[open+1 : end])}
	}
	var out []int
	for n, p := range procs {
		if p.comm != name {
			continue
		}
		for up := p.ppid; up > 1; up = procs[up].ppid {
			if up == pid {
				out = append(out, n)
				break
			}
		}
	}
	return out
}

// recordsNaming lists plexus's attachment records that name namespace ns.
func recordsNaming(ns string) []string {
	var out []string
	for _, f := range allRecords() {
		if b, err := os.ReadFile(f); err == nil && strings.Contains(string(b), ns) {
			out = append(out, f)
		}
	}
	return out
}

// whereaboutsAddresses maps each pod ("namespace/name", whereabouts'
// podref) to its net1 address, from its network-status.
func whereaboutsAddresses(ctx context.Context, pods []corev1.Pod) map[string]string {
	addrs := map[string]string{}
	for i := range pods {
		s := statusByInterface(networkStatus(ctx, &pods[i]), "net1")
		Expect(s).NotTo(BeNil(), "pod %s has no net1 in its network-status", pods[i].Name)
		Expect(s.IPs).To(HaveLen(1))
		addrs[pods[i].Namespace+"/"+pods[i].Name] = s.IPs[0]
	}
	return addrs
}

// whereaboutsAllocation is one address an IPPool holds.
type whereaboutsAllocation struct {
	IP, ContainerID, PodRef string
}

// poolAllocations reads the IPPool's spec.allocations: whereabouts keys
// each by its offset from the start of the range.
func poolAllocations(ctx context.Context, name string) []whereaboutsAllocation {
	pool := whereaboutsObject("IPPool")
	err := k8s.Get(ctx, client.ObjectKey{Namespace: cluster.WhereaboutsNamespace, Name: name}, pool)
	Expect(err).NotTo(HaveOccurred(), "IPPool %s/%s", cluster.WhereaboutsNamespace, name)
	rng, _, err := unstructured.NestedString(pool.Object, "spec", "range")
	Expect(err).NotTo(HaveOccurred())
	Expect(rng).To(Equal(whereaboutsRange))
	allocations, _, err := unstructured.NestedMap(pool.Object, "spec", "allocations")
	Expect(err).NotTo(HaveOccurred())
	first, _, err := net.ParseCIDR(rng)
	Expect(err).NotTo(HaveOccurred())
	var out []whereaboutsAllocation
	for offset, a := range allocations {
		n, ok := new(big.Int).SetString(offset, 10)
		Expect(ok).To(BeTrue(), "allocation offset %q", offset)
		ip := net.IP(new(big.Int).Add(new(big.Int).SetBytes(first.To4()), n).FillBytes(make([]byte, 4)))
		fields, _ := a.(map[string]any)
		id, _, _ := unstructured.NestedString(fields, "id")
		podRef, _, _ := unstructured.NestedString(fields, "podref")
		out = append(out, whereaboutsAllocation{IP: ip.String(), ContainerID: id, PodRef: podRef})
	}
	return out
}

// byPodRef maps the allocations' pods to their addresses.
func byPodRef(allocations []whereaboutsAllocation) map[string]string {
	out := map[string]string{}
	for _, a := range allocations {
		Expect(out).NotTo(HaveKey(a.PodRef), "two allocations for %s", a.PodRef)
		out[a.PodRef] = a.IP
	}
	return out
}

// reservationsOf lists the OverlappingRangeIPReservations (one per
// address, named after it) that whereabouts holds for pods of ns.
func reservationsOf(ctx context.Context, ns string) []string {
	var out []string
	for _, r := range reservations(ctx, ns) {
		podRef, _, _ := unstructured.NestedString(r.Object, "spec", "podref")
		out = append(out, r.GetName()+" ("+podRef+")")
	}
	return out
}

func reservations(ctx context.Context, ns string) []unstructured.Unstructured {
	list := whereaboutsList("OverlappingRangeIPReservationList")
	Expect(k8s.List(ctx, list, client.InNamespace(cluster.WhereaboutsNamespace))).To(Succeed())
	var out []unstructured.Unstructured
	for _, r := range list.Items {
		if podRef, _, _ := unstructured.NestedString(r.Object, "spec", "podref"); strings.HasPrefix(podRef, ns+"/") {
			out = append(out, r)
		}
	}
	return out
}

// deleteWhereaboutsState deletes the spec's IPPools (named after its
// network, hence its namespace) and the reservations of its pods.
func deleteWhereaboutsState(ctx context.Context, ns string) {
	if ns == "" {
		return
	}
	for _, r := range reservations(ctx, ns) {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, &r))).To(Succeed())
	}
	pools := whereaboutsList("IPPoolList")
	Expect(k8s.List(ctx, pools, client.InNamespace(cluster.WhereaboutsNamespace))).To(Succeed())
	for i := range pools.Items {
		if strings.HasPrefix(pools.Items[i].GetName(), ns+"-") {
			Expect(client.IgnoreNotFound(k8s.Delete(ctx, &pools.Items[i]))).To(Succeed())
		}
	}
}

// whereaboutsObject is an empty object of whereabouts' API of this kind.
func whereaboutsObject(kind string) *unstructured.Unstructured {
	u := &unstructured.Unstructured{}
	u.SetGroupVersionKind(whereaboutsGroup.WithKind(kind))
	return u
}

// whereaboutsList is an empty list of whereabouts' API of this kind.
func whereaboutsList(kind string) *unstructured.UnstructuredList {
	u := &unstructured.UnstructuredList{}
	u.SetGroupVersionKind(whereaboutsGroup.WithKind(kind))
	return u
}

// addressSpan describes a set of addresses: how many, lowest to highest.
func addressSpan(addrs map[string]string) string {
	var ips []net.IP
	for _, a := range addrs {
		ips = append(ips, net.ParseIP(a).To4())
	}
	if len(ips) == 0 {
		return "no address"
	}
	sort.Slice(ips, func(i, j int) bool { return string(ips[i]) < string(ips[j]) })
	return fmt.Sprintf("%d unique addresses %s-%s", len(ips), ips[0], ips[len(ips)-1])
}
