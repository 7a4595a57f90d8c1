package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plexus-cni/plexus/e2e/bench/results"
	"github.com/plexus-cni/plexus/e2e/cluster"
	"github.com/plexus-cni/plexus/e2e/images"
)

// Figure 5's fixtures on the real cluster: a namespace of its own, three
// definitions (two macvlans on the cluster's veths, a bridge), host-local
// folders and a bridge named so that the cluster's teardown removes them
// too (plxe2e-*).
const (
	readyNamespace = "plexus-bench"
	readyBridge    = "plxe2e-bench0"
)

var readyNADs = []struct{ name, config string }{
	{"bench-m1", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "plexus-bench-m1", "type": "macvlan", "master": %q,
		"mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.78.1.0/24"}}`, cluster.MacvlanMasters[0])},
	{"bench-m2", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "plexus-bench-m2", "type": "macvlan", "master": %q,
		"mode": "bridge", "ipam": {"type": "host-local", "subnet": "10.78.2.0/24"}}`, cluster.MacvlanMasters[1])},
	{"bench-br", fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "plexus-bench-br", "type": "bridge", "bridge": %q,
		"ipam": {"type": "host-local", "subnet": "10.78.3.0/24"}}`, readyBridge)},
}

var nadGVR = schema.GroupVersionResource{Group: "k8s.cni.cncf.io", Version: "v1", Resource: "network-attachment-definitions"}

// PodReadyOptions are figure 5's parameters.
type PodReadyOptions struct {
	Pods    int           // pods of each kind
	Timeout time.Duration // for one pod to become Ready
	Dither  bool          // wait a random 0-1 s before each create
}

// ClusterPodReady measures cluster_pod_ready_s: the time from a pod's
// create request to a watch seeing its Ready condition, for pods asking for
// three extra networks against the same pod asking for none. The pods are
// made one at a time, each Ready before the next, alternating plain and
// three-network, and all stay until the end; then they, the definitions
// and the namespace are deleted.
func ClusterPodReady(ctx context.Context, cfg *rest.Config, o PodReadyOptions) (res results.Result, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	defer func() {
		// A context of its own: cleaning up also after an interrupt.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		err = errors.Join(err, cleanupPodReady(cctx, cs, dyn))
	}()
	if err := setupPodReady(ctx, cs, dyn); err != nil {
		return res, err
	}

	load := Load1()
	var plain, multi, plainCoarse, multiCoarse []float64
	for i := 0; i < 2*o.Pods; i++ {
		networks := ""
		if i%2 == 1 {
			networks = "bench-m1,bench-m2,bench-br"
		}
		// The kubelet notices a started container at its next relist (every
		// second), and a create right after the previous pod's Ready would
		// be in step with it: a random wait first spreads the creates over
		// the relist period, so that the mean (and the p50, roughly) of
		// each kind moves with its real cost instead of in 1 s steps.
		if o.Dither {
			select {
			case <-ctx.Done():
				return res, ctx.Err()
			case <-time.After(time.Duration(rand.Int64N(int64(time.Second)))):
			}
		}
		want := 0
		if networks != "" {
			want = 3
		}
		exact, coarse, err := podReady(ctx, cs, readyNamespace, fmt.Sprintf("ready-%02d", i), networks, want, o.Timeout)
		if err != nil {
			return res, err
		}
		if networks == "" {
			plain, plainCoarse = append(plain, exact), append(plainCoarse, coarse)
		} else {
			multi, multiCoarse = append(multi, exact), append(multiCoarse, coarse)
		}
	}
	p, m := Summarize(plain), Summarize(multi)
	return results.Result{
		Name:       "cluster_pod_ready_s",
		Value:      round3(m.P50 - p.P50),
		Unit:       "s",
		ComparedTo: "p50 of the same pod with no extra networks, interleaved",
		P50:        results.Ptr(round3(m.P50)),
		P90:        results.Ptr(round3(m.P90)),
		Params: map[string]interface{}{
			"pods_per_kind":     o.Pods,
			"three_networks_s":  m.params(),
			"no_networks_s":     p.params(),
			"p50_difference_s":  round3(m.P50 - p.P50),
			"mean_difference_s": round3(m.Mean - p.Mean),
			"dither":            o.Dither,
			"networks":          "macvlan+host-local on plxe2e-m1, macvlan+host-local on plxe2e-m2, bridge+host-local",
			"selection":         "k8s.v1.cni.cncf.io/networks: bench-m1,bench-m2,bench-br",
			"image":             images.Busybox + " (imagePullPolicy Never, sleep 3600, grace 0)",
			"method":            "one pod at a time, plain and three-network alternating, each Ready before the next is created (after a random 0-1 s wait if dither); all kept until the end; time from the create request to a watch seeing Ready=True; three-network pods checked to have 3 extra entries in network-status",
			"coarse_three_s":    Summarize(multiCoarse).params(),
			"coarse_none_s":     Summarize(plainCoarse).params(),
			"coarse_method":     "Ready condition's lastTransitionTime minus creationTimestamp (whole seconds, API server clock)",
			"raw_three_s":       multi,
			"raw_none_s":        plain,
			"load1_at_start":    load,
			"load1_at_end":      Load1(),
			"node":              cluster.NodeName,
			"api_server":        cluster.APIServerURL,
		},
		Time: time.Now().UTC(),
	}, nil
}

func setupPodReady(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	// A leftover of an interrupted run goes first.
	if err := cleanupPodReady(ctx, cs, dyn); err != nil {
		return err
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: readyNamespace}}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		return err
	}
	// A pod is admitted only once the namespace's default ServiceAccount exists.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(readyNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("no default ServiceAccount in %s: %w", readyNamespace, err)
	}
	for _, n := range readyNADs {
		nad := &unstructured.Unstructured{Object: map[string]interface{}{
			"apiVersion": "k8s.cni.cncf.io/v1",
			"kind":       "NetworkAttachmentDefinition",
			"metadata":   map[string]interface{}{"name": n.name, "namespace": readyNamespace},
			"spec":       map[string]interface{}{"config": n.config},
		}}
		if _, err := dyn.Resource(nadGVR).Namespace(readyNamespace).Create(ctx, nad, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("definition %s: %w", n.name, err)
		}
	}
	// Let the daemon's cache see the definitions before the first pod.
	time.Sleep(2 * time.Second)
	return nil
}

// podReady creates one pod in namespace ns and waits for it to be Ready. It returns the
// seconds from the create request to the watch event, and the same from
// the API's own (whole-second) timestamps.
func podReady(ctx context.Context, cs kubernetes.Interface, ns, name, networks string, extra int, timeout time.Duration) (float64, float64, error) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "plexus-bench"}},
		Spec: corev1.PodSpec{
			TerminationGracePeriodSeconds: new(int64),
			Containers: []corev1.Container{{
				Name: "app", Image: images.Busybox, ImagePullPolicy: corev1.PullNever,
				Command: []string{"sleep", "3600"},
			}},
		},
	}
	if networks != "" {
		pod.Annotations = map[string]string{"k8s.v1.cni.cncf.io/networks": networks}
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	created, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		return 0, 0, fmt.Errorf("pod %s: %w", name, err)
	}
	w, err := cs.CoreV1().Pods(ns).Watch(ctx, metav1.ListOptions{
		FieldSelector:   fields.OneTermEqualSelector("metadata.name", name).String(),
		ResourceVersion: created.ResourceVersion,
	})
	if err != nil {
		return 0, 0, err
	}
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			events, _ := cs.CoreV1().Events(ns).List(context.WithoutCancel(ctx), metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("involvedObject.name", name).String()})
			msg := ""
			if events != nil {
				for _, e := range events.Items {
					msg += "\n  " + e.Reason + ": " + e.Message
				}
			}
			return 0, 0, fmt.Errorf("pod %s not Ready within %s; its events:%s", name, timeout, msg)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return 0, 0, fmt.Errorf("pod %s: watch closed", name)
			}
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			p, ok := ev.Object.(*corev1.Pod)
			if !ok {
				continue
			}
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodReady && c.Status == corev1.ConditionTrue {
					exact := time.Since(start).Seconds()
					coarse := c.LastTransitionTime.Sub(p.CreationTimestamp.Time).Seconds()
					return exact, coarse, checkNetworks(p, extra)
				}
			}
		}
	}
}

// cleanupPodReady deletes the pods, the definitions and the namespace,
// waits for them to be gone, then removes the host-local folders and the
// bridge of the definitions.
func cleanupPodReady(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	var errs []error
	grace := int64(0)
	if err := cs.CoreV1().Pods(readyNamespace).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace},
		metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(readyNamespace).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("pods of %s not gone: %w", readyNamespace, err))
	}
	for _, n := range readyNADs {
		if err := dyn.Resource(nadGVR).Namespace(readyNamespace).Delete(ctx, n.name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, readyNamespace, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, readyNamespace, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("namespace %s not gone: %w", readyNamespace, err))
	}
	// The pods are gone from the API once their containers stopped; their
	// sandboxes' DELs (which free the addresses) may still run.
	time.Sleep(3 * time.Second)
	for _, n := range []string{"plexus-bench-m1", "plexus-bench-m2", "plexus-bench-br"} {
		if err := os.RemoveAll(filepath.Join(cluster.HostLocalDir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	if l, err := netlink.LinkByName(readyBridge); err == nil {
		if err := netlink.LinkDel(l); err != nil {
			errs = append(errs, fmt.Errorf("bridge %s: %w", readyBridge, err))
		}
	}
	return errors.Join(errs...)
}

// checkNetworks makes sure a Ready pod got what it asked for: the default
// network and extra more in its network-status annotation.
func checkNetworks(p *corev1.Pod, extra int) error {
	raw := p.Annotations["k8s.v1.cni.cncf.io/network-status"]
	if extra == 0 && raw == "" {
		return nil
	}
	var status []map[string]interface{}
	if err := json.Unmarshal([]byte(raw), &status); err != nil {
		return fmt.Errorf("pod %s: network-status %q: %w", p.Name, raw, err)
	}
	if len(status) != 1+extra {
		return fmt.Errorf("pod %s: %d networks in network-status, want %d: %s", p.Name, len(status), 1+extra, raw)
	}
	return nil
}
