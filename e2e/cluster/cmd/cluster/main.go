// Command cluster starts, inspects and tears down the single-node
// Kubernetes cluster that plexus's e2e suite and demo run on (see package
// e2e/cluster). Run it as root from the repository; `make cluster-up`,
// `make e2e` and `make demo` build what it needs first.
//
//	cluster up [--reuse]   start a fresh cluster (tearing down a previous one),
//	                       or with --reuse keep a healthy one
//	cluster down           tear it down, also after a failed up
//	cluster status         what runs
//	cluster kubeconfig     print the admin kubeconfig's path
//	cluster values         print the path of the values plexus was installed with
//	cluster images         only build the image archives
//	cluster demo           on a running cluster: a pod with three extra networks
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/plexus-cni/plexus/e2e/cluster"
	"github.com/plexus-cni/plexus/e2e/images"
)

func main() {
	repo, err := repoRoot()
	if err != nil {
		fail(err)
	}
	cfg := cluster.Config{Out: os.Stdout, RepoDir: repo}
	fs := flag.NewFlagSet("cluster", flag.ExitOnError)
	fs.StringVar(&cfg.StateDir, "state-dir", filepath.Join(repo, ".cache", "cluster"), "the cluster's state: certificates, logs, pids, data")
	fs.StringVar(&cfg.K8sBinDir, "k8s-bin", "", "folder of kube-apiserver, kubelet, ..., kubectl and etcd (default .cache/k8s/VERSION/bin)")
	fs.StringVar(&cfg.CNIPluginDir, "cni-bin", "", "folder of the statically linked reference CNI plugins (default .cache/cni/v1.9.1/bin, make cni-plugins)")
	fs.StringVar(&cfg.ImageDir, "image-dir", filepath.Join(repo, ".cache", "images"), "where image archives are written")
	fs.StringVar(&cfg.HelmBin, "helm", "", "the helm that installs plexus's chart (make helm)")
	fs.StringVar(&cfg.WhereaboutsDir, "whereabouts-dir", "", "whereabouts' plugin (bin/) and CRDs (crds/) (default .cache/whereabouts/VERSION, make whereabouts)")
	reuse := fs.Bool("reuse", false, "up: keep a healthy running cluster (re-importing a changed plexus image) instead of starting afresh")
	fs.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: cluster up|down|status|kubeconfig|values|images|demo [flags]")
		fs.PrintDefaults()
	}
	if len(os.Args) < 2 {
		fs.Usage()
		os.Exit(2)
	}
	sub := os.Args[1]
	_ = fs.Parse(os.Args[2:])
	if cfg.K8sBinDir == "" {
		cfg.K8sBinDir = filepath.Join(repo, ".cache", "k8s", hackVersion(repo, "build-k8s.sh"), "bin")
	}
	if cfg.WhereaboutsDir == "" {
		cfg.WhereaboutsDir = filepath.Join(repo, ".cache", "whereabouts", hackVersion(repo, "build-whereabouts.sh"))
	}
	if cfg.CNIPluginDir == "" {
		cfg.CNIPluginDir = filepath.Join(repo, ".cache", "cni", "v1.9.1", "bin")
	}
	// Ctrl-C cancels the current wait; the cluster's processes, in
	// sessions of their own, keep running until `cluster down`.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	c := cluster.New(cfg)

	switch sub {
	case "up":
		if *reuse {
			err = upReuse(ctx, c)
		} else {
			err = c.Up(ctx)
		}
		if err != nil {
			err = fmt.Errorf("%w\n(logs: %s/logs; `make cluster-down` tears down what was started)", err, cfg.StateDir)
		}
	case "down":
		err = c.Down(ctx)
	case "status":
		err = c.Status(ctx, os.Stdout)
	case "kubeconfig":
		fmt.Println(c.AdminKubeconfig())
	case "values":
		fmt.Println(c.ValuesFile())
	case "images":
		_, err = images.Build(ctx, repo, cfg.ImageDir, os.Stdout)
	case "demo":
		err = demo(ctx, c)
	default:
		fs.Usage()
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}

// upReuse keeps a healthy cluster, refreshing plexus's image, and starts a
// fresh one otherwise.
func upReuse(ctx context.Context, c *cluster.Cluster) error {
	if err := c.Healthy(ctx); err != nil {
		fmt.Printf("no healthy cluster to reuse (%v): starting one\n", err)
		return c.Up(ctx)
	}
	fmt.Println("reusing the running cluster")
	return c.RefreshPlexus(ctx)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "cluster:", err)
	os.Exit(1)
}

// repoRoot is the enclosing folder whose go.mod is plexus's module.
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.Contains(string(b), "module github.com/plexus-cni/plexus\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("run from within the plexus repository")
		}
		dir = parent
	}
}

// hackVersion is the version a build script of hack/ builds (Kubernetes,
// whereabouts): its output for --print-version.
func hackVersion(repo, script string) string {
	out, err := exec.Command(filepath.Join(repo, "hack", script), "--print-version").Output()
	if err != nil {
		fail(fmt.Errorf("hack/%s --print-version: %w", script, err))
	}
	return strings.TrimSpace(string(out))
}

// elapsed formats a duration for progress lines.
func elapsed(d time.Duration) string { return d.Round(100 * time.Millisecond).String() }
