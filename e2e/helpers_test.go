package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Helpers shared by the specs of selection_test.go, teardown_test.go and
// defaultnet_test.go.

// netName is the CNI network name (hence host-local's folder) the specs
// give the definition name of namespace ns; removeHostLocalDirs deletes
// those folders once the spec is done.
func netName(ns, name string) string { return ns + "-" + name }

// removeHostLocalDirs removes host-local's folders of the networks when the
// spec ends; registered before newNamespace, it runs after the namespace
// and its pods are gone.
func removeHostLocalDirs(networks ...string) {
	DeferCleanup(func() {
		for _, n := range networks {
			Expect(os.RemoveAll(filepath.Join(cluster.HostLocalDir, n))).To(Succeed())
		}
	})
}

// macvlanNAD is a macvlan definition on one of the harness's veths with
// host-local addresses from subnet; extra is more JSON fields, "" for none.
func macvlanNAD(ctx context.Context, ns, name, master, subnet, extra string) string {
	network := netName(ns, name)
	if extra != "" {
		extra = ", " + extra
	}
	createNAD(ctx, ns, name, fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
		"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": %q}%s}`,
		network, master, subnet, extra))
	return network
}

// podOnOneNetwork makes a namespace with one macvlan definition, net, on
// master with host-local addresses from subnet, and a Running pod asking
// for it; it returns the namespace, the CNI network's name and the pod.
func podOnOneNetwork(ctx context.Context, net, master, subnet, podName string) (string, string, *corev1.Pod) {
	ns := newNamespace(ctx)
	network := netName(ns, net)
	removeHostLocalDirs(network)
	macvlanNAD(ctx, ns, net, master, subnet, "")
	pod := busyboxPod(ns, podName, net)
	Expect(k8s.Create(ctx, pod)).To(Succeed())
	return ns, network, waitRunning(ctx, pod)
}

// networkStatus waits for pod's network-status annotation and returns it.
func networkStatus(ctx context.Context, pod *corev1.Pod) []nadv1.NetworkStatus {
	var status []nadv1.NetworkStatus
	Eventually(func(g Gomega) {
		got := &corev1.Pod{}
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		raw := got.Annotations[nadv1.NetworkStatusAnnot]
		g.Expect(raw).NotTo(BeEmpty(), "no %s yet", nadv1.NetworkStatusAnnot)
		g.Expect(json.Unmarshal([]byte(raw), &status)).To(Succeed())
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	return status
}

// statusByInterface finds the status entry of interface ifname.
func statusByInterface(status []nadv1.NetworkStatus, ifname string) *nadv1.NetworkStatus {
	for i := range status {
		if status[i].Interface == ifname {
			return &status[i]
		}
	}
	return nil
}

// podExec runs a command in pod's container and returns its stdout.
func podExec(ctx context.Context, pod *corev1.Pod, args ...string) string {
	out, err := kubectl(ctx, append([]string{"exec", "-n", pod.Namespace, pod.Name, "--"}, args...)...)
	Expect(err).NotTo(HaveOccurred())
	return out
}

// waitGone waits until pod is no longer in the API.
func waitGone(ctx context.Context, pod *corev1.Pod, timeout time.Duration) {
	Eventually(func() bool {
		return apierrors.IsNotFound(k8s.Get(ctx, client.ObjectKeyFromObject(pod), &corev1.Pod{}))
	}).WithContext(ctx).WithTimeout(timeout).Should(BeTrue(), "pod %s/%s not gone", pod.Namespace, pod.Name)
}

// waitEvent waits for an event of pod whose message holds every one of
// the substrings, and returns its reason and message.
func waitEvent(ctx context.Context, pod *corev1.Pod, substrings ...string) string {
	var found string
	Eventually(func(g Gomega) {
		list := &corev1.EventList{}
		g.Expect(k8s.List(ctx, list, client.InNamespace(pod.Namespace))).To(Succeed())
	events:
		for _, e := range list.Items {
			if e.InvolvedObject.Name != pod.Name {
				continue
			}
			for _, s := range substrings {
				if !strings.Contains(e.Message, s) {
					continue events
				}
			}
			found = e.Reason + ": " + e.Message
			return
		}
		g.Expect(found).NotTo(BeEmpty(), "no event of %s/%s holds %q:%s", pod.Namespace, pod.Name, substrings, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	return found
}

// phaseOf is pod's phase now.
func phaseOf(ctx context.Context, pod *corev1.Pod) corev1.PodPhase {
	got := &corev1.Pod{}
	Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
	return got.Status.Phase
}

// allRecords lists every attachment record on the node.
func allRecords() []string {
	files, err := filepath.Glob(filepath.Join(cluster.PlexusRecordsDir, "*.json"))
	Expect(err).NotTo(HaveOccurred())
	return files
}

// orphanResults lists results files (beside a record, one per sandbox)
// whose record is gone: a teardown that removed half of what it held.
func orphanResults() []string {
	files, err := filepath.Glob(filepath.Join(cluster.PlexusRecordsDir, "*.results"))
	Expect(err).NotTo(HaveOccurred())
	var orphans []string
	for _, f := range files {
		if _, err := os.Stat(strings.TrimSuffix(f, ".results") + ".json"); os.IsNotExist(err) {
			orphans = append(orphans, f)
		}
	}
	return orphans
}

// allocations lists every host-local allocation on the node, in every
// network's folder, the default network's included: "network/address" ->
// its holder, "containerID ifname" (host-local writes the sandbox's id and
// the interface into each address's file).
func allocations() map[string]string {
	held := map[string]string{}
	dirs, _ := os.ReadDir(cluster.HostLocalDir)
	for _, d := range dirs {
		files, _ := os.ReadDir(filepath.Join(cluster.HostLocalDir, d.Name()))
		for _, f := range files {
			if net.ParseIP(f.Name()) == nil {
				continue // host-local's lock and last_reserved_ip files
			}
			b, err := os.ReadFile(filepath.Join(cluster.HostLocalDir, d.Name(), f.Name()))
			if err != nil {
				continue // released meanwhile
			}
			held[d.Name()+"/"+f.Name()] = strings.Join(strings.Fields(string(b)), " ")
		}
	}
	return held
}

// heldBy lists host-local allocations, in every network, whose holder is
// one of the container (sandbox) ids.
func heldBy(ids map[string]bool) []string {
	var held []string
	for alloc, holder := range allocations() {
		if id, _, _ := strings.Cut(holder, " "); ids[id] {
			held = append(held, alloc)
		}
	}
	sort.Strings(held)
	return held
}

// cachedResults lists the CNI result caches' files on the node, the
// runtime's and plexus's (one per sandbox, network and interface, removed
// by the DEL that undoes that ADD).
func cachedResults() []string {
	var files []string
	for _, dir := range []string{cluster.RuntimeResultsDir, cluster.PlexusResultsDir} {
		entries, err := os.ReadDir(dir)
		if err != nil && !os.IsNotExist(err) {
			Fail(err.Error())
		}
		for _, e := range entries {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	return files
}

// nodeState is what the node holds that a sandbox could leak.
type nodeState struct {
	// Allocations are every host-local allocation, in every network.
	Allocations map[string]string
	// Records are plexus's attachment records; Cached the CNI result
	// caches' files; Links the node's links (less the default bridge).
	Records, Cached, Links []string
}

// nodeNow is the node's state now.
func nodeNow() nodeState {
	return nodeState{Allocations: allocations(), Records: allRecords(), Cached: cachedResults(), Links: nodeLinks()}
}

// newAllocations lists the allocations of now that before did not hold
// (or held for another sandbox), with their holders.
func newAllocations(before, now map[string]string) []string {
	var added []string
	for alloc, holder := range now {
		if before[alloc] != holder {
			added = append(added, alloc+" ("+holder+")")
		}
	}
	sort.Strings(added)
	return added
}

// sandboxIDs lists the container ids that plexus's records name for the
// pod with this UID: the sandboxes host-local knows the pod's addresses by.
func sandboxIDs(uid string, into map[string]bool) {
	for _, f := range recordsOf(uid) {
		var rec map[string]any
		b, err := os.ReadFile(f)
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(b, &rec)).To(Succeed())
		for _, key := range []string{"containerID", "containerId", "ContainerID"} {
			if id, ok := rec[key].(string); ok && id != "" {
				into[id] = true
			}
		}
		// Records are named after the sandbox when no field says it.
		into[strings.TrimSuffix(filepath.Base(f), ".json")] = true
	}
}

// nodeLinks lists the node's links by name and type, less the default
// network's bridge, which appears with the node's first pod on that
// network and stays as long as the cluster.
func nodeLinks() []string {
	// The kernel interrupts a dump when links change under it (a pod's
	// veth going with its netns): dump again.
	var links []netlink.Link
	Eventually(func() error {
		var err error
		links, err = netlink.LinkList()
		return err
	}).WithTimeout(10 * time.Second).WithPolling(100 * time.Millisecond).Should(Succeed())
	var out []string
	for _, l := range links {
		// The default network's bridge appears with the node's first pod
		// on it, which may be a spec's own, and stays.
		if l.Attrs().Name == cluster.DefaultBridge {
			continue
		}
		out = append(out, l.Attrs().Name+" "+l.Type())
	}
	sort.Strings(out)
	return out
}

// stateDir is the running cluster's state dir (make e2e's default).
func stateDir() string {
	if d := os.Getenv("PLEXUS_E2E_STATE_DIR"); d != "" {
		return d
	}
	// The kubeconfig is <state>/kubeconfig/admin.kubeconfig.
	return filepath.Dir(filepath.Dir(kubeconfig))
}

// componentPid is the pid the harness recorded for a component
// (run/<name>.pid: "pid executable"), checked to still run it.
func componentPid(name string) int {
	b, err := os.ReadFile(filepath.Join(stateDir(), "run", name+".pid"))
	Expect(err).NotTo(HaveOccurred())
	f := strings.Fields(string(b))
	Expect(f).To(HaveLen(2))
	pid, err := strconv.Atoi(f[0])
	Expect(err).NotTo(HaveOccurred())
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	Expect(err).NotTo(HaveOccurred())
	Expect(strings.TrimSuffix(exe, " (deleted)")).To(Equal(f[1]))
	return pid
}

// signal sends sig to pid.
func signal(pid int, sig syscall.Signal) {
	Expect(syscall.Kill(pid, sig)).To(Succeed(), "kill -%d %d", sig, pid)
}

// daemonPid is the host pid of the plexus daemon's container, from
// containerd's task list.
func daemonPid(ctx context.Context) int {
	var id string
	for _, cs := range daemonPod(Default, ctx).Status.ContainerStatuses {
		if cs.Name == "plexus" {
			id = strings.TrimPrefix(cs.ContainerID, "containerd://")
		}
	}
	Expect(id).NotTo(BeEmpty())
	out, err := exec.CommandContext(ctx, "ctr", "--address", cluster.ContainerdSocket, "-n", "k8s.io", "tasks", "ls").CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), string(out))
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) >= 3 && f[0] == id && f[2] == "RUNNING" {
			pid, err := strconv.Atoi(f[1])
			Expect(err).NotTo(HaveOccurred())
			return pid
		}
	}
	Fail("no running task for the daemon's container " + id + ":\n" + string(out))
	return 0
}

// daemonPod is the plexus daemon's pod, asserted through g to be the only
// one.
func daemonPod(g Gomega, ctx context.Context) *corev1.Pod {
	pods := &corev1.PodList{}
	g.Expect(k8s.List(ctx, pods, client.InNamespace(cluster.PlexusNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": "plexus", "app.kubernetes.io/component": "node-daemon"})).To(Succeed())
	g.Expect(pods.Items).To(HaveLen(1))
	return &pods.Items[0]
}

// podReady reports the pod's Ready condition.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// waitDaemonReady waits until the daemon's pod is Ready again.
func waitDaemonReady(ctx context.Context) {
	Eventually(func(g Gomega) {
		g.Expect(podReady(daemonPod(g, ctx))).To(BeTrue(), "daemon pod not Ready")
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
}

// settled waits until the node is quiet: the default network holds exactly
// the addresses of the pods that exist, plexus holds one record per such
// pod that it attached (those with a network-status: a pod whose sandbox
// was made before plexus's conflist was in place, as the webhook's pods
// can be when the chart starts them beside the daemon, has the default
// network alone and no record), and the node's links did not change for a
// second. Pods of an
// earlier spec may still be in their CNI DEL when their namespace is gone
// (the API server drops a pod once its containers stopped, the sandbox
// goes after): snapshots for a leak check are taken only after this. It
// returns the node's state then, for expectNoLeaks.
func settled(ctx context.Context) nodeState {
	var state nodeState
	Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods)).To(Succeed())
		var ips []string
		n := 0
		for _, p := range pods.Items {
			if p.Spec.HostNetwork || p.Status.PodIP == "" ||
				p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
				continue
			}
			if p.Annotations[nadv1.NetworkStatusAnnot] != "" {
				n++
			}
			ips = append(ips, p.Status.PodIP)
		}
		g.Expect(heldAddresses(cluster.DefaultNetwork)).To(ConsistOf(ips), "default network allocations vs pods")
		g.Expect(allRecords()).To(HaveLen(n), "records vs pods plexus attached")
		state = nodeNow()
		time.Sleep(time.Second)
		g.Expect(nodeNow()).To(Equal(state), "the node's state still changing")
	}).WithContext(ctx).WithTimeout(time.Minute).WithPolling(time.Second).Should(Succeed())
	return state
}

// expectNoLeaks waits until the node holds nothing that it did not hold
// before (settled's state): no host-local allocation in any network, the
// default network's included, whatever path the spec's sandboxes took
// (never attached through plexus, failed ADDs retried by kubelet, torn
// down by the sweep); no record, cached result or link; no results file
// without its record.
func expectNoLeaks(ctx context.Context, before nodeState) {
	Eventually(func(g Gomega) {
		now := webhookHeld(ctx).without(nodeNow())
		g.Expect(newAllocations(before.Allocations, now.Allocations)).To(BeEmpty(), "host-local allocations left, in any network")
		g.Expect(added(before.Records, now.Records)).To(BeEmpty(), "records left in %s", cluster.PlexusRecordsDir)
		g.Expect(orphanResults()).To(BeEmpty(), "results files without their record")
		g.Expect(added(before.Cached, now.Cached)).To(BeEmpty(), "cached CNI results left")
		g.Expect(added(before.Links, now.Links)).To(BeEmpty(), "links left on the node")
	}).WithContext(ctx).WithTimeout(45 * time.Second).WithPolling(time.Second).Should(Succeed())
}

// heldBySandboxes is what the node holds for some live sandboxes: their
// container ids and UIDs, and the host-side links their results name.
type heldBySandboxes struct{ ids, uids, links map[string]bool }

// webhookHeld is what the node holds for the admission webhook's pods now.
// A spec that reinstalls plexus gets new webhook pods, with addresses,
// records, cached results and veths of their own that are no leak of the
// spec's.
func webhookHeld(ctx context.Context) heldBySandboxes {
	h := heldBySandboxes{ids: map[string]bool{}, uids: map[string]bool{}, links: map[string]bool{}}
	pods := &corev1.PodList{}
	Expect(k8s.List(ctx, pods, client.InNamespace(cluster.PlexusNamespace),
		client.MatchingLabels{"app.kubernetes.io/name": "plexus", "app.kubernetes.io/component": "webhook"})).To(Succeed())
	ips := map[string]bool{}
	for _, p := range pods.Items {
		h.uids[string(p.UID)] = true
		if p.Status.PodIP != "" {
			ips[p.Status.PodIP] = true
		}
	}
	for alloc, holder := range allocations() {
		network, ip, _ := strings.Cut(alloc, "/")
		if network == cluster.DefaultNetwork && ips[ip] {
			id, _, _ := strings.Cut(holder, " ")
			h.ids[id] = true
		}
	}
	for _, f := range cachedResults() {
		if !h.holds(f) {
			continue
		}
		var cached struct {
			Result struct {
				Interfaces []struct{ Name, Sandbox string }
			}
		}
		if b, err := os.ReadFile(f); err == nil && json.Unmarshal(b, &cached) == nil {
			for _, i := range cached.Result.Interfaces {
				if i.Sandbox == "" && i.Name != cluster.DefaultBridge {
					h.links[i.Name] = true
				}
			}
		}
	}
	return h
}

// holds reports whether s (a file name, a record's content, an
// allocation's holder) names one of the sandboxes or pods.
func (h heldBySandboxes) holds(s string) bool {
	for id := range h.ids {
		if strings.Contains(s, id) {
			return true
		}
	}
	for uid := range h.uids {
		if strings.Contains(s, uid) {
			return true
		}
	}
	return false
}

// without is state less what h holds.
func (h heldBySandboxes) without(state nodeState) nodeState {
	out := nodeState{Allocations: map[string]string{}}
	for alloc, holder := range state.Allocations {
		if !h.holds(holder) {
			out.Allocations[alloc] = holder
		}
	}
	for _, r := range state.Records {
		b, _ := os.ReadFile(r)
		if !h.holds(r) && !h.holds(string(b)) {
			out.Records = append(out.Records, r)
		}
	}
	for _, c := range state.Cached {
		if !h.holds(c) {
			out.Cached = append(out.Cached, c)
		}
	}
	for _, l := range state.Links {
		if name, _, _ := strings.Cut(l, " "); !h.links[name] {
			out.Links = append(out.Links, l)
		}
	}
	return out
}

// added lists the elements of now that before does not hold.
func added(before, now []string) []string {
	var out []string
	for _, s := range now {
		if !slices.Contains(before, s) {
			out = append(out, s)
		}
	}
	return out
}
