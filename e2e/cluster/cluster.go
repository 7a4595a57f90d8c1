// Package cluster runs a real single-node Kubernetes cluster on this
// machine for plexus's e2e suite and demo: etcd, kube-apiserver,
// kube-controller-manager, kube-scheduler, containerd and kubelet, each a
// process of its own started with setsid, with certificates, kubeconfigs
// and images made here. plexus is installed into it the way users install
// it (helm install of charts/plexus).
//
// Everything the cluster writes lives under the state dir, except what
// kubelet, containerd and CNI insist on having at their usual places
// (/var/lib/kubelet, /etc/cni/net.d, /opt/cni/bin, /run/netns,
// /var/lib/cni, /var/lib/plexus, /run/plexus); Down removes those too.
package cluster

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"time"

	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/e2e/images"
	"github.com/plexus-cni/plexus/hack/image"
)

// Facts about the cluster that the suite and the demo rely on.
const (
	NodeName      = "plexus-e2e"
	ClusterName   = "plexus-e2e"
	APIServerPort = 6443
	APIServerURL  = "https://127.0.0.1:6443"
	ServiceCIDR   = "10.96.0.0/16"

	// DefaultNetwork is the node's default network, the reference bridge
	// plugin with host-local addresses from PodCIDR, portmap and bandwidth
	// chained.
	DefaultNetwork  = "cluster"
	DefaultConflist = "/etc/cni/net.d/10-bridge.conflist"
	DefaultBridge   = "cni0"
	PodCIDR         = "10.244.0.0/24"

	// PlexusConflist is what plexus's daemon writes once it runs.
	PlexusConflist = "/etc/cni/net.d/00-plexus.conflist"
	CNIConfDir     = "/etc/cni/net.d"
	CNIBinDir      = "/opt/cni/bin"
	// HostLocalDir is host-local's default dataDir: one folder per network
	// name, one file per allocated address.
	HostLocalDir = "/var/lib/cni/networks"
	// PlexusStateDir and PlexusRecordsDir are the daemon's state on the
	// node (config/daemon's --state-dir).
	PlexusStateDir   = "/var/lib/plexus"
	PlexusRecordsDir = "/var/lib/plexus/records"
	// RuntimeResultsDir and PlexusResultsDir are libcni's result caches of
	// the runtime (the default cache dir) and of plexus's delegates (under
	// its state dir): one file per sandbox, network and interface added.
	RuntimeResultsDir = "/var/lib/cni/results"
	PlexusResultsDir  = "/var/lib/plexus/cache/results"
	PlexusNamespace   = "kube-system"

	KubeletRootDir = "/var/lib/kubelet"
	// StaticPodDir is kubelet's staticPodPath: a spec puts a static pod's
	// manifest there, and Down empties it before deleting pods (kubelet
	// recreates the mirror pod of a static pod whose manifest is there).
	StaticPodDir = KubeletRootDir + "/static-pods"
	// RuntimeDir holds containerd's socket; a folder of the cluster's own
	// so that a containerd of the host's is never touched.
	RuntimeDir       = "/run/plexus-e2e"
	ContainerdSocket = RuntimeDir + "/containerd.sock"
	// NetnsDir is where containerd 1.6 mounts pod network namespaces
	// (cni-<uuid>); it must be a shared mount for the plexus daemon's
	// HostToContainer mount of it to see them.
	NetnsDir = "/run/netns"
)

// ServiceIP is the kubernetes Service's cluster IP, first of ServiceCIDR.
var ServiceIP = net.IPv4(10, 96, 0, 1)

// MacvlanMasters are host ends of veth pairs the cluster creates for
// macvlan networks to sit on: never a real NIC of the host.
var MacvlanMasters = []string{"plxe2e-m1", "plxe2e-m2"}

// Config says where the cluster's inputs and state are.
type Config struct {
	// RepoDir is plexus's module root: the chart and the sources the
	// plexus image is built from.
	RepoDir string
	// StateDir holds certificates, kubeconfigs, logs, pids and the
	// components' data. Down removes it.
	StateDir string
	// K8sBinDir holds kube-apiserver, kube-controller-manager,
	// kube-scheduler, kubelet, kubectl and etcd (hack/build-k8s.sh,
	// hack/install-etcd.sh).
	K8sBinDir string
	// CNIPluginDir holds the reference CNI plugins, statically linked: the
	// plexus daemon runs them inside its own image, which has no libc.
	CNIPluginDir string
	// ImageDir caches the image archives between runs.
	ImageDir string
	// WhereaboutsDir holds whereabouts' IPAM plugin (bin/whereabouts,
	// static) and its CRDs (crds/), as hack/build-whereabouts.sh builds
	// them.
	WhereaboutsDir string
	// HelmBin is the helm that installs plexus's chart (make helm).
	HelmBin string
	// Out gets progress lines.
	Out io.Writer
}

// Cluster is one single-node cluster on this machine.
type Cluster struct {
	Config
	start time.Time
	built []images.Built
}

// New returns the cluster that cfg describes; it starts nothing.
func New(cfg Config) *Cluster {
	if cfg.Out == nil {
		cfg.Out = io.Discard
	}
	return &Cluster{Config: cfg, start: time.Now()}
}

// AdminKubeconfig is the kubeconfig of a cluster admin (system:masters).
func (c *Cluster) AdminKubeconfig() string { return c.kubeconfig("admin") }

