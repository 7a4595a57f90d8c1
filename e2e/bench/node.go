// Package bench measures what plexus costs a node, side by side with the
// same work done without plexus, in the same run: the latency plexus adds
// to ADD and DEL, the API requests it makes per ADD and DEL, a burst of
// sandboxes, and the daemon's memory with a cluster's worth of network
// definitions. Everything is real: a kube-apiserver built from source, the
// plexus daemon, the plexus shim exec'd by libcni as a container runtime
// execs it, the reference CNI plugins and real network namespaces. It runs
// as root, in a network namespace of its own (`make bench`).
package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/hack/image"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// Config locates what the benchmarks run.
type Config struct {
	RepoRoot   string // the module root: CRDs under config/crd
	Assets     string // kube-apiserver and etcd
	PluginsDir string // the reference CNI plugins
	Shim       string // the plexus CNI binary
	Daemon     string // the plexus-daemon binary (daemon_rss_mib)
	LogDir     string // the daemons' logs
	// HostPrefix is the daemon's --host-prefix: "/" runs every delegate
	// chrooted, as both installs do (into /host there); empty runs them
	// in the daemon's root.
	HostPrefix string
	Progress   io.Writer

	// NoAddedInterfaceEvents runs the daemon with --added-interface-events=false.
	NoAddedInterfaceEvents bool
}

func (c *Config) progress(format string, args ...interface{}) {
	if c.Progress != nil {
		fmt.Fprintf(c.Progress, "  "+format+"\n", args...)
	}
}

// Namespace holds the benchmark's pods and definitions.
const Namespace = "bench"

// NodeName is the node the in-process daemon serves.
const NodeName = "bench-node"

// network is one of the three networks of a pod, as a runtime without
// plexus would call it.
type network struct {
	list   *libcni.NetworkConfigList
	ifName string
	static bool // takes the sandbox's address through the ips capability
}

// Node is a node of one: a kube-apiserver, the plexus daemon running in
// this process, the node's conf and bin dirs, and two runtimes, both
// libcni as containerd uses it: one calls the node's conflist (plexus's
// shim, which relays to the daemon), the other calls the three delegates'
// conflists directly.
type Node struct {
	cfg    Config
	dir    string
	env    *envtest.Environment
	Client client.Client
	// API counts the daemon's requests to the API server.
	API    *controllertest.APICounter
	Daemon *daemon.Daemon
	// Delegates times the daemon's delegate calls.
	Delegates *TimedCNI
	// Networks describes the three networks, for the results.
	Networks []string

	// controlPlane are the API server's and etcd's pids: on this machine
	// they share the node's CPUs, which a real node's control plane does
	// not.
	controlPlane []int

	stop     context.CancelFunc
	stopped  chan error
	ipamDir  string
	plexus   *libcni.NetworkConfigList
	direct   []network
	viaShim  *libcni.CNIConfig
	bare     *libcni.CNIConfig
	links    []string
	netns    []ns.NetNS
	statusMu sync.Mutex
	statusMs []float64

	// confDir and binDir are the node's CNI dirs; options, if set,
	// changes the daemon's options (RestartDaemon).
	confDir, binDir string
	options         func(*daemon.Options)
}

// StartNode starts the API server and the daemon and prepares the node.
func StartNode(ctx context.Context, cfg Config) (_ *Node, err error) {
	// A shim linked against the C library would add the loader's work
	// (about 1 ms here) to every exec the figures measure; the image ships
	// a static one.
	if err := image.CheckStatic(cfg.Shim); err != nil {
		return nil, fmt.Errorf("the shim: %w; make build builds it so, as the image's is", err)
	}
	dir, err := os.MkdirTemp("", "plexus-bench")
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, dir: dir, ipamDir: filepath.Join(dir, "ipam"), API: controllertest.NewAPICounter()}
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	cfg.progress("starting kube-apiserver and etcd")
	if err := n.startAPIServer(); err != nil {
		return nil, err
	}
	for _, obj := range []client.Object{
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: NodeName}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}},
	} {
		if err := n.Client.Create(ctx, obj); err != nil {
			return nil, err
		}
	}
	confDir, binDir, err := n.prepareHost(ctx)
	if err != nil {
		return nil, err
	}
	n.confDir, n.binDir = confDir, binDir
	cfg.progress("starting the plexus daemon (in this process)")
	if err := n.startDaemon(confDir, binDir); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, confDir); err != nil {
		return nil, err
	}
	n.viaShim = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "runtime-cache-plexus"), nil)
	n.bare = libcni.NewCNIConfigWithCacheDir([]string{binDir}, filepath.Join(dir, "runtime-cache-bare"), nil)
	return n, nil
}

