// Package e2e is plexus's end-to-end suite: ginkgo specs against a real
// single-node cluster (kubelet, containerd, the plexus DaemonSet installed
// with its Helm chart) that e2e/cluster starts on this machine. The specs
// run on the node itself, so besides the API they check the node's disk
// and links for leaks.
//
// `make e2e` brings the cluster up, runs the suite and tears the cluster
// down. Without PLEXUS_E2E_KUBECONFIG the suite skips, so `go test ./...`
// (make test) never runs it.
package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
)

// Environment the suite reads; `make e2e` sets both.
const (
	envKubeconfig = "PLEXUS_E2E_KUBECONFIG"
	envKubectl    = "PLEXUS_E2E_KUBECTL"
)

var (
	k8s        client.Client
	kubeconfig string
	kubectlBin string
)

func TestE2E(t *testing.T) {
	kubeconfig = os.Getenv(envKubeconfig)
	if kubeconfig == "" {
		t.Skipf("%s is not set: the e2e suite needs the cluster `make e2e` starts", envKubeconfig)
	}
	RegisterFailHandler(Fail)
	RunSpecs(t, "plexus e2e")
}

var _ = BeforeSuite(func() {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	Expect(err).NotTo(HaveOccurred())
	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(nadv1.AddToScheme(scheme)).To(Succeed())
	Expect(v1alpha1.AddToScheme(scheme)).To(Succeed())
	k8s, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())
	kubectlBin = os.Getenv(envKubectl)
	if kubectlBin == "" {
		kubectlBin, err = exec.LookPath("kubectl")
		Expect(err).NotTo(HaveOccurred(), "no kubectl: set %s", envKubectl)
	}
})

// newNamespace creates a namespace of the spec's own and deletes it (and
// waits for its pods to be gone) when the spec or container ends.
func newNamespace(ctx context.Context) string {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "e2e-"}}
	Expect(k8s.Create(ctx, ns)).To(Succeed())
	DeferCleanup(func(ctx SpecContext) {
		Expect(client.IgnoreNotFound(k8s.Delete(ctx, ns))).To(Succeed())
		Eventually(func(g Gomega) {
			err := k8s.Get(ctx, client.ObjectKeyFromObject(ns), &corev1.Namespace{})
			g.Expect(apierrors.IsNotFound(err)).To(BeTrue(), "namespace %s still there", ns.Name)
		}).WithContext(ctx).WithTimeout(2 * time.Minute).Should(Succeed())
	})
	// A pod is admitted only once its namespace's default ServiceAccount exists.
	Eventually(func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "default"}, &corev1.ServiceAccount{})
	}).WithContext(ctx).WithTimeout(30 * time.Second).Should(Succeed())
	return ns.Name
}

// createNAD creates a NetworkAttachmentDefinition whose spec.config is config.
func createNAD(ctx context.Context, ns, name, config string) {
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
	Expect(k8s.Create(ctx, nad)).To(Succeed())
}

// busyboxPod is a pod that sleeps, asking for networks, stopped at once on
// delete.
func busyboxPod(ns, name, networks string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{nadv1.NetworkAttachmentAnnot: networks}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "app", Image: "plexus.local/busybox:e2e", ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
}

// waitRunning waits for pod to be Running and returns it; on a timeout the
// failure holds the pod's events (a failed CNI ADD shows there).
func waitRunning(ctx context.Context, pod *corev1.Pod) *corev1.Pod {
	got := &corev1.Pod{}
	Eventually(func(g Gomega) {
		g.Expect(k8s.Get(ctx, client.ObjectKeyFromObject(pod), got)).To(Succeed())
		g.Expect(got.Status.Phase).To(Equal(corev1.PodRunning), "pod %s/%s: %s", pod.Namespace, pod.Name, events(ctx, pod))
	}).WithContext(ctx).WithTimeout(90 * time.Second).Should(Succeed())
	return got
}

// events lists the events of pod, one per line.
func events(ctx context.Context, pod *corev1.Pod) string {
	list := &corev1.EventList{}
	if err := k8s.List(ctx, list, client.InNamespace(pod.Namespace)); err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, e := range list.Items {
		if e.InvolvedObject.Name == pod.Name {
			fmt.Fprintf(&b, "\n  %s %s: %s", e.Type, e.Reason, e.Message)
		}
	}
	return b.String()
}

// kubectl runs the cluster's kubectl and returns its stdout.
func kubectl(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}
