package e2e

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Environment of the Helm specs; `make e2e` sets both. The cluster was
// installed with `helm upgrade --install` of the chart and these values.
const (
	envHelm       = "PLEXUS_E2E_HELM"
	envHelmValues = "PLEXUS_E2E_HELM_VALUES"
	// chartDir is the chart, from the suite's directory.
	chartDir = "../charts/plexus"
)

// The release's life on the real node: upgrade with a changed value,
// uninstall, install again. Serial, and the cluster is left installed with
// the harness's values whatever happens, so the other specs find plexus
// as they expect it.
// helm runs the suite's helm against the cluster and returns its output.
func helm(ctx context.Context, args ...string) string {
	bin := os.Getenv(envHelm)
	Expect(bin).NotTo(BeEmpty(), "%s is not set (make e2e sets it)", envHelm)
	cmd := exec.CommandContext(ctx, bin, append(args, "--kubeconfig", kubeconfig)...)
	out, err := cmd.CombinedOutput()
	Expect(err).NotTo(HaveOccurred(), "helm %s:\n%s", strings.Join(args, " "), out)
	return string(out)
}

// install installs or upgrades the release with the values the cluster
// was installed with, and more arguments (--set ...).
func install(ctx context.Context, more ...string) {
	values := os.Getenv(envHelmValues)
	Expect(values).To(BeAnExistingFile(), "%s: the values the cluster was installed with", envHelmValues)
	helm(ctx, append([]string{"upgrade", "--install", cluster.Release, chartDir,
		"--namespace", cluster.PlexusNamespace, "--values", values}, more...)...)
}

// uninstall uninstalls the release and waits until its daemon pods are
// gone.
func uninstall(ctx context.Context) {
	helm(ctx, "uninstall", cluster.Release, "--namespace", cluster.PlexusNamespace)
	Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods, client.InNamespace(cluster.PlexusNamespace), client.MatchingLabels{"app.kubernetes.io/name": "plexus"})).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty(), "daemon pods left")
	}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
}

// uninstallFromNode uninstalls plexus and waits until the node is as
// before it: no node conflist, so the runtime calls the default network
// alone.
func uninstallFromNode(ctx context.Context) {
	uninstall(ctx)
	Eventually(func() bool {
		_, err := os.Stat(cluster.PlexusConflist)
		return errors.Is(err, fs.ErrNotExist)
	}).WithContext(ctx).WithTimeout(30*time.Second).Should(BeTrue(), "%s still there after uninstall", cluster.PlexusConflist)
}

// reinstallAfter leaves the cluster installed with the harness's values
// when the spec or container ends, whatever happened, so the other specs
// find plexus as they expect it.
func reinstallAfter() {
	Expect(os.Getenv(envHelm)).NotTo(BeEmpty(), "%s is not set (make e2e sets it)", envHelm)
	Expect(os.Getenv(envHelmValues)).To(BeAnExistingFile(), "%s: the values the cluster was installed with", envHelmValues)
	DeferCleanup(func(ctx SpecContext) {
		install(ctx)
		rolledOut(ctx)
		waitNodeConfigured(ctx, time.Time{})
	})
}

