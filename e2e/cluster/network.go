package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/plexus-cni/plexus/hack/image"
)

// hostDirs are the places outside the state dir that the cluster writes
// to. Those that did not exist before Up are removed whole by Down; in the
// others, Down removes only what Up installed.
var hostDirs = []string{"/etc/cni", "/opt/cni", "/var/lib/cni", KubeletRootDir, PlexusStateDir,
	"/run/plexus", "/run/containerd", RuntimeDir, "/var/log/pods", "/var/log/containers"}

// defaultConflist is the node's default network: the reference bridge
// plugin with host-local addresses, as kube-router and the seed clusters
// use, with portmap (hostPorts) and bandwidth (the pod annotations
// kubernetes.io/ingress-bandwidth and egress-bandwidth) chained, each with
// its capability, as Flannel's and Calico's default conflists chain them.
// No default route and no masquerading: pods reach each other and the
// node, never beyond it. The route to the node's own address is what a
// pod answering a hostPort needs: portmap DNATs a connection to the
// node's address without masquerading it, so the pod replies to that
// address (on real clusters, through its default route).
func defaultConflist(nodeIP net.IP) []byte {
	type obj = map[string]any
	conf := obj{
		"cniVersion": "1.0.0",
		"name":       DefaultNetwork,
		"plugins": []obj{{
			"type":        "bridge",
			"bridge":      DefaultBridge,
			"isGateway":   true,
			"ipMasq":      false,
			"hairpinMode": true,
			"ipam": obj{
				"type":   "host-local",
				"ranges": [][]obj{{{"subnet": PodCIDR}}},
				"routes": []obj{{"dst": (&net.IPNet{IP: nodeIP, Mask: net.CIDRMask(32, 32)}).String()}},
			},
		}, {
			"type":         "portmap",
			"capabilities": obj{"portMappings": true},
			"snat":         true,
		}, {
			"type":         "bandwidth",
			"capabilities": obj{"bandwidth": true},
		}},
	}
	b, err := json.MarshalIndent(conf, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(b, '\n')
}

// prepareHost readies the node's networking before containerd starts: a
// shared mount for pod netns, the reference plugins, the default network's
// conflist and the veths macvlan networks use as masters.
func (c *Cluster) prepareHost(nodeIP net.IP) error {
	var created []string
	for _, d := range hostDirs {
		if _, err := os.Stat(d); errors.Is(err, os.ErrNotExist) {
			created = append(created, d)
		}
	}
	if err := c.appendLines("created", created...); err != nil {
		return err
	}
	if err := sharedMount(NetnsDir); err != nil {
		return fmt.Errorf("%s: %w", NetnsDir, err)
	}
	if err := c.shareRoot(); err != nil {
		return err
	}
	if err := c.installPlugins(); err != nil {
		return err
	}
	if err := os.MkdirAll(CNIConfDir, 0o755); err != nil {
		return err
	}
	if err := c.appendLines("installed", DefaultConflist); err != nil {
		return err
	}
	if err := os.WriteFile(DefaultConflist, defaultConflist(nodeIP), 0o644); err != nil {
		return err
	}
	for _, name := range MacvlanMasters {
		if err := ensureVeth(name); err != nil {
			return err
		}
	}
	return nil
}

// sharedMount makes dir a mount point of its own with shared propagation,
// as containerd and the CNI test utilities do for /run/netns: a netns
// mounted there later then also appears in containers that mount dir with
// HostToContainer propagation (the plexus daemon's).
func sharedMount(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, ""); err == nil {
		return nil
	} else if !errors.Is(err, unix.EINVAL) {
		return err
	}
	// EINVAL: not a mount point yet; bind it onto itself first.
	if err := unix.Mount(dir, dir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
		return err
	}
	return unix.Mount("", dir, "none", unix.MS_SHARED|unix.MS_REC, "")
}

// shareRoot gives "/" shared propagation, as systemd does on every real
// node, if it is private here (no systemd). containerd 1.6 checks that the
// source of a HostToContainer mount is shared or slave without resolving
// symlinks, so the daemon's /var/run/netns (/var/run -> /run) is looked up
// as a path on "/": a private "/" fails the daemon's container with "path
// /var/run/netns is mounted on / but it is not a shared or slave mount".
// Not recursive: the mounts below "/" keep their propagation. Down makes
// "/" private again.
func (c *Cluster) shareRoot() error {
	if rootShared() {
		return nil
	}
	if err := c.appendLines("created", rootPropagationMarker); err != nil {
		return err
	}
	if err := unix.Mount("", "/", "none", unix.MS_SHARED, ""); err != nil {
		return fmt.Errorf("making / shared: %w", err)
	}
	return nil
}

