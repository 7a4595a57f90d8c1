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

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/settings"
)

func main() {
	f := bindFlags(flag.CommandLine)
	flag.Parse()
	if f.configFile != "" {
		if err := settings.ApplyConfigFile(flag.CommandLine, f.configFile, fileIgnores()); err != nil {
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
// the daemons': of it the webhook applies settings.PodPolicyNames and its
// own settings, and ignores the daemon's others.
type flags struct {
	o          Options
	policy     settings.PodPolicy
	configFile string
	zap        zap.Options
}

// bindFlags defines the webhook's flags on fs; the pod policy's are the
// daemon's (settings.BindPodPolicyFlags).
func bindFlags(fs *flag.FlagSet) *flags {
	f := &flags{o: Defaults(), policy: settings.DefaultPodPolicy()}
	fs.StringVar(&f.configFile, "config", "",
		"the daemons' YAML settings file (the chart's ConfigMap): the webhook applies namespace-isolation, global-namespaces, default-networks, system-namespaces, default-network-namespace and its own settings from it; flags on the command line win")
	settings.BindPodPolicyFlags(fs, &f.policy)
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
	// No stack trace on error lines by default: an error line says what
	// failed and for whom (a delegate's refusal is not a bug of the
	// webhook); --zap-stacktrace-level=error brings them back.
	f.zap = zap.Options{Development: false, TimeEncoder: zapcore.RFC3339NanoTimeEncoder, StacktraceLevel: zapcore.PanicLevel}
	f.zap.BindFlags(fs)
	fs.Lookup("zap-stacktrace-level").Usage = "the level at and above which log lines carry a stack trace (info, error or panic; panic when unset)"
	fs.Lookup("zap-log-level").Usage = logLevels
	return f
}

// options completes the flags into Options: the pod policy parsed as the
// daemon parses it.
func (f *flags) options(namespace string) (Options, error) {
	o := f.o
	o.Namespace = namespace
	var err error
	o.Policy, err = f.policy.Policy()
	if err != nil {
		return o, err
	}
	return o, o.check()
}

// fileIgnores are the settings of the shared file the webhook skips: the
// daemon's, but for those of the pod policy.
func fileIgnores() []string {
	var out []string
	for _, s := range settings.DaemonNames {
		if !slices.Contains(settings.PodPolicyNames, s) {
			out = append(out, s)
		}
	}
	return out
}
