// Command bench measures what plexus costs a node and writes the figures
// to bench/results.json (merged: figures it did not measure are kept) and
// a table to stdout. It runs as root in a network namespace of its own;
// use `make bench`, or `make bench-profile` for a CPU profile of ADD.
// docs/benchmarks.md describes every figure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/e2e/bench"
	"github.com/plexus-cni/plexus/e2e/bench/results"
)

// figureGroups are what -only selects.
var figureGroups = []string{"overhead", "api", "burst", "rss"}

type options struct {
	cfg         bench.Config
	out         string
	only        []string
	overhead    bench.OverheadOptions
	apiPods     int
	burst       int
	concurrency []int
	memory      bench.MemoryOptions
	profile     string
	profileAdds int
	timeout     time.Duration
}

func main() {
	o := parseFlags()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, o.timeout)
	defer cancelTimeout()
	if err := run(ctx, o); err != nil {
		fmt.Fprintln(os.Stderr, "bench failed:", err)
		os.Exit(1)
	}
}

func parseFlags() *options {
	o := &options{}
	wd, _ := os.Getwd()
	var only, concurrency string
	flag.StringVar(&o.cfg.RepoRoot, "repo-root", wd, "the plexus module root (CRDs under config/crd)")
	flag.StringVar(&o.cfg.Assets, "assets", os.Getenv("KUBEBUILDER_ASSETS"), "directory holding kube-apiserver and etcd")
	flag.StringVar(&o.cfg.PluginsDir, "cni-bin", os.Getenv("CNI_PLUGINS_DIR"), "directory of the reference CNI plugins")
	flag.StringVar(&o.cfg.Shim, "shim", "bin/plexus", "the plexus CNI binary")
	flag.StringVar(&o.cfg.Daemon, "daemon", "bin/plexus-daemon", "the plexus-daemon binary")
	flag.StringVar(&o.cfg.LogDir, "log-dir", "bench", "where the daemons' logs go")
	flag.StringVar(&o.cfg.HostPrefix, "host-prefix", "/", "the daemon's --host-prefix: \"/\" runs every delegate chrooted, as the installs do; empty runs them in the daemon's root")
	flag.BoolVar(&o.cfg.NoAddedInterfaceEvents, "no-added-interface-events", false, "run the in-process daemon (figures 1-3) with --added-interface-events=false")
	flag.StringVar(&o.out, "out", "bench/results.json", "results file (figures measured replace those of the same name)")
	flag.StringVar(&only, "only", strings.Join(figureGroups, ","), "figure groups to run: "+strings.Join(figureGroups, ","))
	flag.IntVar(&o.overhead.Pairs, "pairs", 200, "overhead: pairs of (plexus, direct) ADD+DEL measured, at most")
	flag.IntVar(&o.overhead.Warmup, "warmup", 10, "overhead: pairs run first and not counted")
	flag.DurationVar(&o.overhead.Budget, "pairs-budget", 150*time.Second, "overhead: stop measuring pairs after this")
	flag.IntVar(&o.apiPods, "api-pods", 50, "api: sandboxes whose ADD and DEL requests are counted")
	flag.IntVar(&o.burst, "burst", 100, "burst: sandboxes added then deleted back to back")
	flag.StringVar(&concurrency, "burst-concurrency", "1,4", "burst: calls at once, one figure each (1 is burst_ratio)")
	flag.IntVar(&o.memory.Namespaces, "rss-namespaces", 100, "rss: namespaces")
	flag.IntVar(&o.memory.Definitions, "rss-definitions", 10000, "rss: network definitions, spread over the namespaces")
	flag.IntVar(&o.memory.Pods, "rss-pods", 110, "rss: pods on the daemon's node")
	flag.IntVar(&o.memory.OtherPods, "rss-other-pods", 1000, "rss: pods on other nodes")
	flag.DurationVar(&o.memory.Window, "rss-window", 35*time.Second, "rss: how long memory is sampled in each phase (cover one --resync)")
	flag.DurationVar(&o.memory.Interval, "rss-interval", 500*time.Millisecond, "rss: how often memory is sampled")
	flag.IntVar(&o.memory.CreateWorker, "create-workers", 16, "rss: goroutines creating objects")
	flag.StringVar(&o.profile, "cpuprofile", "", "instead of the figures, write a CPU profile of plexus serving ADDs to this file")
	flag.IntVar(&o.profileAdds, "profile-adds", 300, "ADDs (each with its DEL) in the CPU profile")
	flag.DurationVar(&o.timeout, "timeout", 15*time.Minute, "give up after this")
	flag.Parse()
	o.only = strings.Split(only, ",")
	for _, c := range strings.Split(concurrency, ",") {
		if v, err := strconv.Atoi(strings.TrimSpace(c)); err == nil && v > 0 {
			o.concurrency = append(o.concurrency, v)
		}
	}
	return o
}