func (c *Cluster) path(parts ...string) string {
	return filepath.Join(append([]string{c.StateDir}, parts...)...)
}

func (c *Cluster) bin(name string) string { return filepath.Join(c.K8sBinDir, name) }

func (c *Cluster) logFile(component string) string { return c.path("logs", component+".log") }

// progress prints one line with the time since the cluster tool started.
func (c *Cluster) progress(format string, args ...any) {
	fmt.Fprintf(c.Out, "[%6.1fs] %s\n", time.Since(c.start).Seconds(), fmt.Sprintf(format, args...))
}

// Up starts a fresh cluster, tearing down whatever a previous run left
// first, and returns once the node is Ready and plexus's daemon is Ready.
func (c *Cluster) Up(ctx context.Context) error {
	if c.exists() {
		c.progress("a previous cluster's state is in %s: tearing it down first", c.StateDir)
		if err := c.Down(ctx); err != nil {
			return fmt.Errorf("tearing down the previous cluster: %w", err)
		}
		c.start = time.Now()
	}
	if err := c.preflight(); err != nil {
		return err
	}
	for _, dir := range []string{"logs", "run", "etcd", "containerd", "kubelet"} {
		if err := os.MkdirAll(c.path(dir), 0o755); err != nil {
			return err
		}
	}
	nodeIP, err := hostIP()
	if err != nil {
		return err
	}
	if err := c.writePKI(nodeIP); err != nil {
		return fmt.Errorf("certificates: %w", err)
	}
	c.progress("certificates and kubeconfigs written (node %s, %s)", NodeName, nodeIP)
	if err := c.buildImages(ctx); err != nil {
		return err
	}
	if err := c.prepareHost(nodeIP); err != nil {
		return fmt.Errorf("preparing the node: %w", err)
	}
	if err := c.installTestPlugins(ctx); err != nil {
		return err
	}
	c.progress("node prepared: %s, reference and test plugins in %s, veths %v", DefaultConflist, CNIBinDir, MacvlanMasters)
	if err := c.startControlPlane(ctx, nodeIP); err != nil {
		return err
	}
	if err := c.installWhereabouts(ctx); err != nil {
		return fmt.Errorf("whereabouts: %w", err)
	}
	if err := c.startContainerd(ctx); err != nil {
		return err
	}
	if err := c.importImages(ctx); err != nil {
		return err
	}
	if err := c.startKubelet(ctx, nodeIP); err != nil {
		return err
	}
	if err := c.installPlexus(ctx); err != nil {
		return err
	}
	if err := os.WriteFile(c.path("run", "up"), []byte(time.Now().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return err
	}
	c.progress("cluster up: KUBECONFIG=%s", c.AdminKubeconfig())
	return nil
}

// exists reports whether a previous Up left anything in the state dir.
func (c *Cluster) exists() bool {
	entries, err := os.ReadDir(c.StateDir)
	return err == nil && len(entries) > 0
}

func (c *Cluster) preflight() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("the cluster needs root (kubelet, containerd, network namespaces)")
	}
	need := []string{c.bin("kube-apiserver"), c.bin("kube-controller-manager"), c.bin("kube-scheduler"),
		c.bin("kubelet"), c.bin("kubectl"), c.bin("etcd"), filepath.Join(c.CNIPluginDir, "bridge")}
	for _, f := range need {
		if _, err := os.Stat(f); err != nil {
			return fmt.Errorf("missing %s (make cluster-up builds it): %w", f, err)
		}
	}
	if err := image.CheckStatic(filepath.Join(c.CNIPluginDir, "bridge")); err != nil {
		return fmt.Errorf("the plexus daemon runs the reference plugins from its own image, which has no C library: %w (make cni-plugins builds them static)", err)
	}
	if err := c.checkWhereabouts(); err != nil {
		return err
	}
	for _, addr := range []string{"127.0.0.1:6443", "127.0.0.1:12379", "127.0.0.1:12380", "127.0.0.1:10250", "127.0.0.1:10257", "127.0.0.1:10259"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fmt.Errorf("%s is taken (a cluster whose state dir is gone? stop its processes by hand): %w", addr, err)
		}
		l.Close()
	}
	for _, tool := range []string{"containerd", "containerd-shim-runc-v2", "runc", "ctr", "iptables", "iptables-save"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("missing %s (hack/cluster/install-runtime.sh installs Debian's containerd, runc and iptables): %w", tool, err)
		}
	}
	return nil
}

// hostIP is an IPv4 address of the interface holding the default route
// (else of any non-loopback interface): kubelet refuses a loopback node IP.
// The API server and kubelet are only ever reached from this machine.
func hostIP() (net.IP, error) {
	routes, err := netlink.RouteList(nil, netlink.FAMILY_V4)
	if err != nil {
		return nil, err
	}
	var links []int
	for _, r := range routes {
		if r.Dst == nil || r.Dst.IP.IsUnspecified() {
			links = append(links, r.LinkIndex)
		}
	}
	all, err := linkList()
	if err != nil {
		return nil, err
	}
	for _, l := range all {
		links = append(links, l.Attrs().Index)
	}
	for _, index := range links {
		link, err := netlink.LinkByIndex(index)
		if err != nil {
			continue
		}
		addrs, err := netlink.AddrList(link, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if !a.IP.IsLoopback() && a.IP.IsGlobalUnicast() {
				return a.IP.To4(), nil
			}
		}
	}
	return nil, fmt.Errorf("no non-loopback IPv4 address for the node (kubelet needs one)")
}
