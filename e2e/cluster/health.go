package cluster

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Healthy returns nil when every component runs, the node is set up as
// this tool sets it up now, the node is Ready and plexus's daemon is
// Ready; otherwise what is wrong.
func (c *Cluster) Healthy(ctx context.Context) error {
	if _, err := os.Stat(c.path("run", "up")); err != nil {
		return fmt.Errorf("no completed cluster in %s", c.StateDir)
	}
	if err := c.nodeCurrent(); err != nil {
		return err
	}
	for _, name := range components {
		if err := c.alive(name); err != nil {
			return fmt.Errorf("%s is not running", name)
		}
	}
	if err := c.apiServerCurrent(); err != nil {
		return err
	}
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	if err != nil {
		return err
	}
	if !nodeReady(node) {
		return fmt.Errorf("node %s is not Ready", NodeName)
	}
	if _, err := plexusState(ctx, cs.CoreV1().Pods(PlexusNamespace)); err != nil {
		return err
	}
	_, err = os.Stat(PlexusConflist)
	return err
}

// Status prints each component's process, the node and plexus's daemon.
func (c *Cluster) Status(ctx context.Context, w io.Writer) error {
	if !c.exists() {
		fmt.Fprintf(w, "no cluster (%s is empty)\n", c.StateDir)
		return nil
	}
	for _, name := range components {
		if pid, ok := c.pidOf(name); ok {
			fmt.Fprintf(w, "%-24s running, pid %d, log %s\n", name, pid, c.logFile(name))
		} else {
			fmt.Fprintf(w, "%-24s not running, log %s\n", name, c.logFile(name))
		}
	}
	if _, ok := c.pidOf("kube-apiserver"); !ok {
		return nil
	}
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
	switch {
	case err != nil:
		fmt.Fprintf(w, "%-24s %v\n", "node", err)
	default:
		fmt.Fprintf(w, "%-24s %s Ready=%v\n", "node", node.Name, nodeReady(node))
	}
	state, _ := plexusState(ctx, cs.CoreV1().Pods(PlexusNamespace))
	fmt.Fprintf(w, "%-24s %s\n", "plexus", state)
	fmt.Fprintf(w, "%-24s %s\n", "kubeconfig", c.AdminKubeconfig())
	return nil
}

func nodeReady(n *corev1.Node) bool {
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nodeCurrent fails when the node's setup is an older tool's: a cluster
// started before the default network or whereabouts changed is not one
// the suite can reuse.
func (c *Cluster) nodeCurrent() error {
	conf, err := os.ReadFile(DefaultConflist)
	if err != nil {
		return err
	}
	nodeIP, err := hostIP()
	if err != nil {
		return err
	}
	if !bytes.Equal(conf, defaultConflist(nodeIP)) {
		return fmt.Errorf("%s is not the default network this tool writes", DefaultConflist)
	}
	for _, f := range []string{WhereaboutsKubeconfig, WhereaboutsConf, filepath.Join(CNIBinDir, "whereabouts")} {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("whereabouts is not set up: %w", err)
		}
	}
	return nil
}

// apiServerArgs are kube-apiserver flags a cluster started by an older
// version of this tool may lack; without them the admission webhook cannot
// be reached, or cannot reach the API server.
var apiServerArgs = []string{"--bind-address=0.0.0.0", "--enable-aggregator-routing=true"}

// apiServerCurrent fails unless the running kube-apiserver has
// apiServerArgs.
func (c *Cluster) apiServerCurrent() error {
	pid, ok := c.pidOf("kube-apiserver")
	if !ok {
		return fmt.Errorf("kube-apiserver is not running")
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return err
	}
	args := strings.Split(string(b), "\x00")
	for _, want := range apiServerArgs {
		if !slices.Contains(args, want) {
			return fmt.Errorf("kube-apiserver runs without %s (started by an older e2e/cluster)", want)
		}
	}
	return nil
}
