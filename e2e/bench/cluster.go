package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime/schema"
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
func ClusterPodReady(ctx context.Context, cfg *rest.Config, o PodReadyOptions) (results.Result, error) {
	return withFixtures(ctx, cfg, setupPodReady, cleanupPodReady, func(cs kubernetes.Interface) (results.Result, error) {
		return podReadyFigure(ctx, cs, o)
	})
}

func podReadyFigure(ctx context.Context, cs kubernetes.Interface, o PodReadyOptions) (results.Result, error) {
	load := Load1()
	plain := &podKind{summary: "no_networks", raw: "none", ready: readyIn(cs, readyNamespace, "", 0, o.Timeout)}
	multi := &podKind{summary: "three_networks", raw: "three", ready: readyIn(cs, readyNamespace, "bench-m1,bench-m2,bench-br", 3, o.Timeout)}
	if err := interleave(ctx, o, plain, multi); err != nil {
		return results.Result{}, err
	}
	return abResult("cluster_pod_ready_s", "p50 of the same pod with no extra networks, interleaved", o, multi, plain, load,
		map[string]interface{}{
			"networks":       "macvlan+host-local on plxe2e-m1, macvlan+host-local on plxe2e-m2, bridge+host-local",
			"selection":      "k8s.v1.cni.cncf.io/networks: bench-m1,bench-m2,bench-br",
			"image":          images.Busybox + " (imagePullPolicy Never, sleep 3600, grace 0)",
			"method":         "one pod at a time, plain and three-network alternating, each Ready before the next is created (after a random 0-1 s wait if dither); all kept until the end; time from the create request to a watch seeing Ready=True; three-network pods checked to have 3 extra entries in network-status",
			"coarse_three_s": Summarize(multi.coarse).params(),
			"coarse_none_s":  Summarize(plain.coarse).params(),
			"coarse_method":  "Ready condition's lastTransitionTime minus creationTimestamp (whole seconds, API server clock)",
			"api_server":     cluster.APIServerURL,
		}), nil
}

func setupPodReady(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface) error {
	if err := createNamespace(ctx, cs, readyNamespace, nil); err != nil {
		return err
	}
	for _, n := range readyNADs {
		if err := createNAD(ctx, dyn, readyNamespace, n.name, n.config); err != nil {
			return err
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
	var nads []string
	for _, n := range readyNADs {
		nads = append(nads, n.name)
	}
	errs := deleteNamespace(ctx, cs, dyn, readyNamespace, nads...)
	errs = append(errs, removeHostLocal("plexus-bench-m1", "plexus-bench-m2", "plexus-bench-br")...)
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
