package e2e

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/e2e/cluster"
	"github.com/plexus-cni/plexus/e2e/images"
)

// configDefault is the kustomize install, from the suite's directory.
const configDefault = "../config/default"

// The other install: `kubectl apply -k config/default`, generated from the
// chart. Serial, and the Helm release is back with the harness's values
// afterwards, whatever happens.
var _ = Describe("plexus installed with kustomize", Serial, func() {
	It("installs with kubectl apply -k, attaches a pod's network, and kubectl delete -k leaves nothing behind", func(ctx SpecContext) {
		reinstallAfter()
		before := settled(ctx)
		overlay := kustomizeOverlay()
		uninstallFromNode(ctx)

		start := time.Now()
		out, err := kubectl(ctx, "apply", "-k", overlay)
		Expect(err).NotTo(HaveOccurred(), out)
		rolledOut(ctx)
		waitNodeConfigured(ctx, start)
		out, err = kubectl(ctx, "rollout", "status", "deployment/"+cluster.WebhookDeployment, "-n", cluster.PlexusNamespace, "--timeout=3m")
		Expect(err).NotTo(HaveOccurred(), out)
		waitWebhookServing(ctx)
		AddReportEntry("kubectl apply -k to the webhook serving (image present)", time.Since(start).Round(100*time.Millisecond).String())
		// The daemon runs the image the overlay set, as kustomize edit set
		// image would have it.
		daemon := daemonPod(Default, ctx)
		Expect(daemon.Spec.Containers[0].Image).To(Equal(images.Plexus))
		Expect(daemon.Labels).To(HaveKeyWithValue("app.kubernetes.io/managed-by", "kustomize"))

		ns, mv, pod := podOnOneNetwork(ctx, "mv", cluster.MacvlanMasters[0], "10.160.0.0/24", "kustomized")
		status := networkStatus(ctx, pod)
		Expect(status).To(HaveLen(2))
		Expect(statusByInterface(status, "net1").Name).To(Equal(ns + "/mv"))
		Expect(podAddresses(podExec(ctx, pod, "ip", "-o", "-4", "addr"))).To(HaveKey("net1"))
		Expect(heldAddresses(mv)).To(HaveLen(1))

		// docs/install.md, "Uninstall": the pods with extra networks first.
		Expect(k8s.Delete(ctx, pod)).To(Succeed())
		waitGone(ctx, pod, 2*time.Minute)
		Eventually(func() []string { return append(heldAddresses(mv), recordsOf(string(pod.UID))...) }).
			WithContext(ctx).WithTimeout(30 * time.Second).Should(BeEmpty())

		out, err = kubectl(ctx, "delete", "-k", overlay, "--wait=true", "--timeout=3m")
		Expect(err).NotTo(HaveOccurred(), out)
		Eventually(func(g Gomega) {
			pods := &corev1.PodList{}
			g.Expect(k8s.List(ctx, pods, client.InNamespace(cluster.PlexusNamespace), client.MatchingLabels{"app.kubernetes.io/name": "plexus"})).To(Succeed())
			g.Expect(pods.Items).To(BeEmpty(), "plexus pods left")
			_, err := os.Stat(cluster.PlexusConflist)
			g.Expect(errors.Is(err, fs.ErrNotExist)).To(BeTrue(), "%s after kubectl delete -k: %v", cluster.PlexusConflist, err)
		}).WithContext(ctx).WithTimeout(time.Minute).Should(Succeed())
		// No object of the install is left, the CRDs included.
		for _, args := range [][]string{
			{"get", "customresourcedefinitions", "nodenetworkstatuses.plexus.cni.dev", "network-attachment-definitions.k8s.cni.cncf.io",
				"--ignore-not-found", "-o", "name"},
			{"get", "clusterroles,clusterrolebindings,validatingwebhookconfigurations,validatingadmissionpolicies,validatingadmissionpolicybindings",
				"-l", "app.kubernetes.io/instance=" + cluster.Release, "-o", "name"},
			{"get", "daemonsets,deployments,configmaps,secrets,services,poddisruptionbudgets,serviceaccounts,roles,rolebindings",
				"-n", cluster.PlexusNamespace, "-l", "app.kubernetes.io/instance=" + cluster.Release, "-o", "name"},
		} {
			out, err := kubectl(ctx, args...)
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(BeEmpty(), "left after kubectl delete -k: kubectl %s", strings.Join(args, " "))
		}
		expectNoLeaks(ctx, before)
	})
})

// kustomizeOverlay writes, into a temp dir, a kustomization over
// config/default with what a user of this cluster adds: the image the
// cluster imported (as `kustomize edit set image` writes it), and the
// harness's environment for the daemon and the webhook (the API server's
// address, read from the values the cluster's Helm release has, since the
// cluster runs no kube-proxy). It returns the directory.
func kustomizeOverlay() string {
	b, err := os.ReadFile(os.Getenv(envHelmValues))
	Expect(err).NotTo(HaveOccurred(), "%s: the values the cluster was installed with", envHelmValues)
	var values struct {
		ExtraEnv []corev1.EnvVar `json:"extraEnv"`
		Webhook  struct {
			ExtraEnv []corev1.EnvVar `json:"extraEnv"`
		} `json:"webhook"`
	}
	Expect(yaml.Unmarshal(b, &values)).To(Succeed())
	Expect(values.ExtraEnv).NotTo(BeEmpty())
	Expect(values.Webhook.ExtraEnv).NotTo(BeEmpty())
	env := func(kind, name, container string, vars []corev1.EnvVar) string {
		patch := map[string]any{
			"apiVersion": "apps/v1", "kind": kind,
			"metadata": map[string]any{"name": name, "namespace": cluster.PlexusNamespace},
			"spec": map[string]any{"template": map[string]any{"spec": map[string]any{
				"containers": []any{map[string]any{"name": container, "env": vars}}}}},
		}
		out, err := yaml.Marshal(patch)
		Expect(err).NotTo(HaveOccurred())
		return string(out)
	}
	dir := GinkgoT().TempDir()
	abs, err := filepath.Abs(configDefault)
	Expect(err).NotTo(HaveOccurred())
	base, err := filepath.Rel(dir, abs)
	Expect(err).NotTo(HaveOccurred())
	repo, tag, _ := strings.Cut(images.Plexus, ":")
	files := map[string]string{
		"kustomization.yaml": fmt.Sprintf("resources:\n- %s\nimages:\n- name: plexus\n  newName: %s\n  newTag: %s\npatches:\n- path: daemon-env.yaml\n- path: webhook-env.yaml\n",
			base, repo, tag),
		"daemon-env.yaml":  env("DaemonSet", cluster.Release, "plexus", values.ExtraEnv),
		"webhook-env.yaml": env("Deployment", cluster.WebhookDeployment, "webhook", values.Webhook.ExtraEnv),
	}
	for name, content := range files {
		Expect(os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)).To(Succeed())
	}
	return dir
}
