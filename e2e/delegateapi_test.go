package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// Issue #15: clusters that run the dynamic networks controller. The suite
// plays that controller: it runs on the node, so it dials the socket at
// its node path, and finds a pod's sandbox id and netns where the
// controller asks the runtime for them (here, plexus's record of it).

// delegateSocket is the chart's hotplug.delegateAPISocket default,
// Multus's.
const delegateSocket = "/run/multus/multus.sock"

// delegateCall posts one delegate API request, built as the controller
// builds it, and returns the status and the answer.
func delegateCall(ctx context.Context, body map[string]interface{}) (int, []byte) {
	data, err := json.Marshal(body)
	Expect(err).NotTo(HaveOccurred())
	return socketRequest(ctx, http.MethodPost, "/delegate", data)
}

func socketRequest(ctx context.Context, method, path string, body []byte) (int, []byte) {
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", delegateSocket)
	}}}
	req, err := http.NewRequestWithContext(ctx, method, "http://dummy"+path, bytes.NewReader(body))
	Expect(err).NotTo(HaveOccurred())
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, out
}

// sandboxOf reads the pod's sandbox id and netns from plexus's record.
func sandboxOf(pod *corev1.Pod) (id, netns string) {
	files := recordsOf(string(pod.UID))
	Expect(files).To(HaveLen(1), "records of pod %s/%s", pod.Namespace, pod.Name)
	b, err := os.ReadFile(files[0])
	Expect(err).NotTo(HaveOccurred())
	var rec struct {
		ContainerID string `json:"containerID"`
		NetNS       string `json:"netns"`
	}
	Expect(json.Unmarshal(b, &rec)).To(Succeed())
	Expect(rec.ContainerID).NotTo(BeEmpty())
	return rec.ContainerID, rec.NetNS
}

func delegateRequest(command, id, netns, ifname string, pod *corev1.Pod, config []byte, attrs map[string]interface{}) map[string]interface{} {
	body := map[string]interface{}{
		"env": map[string]string{
			"CNI_COMMAND": command, "CNI_CONTAINERID": id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
			"CNI_ARGS": "K8S_POD_NAMESPACE=" + pod.Namespace + ";K8S_POD_NAME=" + pod.Name + ";K8S_POD_UID=" + string(pod.UID),
		},
		"config": config,
	}
	if attrs != nil {
		body["interfaceAttributes"] = attrs
	}
	return body
}

