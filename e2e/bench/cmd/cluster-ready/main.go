// Command cluster-ready measures, on the real single-node cluster of
// e2e/cluster, figure 5, cluster_pod_ready_s (pod create to Ready with
// three extra networks against none), and cluster_webhook_pod_ready_s (what
// the admission webhook adds to a one-network pod's create to Ready). It
// merges the figures into bench/results.json and prints them. Use `make bench-cluster`; docs/benchmarks.md describes it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/plexus-cni/plexus/e2e/bench"
	"github.com/plexus-cni/plexus/e2e/bench/results"
)

func main() {
	kubeconfig := flag.String("cluster-kubeconfig", "", "the cluster's admin kubeconfig (bin/plexus-cluster kubeconfig)")
	out := flag.String("out", "bench/results.json", "results file (the figure replaces one of the same name)")
	var o bench.PodReadyOptions
	flag.IntVar(&o.Pods, "pods", 30, "pods of each kind (no extra networks, three)")
	flag.DurationVar(&o.Timeout, "pod-timeout", 2*time.Minute, "for one pod to become Ready")
	flag.BoolVar(&o.Dither, "dither", true, "wait a random 0-1 s before each create (out of step with the kubelet's 1 s relist)")
	figures := flag.String("figures", "networks,webhook", "which figures, comma separated: networks (cluster_pod_ready_s), webhook (cluster_webhook_pod_ready_s)")
	timeout := flag.Duration("timeout", 20*time.Minute, "give up after this")
	flag.Parse()
	if *kubeconfig == "" {
		fmt.Fprintln(os.Stderr, "cluster-ready: -cluster-kubeconfig is required")
		os.Exit(2)
	}
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, *timeout)
	defer cancelTimeout()
	if err := run(ctx, *kubeconfig, *out, strings.Split(*figures, ","), o); err != nil {
		fmt.Fprintln(os.Stderr, "bench-cluster failed:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, kubeconfig, out string, figures []string, o bench.PodReadyOptions) error {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return err
	}
	for _, f := range figures {
		switch f {
		case "networks":
			if err := networks(ctx, cfg, out, o); err != nil {
				return err
			}
		case "webhook":
			if err := webhook(ctx, cfg, out, o); err != nil {
				return err
			}
		default:
			return fmt.Errorf("unknown figure %q: networks or webhook", f)
		}
	}
	return nil
}

func networks(ctx context.Context, cfg *rest.Config, out string, o bench.PodReadyOptions) error {
	fmt.Printf("==> cluster_pod_ready_s: %d pods with no extra networks and %d with three, alternating, one at a time\n", o.Pods, o.Pods)
	r, err := bench.ClusterPodReady(ctx, cfg, o)
	if err != nil {
		return err
	}
	if err := results.Update(out, []results.Result{r}); err != nil {
		return err
	}
	none := r.Params["no_networks_s"].(map[string]interface{})
	fmt.Printf("cluster_pod_ready_s: three networks p50 %s s p90 %s s; no extra networks p50 %v s p90 %v s; p50 difference %s s, mean difference %v s (-> %s)\n",
		results.Format(*r.P50), results.Format(*r.P90), none["p50"], none["p90"], results.Format(r.Value), r.Params["mean_difference_s"], out)
	return nil
}

func webhook(ctx context.Context, cfg *rest.Config, out string, o bench.PodReadyOptions) error {
	fmt.Printf("==> cluster_webhook_pod_ready_s: %d one-network pods the webhook checks and %d it is not called for, alternating, one at a time\n", o.Pods, o.Pods)
	r, err := bench.ClusterWebhookPodReady(ctx, cfg, o)
	if err != nil {
		return err
	}
	if err := results.Update(out, []results.Result{r}); err != nil {
		return err
	}
	without := r.Params["without_webhook_s"].(map[string]interface{})
	fmt.Printf("cluster_webhook_pod_ready_s: with the webhook p50 %s s p90 %s s; without p50 %v s p90 %v s; p50 difference %s s, p90 difference %v s, mean difference %v s; the API server's %v calls of the webhook: mean %v ms, %v within 5 ms (-> %s)\n",
		results.Format(*r.P50), results.Format(*r.P90), without["p50"], without["p90"], results.Format(r.Value), r.Params["p90_difference_s"], r.Params["mean_difference_s"],
		r.Params["admission_calls"], r.Params["admission_call_mean_ms"], r.Params["admission_calls_within_5ms"], out)
	return nil
}