func run(ctx context.Context, o *options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (network namespaces, links); run `make bench`")
	}
	for _, g := range o.only {
		if !slices.Contains(figureGroups, g) {
			return fmt.Errorf("-only: unknown figure group %q (have %v)", g, figureGroups)
		}
	}
	for _, p := range []*string{&o.cfg.Shim, &o.cfg.Daemon, &o.cfg.LogDir, &o.out} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return err
		}
		*p = abs
	}
	if err := os.MkdirAll(o.cfg.LogDir, 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(o.cfg.LogDir, "daemon.log"))
	if err != nil {
		return err
	}
	defer logFile.Close()
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile)))
	o.cfg.Progress = os.Stdout

	if o.profile != "" {
		return profile(ctx, o)
	}
	fmt.Printf("plexus benchmarks: %d CPUs, load average %.2f at start\n", bench.Machine(0)["cpus"], bench.Load1())
	var all []results.Result
	err = measure(ctx, o, &all)
	if len(all) > 0 {
		if werr := results.Update(o.out, all); werr != nil {
			err = errors.Join(err, werr)
		}
		fmt.Println()
		_ = results.Table(os.Stdout, all)
		fmt.Printf("\nwritten to %s\n", o.out)
	}
	return err
}

func step(format string, args ...interface{}) { fmt.Printf("==> "+format+"\n", args...) }

func measure(ctx context.Context, o *options, all *[]results.Result) error {
	wants := func(g string) bool { return slices.Contains(o.only, g) }
	if wants("overhead") || wants("api") || wants("burst") {
		if err := onNode(ctx, o, wants, all); err != nil {
			return err
		}
	}
	if wants("rss") {
		step("daemon_rss_mib: the daemon binary with %d definitions in %d namespaces and %d pods on its node",
			o.memory.Definitions, o.memory.Namespaces, o.memory.Pods)
		rs, err := bench.DaemonMemory(ctx, o.cfg, o.memory)
		if err != nil {
			return fmt.Errorf("daemon_rss_mib: %w", err)
		}
		*all = append(*all, rs...)
	}
	return nil
}

// onNode runs the figures that share the in-process daemon's node.
func onNode(ctx context.Context, o *options, wants func(string) bool, all *[]results.Result) error {
	step("starting a node: kube-apiserver, the plexus daemon, three networks")
	n, err := bench.StartNode(ctx, o.cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	for _, desc := range n.Networks {
		fmt.Println("  " + desc)
	}
	ovh, err := n.Sandboxes(ctx, "ovh", 0, 2)
	if err != nil {
		return err
	}
	api, err := n.Sandboxes(ctx, "api", 2, o.apiPods)
	if err != nil {
		return err
	}
	burst, err := n.Sandboxes(ctx, "burst", 2+o.apiPods, o.burst)
	if err != nil {
		return err
	}
	if wants("overhead") {
		step("add_overhead_ms, del_overhead_ms: up to %d interleaved pairs, at most %s", o.overhead.Pairs, o.overhead.Budget)
		rs, err := bench.Overhead(ctx, n, ovh[0], ovh[1], o.overhead)
		if err != nil {
			return fmt.Errorf("overhead: %w", err)
		}
		*all = append(*all, rs...)
	}
	if wants("api") {
		step("api_requests_per_add, api_requests_per_del: %d sandboxes", len(api))
		rs, err := bench.APIRequests(ctx, n, api)
		if err != nil {
			return fmt.Errorf("api requests: %w", err)
		}
		*all = append(*all, rs...)
	}
	if wants("burst") {
		for _, c := range o.concurrency {
			name := "burst_ratio"
			if c > 1 {
				name = fmt.Sprintf("burst_ratio_%dway", c)
			}
			step("%s: %d sandboxes x %d networks, %d at once", name, len(burst), len(n.Networks), c)
			rs, err := bench.Burst(ctx, n, burst, c, name)
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			*all = append(*all, rs...)
		}
	}
	left, err := n.Leftovers(append(append(ovh, api...), burst...))
	if err != nil {
		return err
	}
	if len(left) > 0 {
		return fmt.Errorf("sandboxes left things behind: %v", left)
	}
	return nil
}

func profile(ctx context.Context, o *options) error {
	step("starting a node for the profile")
	n, err := bench.StartNode(ctx, o.cfg)
	if err != nil {
		return err
	}
	defer n.Close()
	sb, err := n.Sandboxes(ctx, "prof", 0, 1)
	if err != nil {
		return err
	}
	step("profiling %d ADDs (each followed by its DEL)", o.profileAdds)
	took, err := bench.ProfileAdds(ctx, n, sb[0], o.profileAdds, o.profile)
	if err != nil {
		return err
	}
	fmt.Printf("  %d ADD+DEL in %.1fs; CPU profile in %s\n", o.profileAdds, took.Seconds(), o.profile)
	return nil
}