func (n *Node) startAPIServer() error {
	crds := filepath.Join(n.cfg.RepoRoot, "config", "crd")
	n.env = controllertest.NewEnvironment(n.cfg.Assets, filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	restCfg, err := n.env.Start()
	if err != nil {
		return fmt.Errorf("starting the API server: %w", err)
	}
	n.controlPlane = append(processes("kube-apiserver", n.env.ControlPlane.APIServer.CertDir),
		processes("etcd", n.env.ControlPlane.Etcd.DataDir)...)
	n.Client, err = newClient(restCfg)
	return err
}

// cpu is the CPU time used so far: by this process (the daemon and the
// runtime side), by the processes it ran (plugins and shims), and by the
// API server and etcd.
func (n *Node) cpu() map[string]float64 {
	own, children := cpuTimes("/proc/self/stat")
	out := map[string]float64{"daemon_and_runtime": own, "plugins_and_shims": children, "control_plane": 0}
	for _, pid := range n.controlPlane {
		out["control_plane"] += cpuSeconds(pid)
	}
	return out
}

// newClient is a client quick enough to create thousands of objects.
func newClient(cfg *rest.Config) (client.Client, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.QPS, cfg.Burst = 2000, 4000
	return client.New(cfg, client.Options{Scheme: controllers.Scheme()})
}

// prepareHost makes the macvlan masters, the default network's conflist,
// the two definitions and a bin dir of the node's own.
func (n *Node) prepareHost(ctx context.Context) (confDir, binDir string, err error) {
	confDir, binDir = filepath.Join(n.dir, "net.d"), filepath.Join(n.dir, "bin")
	for _, d := range []string{confDir, binDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return "", "", err
		}
	}
	entries, err := os.ReadDir(n.cfg.PluginsDir)
	if err != nil {
		return "", "", fmt.Errorf("reference plugins: %w", err)
	}
	for _, e := range entries {
		if err := os.Symlink(filepath.Join(n.cfg.PluginsDir, e.Name()), filepath.Join(binDir, e.Name())); err != nil {
			return "", "", err
		}
	}
	masters := [2]string{}
	for i := range masters {
		if masters[i], err = n.veth(); err != nil {
			return "", "", err
		}
	}
	bridge := plugintest.Name("plxbb")
	n.links = append(n.links, bridge)
	defList := plugintest.BridgeList("defnet", "1.0.0", bridge, "10.240.0.0/24", n.ipamDir)
	if err := os.WriteFile(filepath.Join(confDir, "10-default.conflist"), []byte(defList), 0o644); err != nil {
		return "", "", err
	}
	thirdType := "ipvlan"
	if plugintest.ProbeLinkType("ipvlan", masters[1]) != nil {
		thirdType = "macvlan" // the kernel lacks ipvlan; macvlan stands in
	}
	static := plugintest.Conf(plugintest.M{"cniVersion": "1.0.0", "name": "static-net", "plugins": []plugintest.M{{
		"type": "macvlan", "master": masters[0], "mode": "bridge",
		"capabilities": plugintest.M{"ips": true}, "ipam": plugintest.M{"type": "static"}}}})
	third := plugintest.M{"type": thirdType, "master": masters[1], "ipam": plugintest.HostLocal("10.241.0.0/24", n.ipamDir)}
	if thirdType == "macvlan" {
		third["mode"] = "bridge"
	}
	hostLocal := plugintest.Conf(plugintest.M{"cniVersion": "1.0.0", "name": "hl-net", "plugins": []plugintest.M{third}})
	for i, c := range []struct {
		conf, ifName string
		static       bool
	}{{defList, "eth0", false}, {static, "net1", true}, {hostLocal, "net2", false}} {
		list, err := libcni.NetworkConfFromBytes([]byte(c.conf))
		if err != nil {
			return "", "", err
		}
		n.direct = append(n.direct, network{list: list, ifName: c.ifName, static: c.static})
		if i > 0 {
			nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: list.Name},
				Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: c.conf}}
			if err := n.Client.Create(ctx, nad); err != nil {
				return "", "", err
			}
		}
	}
	n.Networks = []string{"defnet: bridge+host-local (the default network)", "static-net: macvlan+static (ips capability)",
		"hl-net: " + thirdType + "+host-local"}
	if thirdType != "ipvlan" {
		n.Networks[2] += " (standing in for ipvlan+host-local: this kernel has no ipvlan)"
	}
	return confDir, binDir, nil
}

