// Command plexus-daemon is the plexus node daemon: it serves the CNI shim's
// calls on the node socket and writes the pods' network status.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin/nodeexec"
)

func main() {
	f := bindFlags(flag.CommandLine)
	flag.Parse()
	if f.configFile != "" {
		if err := settings.ApplyConfigFile(flag.CommandLine, f.configFile, settings.WebhookNames); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	o := f.options
	o.PodName, o.PodNamespace = os.Getenv("POD_NAME"), os.Getenv("POD_NAMESPACE")
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
	log := ctrl.Log.WithName("setup")

	d, err := daemon.New(ctrl.GetConfigOrDie(), *o)
	if err != nil {
		log.Error(err, "Building the daemon")
		os.Exit(1)
	}
	log.Info("Starting", "node", o.NodeName, "socket", o.SocketPath, "stateDir", o.StateDir,
		"confDir", o.CNIConfDir, "binDir", o.CNIBinDir, "namespaceIsolation", o.IsolateNamespaces,
		"globalNamespaces", o.GlobalNamespaces, "hotplug", o.HotplugMode)
	if err := d.Manager.Start(ctrl.SetupSignalHandler()); err != nil {
		log.Error(err, "Daemon stopped")
		os.Exit(1)
	}
}

// flags are the daemon's command line; its settings file (--config) sets
// the same flags.
type flags struct {
	options    *daemon.Options
	configFile string
	zap        zap.Options
}

// bindFlags defines the daemon's flags on fs. settings.DaemonNames lists
// their names for plexus-webhook, which reads the same settings file
// (TestDaemonSettingsAreTheDaemonsFlags keeps the two equal).
func bindFlags(fs *flag.FlagSet) *flags {
	o := daemon.Defaults()
	f := &flags{options: &o}
	fs.StringVar(&f.configFile, "config", "",
		"a YAML file of settings named like these flags (the chart's ConfigMap); flags on the command line win")
	fs.StringVar(&o.NodeName, "node-name", os.Getenv("NODE_NAME"), "this node's name (default $NODE_NAME); the daemon's pod cache holds this node's pods only")
	fs.StringVar(&o.SocketPath, "socket", o.SocketPath, "the unix socket the CNI shim calls")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "attachment records, rendered network definitions and the delegates' result cache; the shim reads the records from there when the daemon is down, so it must survive daemon restarts")
	fs.StringVar(&o.RuntimeCacheDir, "runtime-cache-dir", o.RuntimeCacheDir, "the container runtime's CNI result cache, read when a sandbox plexus never attached is deleted (/host/var/lib/cni in both installs)")
	fs.StringVar(&o.MultusCacheDir, "multus-cache-dir", o.MultusCacheDir,
		"Multus's cniDir on the node, read through --host-prefix: a DEL of a sandbox plexus never attached also tears down the networks Multus recorded there for it (see docs/how-it-works.md, Teardown); empty disables")
	fs.StringVar(&o.CNIConfDir, "cni-conf-dir", o.CNIConfDir, "the node's CNI configuration directory: where the default network and file-backed definitions are, and where 00-plexus.conflist is written")
	fs.StringVar(&o.CNIBinDir, "cni-bin-dir", o.CNIBinDir, "the node's CNI plugin directory: the delegate plugins, and where the shim is installed; must be under --host-prefix when that is set")
	fs.StringVar(&o.DefaultNetwork, "default-network", o.DefaultNetwork,
		"name of the default network's config in the conf dir; empty picks the first that is not a meta-plugin's (plexus's, Multus's, ...)")
	settings.BindPodPolicyFlags(fs, &o.PodPolicy)
	fs.BoolVar(&o.AddedInterfaceEvents, "added-interface-events", o.AddedInterfaceEvents,
		"write an AddedInterface Event on a pod per interface it gets; false keeps the API server quiet (NoNetworkFound Warnings are always written)")
	fs.StringVar(&o.PodResourcesSocket, "pod-resources-socket", o.PodResourcesSocket,
		"kubelet's pod-resources API, for networks backed by a device plugin resource")
	fs.StringVar(&o.ShimSource, "shim-source", defaultShimSource(),
		"the plexus CNI binary to install into the CNI bin dir; empty installs nothing")
	fs.StringVar(&o.ReadinessIndicator, "readiness-indicator-file", o.ReadinessIndicator,
		"a file the default network writes once it is ready (as /run/flannel/subnet.env): plexus writes its conflist only after it exists")
	fs.StringVar(&o.HostPrefix, "host-prefix", o.HostPrefix,
		"where the node's root filesystem is mounted in this container (/host in both installs): every delegate runs chrooted into it, as the runtime runs it on the node, and NodeNetworkStatus and Events show paths without it; empty runs delegates in the daemon's own root")
	fs.StringVar(&o.NodePath, "node-path", o.NodePath,
		"the PATH delegates get on the node when --host-prefix is set (default "+nodeexec.DefaultNodePath+")")
	fs.BoolVar(&o.SetAsideLeftovers, "set-aside-leftovers", o.SetAsideLeftovers,
		"rename leftover meta-plugin configs (Multus's, its plugin binary gone) in the conf dir to <name>"+controllers.SetAsideSuffix+", so that the runtime no longer reads them; false only reports them (the node is not Ready)")
	fs.StringVar(&o.DelegateAPISocket, "delegate-api-socket", o.DelegateAPISocket,
		"in --hotplug=delegate-api mode, the node path of the unix socket the dynamic networks controller calls (its multusSocketPath)")
	fs.DurationVar(&o.Resync, "resync", o.Resync, "how often the CNI conf dir is read again besides its watch")
	fs.DurationVar(&o.OperationTimeout, "operation-timeout", o.OperationTimeout, "deadline of one CNI call (and of one delegate API call)")
	fs.StringVar(&o.HotplugMode, "hotplug", o.HotplugMode,
		"who acts when a running pod's networks annotation changes: builtin (the daemon attaches and detaches), "+
			"delegate-api (the dynamic networks controller, through plexus's delegate API), or off")
	fs.StringVar(&o.MetricsAddr, "metrics-bind-address", o.MetricsAddr, "Prometheus metrics address (plexus_cni_operation_duration_seconds and controller-runtime's); 0 disables")
	fs.StringVar(&o.ProbeAddr, "health-probe-bind-address", o.ProbeAddr, "address of /healthz (liveness) and /readyz (ready once the shim socket serves, the node's conflist and shim are in place and the caches are synced)")
	// No stack trace on error lines by default: an error line says what
	// failed and for whom (a delegate's refusal is not a bug of the
	// daemon); --zap-stacktrace-level=error brings them back.
	f.zap = zap.Options{Development: false, TimeEncoder: zapcore.RFC3339NanoTimeEncoder, StacktraceLevel: zapcore.PanicLevel}
	f.zap.BindFlags(fs)
	fs.Lookup("zap-stacktrace-level").Usage = "the level at and above which log lines carry a stack trace (info, error or panic; panic when unset)"
	fs.Lookup("zap-log-level").Usage = logLevels
	return f
}

// defaultShimSource is the shim shipped beside the daemon in its image.
func defaultShimSource() string {
	exe, err := os.Executable()
	if err != nil {
		return ""
	}
	return filepath.Join(filepath.Dir(exe), "plexus")
}
