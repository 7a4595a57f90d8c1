package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plexus-cni/plexus/e2e/bench/results"
	"github.com/plexus-cni/plexus/e2e/cluster"
	"github.com/plexus-cni/plexus/e2e/images"
)

// The webhook figure's fixtures: two namespaces, the same one-network
// definition in each; the pod webhook is told to skip the second by a
// namespaceSelector the figure adds to the installed webhook configuration
// and removes at the end.
const (
	webhookNamespace   = "plexus-bench-webhook"
	noWebhookNamespace = "plexus-bench-no-webhook"
	// skipLabel marks the namespace the pod webhook skips during the run.
	skipLabel = "plexus.cni.dev/bench-skip-webhook"
	// podWebhookName is the pod webhook in the configuration cluster.Release.
	podWebhookName = "pods.plexus.cni.dev"
)

// webhookNADs: the network of each namespace, and its CNI name (hence
// host-local's folder).
var webhookNADs = map[string]struct{ network, config string }{
	webhookNamespace: {"plexus-bench-wh", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "plexus-bench-wh", "type": "macvlan",
		"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.78.4.0/24"}}`, cluster.MacvlanMasters[0])},
	noWebhookNamespace: {"plexus-bench-nowh", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "plexus-bench-nowh", "type": "macvlan",
		"master": %q, "mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.78.5.0/24"}}`, cluster.MacvlanMasters[1])},
}

// ClusterWebhookPodReady measures cluster_webhook_pod_ready_s: what the
// admission webhook adds to a pod's create-to-Ready, for pods asking for
// one extra network, against the same pods the webhook is not called for
// (its configuration skips their namespace: the webhook disabled for them,
// not down). The pods are made one at a time, each Ready before the next,
// alternating the two namespaces, so that both kinds see the same cluster.
func ClusterWebhookPodReady(ctx context.Context, cfg *rest.Config, o PodReadyOptions) (results.Result, error) {
	return withFixtures(ctx, cfg, setupWebhookReady, cleanupWebhookReady, func(cs kubernetes.Interface) (results.Result, error) {
		return webhookFigure(ctx, cs, o)
	})
}

func webhookFigure(ctx context.Context, cs kubernetes.Interface, o PodReadyOptions) (res results.Result, err error) {
	before, err := admissionCalls(ctx, cs)
	if err != nil {
		return res, err
	}
	load := Load1()
	with := &podKind{summary: "with_webhook", raw: "with", ready: readyIn(cs, webhookNamespace, "bench", 1, o.Timeout)}
	without := &podKind{summary: "without_webhook", raw: "without", ready: readyIn(cs, noWebhookNamespace, "bench", 1, o.Timeout)}
	if err := interleave(ctx, o, with, without); err != nil {
		return res, err
	}
	after, err := admissionCalls(ctx, cs)
	if err != nil {
		return res, err
	}
	calls := after.minus(before)
	return abResult("cluster_webhook_pod_ready_s", "p50 of the same one-network pod the webhook is not called for, interleaved", o, with, without, load,
		map[string]interface{}{
			"network":                     "macvlan+host-local (k8s.v1.cni.cncf.io/networks: bench)",
			"without_webhook_is":          "the pod webhook's namespaceSelector skips the namespace (the API server does not call it); the webhook runs and serves the other namespace",
			"image":                       images.Busybox + " (imagePullPolicy Never, sleep 3600, grace 0)",
			"method":                      "one pod at a time, alternating the webhook's namespace and the skipped one, each Ready before the next is created (after a random 0-1 s wait if dither); time from the create request to a watch seeing Ready=True; each pod checked to have 1 extra entry in network-status; before the run, a dry-run create of a pod with an unparsable annotation is refused in the first namespace and admitted in the second",
			"admission_calls":             calls.count,
			"admission_call_mean_ms":      round3(1000 * calls.sum / max(calls.count, 1)),
			"admission_calls_within_5ms":  calls.le5ms,
			"admission_calls_within_25ms": calls.le25ms,
			"admission_call_source":       "the API server's apiserver_admission_webhook_admission_duration_seconds for " + podWebhookName + " (CREATE, admitted), its change over the run",
		}), nil
}

