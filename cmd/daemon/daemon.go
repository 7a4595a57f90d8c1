// Package daemon assembles the plexus node daemon: a controller-runtime
// manager whose caches hold this node's pods and the network definitions,
// the CNI server on the node socket, and the network-status writer.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/cniserver"
	"github.com/plexus-cni/plexus/controllers/delegateapi"
	"github.com/plexus-cni/plexus/controllers/kube"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/netstore"
	"github.com/plexus-cni/plexus/plugin/nodeexec"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/shimapi"
)

// Options configure the daemon; Defaults gives the documented defaults.
type Options struct {
	NodeName   string
	SocketPath string
	StateDir   string
	// RuntimeCacheDir is the container runtime's libcni result cache
	// (libcni's default, /var/lib/cni): the default network's DEL of a
	// sandbox plexus never attached reads the runtime's ADD result there.
	RuntimeCacheDir string
	// MultusCacheDir is Multus's cniDir on the node (/var/lib/cni/multus),
	// read through HostPrefix: a DEL of a sandbox plexus never attached
	// tears down the networks Multus's cache file there names (see
	// plugin.Engine.MultusCacheDir). Empty disables that.
	MultusCacheDir string
	CNIConfDir     string
	CNIBinDir      string
	DefaultNetwork string
	// PodPolicy decides what a pod may ask for: namespace isolation and
	// the default networks (the webhook applies the same settings).
	settings.PodPolicy

	OperationTimeout time.Duration
	// PodResourcesSocket is kubelet's pod-resources API, asked for the
	// devices of networks backed by a device plugin resource.
	PodResourcesSocket string
	// AddedInterfaceEvents writes an AddedInterface Event per interface a
	// pod gets; false keeps the API server quiet (Warnings are always
	// written).
	AddedInterfaceEvents bool
	// ShimSource is the shim binary installed into CNIBinDir; empty
	// installs nothing.
	ShimSource string
	// ReadinessIndicator is a file that must exist before the node
	// conflist is written; empty waits for nothing.
	ReadinessIndicator string
	// Resync is how often the conf dir is read again besides its watch.
	Resync time.Duration
	// SetAsideLeftovers renames leftover meta-plugin configs (a Multus
	// config whose plugin binary is gone) so that the runtime no longer
	// reads them; off, they only make the node not Ready.
	SetAsideLeftovers bool
	// PodName and PodNamespace are the daemon's own pod ($POD_NAME,
	// $POD_NAMESPACE): its DaemonSet, read when the daemon stops, tells
	// an uninstall (the node conflist is removed) from a restart (it
	// stays). Empty keeps the conflist always.
	PodName      string
	PodNamespace string
	// HostPrefix is where the node's root filesystem is mounted in the
	// daemon's container. When set, every delegate runs chrooted into it,
	// with the node's PATH (NodePath) and CNIBinDir's node path as
	// CNI_PATH, as the runtime would run it on the node (see
	// nodeexec.NodeExec); CNIBinDir must then be under it. Paths in
	// NodeNetworkStatus and Events are shown without it, as the node sees
	// them. Empty runs delegates in the daemon's own root.
	HostPrefix string
	// NodePath is the PATH delegates get when HostPrefix is set; empty is
	// nodeexec.DefaultNodePath.
	NodePath string
	// SweepEvery is how often records of sandboxes that are gone without
	// a DEL are looked for (see Daemon.Sweep); 0 looks at start only.
	SweepEvery time.Duration
	// BypassCheckEvery is how often the node's pods are checked for ones
	// that ask for networks but that plexus never attached (see
	// controllers.BypassedPods); they are checked at start too.
	BypassCheckEvery time.Duration
	// StatusHeartbeat is how often, at the least, the node's
	// NodeNetworkStatus shows the daemon alive (v1alpha1.HeartbeatPeriod
	// when zero; tests shorten it).
	StatusHeartbeat time.Duration
	// HotplugMode says who acts when a running pod's networks annotation
	// changes (--hotplug, chart value hotplug.mode): controllers.HotplugBuiltin
	// (the default; the daemon's own controller), HotplugDelegateAPI (the
	// dynamic networks controller, through the delegate API on
	// DelegateAPISocket) or HotplugOff. Empty is builtin. Never two at
	// once: in delegate-api mode the builtin controller is off, and in the
	// others the socket is not served.
	HotplugMode string
	// DelegateAPISocket is where the delegate API is served in
	// delegate-api mode: a node path (the chart mounts its directory at
	// the same path), by default Multus's, where the dynamic networks
	// controller looks.
	DelegateAPISocket string
	MetricsAddr       string
	ProbeAddr         string
}

