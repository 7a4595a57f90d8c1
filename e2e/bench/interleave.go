package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/plexus-cni/plexus/e2e/bench/results"
	"github.com/plexus-cni/plexus/e2e/cluster"
)

// What the cluster figures share: two kinds of pod measured interleaved
// (figure 5: three networks against none; the webhook figure: the webhook
// called against not), their result, and their fixtures.

// fixtures sets up or cleans up a figure's objects on the cluster.
type fixtures func(context.Context, kubernetes.Interface, dynamic.Interface) error

// withFixtures runs measure on the cluster of cfg between setup and
// cleanup. A leftover of an interrupted run is cleaned up first; cleanup
// runs also when setup or measure fail or ctx ends, with a context of its
// own, and its error joins theirs.
func withFixtures(ctx context.Context, cfg *rest.Config, setup, cleanup fixtures, measure func(kubernetes.Interface) (results.Result, error)) (res results.Result, err error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	if err := cleanup(ctx, cs, dyn); err != nil {
		return res, err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Minute)
		defer cancel()
		err = errors.Join(err, cleanup(cctx, cs, dyn))
	}()
	if err := setup(ctx, cs, dyn); err != nil {
		return res, err
	}
	return measure(cs)
}

// podKind is one of an interleaved run's two kinds of pod.
type podKind struct {
	// summary and raw name the kind in the result's parameters: its
	// summary is <summary>_s, its samples raw_<raw>_s.
	summary, raw string
	// ready makes one pod of the kind, named name, and waits for it to be
	// Ready (podReady).
	ready func(ctx context.Context, name string) (exact, coarse float64, err error)
	// exact and coarse are the seconds each pod took to be Ready, as
	// podReady measures them; interleave fills them.
	exact, coarse []float64
}

// readyIn is podReady of a pod in namespace ns asking for networks,
// extra of them.
func readyIn(cs kubernetes.Interface, ns, networks string, extra int, timeout time.Duration) func(context.Context, string) (float64, float64, error) {
	return func(ctx context.Context, name string) (float64, float64, error) {
		return podReady(ctx, cs, ns, name, networks, extra, timeout)
	}
}

// interleave makes o.Pods pods of each kind, one at a time, first and
// second alternating (ready-00 a first, ready-01 a second, ...), each
// Ready before the next is created, so that both kinds see the same
// cluster.
func interleave(ctx context.Context, o PodReadyOptions, first, second *podKind) error {
	for i := 0; i < 2*o.Pods; i++ {
		kind := first
		if i%2 == 1 {
			kind = second
		}
		// The kubelet notices a started container at its next relist (every
		// second), and a create right after the previous pod's Ready would
		// be in step with it: a random wait first spreads the creates over
		// the relist period, so that the mean (and the p50, roughly) of
		// each kind moves with its real cost instead of in 1 s steps.
		if o.Dither {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(rand.Int64N(int64(time.Second)))):
			}
		}
		exact, coarse, err := kind.ready(ctx, fmt.Sprintf("ready-%02d", i))
		if err != nil {
			return err
		}
		kind.exact, kind.coarse = append(kind.exact, exact), append(kind.coarse, coarse)
	}
	return nil
}

// abResult is the figure name of an interleaved run: Value is the p50 of
// a (the figure's kind) minus that of b (what it is compared to), in
// seconds, and P50 and P90 are a's. Its parameters are the run's common
// ones (pods per kind, each kind's summary and samples, the p50, p90 and
// mean differences, dither, the load at start, given, and at the end, the
// node) and the figure's own, params.
func abResult(name, comparedTo string, o PodReadyOptions, a, b *podKind, load float64, params map[string]interface{}) results.Result {
	sa, sb := Summarize(a.exact), Summarize(b.exact)
	p := map[string]interface{}{
		"pods_per_kind":       o.Pods,
		a.summary + "_s":      sa.params(),
		b.summary + "_s":      sb.params(),
		"p50_difference_s":    round3(sa.P50 - sb.P50),
		"p90_difference_s":    round3(sa.P90 - sb.P90),
		"mean_difference_s":   round3(sa.Mean - sb.Mean),
		"dither":              o.Dither,
		"raw_" + a.raw + "_s": a.exact,
		"raw_" + b.raw + "_s": b.exact,
		"load1_at_start":      load,
		"load1_at_end":        Load1(),
		"node":                cluster.NodeName,
	}
	for k, v := range params {
		p[k] = v
	}
	return results.Result{
		Name:       name,
		Value:      round3(sa.P50 - sb.P50),
		Unit:       "s",
		ComparedTo: comparedTo,
		P50:        results.Ptr(round3(sa.P50)),
		P90:        results.Ptr(round3(sa.P90)),
		Params:     p,
		Time:       time.Now().UTC(),
	}
}

// createNamespace creates namespace ns with labels and waits for its
// default ServiceAccount, without which no pod is admitted.
func createNamespace(ctx context.Context, cs kubernetes.Interface, ns string, labels map[string]string) error {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: labels}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("no default ServiceAccount in %s: %w", ns, err)
	}
	return nil
}

// createNAD creates the NetworkAttachmentDefinition ns/name of config.
func createNAD(ctx context.Context, dyn dynamic.Interface, ns, name, config string) error {
	nad := &unstructured.Unstructured{Object: map[string]interface{}{
		"apiVersion": "k8s.cni.cncf.io/v1",
		"kind":       "NetworkAttachmentDefinition",
		"metadata":   map[string]interface{}{"name": name, "namespace": ns},
		"spec":       map[string]interface{}{"config": config},
	}}
	if _, err := dyn.Resource(nadGVR).Namespace(ns).Create(ctx, nad, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("definition %s/%s: %w", ns, name, err)
	}
	return nil
}

// deleteNamespace deletes the pods of namespace ns, its definitions nads
// and the namespace, and waits for the pods and the namespace to be gone;
// what is already gone is no error.
func deleteNamespace(ctx context.Context, cs kubernetes.Interface, dyn dynamic.Interface, ns string, nads ...string) []error {
	var errs []error
	grace := int64(0)
	if err := cs.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{GracePeriodSeconds: &grace},
		metav1.ListOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		return err == nil && len(pods.Items) == 0, nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("pods of %s not gone: %w", ns, err))
	}
	for _, name := range nads {
		if err := dyn.Resource(nadGVR).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		errs = append(errs, err)
	}
	if err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	}); err != nil {
		errs = append(errs, fmt.Errorf("namespace %s not gone: %w", ns, err))
	}
	return errs
}

// removeHostLocal removes host-local's folders of the networks named
// (their CNI names), once the pods that used them are gone: it waits a
// little first, since the sandboxes' DELs, which free the addresses, may
// still run when the pods are gone from the API.
func removeHostLocal(networks ...string) []error {
	time.Sleep(3 * time.Second)
	var errs []error
	for _, n := range networks {
		if err := os.RemoveAll(filepath.Join(cluster.HostLocalDir, n)); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}
