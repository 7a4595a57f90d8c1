package cluster

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/plexus-cni/plexus/e2e/images"
)

// containerdConfig is containerd 1.6's config (version 2 schema) for this
// cluster. restrict_oom_score_adj: this host cannot raise OOM scores (no
// CAP_SYS_RESOURCE). cgroupfs: there is no systemd. The sandbox image is
// the locally built pause image.
const containerdConfig = `version = 2
root = %[1]q
state = %[2]q

[grpc]
  address = %[3]q

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = %[4]q
    restrict_oom_score_adj = true
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = %[5]q
      conf_dir = %[6]q
      max_conf_num = 1
  [plugins."io.containerd.internal.v1.opt"]
    path = %[7]q
`

func (c *Cluster) startContainerd(ctx context.Context) error {
	if err := os.MkdirAll(RuntimeDir, 0o711); err != nil {
		return err
	}
	cfg := fmt.Sprintf(containerdConfig, c.path("containerd", "root"), c.path("containerd", "state"),
		ContainerdSocket, images.Pause, CNIBinDir, CNIConfDir, c.path("containerd", "opt"))
	file := c.path("containerd", "config.toml")
	if err := os.WriteFile(file, []byte(cfg), 0o644); err != nil {
		return err
	}
	if err := c.launch("containerd", "/usr/bin/containerd", "--config", file); err != nil {
		return err
	}
	if err := waitFor(ctx, "containerd", time.Minute, func(ctx context.Context) error {
		if err := c.alive("containerd"); err != nil {
			return err
		}
		_, err := c.ctr(ctx, "version")
		return err
	}); err != nil {
		return err
	}
	c.progress("containerd ready (%s)", ContainerdSocket)
	return nil
}

// ctr runs containerd's CLI against the cluster's containerd, in the
// namespace the CRI plugin uses.
func (c *Cluster) ctr(ctx context.Context, args ...string) (string, error) {
	return run(ctx, "ctr", append([]string{"--address", ContainerdSocket, "--namespace", "k8s.io"}, args...)...)
}

// buildImages builds the pause, busybox and plexus images into ImageDir.
func (c *Cluster) buildImages(ctx context.Context) error {
	c.progress("building images (pause, busybox, plexus) into %s", c.ImageDir)
	if err := os.MkdirAll(c.ImageDir, 0o755); err != nil {
		return err
	}
	built, err := images.Build(ctx, c.RepoDir, c.ImageDir, c.Out)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	c.built = built
	return nil
}

// importImages loads the built archives into containerd's k8s.io
// namespace, where the CRI plugin finds them.
func (c *Cluster) importImages(ctx context.Context) error {
	for _, img := range c.built {
		if _, err := c.ctr(ctx, "images", "import", img.File); err != nil {
			return fmt.Errorf("importing %s: %w", img.Ref, err)
		}
	}
	out, err := c.ctr(ctx, "images", "ls", "-q")
	if err != nil {
		return err
	}
	for _, img := range c.built {
		if !strings.Contains("\n"+out, "\n"+img.Ref+"\n") {
			return fmt.Errorf("image %s not in containerd after import; it has:\n%s", img.Ref, out)
		}
	}
	c.progress("images imported into containerd (namespace k8s.io)")
	return nil
}