func (n *Node) veth() (string, error) {
	name := plugintest.Name("plxbm")
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		return "", fmt.Errorf("veth %s: %w", name, err)
	}
	n.links = append(n.links, name)
	return name, netlink.LinkSetUp(veth)
}

// startDaemon builds the daemon as cmd/main.go does, with two probes: the
// API requests it makes are counted, and its delegate calls are timed.
// Its goroutines carry the pprof label plexus=daemon, so that a CPU
// profile of this process can be narrowed to the daemon.
func (n *Node) startDaemon(confDir, binDir string) error {
	o := daemon.Defaults()
	o.NodeName = NodeName
	o.SocketPath = filepath.Join(n.dir, "run", "plexus.sock")
	o.StateDir = filepath.Join(n.dir, "state")
	o.CNIConfDir, o.CNIBinDir = confDir, binDir
	o.HostPrefix = n.cfg.HostPrefix
	o.ShimSource = n.cfg.Shim
	o.MetricsAddr, o.ProbeAddr = "0", "0"
	o.AddedInterfaceEvents = !n.cfg.NoAddedInterfaceEvents
	if n.options != nil {
		n.options(&o)
	}
	restCfg := rest.CopyConfig(n.env.Config)
	restCfg.WrapTransport = n.API.Wrap
	d, err := daemon.New(restCfg, o)
	if err != nil {
		return err
	}
	n.Delegates = &TimedCNI{CNI: d.Engine.CNI}
	d.Engine.CNI = n.Delegates
	d.Status.Written = func(_ record.PodRef, latency time.Duration) {
		n.statusMu.Lock()
		n.statusMs = append(n.statusMs, Millis(latency))
		n.statusMu.Unlock()
	}
	n.Daemon = d
	ctx, cancel := context.WithCancel(context.Background())
	n.stop, n.stopped = cancel, make(chan error, 1)
	go pprof.Do(ctx, pprof.Labels("plexus", "daemon"), func(ctx context.Context) {
		n.stopped <- d.Manager.Start(ctx)
	})
	return nil
}

func (n *Node) waitReady(ctx context.Context, confDir string) error {
	err := poll(ctx, time.Minute, func() bool {
		return n.Daemon.Server.Ready(nil) == nil && n.Daemon.Node.Ready() == nil
	})
	if err != nil {
		return fmt.Errorf("daemon not ready: %w", err)
	}
	for _, net := range n.direct[1:] {
		file := filepath.Join(daemon.NetworksDir(n.Daemon.Node.StateDir), Namespace+"_"+net.list.Name+".json")
		if err := poll(ctx, time.Minute, func() bool { _, err := os.Stat(file); return err == nil }); err != nil {
			return fmt.Errorf("definition %s not rendered: %w", net.list.Name, err)
		}
	}
	n.plexus, err = libcni.NetworkConfFromFile(filepath.Join(confDir, controllers.ConfigFileName))
	if err != nil {
		return fmt.Errorf("the node conflist: %w", err)
	}
	return nil
}

// RestartDaemon stops the daemon and starts it again with its options
// changed by change (nil: as the node started it), and waits until it is ready and
// its caches hold the node's pods, so that no ADD has to ask the API
// server for its pod.
func (n *Node) RestartDaemon(ctx context.Context, change func(*daemon.Options)) error {
	n.stop()
	if err := <-n.stopped; err != nil {
		return fmt.Errorf("stopping the daemon: %w", err)
	}
	n.options = change
	if err := n.startDaemon(n.confDir, n.binDir); err != nil {
		return err
	}
	if err := n.waitReady(ctx, n.confDir); err != nil {
		return err
	}
	if !n.Daemon.Manager.GetCache().WaitForCacheSync(ctx) {
		return errors.New("the restarted daemon's caches did not sync")
	}
	return nil
}

// Close stops everything and removes what the node made.
func (n *Node) Close() {
	if n.stop != nil {
		n.stop()
		<-n.stopped
	}
	if n.env != nil {
		_ = n.env.Stop()
	}
	for _, sandbox := range n.netns {
		_ = sandbox.Close()
		_ = testutils.UnmountNS(sandbox)
	}
	for _, name := range n.links {
		if l, err := netlink.LinkByName(name); err == nil {
			_ = netlink.LinkDel(l)
		}
	}
	_ = os.RemoveAll(n.dir)
}

