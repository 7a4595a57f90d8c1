package cluster

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/plexus-cni/plexus/e2e/images"
)

// kubeletConfig is kubelet's config file. cgroupfs and failCgroupV1: false,
// because this host has cgroup v1 and no systemd; failSwapOn: false, since
// swap is the host's business; no cluster DNS (there is none); eviction
// thresholds low, so a busy disk does not evict the suite's pods; a static
// pod dir (StaticPodDir) for the static pod spec.
const kubeletConfig = `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://%[1]s
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: %[2]q
authorization:
  mode: Webhook
tlsCertFile: %[3]q
tlsPrivateKeyFile: %[4]q
resolvConf: /etc/resolv.conf
clusterDomain: cluster.local
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
rotateCertificates: false
serializeImagePulls: false
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%%
  imagefs.available: 1%%
imageGCHighThresholdPercent: 99
imageGCLowThresholdPercent: 98
staticPodPath: %[5]q
`

func (c *Cluster) startKubelet(ctx context.Context, nodeIP net.IP) error {
	if err := os.MkdirAll(StaticPodDir, 0o755); err != nil {
		return err
	}
	cfg := fmt.Sprintf(kubeletConfig, ContainerdSocket, c.path("pki", "ca.crt"),
		c.path("pki", "kubelet-serving.crt"), c.path("pki", "kubelet-serving.key"), StaticPodDir)
	file := c.path("kubelet", "config.yaml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := c.launch("kubelet", c.bin("kubelet"),
		"--config="+file,
		"--kubeconfig="+c.kubeconfig("kubelet"),
		"--hostname-override="+NodeName,
		"--node-ip="+nodeIP.String(),
		"--root-dir="+KubeletRootDir,
		"--cert-dir="+c.path("kubelet", "pki"),
		"--pod-infra-container-image="+images.Pause,
		"--v=2",
	); err != nil {
		return err
	}
	cs, err := c.clientset()
	if err != nil {
		return err
	}
	last := ""
	return waitFor(ctx, "node "+NodeName+" Ready", 3*time.Minute, func(ctx context.Context) error {
		if err := c.alive("kubelet"); err != nil {
			return err
		}
		node, err := cs.CoreV1().Nodes().Get(ctx, NodeName, metav1.GetOptions{})
		state := "not registered"
		if err == nil {
			state = "registered, not Ready"
			for _, cond := range node.Status.Conditions {
				if cond.Type == corev1.NodeReady {
					state = fmt.Sprintf("Ready=%s (%s)", cond.Status, cond.Message)
					if cond.Status == corev1.ConditionTrue {
						c.progress("node %s Ready", NodeName)
						return nil
					}
				}
			}
		}
		if state != last {
			c.progress("kubelet: node %s %s", NodeName, state)
			last = state
		}
		return fmt.Errorf("node %s: %s", NodeName, state)
	})
}