// Defaults are the values a node gets when nothing is configured.
func Defaults() Options {
	return Options{
		SocketPath:         shimapi.DefaultSocket,
		StateDir:           shimapi.DefaultStateDir,
		RuntimeCacheDir:    libcni.CacheDir,
		MultusCacheDir:     delegate.DefaultMultusCacheDir,
		CNIConfDir:         "/etc/cni/net.d",
		CNIBinDir:          "/opt/cni/bin",
		OperationTimeout:   2 * time.Minute,
		PodResourcesSocket: kube.DefaultPodResourcesSocket,
		Resync:             30 * time.Second,
		SetAsideLeftovers:  true,
		SweepEvery:         10 * time.Minute,
		BypassCheckEvery:   controllers.DefaultBypassCheck,
		MetricsAddr:        ":9091",
		ProbeAddr:          ":9092",

		PodPolicy:            settings.DefaultPodPolicy(),
		AddedInterfaceEvents: true,
		HotplugMode:          controllers.HotplugBuiltin,
		DelegateAPISocket:    delegateapi.DefaultSocket,
	}
}

// checkDelegateAPISocket validates the socket path in delegate-api mode.
func checkDelegateAPISocket(o Options) error {
	if o.HotplugMode == controllers.HotplugDelegateAPI && !filepath.IsAbs(o.DelegateAPISocket) {
		return fmt.Errorf("--delegate-api-socket (chart value hotplug.delegateAPISocket) %q: want an absolute path on the node, by default Multus's %s", o.DelegateAPISocket, delegateapi.DefaultSocket)
	}
	return nil
}

// delegateCNIs are the libcni configs the engine runs delegates with, one
// per result cache dir: plexus's, the runtime's, Multus's. With a
// HostPrefix, plugins run in the node's root (nodeexec), from CNIBinDir as
// the node names it.
func delegateCNIs(o Options, cacheDirs ...string) ([]libcni.CNI, error) {
	cnis := make([]libcni.CNI, 0, len(cacheDirs))
	if o.HostPrefix == "" {
		for _, dir := range cacheDirs {
			cnis = append(cnis, libcni.NewCNIConfigWithCacheDir([]string{o.CNIBinDir}, dir, nil))
		}
		return cnis, nil
	}
	root := filepath.Clean(o.HostPrefix)
	binDir, err := filepath.Rel(root, filepath.Clean(o.CNIBinDir))
	if err != nil || binDir == ".." || strings.HasPrefix(binDir, "../") {
		return nil, fmt.Errorf("--cni-bin-dir %s is not under --host-prefix %s: delegates run in the node's root, from the bin dir as the node names it", o.CNIBinDir, o.HostPrefix)
	}
	// A node root has /proc (plugins enter netns through it) and /bin: a
	// prefix that holds only the mounts plexus needs is not one.
	for _, dir := range []string{"proc/self", "bin"} {
		if _, err := os.Stat(filepath.Join(root, dir)); err != nil {
			return nil, fmt.Errorf("--host-prefix %s is not the node's root filesystem (%v): mount the node's / there (hostPath /, mountPropagation HostToContainer), as the chart does", o.HostPrefix, err)
		}
	}
	exec := &nodeexec.NodeExec{Root: root, Path: o.NodePath}
	nodeBin := []string{"/" + binDir}
	for _, dir := range cacheDirs {
		cnis = append(cnis, nodeexec.NewCNI(exec, nodeBin, dir))
	}
	return cnis, nil
}

// multusCacheDir is where the daemon reads Multus's cache: MultusCacheDir
// on the node, through HostPrefix; "" when disabled.
func multusCacheDir(o Options) (string, error) {
	if o.MultusCacheDir == "" {
		return "", nil
	}
	if !filepath.IsAbs(o.MultusCacheDir) {
		return "", fmt.Errorf("--multus-cache-dir %q: want an absolute path on the node (Multus's cniDir, by default %s), or empty to disable", o.MultusCacheDir, delegate.DefaultMultusCacheDir)
	}
	dir, err := delegate.HostPath(o.HostPrefix, o.MultusCacheDir)
	if err != nil {
		return "", fmt.Errorf("--multus-cache-dir: %w", err)
	}
	return dir, nil
}