var _ = Describe("The delegate-api mode", Ordered, Serial, func() {
	BeforeAll(func(ctx SpecContext) {
		reinstallAfter()
		// The socket stays on the node after the daemon (a successor
		// replaces it); the harness's node is left as it was found.
		DeferCleanup(func() {
			if fi, err := os.Lstat(delegateSocket); err == nil && fi.Mode().Type() == os.ModeSocket {
				Expect(os.Remove(delegateSocket)).To(Succeed())
			}
		})
		old := daemonPod(Default, ctx)
		install(ctx, "--set", "hotplug.mode=delegate-api")
		rolledOut(ctx)
		waitNewDaemon(ctx, old.UID)
		waitNodeConfigured(ctx, time.Time{})
	})

	It("serves the dynamic networks controller's calls: an interface added to and removed from a running pod, released by the pod's DEL", func(ctx SpecContext) {
		fi, err := os.Stat(delegateSocket)
		Expect(err).NotTo(HaveOccurred(), "the daemon serves %s on the node", delegateSocket)
		Expect(fi.Mode().Type()).To(Equal(os.ModeSocket))
		Expect(fi.Mode().Perm()).To(Equal(os.FileMode(0o600)), "root only, as Multus's")
		code, _ := socketRequest(ctx, http.MethodGet, "/healthz", nil)
		Expect(code).To(Equal(http.StatusOK))

		ns := newNamespace(ctx)
		blue, hot := netName(ns, "blue"), netName(ns, "hot")
		removeHostLocalDirs(blue, hot)
		macvlanNAD(ctx, ns, "blue", cluster.MacvlanMasters[0], "10.150.0.0/24", "")
		hotSpec := `{"cniVersion": "1.0.0", "name": "` + hot + `", "type": "macvlan", "master": "` + cluster.MacvlanMasters[1] +
			`", "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.151.0.0/24"}}`
		createNAD(ctx, ns, "hot", hotSpec)
		hotConfig, err := nadutils.GetCNIConfigFromSpec(hotSpec, "hot")
		Expect(err).NotTo(HaveOccurred())

		pod := busyboxPod(ns, "vm", "blue@pod1")
		Expect(k8s.Create(ctx, pod)).To(Succeed())
		pod = waitRunning(ctx, pod)
		id, netns := sandboxOf(pod)

		// KubeVirt-shaped: interface pod<hash>, MAC requested.
		const ifname, mac = "pod5e1f0a", "02:5e:1f:0a:00:01"
		start := time.Now()
		code, out := delegateCall(ctx, delegateRequest("ADD", id, netns, ifname, pod, hotConfig,
			map[string]interface{}{"mac": mac, "cni-args": nil}))
		AddReportEntry("delegate API ADD (macvlan + host-local)", time.Since(start).Round(time.Millisecond).String())
		Expect(code).To(Equal(http.StatusOK), string(out))
		var resp struct{ Result *current.Result }
		Expect(json.Unmarshal(out, &resp)).To(Succeed())
		Expect(resp.Result).NotTo(BeNil(), string(out))
		Expect(resp.Result.IPs).To(HaveLen(1))
		addr := resp.Result.IPs[0].Address.IP.String()
		Expect(addr).To(HavePrefix("10.151.0."))

		link := podExec(ctx, pod, "ip", "-o", "link", "show", ifname)
		Expect(link).To(ContainSubstring(mac))
		Expect(podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr"))[ifname].String()).To(Equal(addr))
		Expect(allocations()).To(HaveKey(hot + "/" + addr))
		Expect(recordedInterfaces(pod)).To(ContainElement(ifname), "the sandbox's record holds the attachment")

		start = time.Now()
		code, out = delegateCall(ctx, delegateRequest("DEL", id, netns, ifname, pod, hotConfig, nil))
		AddReportEntry("delegate API DEL", time.Since(start).Round(time.Millisecond).String())
		Expect(code).To(Equal(http.StatusOK), string(out))
		Expect(podExec(ctx, pod, "ip", "-o", "link")).NotTo(ContainSubstring(ifname))
		Expect(recordedInterfaces(pod)).NotTo(ContainElement(ifname))
		Expect(allocations()).NotTo(HaveKey(hot + "/" + addr))

		// The node's status shows the mode and what the API did.
		Eventually(func(g Gomega) {
			nns := &v1alpha1.NodeNetworkStatus{}
			g.Expect(k8s.Get(ctx, client.ObjectKey{Name: cluster.NodeName}, nns)).To(Succeed())
			g.Expect(nns.Status.Hotplug).NotTo(BeNil())
			g.Expect(nns.Status.Hotplug.Mode).To(Equal("delegate-api"))
			g.Expect(nns.Status.Hotplug.Added).To(BeNumerically(">=", 1))
			g.Expect(nns.Status.Hotplug.Removed).To(BeNumerically(">=", 1))
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())

		// Added again, then the pod goes: its own DEL releases it.
		code, out = delegateCall(ctx, delegateRequest("ADD", id, netns, ifname, pod, hotConfig, nil))
		Expect(code).To(Equal(http.StatusOK), string(out))
		Expect(heldAddresses(hot)).To(HaveLen(1))
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, time.Minute)
		// The pod's sandbox DEL runs in reverse order, after the pod object
		// is gone: wait for all of it.
		Eventually(func(g Gomega) {
			g.Expect(heldAddresses(hot)).To(BeEmpty(), "the pod's DEL releases the interface the delegate API added")
			g.Expect(heldAddresses(blue)).To(BeEmpty())
			g.Expect(recordsOf(string(pod.UID))).To(BeEmpty())
		}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())

		// A sandbox that is gone is refused on ADD, naming the fields.
		code, out = delegateCall(ctx, delegateRequest("ADD", id, netns, ifname, pod, hotConfig, nil))
		Expect(code).To(Equal(http.StatusNotFound))
		Expect(string(out)).To(And(ContainSubstring("CNI_CONTAINERID"), ContainSubstring("CNI_ARGS")))
	})
})

// recordedInterfaces lists the interfaces of the pod's sandbox record.
func recordedInterfaces(pod *corev1.Pod) []string {
	files := recordsOf(string(pod.UID))
	Expect(files).To(HaveLen(1))
	b, err := os.ReadFile(files[0])
	Expect(err).NotTo(HaveOccurred())
	var rec struct {
		Attachments []struct {
			IfName string `json:"ifname"`
		} `json:"attachments"`
	}
	Expect(json.Unmarshal(b, &rec)).To(Succeed())
	var out []string
	for _, a := range rec.Attachments {
		out = append(out, a.IfName)
	}
	return out
}
