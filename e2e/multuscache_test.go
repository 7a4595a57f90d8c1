package e2e

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// multusCacheDir is Multus's cniDir on the node, the chart's default
// --multus-cache-dir: Multus's cache file of each sandbox it attached, and
// its libcni result cache (results/).
const multusCacheDir = "/var/lib/cni/multus"

// Issue 14: pods Multus attached must not leak when they are deleted after
// plexus replaced Multus. The node has no Multus binary, so the spec does
// what Multus did for a pod: with plexus not installed, the runtime gives
// a new pod the default network, then the spec attaches the pod's extra
// network into its netns as Multus would (net1, Multus's arguments and
// result cache) and writes Multus's cache file of the sandbox.
var _ = Describe("pods Multus attached, deleted after plexus replaced Multus", Serial, func() {
	It("release every network Multus attached, and Multus's cache file goes", func(ctx SpecContext) {
		reinstallAfter()
		cleanHostLocalAfter()
		ns := newNamespace(ctx)
		extra := macvlanNAD(ctx, ns, "extra", cluster.MacvlanMasters[0], "10.134.0.0/24", "")
		nad := &nadv1.NetworkAttachmentDefinition{}
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: ns, Name: "extra"}, nad)).To(Succeed())
		before := settled(ctx)

		uninstallFromNode(ctx)
		pod := busyboxPod(ns, "multus-era", "extra")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		id, netns := runtimeSandbox(pod)
		cacheFile := filepath.Join(multusCacheDir, id)
		DeferCleanup(func() { _ = os.Remove(cacheFile) })
		multusAttach(ctx, pod, id, netns, nad)
		Expect(heldAddresses(extra)).To(HaveLen(1), "the address Multus's ADD of %s allocated", extra)

		start := time.Now()
		install(ctx)
		waitNodeConfigured(ctx, start)

		deleteAll(ctx, []*corev1.Pod{pod})
		expectNoLeaks(ctx, before)
		Expect(cacheFile).NotTo(BeAnExistingFile(), "Multus's cache file of the sandbox")
		results, _ := filepath.Glob(filepath.Join(multusCacheDir, "results", "*-"+id+"-*"))
		Expect(results).To(BeEmpty(), "Multus's cached results of the sandbox")
		Eventually(func() (string, error) {
			return kubectl(ctx, "logs", "-n", cluster.PlexusNamespace, "-l", "app.kubernetes.io/name=plexus", "--tail=-1")
		}).WithContext(ctx).WithTimeout(30*time.Second).Should(And(
			ContainSubstring("Tore down the networks Multus attached"), ContainSubstring(`"pod":{"name":"multus-era","namespace":"`+ns+`"}`),
			ContainSubstring(ns+"/extra net1")),
			"the daemon's log names the pod and the networks")
	})
})

// runtimeSandbox is the sandbox id of the pod with this UID, from the
// runtime's cached result of its default network, and the path of its
// network namespace: the one under cluster.NetnsDir holding the pod's IP
// (the runtime's libcni does not cache the netns).
func runtimeSandbox(pod *corev1.Pod) (string, string) {
	files, err := filepath.Glob(filepath.Join(cluster.RuntimeResultsDir, cluster.DefaultNetwork+"-*-eth0"))
	Expect(err).NotTo(HaveOccurred())
	id := ""
	for _, f := range files {
		var cached struct {
			ContainerID string      `json:"containerId"`
			Args        [][2]string `json:"cniArgs"`
		}
		b, err := os.ReadFile(f)
		if err != nil || json.Unmarshal(b, &cached) != nil {
			continue
		}
		for _, kv := range cached.Args {
			if kv[0] == "K8S_POD_UID" && kv[1] == string(pod.UID) {
				id = cached.ContainerID
			}
		}
	}
	Expect(id).NotTo(BeEmpty(), "no cached result of the runtime names pod %s", pod.UID)
	paths, err := filepath.Glob(filepath.Join(cluster.NetnsDir, "cni-*"))
	Expect(err).NotTo(HaveOccurred())
	for _, p := range paths {
		netns, err := ns.GetNS(p)
		if err != nil {
			continue
		}
		found := false
		_ = netns.Do(func(ns.NetNS) error {
			addrs, err := netlink.AddrList(nil, netlink.FAMILY_V4)
			for _, a := range addrs {
				found = found || err == nil && a.IP.String() == pod.Status.PodIP
			}
			return nil
		})
		_ = netns.Close()
		if found {
			return id, p
		}
	}
	Fail("no network namespace under " + cluster.NetnsDir + " holds pod IP " + pod.Status.PodIP)
	return "", ""
}

// multusAttach attaches the definition to the pod's sandbox as Multus's
// ADD did (interface net1, IgnoreUnknown=true and the runtime's arguments,
// libcni with Multus's result cache) and writes Multus's cache file of the
// sandbox: the default network first, then the definition, in Multus's
// format.
func multusAttach(ctx context.Context, pod *corev1.Pod, id, netns string, nad *nadv1.NetworkAttachmentDefinition) {
	if _, err := os.Stat(multusCacheDir); os.IsNotExist(err) {
		// A node without Multus: leave it so.
		DeferCleanup(func() { Expect(os.RemoveAll(multusCacheDir)).To(Succeed()) })
	}
	def, err := os.ReadFile(cluster.DefaultConflist)
	Expect(err).NotTo(HaveOccurred())
	conf, err := libcni.ConfFromBytes([]byte(nad.Spec.Config))
	Expect(err).NotTo(HaveOccurred())
	cni := libcni.NewCNIConfigWithCacheDir([]string{cluster.CNIBinDir}, multusCacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns, IfName: "net1", Args: [][2]string{
		{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(pod.UID)}}}
	_, err = cni.AddNetwork(ctx, conf, rt)
	Expect(err).NotTo(HaveOccurred(), "Multus's ADD of %s/%s", nad.Namespace, nad.Name)
	DeferCleanup(func(ctx SpecContext) {
		_ = cni.DelNetwork(ctx, conf, rt) // only if the spec failed before plexus did it
	})
	data, err := json.Marshal([]map[string]any{
		{"Name": cluster.DefaultNetwork, "Bytes": def, "IsFilterV4Gateway": false, "IsFilterV6Gateway": false},
		{"Name": nad.Namespace + "/" + nad.Name, "Bytes": []byte(nad.Spec.Config), "Conf": json.RawMessage(nad.Spec.Config),
			"IsFilterV4Gateway": false, "IsFilterV6Gateway": false},
	})
	Expect(err).NotTo(HaveOccurred())
	Expect(os.MkdirAll(multusCacheDir, 0o700)).To(Succeed())
	Expect(os.WriteFile(filepath.Join(multusCacheDir, id), data, 0o600)).To(Succeed())
	out := podExec(ctx, pod, "ip", "-o", "-4", "addr", "show", "net1")
	Expect(strings.Fields(out)).To(ContainElement(HavePrefix("10.134.0.")), "the pod has net1 as Multus gave it")
}
