package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/cert-controller/pkg/rotator"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/admission"
	"github.com/plexus-cni/plexus/plugin"
)

// Certificate modes (--certificates).
const (
	// CertificatesSelf: the webhook makes and rotates its certificates.
	CertificatesSelf = "self"
	// CertificatesExternal: certificates come from elsewhere (cert-manager).
	CertificatesExternal = "external"
)

// Options configure the webhook.
type Options struct {
	// Policy is the daemons' settings for what pods may ask for.
	Policy plugin.PodPolicy
	// Namespace is the webhook's own ($POD_NAMESPACE): its Secret's and
	// Service's.
	Namespace string
	// Port is the HTTPS port.
	Port int
	// CertDir holds tls.crt and tls.key.
	CertDir string
	// Certificates is CertificatesSelf or CertificatesExternal.
	Certificates string
	// CertSecret is the Secret the self mode writes the certificates to;
	// it must exist (the rotator updates it, it never creates it).
	CertSecret string
	// WebhookConfiguration is the ValidatingWebhookConfiguration whose
	// caBundle the self mode sets.
	WebhookConfiguration string
	// ServiceName is the webhook's Service, for the serving certificate's
	// DNS names.
	ServiceName string
	// ProbeAddr serves /healthz and /readyz; MetricsAddr metrics ("0":
	// off).
	ProbeAddr, MetricsAddr string
}

// Defaults are the webhook's default options; Policy is the daemons'
// default pod policy.
func Defaults() Options {
	// The default policy has no default networks, so it always parses.
	policy, _ := settings.DefaultPodPolicy().Policy()
	return Options{
		Policy:               policy,
		Port:                 9443,
		CertDir:              filepath.Join(os.TempDir(), "k8s-webhook-server", "serving-certs"),
		Certificates:         CertificatesSelf,
		CertSecret:           "plexus-webhook-cert",
		WebhookConfiguration: "plexus",
		ServiceName:          "plexus-webhook",
		ProbeAddr:            ":8081",
		MetricsAddr:          "0",
	}
}

func (o *Options) check() error {
	switch o.Certificates {
	case CertificatesSelf:
		if o.Namespace == "" {
			return errors.New("--certificates=self needs $POD_NAMESPACE, the namespace of the Secret --cert-secret and the Service --service-name")
		}
	case CertificatesExternal:
	default:
		return fmt.Errorf("--certificates %q: want %s or %s", o.Certificates, CertificatesSelf, CertificatesExternal)
	}
	return nil
}

// DNSNames are the names the serving certificate is for: the Service's.
func (o *Options) DNSNames() []string {
	svc := o.ServiceName + "." + o.Namespace + ".svc"
	return []string{svc, svc + ".cluster.local"}
}

