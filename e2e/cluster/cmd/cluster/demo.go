package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/plexus-cni/plexus/e2e/cluster"
	"github.com/plexus-cni/plexus/e2e/images"
)

// demoManifests are what a user of plexus writes: three network
// definitions and a pod asking for all of them. The kernel here has no
// ipvlan, so the second network is a macvlan with host-local addresses;
// both macvlans sit on veths the cluster made, never on a host NIC.
var demoManifests = fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
# macvlan, address and MAC chosen by the pod (static IPAM, ips/mac capabilities)
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: storage, namespace: demo}
spec:
  config: '{"cniVersion": "1.0.0", "type": "macvlan", "master": "%[1]s", "mode": "bridge",
            "capabilities": {"ips": true, "mac": true}, "ipam": {"type": "static"}}'
---
# host-local addresses (ipvlan's place: this kernel has no ipvlan)
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: data, namespace: demo}
spec:
  config: '{"cniVersion": "1.0.0", "type": "macvlan", "master": "%[2]s", "mode": "bridge",
            "ipam": {"type": "host-local", "subnet": "10.77.0.0/24"}}'
---
# a bridge; the pod picks its address through cni-args
apiVersion: k8s.cni.cncf.io/v1
kind: NetworkAttachmentDefinition
metadata: {name: backplane, namespace: demo}
spec:
  config: '{"cniVersion": "1.0.0", "type": "bridge", "bridge": "plxe2e-br1",
            "ipam": {"type": "host-local", "subnet": "10.66.0.0/24"}}'
---
apiVersion: v1
kind: Pod
metadata:
  name: multi-nic
  namespace: demo
  annotations:
    k8s.v1.cni.cncf.io/networks: |
      [{"name": "storage", "interface": "stor0", "ips": ["192.168.50.10/24"], "mac": "02:00:00:5e:00:10"},
       {"name": "data"},
       {"name": "backplane", "cni-args": {"ips": ["10.66.0.42"]}}]
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: app
    image: %[3]s
    imagePullPolicy: Never
    command: [sleep, "3600"]
`, cluster.MacvlanMasters[0], cluster.MacvlanMasters[1], images.Busybox)

func demo(ctx context.Context, c *cluster.Cluster) error {
	step := func(format string, args ...any) { fmt.Printf("\n==> "+format+"\n", args...) }
	if err := c.Healthy(ctx); err != nil {
		return fmt.Errorf("no healthy cluster (make cluster-up): %w", err)
	}
	// host-local keeps one folder per network name (the NAD's, as the
	// configs name none); Down removes them.
	if err := c.NoteHostLocalNetworks("data", "backplane"); err != nil {
		return err
	}
	step("plexus, installed with its Helm chart (helm %s):", strings.Join(c.HelmArgs(), " "))
	out, err := c.Helm(ctx, "list", "--namespace", cluster.PlexusNamespace)
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	out, err = c.Kubectl(ctx, "", "get", "nodenetworkstatuses")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	step("a fresh namespace demo")
	if _, err := c.Kubectl(ctx, "", "delete", "namespace", "demo", "--ignore-not-found", "--wait=true"); err != nil {
		return err
	}
	step("three NetworkAttachmentDefinitions and a pod asking for all of them (kubectl apply -f -):")
	fmt.Print(indent(demoManifests))
	// The namespace's default ServiceAccount must exist before a pod is admitted.
	if _, err := c.Kubectl(ctx, demoManifests[:strings.Index(demoManifests, "---")], "apply", "-f", "-"); err != nil {
		return err
	}
	if err := waitKubectl(ctx, c, 30*time.Second, "get", "serviceaccount", "default", "-n", "demo"); err != nil {
		return err
	}
	out, err = c.Kubectl(ctx, demoManifests, "apply", "-f", "-")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	step("waiting for pod demo/multi-nic to be Ready")
	start := time.Now()
	if _, err := c.Kubectl(ctx, "", "wait", "-n", "demo", "pod/multi-nic", "--for=condition=Ready", "--timeout=120s"); err != nil {
		events, _ := c.Kubectl(ctx, "", "get", "events", "-n", "demo", "--sort-by=.lastTimestamp")
		return fmt.Errorf("%w\nevents:\n%s", err, events)
	}
	fmt.Printf("    Ready %s after it was created\n", elapsed(time.Since(start)))

	step("inside the pod: kubectl exec -n demo multi-nic -- ip -o addr")
	out, err = c.Kubectl(ctx, "", "exec", "-n", "demo", "multi-nic", "--", "ip", "-o", "addr")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))
	out, err = c.Kubectl(ctx, "", "exec", "-n", "demo", "multi-nic", "--", "ip", "-o", "link", "show", "stor0")
	if err != nil {
		return err
	}
	fmt.Print(indent(out))

	step("the pod's k8s.v1.cni.cncf.io/network-status annotation")
	status, err := c.Kubectl(ctx, "", "get", "pod", "-n", "demo", "multi-nic",
		"-o", `jsonpath={.metadata.annotations.k8s\.v1\.cni\.cncf\.io/network-status}`)
	if err != nil {
		return err
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, []byte(status), "", "  "); err != nil {
		return fmt.Errorf("network-status is not JSON: %w: %s", err, status)
	}
	fmt.Print(indent(pretty.String()))

	step("done. The cluster keeps running:")
	fmt.Printf("    export KUBECONFIG=%s\n", c.AdminKubeconfig())
	fmt.Printf("    %s get pods -A\n", "kubectl")
	fmt.Println("    make demo-down     # tears the cluster down")
	return nil
}

func waitKubectl(ctx context.Context, c *cluster.Cluster, timeout time.Duration, args ...string) error {
	deadline := time.Now().Add(timeout)
	for {
		_, err := c.Kubectl(ctx, "", args...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}