func setupWebhookReady(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	for ns, nad := range webhookNADs {
		labels := map[string]string{}
		if ns == noWebhookNamespace {
			labels[skipLabel] = "true"
		}
		if err := createNamespace(ctx, cs, ns, labels); err != nil {
			return err
		}
		if err := createNAD(ctx, dyn, ns, "bench", nad.config); err != nil {
			return err
		}
	}
	if err := skipNamespace(ctx, cs, true); err != nil {
		return err
	}
	// Both kinds as wanted: the webhook refuses a bad pod in its namespace
	// (so it is called, and up), and the API server admits it in the other.
	return wait.PollUntilContextTimeout(ctx, time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		refused := dryRunBadPod(ctx, cs, webhookNamespace) != nil
		admitted := dryRunBadPod(ctx, cs, noWebhookNamespace) == nil
		return refused && admitted, nil
	})
}

// dryRunBadPod asks the API server to create, in a dry run, a pod whose
// networks annotation does not parse.
func dryRunBadPod(ctx context.Context, cs kubernetes.Interface, ns string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "bad", Namespace: ns, Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": `[{"name": `}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: images.Busybox}}},
	}
	_, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	return err
}

// skipNamespace adds (on) or removes the pod webhook's namespaceSelector
// that skips namespaces labelled skipLabel, by a JSON patch of the
// installed configuration, which has no selector of its own.
func skipNamespace(ctx context.Context, cs kubernetes.Interface, on bool) error {
	vwcs := cs.AdmissionregistrationV1().ValidatingWebhookConfigurations()
	vwc, err := vwcs.Get(ctx, cluster.Release, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("the webhook configuration (is the webhook installed?): %w", err)
	}
	for i, w := range vwc.Webhooks {
		if w.Name != podWebhookName {
			continue
		}
		path := fmt.Sprintf("/webhooks/%d/namespaceSelector", i)
		var patch []map[string]interface{}
		switch {
		case on:
			patch = []map[string]interface{}{{"op": "add", "path": path, "value": map[string]interface{}{
				"matchExpressions": []map[string]interface{}{{"key": skipLabel, "operator": "DoesNotExist"}}}}}
		case w.NamespaceSelector != nil && len(w.NamespaceSelector.MatchExpressions) == 1 && w.NamespaceSelector.MatchExpressions[0].Key == skipLabel:
			patch = []map[string]interface{}{{"op": "remove", "path": path}}
		default:
			return nil
		}
		b, err := json.Marshal(patch)
		if err != nil {
			return err
		}
		_, err = vwcs.Patch(ctx, vwc.Name, types.JSONPatchType, b, metav1.PatchOptions{})
		return err
	}
	return fmt.Errorf("no webhook %s in %s", podWebhookName, vwc.Name)
}

// cleanupWebhookReady restores the webhook configuration, deletes the
// namespaces (their pods first) and removes the host-local folders.
func cleanupWebhookReady(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	var errs []error
	if err := skipNamespace(ctx, cs, false); err != nil && !apierrors.IsNotFound(err) && !strings.Contains(err.Error(), "is the webhook installed") {
		errs = append(errs, err)
	}
	var networks []string
	for ns, nad := range webhookNADs {
		errs = append(errs, deleteNamespace(ctx, cs, dyn, ns, "bench")...)
		networks = append(networks, nad.network)
	}
	errs = append(errs, removeHostLocal(networks...)...)
	return errors.Join(errs...)
}

// webhookCalls is the API server's histogram of its calls of the pod
// webhook that admitted the pod.
type webhookCalls struct{ count, sum, le5ms, le25ms float64 }

func (a webhookCalls) minus(b webhookCalls) webhookCalls {
	return webhookCalls{a.count - b.count, a.sum - b.sum, a.le5ms - b.le5ms, a.le25ms - b.le25ms}
}

// admissionCalls reads the API server's own timing of its pod webhook
// calls from its /metrics.
func admissionCalls(ctx context.Context, cs kubernetes.Interface) (webhookCalls, error) {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return webhookCalls{}, fmt.Errorf("the API server's metrics: %w", err)
	}
	var parser expfmt.TextParser
	families, err := parser.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return webhookCalls{}, fmt.Errorf("the API server's metrics: %w", err)
	}
	const metric = "apiserver_admission_webhook_admission_duration_seconds"
	var c webhookCalls
	h, ok := Histogram(families, metric, map[string]string{"name": podWebhookName, "operation": "CREATE", "rejected": "false"})
	if ok {
		c.count, c.sum, c.le5ms, c.le25ms = h.Count, h.Sum, h.Buckets[0.005], h.Buckets[0.025]
	}
	return c, nil
}