// Sandbox is a pod sandbox: its pod, its network namespace and the address
// its static network gets.
type Sandbox struct {
	Pod   *corev1.Pod
	NetNS ns.NetNS
	IP    string
}

// Sandboxes creates count pods on the node, each asking for the two extra
// networks, and a netns for each, and waits until the daemon's cache holds
// every pod (ADD then finds it without asking the API server).
func (n *Node) Sandboxes(ctx context.Context, prefix string, first, count int) ([]*Sandbox, error) {
	out := make([]*Sandbox, count)
	err := parallel(count, 8, func(i int) error {
		k := first + i
		ip := fmt.Sprintf("10.250.%d.%d/16", k/250, k%250+2)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: fmt.Sprintf("%s-%d", prefix, i),
				Annotations: map[string]string{nadv1.NetworkAttachmentAnnot: fmt.Sprintf(
					`[{"name": "static-net", "ips": [%q]}, {"name": "hl-net"}]`, ip)}},
			Spec: corev1.PodSpec{NodeName: NodeName, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
		}
		if err := n.Client.Create(ctx, pod); err != nil {
			return err
		}
		out[i] = &Sandbox{Pod: pod, IP: ip}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for _, sb := range out {
		if sb.NetNS, err = testutils.NewNS(); err != nil {
			return nil, err
		}
		n.netns = append(n.netns, sb.NetNS)
	}
	cache := n.Daemon.Manager.GetCache()
	for _, sb := range out {
		cached := &corev1.Pod{}
		err := poll(ctx, time.Minute, func() bool {
			return cache.Get(ctx, client.ObjectKeyFromObject(sb.Pod), cached) == nil && cached.UID == sb.Pod.UID
		})
		if err != nil {
			return nil, fmt.Errorf("pod %s never reached the daemon's cache: %w", sb.Pod.Name, err)
		}
	}
	return out, nil
}

// k8sArgs are the CNI_ARGS a Kubernetes runtime passes.
func k8sArgs(sb *Sandbox, id string) [][2]string {
	return [][2]string{{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", sb.Pod.Namespace}, {"K8S_POD_NAME", sb.Pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(sb.Pod.UID)}}
}

func (n *Node) plexusConf(sb *Sandbox, id string) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{ContainerID: id, NetNS: sb.NetNS.Path(), IfName: "eth0", Args: k8sArgs(sb, id)}
}

// plexusConfBytes is the shim's stdin as a runtime builds it from the
// node conflist: its one plugin with the list's name and cniVersion.
func (n *Node) plexusConfBytes() []byte {
	conf := map[string]interface{}{}
	_ = json.Unmarshal(n.plexus.Plugins[0].Bytes, &conf)
	conf["name"], conf["cniVersion"] = n.plexus.Name, n.plexus.CNIVersion
	data, _ := json.Marshal(conf)
	return data
}

// PlexusAdd is the runtime's ADD with plexus: libcni execs the shim named
// by the node conflist, which relays to the daemon.
func (n *Node) PlexusAdd(ctx context.Context, sb *Sandbox, id string) error {
	res, err := n.viaShim.AddNetworkList(ctx, n.plexus, n.plexusConf(sb, id))
	if err != nil {
		return fmt.Errorf("ADD through plexus, %s: %w", id, err)
	}
	return checkInterfaces(res, len(n.direct))
}

// PlexusDel is the runtime's DEL with plexus.
func (n *Node) PlexusDel(ctx context.Context, sb *Sandbox, id string) error {
	if err := n.viaShim.DelNetworkList(ctx, n.plexus, n.plexusConf(sb, id)); err != nil {
		return fmt.Errorf("DEL through plexus, %s: %w", id, err)
	}
	return nil
}

func (n *Node) bareConf(sb *Sandbox, id string, net *network) *libcni.RuntimeConf {
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: sb.NetNS.Path(), IfName: net.ifName, Args: k8sArgs(sb, id)}
	if net.static {
		rt.CapabilityArgs = map[string]interface{}{"ips": []string{sb.IP}}
	}
	return rt
}

// BareAdd is what a runtime does for the same three networks without
// plexus: libcni execs each network's delegates, in order.
func (n *Node) BareAdd(ctx context.Context, sb *Sandbox, id string) error {
	for i := range n.direct {
		if _, err := n.bare.AddNetworkList(ctx, n.direct[i].list, n.bareConf(sb, id, &n.direct[i])); err != nil {
			return fmt.Errorf("ADD of %s directly, %s: %w", n.direct[i].list.Name, id, err)
		}
	}
	return nil
}

// BareDel deletes the three networks directly, in reverse.
func (n *Node) BareDel(ctx context.Context, sb *Sandbox, id string) error {
	for i := len(n.direct) - 1; i >= 0; i-- {
		if err := n.bare.DelNetworkList(ctx, n.direct[i].list, n.bareConf(sb, id, &n.direct[i])); err != nil {
			return fmt.Errorf("DEL of %s directly, %s: %w", n.direct[i].list.Name, id, err)
		}
	}
	return nil
}

// checkInterfaces makes sure an ADD did the work being timed: the merged
// result lists an interface in the sandbox for every network.
func checkInterfaces(res types.Result, want int) error {
	var r struct {
		Interfaces []struct {
			Name    string `json:"name"`
			Sandbox string `json:"sandbox"`
		} `json:"interfaces"`
	}
	if err := unmarshalResult(res, &r); err != nil {
		return err
	}
	got := 0
	for _, i := range r.Interfaces {
		if i.Sandbox != "" {
			got++
		}
	}
	if got != want {
		return fmt.Errorf("ADD through plexus made %d pod interfaces, want %d", got, want)
	}
	return nil
}

// settle waits until the daemon has written the network-status of the
// ADD just made and its watch has seen the write, so that the patch does
// not run inside the next timed call.
func (n *Node) settle(ctx context.Context, sb *Sandbox, before string) error {
	if err := poll(ctx, 10*time.Second, func() bool { return n.Daemon.Status.Pending() == 0 }); err != nil {
		return fmt.Errorf("network-status of %s not written: %w", sb.Pod.Name, err)
	}
	cached := &corev1.Pod{}
	_ = poll(ctx, time.Second, func() bool {
		return n.Daemon.Manager.GetCache().Get(ctx, client.ObjectKeyFromObject(sb.Pod), cached) == nil &&
			cached.ResourceVersion != before
	})
	return nil
}

// cachedVersion is the resourceVersion of a pod in the daemon's cache.
func (n *Node) cachedVersion(ctx context.Context, sb *Sandbox) string {
	cached := &corev1.Pod{}
	if err := n.Daemon.Manager.GetCache().Get(ctx, client.ObjectKeyFromObject(sb.Pod), cached); err != nil {
		return ""
	}
	return cached.ResourceVersion
}

// takeStatusLatencies returns the network-status latencies seen since the
// last call.
func (n *Node) takeStatusLatencies() []float64 {
	n.statusMu.Lock()
	defer n.statusMu.Unlock()
	out := n.statusMs
	n.statusMs = nil
	return out
}

// Leftovers lists what deleted sandboxes left behind: host-local
// addresses, plexus records, interfaces in the sandboxes.
func (n *Node) Leftovers(sandboxes []*Sandbox) ([]string, error) {
	var left []string
	addrs, _ := filepath.Glob(filepath.Join(n.ipamDir, "*", "[0-9]*"))
	left = append(left, addrs...)
	for _, pattern := range []string{"*.json", "*.results"} {
		recs, _ := filepath.Glob(filepath.Join(n.Daemon.Node.StateDir, "records", pattern))
		left = append(left, recs...)
	}
	for _, sb := range sandboxes {
		err := sb.NetNS.Do(func(ns.NetNS) error {
			links, err := netlink.LinkList()
			for _, l := range links {
				if l.Attrs().Name != "lo" {
					left = append(left, sb.Pod.Name+": link "+l.Attrs().Name)
				}
			}
			return err
		})
		if err != nil {
			return nil, err
		}
	}
	return left, nil
}

// poll calls cond every millisecond until it holds, ctx ends or timeout
// passes.
func poll(ctx context.Context, timeout time.Duration, cond func() bool) error {
	return wait.PollUntilContextTimeout(ctx, time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
}

// parallel runs fn(0..n-1), at most workers at a time, and returns the
// first error; after one, the calls not started yet are not made.
func parallel(n, workers int, fn func(i int) error) error {
	g, ctx := errgroup.WithContext(context.Background())
	g.SetLimit(workers)
	for i := 0; i < n && ctx.Err() == nil; i++ {
		g.Go(func() error { return fn(i) })
	}
	return g.Wait()
}
