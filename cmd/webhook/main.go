// Command plexus-webhook is plexus's validating admission webhook: it
// refuses NetworkAttachmentDefinitions every node would reject and pods
// every node's ADD would refuse, when they are applied (see
// controllers/admission). It reads the daemons' settings file for the
// settings that decide what a pod may ask for, and serves TLS with
// certificates it makes and rotates itself or that come from elsewhere.
package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/daemon"
)

func main() {
	f := bindFlags(flag.CommandLine)
	flag.Parse()
	if f.configFile != "" {
		if err := daemon.ApplyConfigFile(flag.CommandLine, f.configFile, fileIgnores()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&f.zap)))
	log := ctrl.Log.WithName("setup")
	o, err := f.options(os.Getenv("POD_NAMESPACE"))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	log.Info("Starting", "namespace", o.Namespace, "port", o.Port, "certificates", o.Certificates, "certDir", o.CertDir,
		"namespaceIsolation", o.Policy.IsolateNamespaces, "globalNamespaces", o.Policy.GlobalNamespaces,
		"defaultNetworks", o.Policy.DefaultNetworks)
	if err := run(ctrl.SetupSignalHandler(), ctrl.GetConfigOrDie(), o); err != nil {
		log.Error(err, "Webhook stopped")
		os.Exit(1)
	}
}

// flags are the webhook's command line. The settings file (--config) is
// the daemons': of it the webhook applies daemon.PodPolicySettings and its
// own settings, and ignores the daemon's others.
type flags struct {
	o                                 Options
	configFile, globals               string
	defaultNetworks, systemNamespaces string
	zap                               zap.Options
}

// bindFlags defines the webhook's flags on fs; those it shares with the
// daemon have the daemon's names and defaults.
func bindFlags(fs *flag.FlagSet) *flags {
	d := daemon.Defaults()
	f := &flags{o: Defaults()}
	fs.StringVar(&f.configFile, "config", "",
		"the daemons' YAML settings file (the chart's ConfigMap): the webhook applies namespace-isolation, global-namespaces, default-networks, system-namespaces, default-network-namespace and its own settings from it; flags on the command line win")
	fs.BoolVar(&f.o.Policy.IsolateNamespaces, "namespace-isolation", d.IsolateNamespaces,
		"pods may use network definitions of their own namespace and the global namespaces only (as the daemons' setting)")
	fs.StringVar(&f.globals, "global-namespaces", strings.Join(d.GlobalNamespaces, ","),
		"comma-separated namespaces whose network definitions every pod may use (as the daemons' setting)")
	fs.StringVar(&f.defaultNetworks, "default-networks", "",
		"comma-separated networks the daemons attach to every pod outside the system namespaces, as net1, net2, ... (as the daemons' setting)")
	fs.StringVar(&f.systemNamespaces, "system-namespaces", strings.Join(d.SystemNamespaces, ","),
		"comma-separated namespaces whose pods do not get --default-networks (as the daemons' setting)")
	fs.StringVar(&f.o.Policy.DefaultNetworkNamespace, "default-network-namespace", d.DefaultNetworkNamespace,
		"where a bare name in --default-networks or a pod's default-network annotation is looked up (as the daemons' setting)")
	fs.IntVar(&f.o.Port, "port", f.o.Port, "the webhook's HTTPS port")
	fs.StringVar(&f.o.CertDir, "cert-dir", f.o.CertDir, "the serving certificate and key (tls.crt, tls.key): the Secret --cert-secret mounted")
	fs.StringVar(&f.o.Certificates, "certificates", f.o.Certificates,
		"self: the webhook makes and rotates its CA and serving certificate in the Secret --cert-secret and injects the CA into --webhook-configuration; "+
			"external: they come from elsewhere (cert-manager), the webhook only serves what --cert-dir holds, not ready until tls.crt and tls.key there load as a key pair")
	fs.StringVar(&f.o.CertSecret, "cert-secret", f.o.CertSecret, "in self mode, the Secret (in $POD_NAMESPACE, existing) the certificates are written to")
	fs.StringVar(&f.o.WebhookConfiguration, "webhook-configuration", f.o.WebhookConfiguration,
		"in self mode, the ValidatingWebhookConfiguration whose caBundle the webhook sets")
	fs.StringVar(&f.o.ServiceName, "service-name", f.o.ServiceName,
		"the webhook's Service: the serving certificate is for <service>.<namespace>.svc and <service>.<namespace>.svc.cluster.local")
	fs.StringVar(&f.o.ProbeAddr, "health-probe-bind-address", f.o.ProbeAddr,
		"address of /healthz and /readyz (ready once the certificates are in place and the webhook serves)")
	fs.StringVar(&f.o.MetricsAddr, "metrics-bind-address", f.o.MetricsAddr, "metrics address; 0 disables")
	f.zap = zap.Options{Development: false, TimeEncoder: zapcore.RFC3339NanoTimeEncoder}
	f.zap.BindFlags(fs)
	fs.Lookup("zap-log-level").Usage = logLevels
	return f
}

// options completes the flags into Options: the lists split, the default
// networks parsed as the daemon parses them.
func (f *flags) options(namespace string) (Options, error) {
	o := f.o
	o.Namespace = namespace
	o.Policy.GlobalNamespaces = splitList(f.globals)
	o.Policy.SystemNamespaces = splitList(f.systemNamespaces)
	var err error
	o.Policy.DefaultNetworks, err = daemon.ParseDefaultNetworks(splitList(f.defaultNetworks), o.Policy.DefaultNetworkNamespace)
	if err != nil {
		return o, err
	}
	return o, o.check()
}

// fileIgnores are the settings of the shared file the webhook skips: the
// daemon's, but for those of the pod policy.
func fileIgnores() []string {
	var out []string
	for _, s := range daemon.DaemonSettings {
		if !slices.Contains(daemon.PodPolicySettings, s) {
			out = append(out, s)
		}
	}
	return out
}

func splitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}