// Daemon is a configured, not yet started, node daemon.
type Daemon struct {
	Manager    manager.Manager
	Engine     *plugin.Engine
	Server     *cniserver.Server
	Status     *kube.StatusWriter
	Events     *kube.PodEvents
	Node       *controllers.NodeConfig
	Networks   *controllers.NetworkReconciler
	NodeStatus *controllers.StatusReconciler
	Owner      *controllers.Owner
	Bypassed   *controllers.BypassedPods
	// Hotplug is the built-in hot-plug controller; nil in other modes.
	Hotplug *controllers.Hotplug
	// HotplugActivity counts hot-plug activity for the node's status.
	HotplugActivity *controllers.HotplugActivity
	// DelegateAPI serves the dynamic networks controller in delegate-api
	// mode; nil otherwise.
	DelegateAPI *delegateapi.Server

	sweepEvery time.Duration
}

// New builds the daemon. Start it with d.Manager.Start.
func New(cfg *rest.Config, o Options) (*Daemon, error) {
	if o.NodeName == "" {
		return nil, errors.New("node name is required (--node-name or NODE_NAME)")
	}
	if err := checkDelegateAPISocket(o); err != nil {
		return nil, err
	}
	multusDir, err := multusCacheDir(o)
	if err != nil {
		return nil, err
	}
	cnis, err := delegateCNIs(o, shimapi.CacheDir(o.StateDir), o.RuntimeCacheDir, multusDir)
	if err != nil {
		return nil, err
	}
	delegates, runtimeDelegates := cnis[0], cnis[1]
	policy, err := o.PodPolicy.Policy()
	if err != nil {
		return nil, err
	}
	hotplugMode, err := ParseHotplugMode(o.HotplugMode)
	if err != nil {
		return nil, err
	}
	log := ctrl.Log.WithName("plexus")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  controllers.Scheme(),
		Metrics: metricsserver.Options{BindAddress: o.MetricsAddr},
		// The manager's, its controllers' and every Runnable's logger: the
		// Runnables take it from their context and name themselves.
		Logger:                 log,
		BaseContext:            func() context.Context { return ctrl.LoggerInto(context.Background(), log) },
		HealthProbeBindAddress: o.ProbeAddr,
		LeaderElection:         false,
		// One daemon per process in production; tests and the demo build
		// several in one process, which the name check would refuse.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
		Cache: cache.Options{
			DefaultTransform: cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// Only this node's pods: the cache stays the size of a node.
				&corev1.Pod{}: {Field: fields.OneTermEqualSelector("spec.nodeName", o.NodeName)},
				// Definitions trimmed to what resolution needs.
				&nadv1.NetworkAttachmentDefinition{}: {Transform: trimNetwork},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("manager: %w", err)
	}
	store, err := record.NewStore(shimapi.RecordsDir(o.StateDir))
	if err != nil {
		return nil, err
	}
	// The pod index (pod → live sandbox, for hot-plug) is a cache of the
	// records: records of an older plexus have no link, and a crash may
	// have lost one.
	if n, err := store.Reindex(); err != nil {
		return nil, fmt.Errorf("pod index: %w", err)
	} else if n > 0 {
		log.Info("Pod index rebuilt from the records", "links", n)
	}
	netStore, err := netstore.New(NetworksDir(o.StateDir))
	if err != nil {
		return nil, err
	}
	status := &kube.StatusWriter{Client: mgr.GetClient(), Cache: mgr.GetCache(), Log: log.WithName("status"),
		Current: recordStatus(store)}
	events := &kube.PodEvents{Config: cfg, NodeName: o.NodeName, DropNormal: !o.AddedInterfaceEvents, Log: log.WithName("events")}
	engine := &plugin.Engine{
		CNI:            delegates,
		RuntimeCNI:     runtimeDelegates,
		MultusCacheDir: multusDir,
		MultusCNI:      cnis[2],
		Store:          store,
		ConfDir:        o.CNIConfDir,
		DefaultNetwork: o.DefaultNetwork,
		Pods:           &kube.Pods{Cache: mgr.GetCache(), Live: mgr.GetAPIReader()},
		Networks:       &kube.Networks{Store: netStore, Cache: mgr.GetCache(), Live: mgr.GetAPIReader()},
		Status:         status,
		Events:         events,
		Devices:        &kube.PodResources{Socket: o.PodResourcesSocket},
		PodPolicy:      policy,
	}
	server := &cniserver.Server{Engine: engine, Socket: o.SocketPath, Timeout: o.OperationTimeout}
	recorder := mgr.GetEventRecorderFor("plexus")
	nodeStatus := &controllers.StatusReconciler{Client: mgr.GetClient(), Live: mgr.GetAPIReader(), NodeName: o.NodeName, Records: store,
		Recorder: recorder, Serving: func() error { return server.Ready(nil) }, Heartbeat: o.StatusHeartbeat}
	// Reads the pod cache, which holds this node's pods only.
	bypassed := &controllers.BypassedPods{Pods: mgr.GetCache(), NodeName: o.NodeName, Records: store, Recorder: recorder,
		Every: o.BypassCheckEvery, OnChange: nodeStatus.Poke}
	nodeStatus.Bypassed = bypassed
	node := &controllers.NodeConfig{
		ConfDir: o.CNIConfDir, BinDir: o.CNIBinDir, DefaultNetwork: o.DefaultNetwork,
		ReadinessIndicator: o.ReadinessIndicator, SocketPath: o.SocketPath, StateDir: o.StateDir, MultusCacheDir: o.MultusCacheDir,
		ShimSource: o.ShimSource, Resync: o.Resync, SetAsideLeftovers: o.SetAsideLeftovers,
		CanServe: func() bool { return server.Ready(nil) == nil },
		OnChange: nodeStatus.Poke,
	}
	networks := &controllers.NetworkReconciler{Reader: mgr.GetClient(), Store: netStore, ConfDir: o.CNIConfDir,
		BinDir: o.CNIBinDir, NodeName: o.NodeName, Recorder: recorder,
		OnChange: nodeStatus.Poke}
	if finder, ok := delegates.(delegate.PluginFinder); ok {
		networks.HasPlugin = finder.Has
		node.HasPlugin = finder.Has
	}
	nodeStatus.Node, nodeStatus.Networks = node, networks
	nodeStatus.HostPaths = controllers.HostPaths(o.HostPrefix)
	networks.HostPaths = controllers.HostPaths(o.HostPrefix)
	owner := &controllers.Owner{Reader: mgr.GetAPIReader(), PodNamespace: o.PodNamespace, PodName: o.PodName,
		NodeName: o.NodeName}
	node.Uninstalled = owner.Uninstalled
	node.OnStop = nodeStatus.Stopped
	// ADD takes the default network the node config found (it watches the
	// conf dir) rather than reading every file of the conf dir.
	engine.DefaultFound = func() *netconf.Network { return node.State().Default }
	activity := &controllers.HotplugActivity{Mode: hotplugMode, OnChange: nodeStatus.Poke}
	nodeStatus.Hotplug = activity
	d := &Daemon{Manager: mgr, Engine: engine, Server: server, Status: status, Events: events, Node: node, Networks: networks, NodeStatus: nodeStatus, Owner: owner,
		Bypassed: bypassed, HotplugActivity: activity, sweepEvery: o.SweepEvery}
	if err := networks.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	if hotplugMode == controllers.HotplugBuiltin {
		// The pod cache holds this node's pods only, so the controller
		// sees no other node's.
		d.Hotplug = &controllers.Hotplug{Reader: mgr.GetCache(), Engine: engine, Events: events,
			DefaultNetworks: policy.DefaultNetworks, Activity: activity}
		if err := d.Hotplug.SetupWithManager(mgr); err != nil {
			return nil, err
		}
	}
	if err := nodeStatus.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	for _, r := range []manager.Runnable{status, events, server, node, owner, manager.RunnableFunc(d.republish), manager.RunnableFunc(d.sweepLoop), manager.RunnableFunc(networks.Prune), bypassed} {
		if err := mgr.Add(r); err != nil {
			return nil, err
		}
	}
	// Informers for pods and definitions start with the manager, not on the
	// first ADD, so that the first pod of a node is served from the cache.
	for _, obj := range []client.Object{&corev1.Pod{}, &nadv1.NetworkAttachmentDefinition{}} {
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj); err != nil {
			return nil, fmt.Errorf("informer for %T: %w", obj, err)
		}
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return nil, err
	}
	ready := map[string]healthz.Checker{
		"cni-socket":  server.Ready,
		"node-config": func(*http.Request) error { return node.Ready() },
		"caches":      cacheSynced(mgr),
	}
	if hotplugMode == controllers.HotplugDelegateAPI {
		d.DelegateAPI = &delegateapi.Server{Engine: engine, Socket: o.DelegateAPISocket, Timeout: o.OperationTimeout,
			Pods: mgr.GetCache(), Live: mgr.GetAPIReader(), Activity: activity}
		if err := mgr.Add(d.DelegateAPI); err != nil {
			return nil, err
		}
		ready["delegate-api-socket"] = d.DelegateAPI.Ready
	}
	for name, check := range ready {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// ParseHotplugMode reads --hotplug: one of controllers.HotplugModes, ""
// being the default (builtin).
func ParseHotplugMode(mode string) (string, error) {
	if mode == "" {
		return controllers.HotplugBuiltin, nil
	}
	if slices.Contains(controllers.HotplugModes, mode) {
		return mode, nil
	}
	return "", fmt.Errorf("--hotplug (chart value hotplug.mode) %q: want one of %s: builtin, the daemon hot-plugs itself; "+
		"delegate-api, the dynamic networks controller does, through plexus's delegate API; off, running pods keep their networks",
		mode, strings.Join(controllers.HotplugModes, ", "))
}

// NetworksDir is where the node's rendered definitions are.
func NetworksDir(stateDir string) string { return stateDir + "/networks" }

func cacheSynced(mgr manager.Manager) healthz.Checker {
	return func(r *http.Request) error {
		ctx, cancel := context.WithTimeout(r.Context(), 100*time.Millisecond)
		defer cancel()
		if !mgr.GetCache().WaitForCacheSync(ctx) {
			return errors.New("caches not synced")
		}
		return nil
	}
}

// trimNetwork keeps of a definition what resolution needs, so that
// thousands of definitions cost little memory on every node.
func trimNetwork(obj interface{}) (interface{}, error) {
	nad, ok := obj.(*nadv1.NetworkAttachmentDefinition)
	if !ok {
		return obj, nil
	}
	trimmed := &nadv1.NetworkAttachmentDefinition{
		TypeMeta: nad.TypeMeta,
		ObjectMeta: metav1.ObjectMeta{Namespace: nad.Namespace, Name: nad.Name, UID: nad.UID,
			ResourceVersion: nad.ResourceVersion, Generation: nad.Generation},
		Spec: nad.Spec,
	}
	if rn := nad.Annotations[plugin.ResourceNameAnnotation]; rn != "" {
		trimmed.Annotations = map[string]string{plugin.ResourceNameAnnotation: rn}
	}
	return trimmed, nil
}

// republish queues the status of every recorded sandbox once the caches
// have synced: a daemon that died between an ADD and its status patch
// leaves the patch to its successor. The writer skips pods whose cached
// annotation is already right, so a restart costs no API call for them.
func (d *Daemon) republish(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("republish")
	ids, err := d.Engine.Store.IDs()
	if err != nil {
		log.Error(err, "Listing records")
		return nil
	}
	for _, id := range ids {
		rec, err := d.Engine.Store.Load(id)
		if err != nil || rec.Pod.Name == "" || !complete(rec) {
			continue // an ADD cut short: its runtime will DEL it
		}
		status, err := plugin.NetworkStatus(rec)
		if err != nil {
			log.Error(err, "Rebuilding network-status", "containerID", id, "pod", plugin.PodRef(rec.Pod))
			continue
		}
		d.Status.Publish(rec.Pod, id, status)
	}
	return nil
}

// recordStatus rebuilds a sandbox's network-status from its record when
// the writer writes it, so that a status waiting to be written never
// undoes an attach or detach done meanwhile (see kube.StatusWriter.Current).
func recordStatus(store *record.Store) func(string) ([]nadv1.NetworkStatus, bool, error) {
	return func(containerID string) ([]nadv1.NetworkStatus, bool, error) {
		rec, err := store.Load(containerID)
		if errors.Is(err, os.ErrNotExist) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, err
		}
		if rec.Failed != nil {
			return nil, false, nil // its teardown is owed: no status to show
		}
		status, err := plugin.NetworkStatus(rec)
		return status, err == nil, err
	}
}

func complete(rec *record.Record) bool {
	for i := range rec.Attachments {
		if !rec.Attachments[i].Added() {
			return false
		}
	}
	return true
}