// rootPropagationMarker in run/created says Up made "/" shared.
const rootPropagationMarker = "propagation:/"

// rootShared reports whether the root mount has shared propagation.
func rootShared() bool {
	shared := false
	for _, m := range mountInfo() {
		if m.point == "/" {
			shared = m.shared // the last "/" is the one on top
		}
	}
	return shared
}

// installPlugins copies the static reference plugins into CNIBinDir, where
// containerd (loopback) and the plexus daemon (every delegate) find them.
// A plugin already there is left as it is.
func (c *Cluster) installPlugins() error {
	if err := os.MkdirAll(CNIBinDir, 0o755); err != nil {
		return err
	}
	entries, err := os.ReadDir(c.CNIPluginDir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		dst := filepath.Join(CNIBinDir, e.Name())
		if _, err := os.Stat(dst); err == nil {
			continue
		}
		data, err := os.ReadFile(filepath.Join(c.CNIPluginDir, e.Name()))
		if err != nil {
			return err
		}
		if err := c.appendLines("installed", dst); err != nil {
			return err
		}
		if err := os.WriteFile(dst, data, 0o755); err != nil {
			return err
		}
	}
	return nil
}

func ensureVeth(name string) error {
	if l, err := netlink.LinkByName(name); err == nil {
		return netlink.LinkSetUp(l)
	}
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return fmt.Errorf("veth %s: %w", name, err)
	}
	for _, n := range []string{name, name + "p"} {
		l, err := netlink.LinkByName(n)
		if err != nil {
			return err
		}
		if err := netlink.LinkSetUp(l); err != nil {
			return err
		}
	}
	return nil
}

// NoteHostLocalNetworks records host-local networks whose folders under
// HostLocalDir Down removes (the demo's; the e2e suite cleans its own).
func (c *Cluster) NoteHostLocalNetworks(names ...string) error {
	var dirs []string
	for _, n := range names {
		dirs = append(dirs, filepath.Join(HostLocalDir, n))
	}
	return c.appendLines("installed", dirs...)
}

// appendLines records paths in run/<list>, before they are made, so that
// Down also finds what a failed Up left half-made.
func (c *Cluster) appendLines(list string, lines ...string) error {
	if len(lines) == 0 {
		return nil
	}
	f, err := os.OpenFile(c.path("run", list), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	return err
}

func (c *Cluster) readLines(list string) []string {
	b, err := os.ReadFile(c.path("run", list))
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range bytes.Split(b, []byte("\n")) {
		if s := strings.TrimSpace(string(l)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// TestPlugins are CNI plugins of plexus's own, made for tests, that the
// cluster installs into CNIBinDir beside the reference plugins, by type:
// "faulty" fails its ADD or its first DELs on purpose; "subnetenv" is
// shaped like Flannel's plugin, reading the node's subnet file (their doc
// comments). They are built from the work tree, statically like the
// reference plugins.
var TestPlugins = map[string]string{
	"faulty":    "./plugin/plugintest/faulty",
	"subnetenv": "./e2e/cluster/testplugin/subnetenv",
}

// installTestPlugins builds TestPlugins and installs each into CNIBinDir,
// replacing an earlier build, so that a reused cluster runs the work
// tree's.
func (c *Cluster) installTestPlugins(ctx context.Context) error {
	if err := os.MkdirAll(c.path("bin"), 0o755); err != nil {
		return err
	}
	for name, pkg := range TestPlugins {
		built := c.path("bin", name)
		if err := image.GoBuild(ctx, c.RepoDir, pkg, built); err != nil {
			return fmt.Errorf("test plugin %s: %w", name, err)
		}
		data, err := os.ReadFile(built)
		if err != nil {
			return err
		}
		if err := c.installPlugin(name, data); err != nil {
			return err
		}
	}
	return nil
}

// installPlugin installs a plugin the cluster brings (not a reference
// plugin) into CNIBinDir, replacing the cluster's earlier copy but never a
// file that was there before the cluster. The replacement is a rename: a
// runtime may be executing the old binary.
func (c *Cluster) installPlugin(name string, data []byte) error {
	if err := os.MkdirAll(CNIBinDir, 0o755); err != nil {
		return err
	}
	dst := filepath.Join(CNIBinDir, name)
	if !slices.Contains(c.readLines("installed"), dst) {
		if _, err := os.Stat(dst); err == nil {
			return fmt.Errorf("%s is there and not the cluster's: not replacing it", dst)
		}
		if err := c.appendLines("installed", dst); err != nil {
			return err
		}
	}
	tmp := dst + ".e2e-new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