var _ = Describe("plexus's Helm release", Ordered, Serial, func() {
	// left is a pod deleted while plexus was not installed; leftNet its
	// extra network, whose address only plexus's sweep can release.
	var left *corev1.Pod
	var leftNet string

	BeforeAll(reinstallAfter)

	It("upgrades with a changed value: the daemon rolls, running pods keep their networks, new pods attach", func(ctx SpecContext) {
		// Registered first, so it is removed once the namespace's pods are gone.
		dataDir := filepath.Join(freshNodeDir("/var/lib"), "ipam")
		ns := newNamespace(ctx)
		mv1, mv2 := netName(ns, "mv1"), netName(ns, "mv2")
		removeHostLocalDirs(mv1, mv2)
		macvlanNAD(ctx, ns, "mv1", cluster.MacvlanMasters[0], "10.111.0.0/24", "")
		macvlanNAD(ctx, ns, "mv2", cluster.MacvlanMasters[1], "10.112.0.0/24", "")

		before := busyboxPod(ns, "before", "mv1,mv2")
		Expect(k8s.Create(ctx, before)).To(Succeed())
		before = waitRunning(ctx, before)
		statusBefore := networkStatus(ctx, before)
		Expect(statusBefore).To(HaveLen(3))
		addrsBefore := podAddresses(podExec(ctx, before, "ip", "-o", "-4", "addr"))
		Expect(addrsBefore).To(HaveKey("net1"))
		Expect(addrsBefore).To(HaveKey("net2"))
		oldDaemon := daemonPod(Default, ctx)

		// A network whose IPAM keeps its state in a folder of the node that
		// the daemon mounts nothing for: the new daemon's delegates run in
		// the node's root, so it lands on the node.
		outside := netName(ns, "outside")
		createNAD(ctx, ns, "outside", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": %q, "type": "macvlan",
			"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.116.0.0/24", "dataDir": %q}}`,
			outside, cluster.MacvlanMasters[0], dataDir))

		start := time.Now()
		install(ctx, "--set", "logLevel=debug")
		rolledOut(ctx)
		newDaemon := waitNewDaemon(ctx, oldDaemon.UID)
		AddReportEntry("helm upgrade to the new daemon Ready", time.Since(start).Round(100*time.Millisecond).String())

		// The setting reached the daemon: at debug it logs how it found
		// its DaemonSet, which it does not at info.
		cm, err := kubectl(ctx, "get", "configmap", "-n", cluster.PlexusNamespace, cluster.Release+"-config", "-o", `jsonpath={.data.config\.yaml}`)
		Expect(err).NotTo(HaveOccurred())
		Expect(cm).To(ContainSubstring(`zap-log-level: "debug"`))
		Eventually(func() (string, error) {
			return kubectl(ctx, "logs", "-n", cluster.PlexusNamespace, newDaemon.Name)
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(And(ContainSubstring(`"level":"debug"`), ContainSubstring("Owner found")))
		oldLogs, err := kubectl(ctx, "logs", "-n", cluster.PlexusNamespace, newDaemon.Name, "--previous")
		Expect(err).To(HaveOccurred(), "a new pod has no previous container: %s", oldLogs)

		// The webhook kept its certificate and CA across the upgrade (the
		// chart's empty Secret and caBundle-less configuration do not
		// overwrite what it wrote) and serves again once rolled.
		waitWebhookServing(ctx)

		// The pod from before the upgrade kept its interfaces and status.
		got := &corev1.Pod{}
		Expect(k8s.Get(ctx, client.ObjectKeyFromObject(before), got)).To(Succeed())
		Expect(got.UID).To(Equal(before.UID))
		Expect(got.Status.Phase).To(Equal(corev1.PodRunning))
		Expect(podAddresses(podExec(ctx, before, "ip", "-o", "-4", "addr"))).To(Equal(addrsBefore))
		Expect(networkStatus(ctx, before)).To(Equal(statusBefore))

		// And the new daemon attaches new pods, the folder's network too.
		after := busyboxPod(ns, "after", "mv1,mv2,outside")
		Expect(k8s.Create(ctx, after)).To(Succeed())
		after = waitRunning(ctx, after)
		status := networkStatus(ctx, after)
		Expect(status).To(HaveLen(4))
		Expect(statusByInterface(status, "net1").Name).To(Equal(ns + "/mv1"))
		Expect(statusByInterface(status, "net2").Name).To(Equal(ns + "/mv2"))
		Expect(statusByInterface(status, "net3").Name).To(Equal(ns + "/outside"))
		Expect(statusByInterface(status, "net3").IPs).To(HaveLen(1))
		held, err := os.ReadFile(filepath.Join(dataDir, outside, statusByInterface(status, "net3").IPs[0]))
		Expect(err).NotTo(HaveOccurred(), "host-local's allocation is not on the node")
		sandboxes := map[string]bool{}
		sandboxIDs(string(after.UID), sandboxes)
		Expect(sandboxes).To(HaveLen(1))
		for id := range sandboxes {
			Expect(string(held)).To(And(HavePrefix(id), HaveSuffix("net3")), "allocation file %q", held)
		}
	})

	It("uninstalls: the node conflist goes, the default network serves new pods, nothing leaks", func(ctx SpecContext) {
		ns, mv, multi := podOnOneNetwork(ctx, "mv", cluster.MacvlanMasters[0], "10.113.0.0/24", "multi")
		Expect(networkStatus(ctx, multi)).To(HaveLen(2))
		// A pod that stays across the uninstall, against docs/install.md's
		// advice; its network's folder goes after the next spec.
		leftNet = macvlanNAD(ctx, ns, "left", cluster.MacvlanMasters[1], "10.115.0.0/24", "")
		left = busyboxPod(ns, "left", "left")
		Expect(k8s.Create(ctx, left)).To(Succeed())
		left = waitRunning(ctx, left)
		Expect(heldAddresses(leftNet)).To(HaveLen(1))
		defaultConf, err := os.ReadFile(cluster.DefaultConflist)
		Expect(err).NotTo(HaveOccurred())

		// docs/install.md, "Uninstall": the pods with extra networks go first, so
		// their teardown through plexus releases everything.
		Expect(k8s.Delete(ctx, multi)).To(Succeed())
		waitGone(ctx, multi, 2*time.Minute)
		Eventually(func() []string { return heldAddresses(mv) }).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())
		Eventually(func() []string { return recordsOf(string(multi.UID)) }).WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())

		uninstall(ctx)
		// Nothing of the webhook or the policy is left: no configuration
		// calling a webhook that is gone, no Secret.
		for _, kind := range []string{"validatingwebhookconfigurations", "validatingadmissionpolicies", "validatingadmissionpolicybindings"} {
			out, err := kubectl(ctx, "get", kind, "-l", "app.kubernetes.io/instance="+cluster.Release, "-o", "name")
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(BeEmpty(), "%s left after uninstall", kind)
		}
		out, err := kubectl(ctx, "get", "secrets,deployments,services,poddisruptionbudgets,serviceaccounts", "-n", cluster.PlexusNamespace,
			"-l", "app.kubernetes.io/instance="+cluster.Release, "-o", "name")
		Expect(err).NotTo(HaveOccurred())
		Expect(out).To(BeEmpty(), "objects left after uninstall")
		_, err = os.Stat(cluster.PlexusConflist)
		Expect(errors.Is(err, fs.ErrNotExist)).To(BeTrue(), "%s after uninstall: %v", cluster.PlexusConflist, err)
		after, err := os.ReadFile(cluster.DefaultConflist)
		Expect(err).NotTo(HaveOccurred())
		Expect(after).To(Equal(defaultConf), "the default network's config changed")

		// The node still starts pods, on its default network alone.
		plain := busyboxPod(ns, "plain", "")
		delete(plain.Annotations, nadv1.NetworkAttachmentAnnot)
		Expect(k8s.Create(ctx, plain)).To(Succeed())
		plain = waitRunning(ctx, plain)
		_, podNet, _ := net.ParseCIDR(cluster.PodCIDR)
		Expect(podNet.Contains(net.ParseIP(plain.Status.PodIP))).To(BeTrue(), "pod IP %s not in %s", plain.Status.PodIP, cluster.PodCIDR)
		Expect(heldAddresses(cluster.DefaultNetwork)).To(ContainElement(plain.Status.PodIP))
		Expect(plain.Annotations).NotTo(HaveKey(nadv1.NetworkStatusAnnot), "a status written with plexus uninstalled")
		Expect(recordsOf(string(plain.UID))).To(BeEmpty(), "plexus recorded a pod it did not attach")

		Expect(k8s.Delete(ctx, plain)).To(Succeed())
		waitGone(ctx, plain, 2*time.Minute)
		Eventually(func() []string { return heldAddresses(cluster.DefaultNetwork) }).WithContext(ctx).WithTimeout(30 * time.Second).
			ShouldNot(ContainElement(plain.Status.PodIP))

		// The pod left running is deleted now: the runtime tears it down
		// with the default network alone, so its extra network's address
		// and plexus's record of it stay behind, until plexus is back.
		Expect(k8s.Delete(ctx, left)).To(Succeed())
		waitGone(ctx, left, 2*time.Minute)
		Eventually(func() []string { return heldAddresses(cluster.DefaultNetwork) }).WithContext(ctx).WithTimeout(30 * time.Second).
			ShouldNot(ContainElement(left.Status.PodIP))
		Expect(heldAddresses(leftNet)).To(HaveLen(1))
		Expect(recordsOf(string(left.UID))).To(HaveLen(1))
	})

	It("installs again: the node is configured anew, what was left is released, pods get their networks", func(ctx SpecContext) {
		removeHostLocalDirs(leftNet)
		start := time.Now()
		install(ctx)
		waitNodeConfigured(ctx, start)
		AddReportEntry("helm install to NodeNetworkStatus Ready (image present)", time.Since(start).Round(100*time.Millisecond).String())

		// The new daemon's sweep finds the sandbox gone without a DEL
		// through plexus, and releases what the runtime could not.
		Eventually(func() []string { return append(heldAddresses(leftNet), recordsOf(string(left.UID))...) }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())

		_, mv, pod := podOnOneNetwork(ctx, "mv", cluster.MacvlanMasters[1], "10.114.0.0/24", "again")
		Expect(networkStatus(ctx, pod)).To(HaveLen(2))
		Expect(heldAddresses(mv)).To(HaveLen(1))
	})
})

// rolledOut waits until every node runs the DaemonSet's current pod
// template, Ready.
func rolledOut(ctx context.Context) {
	out, err := kubectl(ctx, "rollout", "status", "daemonset/"+cluster.Release, "-n", cluster.PlexusNamespace, "--timeout=3m")
	Expect(err).NotTo(HaveOccurred(), out)
}

// waitNewDaemon waits until the one daemon pod is another than old, and
// Ready.
func waitNewDaemon(ctx context.Context, old types.UID) *corev1.Pod {
	var pod *corev1.Pod
	Eventually(func(g Gomega) {
		pod = daemonPod(g, ctx)
		g.Expect(pod.UID).NotTo(Equal(old), "the old daemon pod is still the one")
		g.Expect(pod.DeletionTimestamp).To(BeNil())
		g.Expect(podReady(pod)).To(BeTrue(), "new daemon pod %s not Ready", pod.Name)
	}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
	return pod
}

// waitNodeConfigured waits until the node conflist is in place and the
// node's NodeNetworkStatus is Ready with a conflist written at or after
// since: a status left from before an uninstall says Ready too.
func waitNodeConfigured(ctx context.Context, since time.Time) {
	Eventually(func(g Gomega) {
		g.Expect(cluster.PlexusConflist).To(BeAnExistingFile())
		nns := &v1alpha1.NodeNetworkStatus{}
		g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
		ready := meta.FindStatusCondition(nns.Status.Conditions, "Ready")
		g.Expect(ready).NotTo(BeNil())
		g.Expect(ready.Status).To(BeEquivalentTo("True"), "Ready: %s %s", ready.Reason, ready.Message)
		g.Expect(nns.Status.ConfigWritten).NotTo(BeNil())
		g.Expect(nns.Status.ConfigWritten.Time).To(BeTemporally(">=", since.Truncate(time.Second)),
			"the conflist was last written %s, before %s", nns.Status.ConfigWritten, since)
		// A serving daemon's heartbeat is at most a period old (and a second
		// of truncation).
		g.Expect(nns.Status.LastHeartbeatTime).NotTo(BeNil())
		g.Expect(nns.Status.LastHeartbeatTime.Time).To(BeTemporally("~", time.Now(), v1alpha1.HeartbeatPeriod+2*time.Second))
	}).WithContext(ctx).WithTimeout(2 * time.Minute).WithPolling(250 * time.Millisecond).Should(Succeed())
	waitDaemonReady(ctx)
}
