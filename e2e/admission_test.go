package e2e

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/e2e/cluster"
)

// The webhooks' names, as the API server quotes them in a refusal.
const (
	nadWebhook = "network-attachment-definitions.plexus.cni.dev"
	podWebhook = "pods.plexus.cni.dev"
)

// badNADConfig is a spec.config that is not JSON.
const badNADConfig = `{"cniVersion": "1.0.0", "type": "macvlan",`

// nadYAML is a NetworkAttachmentDefinition as a user applies it.
func nadYAML(ns, name, config string) string {
	return fmt.Sprintf(`apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata:
  name: %s
  namespace: %s
spec:
  config: %s
`, name, ns, strconv.Quote(config))
}

// podYAML is busyboxPod as a user applies it.
func podYAML(ns, name, networks string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: %s
  annotations:
    k8s.v1.cni.cncf.io/networks: %s
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: plexus.local/busybox:e2e
    imagePullPolicy: Never
    command: [sleep, "3600"]
`, name, ns, strconv.Quote(networks))
}

// kubectlApply runs `kubectl apply -f -` with manifest as its input and
// returns its output, stdout and stderr, and its error.
func kubectlApply(ctx context.Context, manifest string) (string, error) {
	cmd := exec.CommandContext(ctx, kubectlBin, "--kubeconfig", kubeconfig, "apply", "-f", "-")
	cmd.Stdin = strings.NewReader(manifest)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// refusal is what the API server says when webhook denies a request:
// `admission webhook "<webhook>" denied the request: <message>`; it returns
// the message.
func refusal(out, webhook string) string {
	prefix := fmt.Sprintf("admission webhook %q denied the request: ", webhook)
	_, msg, ok := strings.Cut(out, prefix)
	Expect(ok).To(BeTrue(), "not refused by %s:\n%s", webhook, out)
	return strings.TrimSpace(msg)
}

// waitWebhookServing waits until the webhook answers: a server-side dry run
// of a NetworkAttachmentDefinition whose config is not JSON is refused by
// it. A webhook that is down is ignored (failurePolicy Ignore), so a spec
// that counts on its refusals waits for it first.
func waitWebhookServing(ctx context.Context) {
	Eventually(func(g Gomega) {
		nad := &nadv1.NetworkAttachmentDefinition{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "e2e-webhook-probe"},
			Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: badNADConfig},
		}
		err := k8s.Create(ctx, nad, client.DryRunAll)
		g.Expect(err).To(HaveOccurred(), "the webhook is not answering: a bad definition was admitted")
		g.Expect(err.Error()).To(ContainSubstring("admission webhook %q denied the request", nadWebhook))
	}).WithContext(ctx).WithTimeout(3 * time.Minute).WithPolling(time.Second).Should(Succeed())
}

// scaleWebhook scales the webhook's Deployment to n and waits: for its pods
// to be gone at 0, for it to be Available otherwise.
func scaleWebhook(ctx context.Context, n int) {
	out, err := kubectl(ctx, "scale", "deployment/"+cluster.WebhookDeployment, "-n", cluster.PlexusNamespace, "--replicas="+strconv.Itoa(n))
	Expect(err).NotTo(HaveOccurred(), out)
	if n > 0 {
		out, err := kubectl(ctx, "rollout", "status", "deployment/"+cluster.WebhookDeployment, "-n", cluster.PlexusNamespace, "--timeout=3m")
		Expect(err).NotTo(HaveOccurred(), out)
		return
	}
	Eventually(func(g Gomega) {
		pods := &corev1.PodList{}
		g.Expect(k8s.List(ctx, pods, client.InNamespace(cluster.PlexusNamespace),
			client.MatchingLabels{"app.kubernetes.io/name": "plexus", "app.kubernetes.io/component": "webhook"})).To(Succeed())
		g.Expect(pods.Items).To(BeEmpty(), "webhook pods left")
	}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
}

// webhookReplicas is the webhook Deployment's replicas now.
func webhookReplicas(ctx context.Context) int {
	out, err := kubectl(ctx, "get", "deployment/"+cluster.WebhookDeployment, "-n", cluster.PlexusNamespace, "-o", "jsonpath={.spec.replicas}")
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(strings.TrimSpace(out))
	Expect(err).NotTo(HaveOccurred())
	return n
}

var _ = Describe("Admission webhook", func() {
	It("refuses at kubectl apply a definition whose config is not JSON, and a pod naming another namespace's network, saying why", func(ctx SpecContext) {
		waitWebhookServing(ctx)
		nsA := newNamespace(ctx)
		nsB := newNamespace(ctx)

		out, err := kubectlApply(ctx, nadYAML(nsA, "broken", badNADConfig))
		Expect(err).To(HaveOccurred(), "a definition whose config is not JSON was admitted:\n%s", out)
		msg := refusal(out, nadWebhook)
		Expect(msg).To(And(ContainSubstring("broken"), ContainSubstring("spec.config")), "the refusal names neither the definition nor the field")
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: nsA, Name: "broken"}, &nadv1.NetworkAttachmentDefinition{})).NotTo(Succeed())

		// A good definition passes, and a pod of another namespace naming
		// it is refused with the message the node's ADD gives.
		macvlanNAD(ctx, nsB, "net", cluster.MacvlanMasters[0], "10.117.0.0/24", "")
		out, err = kubectlApply(ctx, podYAML(nsA, "isolated", nsB+"/net"))
		Expect(err).To(HaveOccurred(), "a pod naming another namespace's network was admitted:\n%s", out)
		msg = refusal(out, podWebhook)
		Expect(msg).To(And(ContainSubstring("namespace isolation"), ContainSubstring(nsB+"/net"), ContainSubstring(nsA+"/isolated")))
		Expect(k8s.Get(ctx, client.ObjectKey{Namespace: nsA, Name: "isolated"}, &corev1.Pod{})).NotTo(Succeed())
	})

	It("with its Deployment scaled to zero (failurePolicy Ignore), admits pods: a good one starts, the node refuses a bad one with the webhook's message", func(ctx SpecContext) {
		waitWebhookServing(ctx)
		nsA := newNamespace(ctx)
		nsB := newNamespace(ctx)
		macvlanNAD(ctx, nsB, "net", cluster.MacvlanMasters[0], "10.118.0.0/24", "")
		removeHostLocalDirs(netName(nsB, "net"), netName(nsA, "own"))
		macvlanNAD(ctx, nsA, "own", cluster.MacvlanMasters[1], "10.119.0.0/24", "")

		// What the webhook says of the bad pod, while it is up.
		out, err := kubectlApply(ctx, podYAML(nsA, "refused", nsB+"/net"))
		Expect(err).To(HaveOccurred(), out)
		webhookMsg := refusal(out, podWebhook)

		replicas := webhookReplicas(ctx)
		DeferCleanup(func(ctx SpecContext) {
			scaleWebhook(ctx, replicas)
			waitWebhookServing(ctx)
		})
		scaleWebhook(ctx, 0)

		good := busyboxPod(nsA, "good", "own")
		Expect(k8s.Create(ctx, good)).To(Succeed())
		good = waitRunning(ctx, good)
		Expect(statusByInterface(networkStatus(ctx, good), "net1")).NotTo(BeNil())

		// The same pod is admitted now, and the node refuses it as before
		// the webhook, with the same words.
		out, err = kubectlApply(ctx, podYAML(nsA, "refused", nsB+"/net"))
		Expect(err).NotTo(HaveOccurred(), "with the webhook down and failurePolicy Ignore the pod must be admitted:\n%s", out)
		refused := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: nsA, Name: "refused"}}
		ev := waitEvent(ctx, refused, "namespace isolation", nsB+"/net")
		Expect(ev).To(HavePrefix("FailedCreatePodSandBox"))
		Expect(ev).To(ContainSubstring(webhookMsg), "the node's refusal and the webhook's differ")
		Expect(phaseOf(ctx, refused)).To(Equal(corev1.PodPending))
		Expect(heldAddresses(netName(nsB, "net"))).To(BeEmpty(), "a refused ADD allocated an address")
	})
})