// run serves the webhook until ctx ends. The validators are registered,
// which starts the HTTPS server, only once the certificates are in
// --cert-dir (and, in self mode, the CA is in the webhook configuration):
// the server reads them when it starts. /readyz fails until it serves.
func run(ctx context.Context, cfg *rest.Config, o Options) error {
	log := ctrl.Log.WithName("webhook")
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:  controllers.Scheme(),
		Metrics: metricsserver.Options{BindAddress: o.MetricsAddr},
		// The manager's and every Runnable's logger, from their context.
		Logger:                 log,
		BaseContext:            func() context.Context { return ctrl.LoggerInto(context.Background(), log) },
		HealthProbeBindAddress: o.ProbeAddr,
		WebhookServer:          webhook.NewServer(webhook.Options{Port: o.Port, CertDir: o.CertDir}),
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	certsReady := make(chan struct{})
	switch o.Certificates {
	case CertificatesSelf:
		dns := o.DNSNames()
		err = rotator.AddRotator(scopedManager{Manager: mgr, cfg: o.scopedConfig(cfg)}, &rotator.CertRotator{
			SecretKey:      k8stypes.NamespacedName{Namespace: o.Namespace, Name: o.CertSecret},
			CertDir:        o.CertDir,
			CAName:         "plexus-webhook-ca",
			CAOrganization: "plexus",
			DNSName:        dns[0],
			ExtraDNSNames:  dns[1:],
			IsReady:        certsReady,
			Webhooks:       []rotator.WebhookInfo{{Name: o.WebhookConfiguration, Type: rotator.Validating}},
			// Each replica keeps the Secret valid; whichever writes first
			// wins and the others read its certificates.
			RequireLeaderElection: false,
		})
		if err != nil {
			return fmt.Errorf("certificate rotator: %w", err)
		}
	case CertificatesExternal:
		if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
			return waitForCertificates(ctx, o.CertDir, certsReady)
		})); err != nil {
			return err
		}
	}
	var serving atomic.Bool
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		select {
		case <-certsReady:
		case <-ctx.Done():
			return nil
		}
		// Start the informer now, not at the first definition applied.
		if _, err := mgr.GetCache().GetInformer(ctx, &v1alpha1.NodeNetworkStatus{}); err != nil {
			return fmt.Errorf("watching NodeNetworkStatuses: %w", err)
		}
		if err := admission.Setup(mgr, o.Policy); err != nil {
			return fmt.Errorf("registering the validators: %w", err)
		}
		serving.Store(true)
		ctrl.LoggerFrom(ctx).Info("Certificates ready, serving", "port", o.Port)
		return nil
	})); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("webhook", func(req *http.Request) error {
		if !serving.Load() {
			return errors.New("certificates not in place yet: the webhook is not serving")
		}
		return mgr.GetWebhookServer().StartedChecker()(req)
	}); err != nil {
		return err
	}
	return mgr.Start(ctx)
}

// waitForCertificates closes ready once dir holds a usable serving
// certificate and key (certsUsable), as certificates written by someone
// else (cert-manager, into the mounted Secret) appear. The chart's Secret
// for cert-manager starts with tls.crt and tls.key present but empty: the
// files existing is not enough, and serving them would fail the webhook
// server and with it the process.
func waitForCertificates(ctx context.Context, dir string, ready chan struct{}) error {
	log := ctrl.LoggerFrom(ctx).WithName("certificates")
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for waited := 0; ; waited++ {
		err := certsUsable(dir)
		if err == nil {
			close(ready)
			return nil
		}
		if waited%30 == 0 {
			log.Info("Waiting for the serving certificate", "dir", dir, "reason", err.Error())
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

// certsUsable says whether dir's tls.crt and tls.key load as a key pair,
// as the webhook server loads them; the error says what is wrong.
func certsUsable(dir string) error {
	_, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	return err
}

// scopedManager hands the certificate rotator a config of its own
// (scopedConfig): the rotator builds its cache of Secrets and webhook
// configurations from the manager's config.
type scopedManager struct {
	manager.Manager
	cfg *rest.Config
}

func (m scopedManager) GetConfig() *rest.Config { return m.cfg }

// scopedConfig narrows cfg's list and watch requests of the Secrets of the
// webhook's namespace and of the ValidatingWebhookConfigurations to the
// two objects the webhook keeps (--cert-secret, --webhook-configuration),
// with a metadata.name field selector. The API server authorizes such a
// request against RBAC rules naming that object, so the webhook's roles
// grant get, list, watch and update of those two objects only, not the
// read of every Secret in its namespace (kube-system in both installs)
// that the rotator's namespace-wide cache would otherwise need.
func (o *Options) scopedConfig(cfg *rest.Config) *rest.Config {
	names := map[string]string{
		"/api/v1/namespaces/" + o.Namespace + "/secrets":                        o.CertSecret,
		"/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations": o.WebhookConfiguration,
	}
	c := rest.CopyConfig(cfg)
	c.Wrap(func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(r *http.Request) (*http.Response, error) {
			if name, ok := names[r.URL.Path]; ok && r.Method == http.MethodGet && r.URL.Query().Get("fieldSelector") == "" {
				r = r.Clone(r.Context())
				q := r.URL.Query()
				q.Set("fieldSelector", "metadata.name="+name)
				r.URL.RawQuery = q.Encode()
			}
			return rt.RoundTrip(r)
		})
	})
	return c
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
