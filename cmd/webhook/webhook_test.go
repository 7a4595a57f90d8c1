package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/admission"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

func init() { ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr))) }

// podIP is the webhook pod's address in the test: an address on lo, since
// the API server refuses loopback addresses in EndpointSlices.
const podIP = "10.250.77.1"

// shippedRoles creates the ClusterRole and the Role of
// config/webhook/webhook-rbac.yaml (rendered from the chart; the Role in
// ns), binds them to a user of their own and returns that user's config.
func shippedRoles(t *testing.T, env *envtest.Environment, c client.Client, ns string) *rest.Config {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(plugintest.RepoRoot(t), "config", "webhook", "webhook-rbac.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	const user = "plexus-webhook"
	ctx := context.Background()
	for _, d := range controllertest.SplitYAML(t, data) {
		subject := []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}}
		var objs []client.Object
		switch d.Kind {
		case "ClusterRole":
			role := &rbacv1.ClusterRole{}
			if err := yaml.UnmarshalStrict(d.Raw, role); err != nil {
				t.Fatal(err)
			}
			objs = append(objs, role, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: d.Kind, Name: role.Name}, Subjects: subject})
		case "Role":
			role := &rbacv1.Role{}
			if err := yaml.UnmarshalStrict(d.Raw, role); err != nil {
				t.Fatal(err)
			}
			role.Namespace = ns
			objs = append(objs, role, &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: role.Name, Namespace: ns},
				RoleRef: rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: d.Kind, Name: role.Name}, Subjects: subject})
		case "ClusterRoleBinding", "RoleBinding":
			continue // bound to the user here
		default:
			t.Fatalf("config/webhook/webhook-rbac.yaml: unexpected %s", d.Key())
		}
		for _, o := range objs {
			if err := c.Create(ctx, o); err != nil {
				t.Fatal(err)
			}
		}
	}
	u, err := env.ControlPlane.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		t.Fatal(err)
	}
	return rest.CopyConfig(u.Config())
}

// In self mode the webhook fills the (empty) Secret with a CA and a
// serving certificate for its Service's DNS names, puts the CA into the
// webhook configuration's caBundle, serves once the Secret is mounted, and
// the API server, routing to the Service's endpoints as the e2e cluster
// does, trusts it: a bad definition is refused through it.
func TestSelfCertificatesAreMadeInjectedAndTrusted(t *testing.T) {
	plugintest.RequireRoot(t)
	lo, err := netlink.LinkByName("lo")
	if err != nil {
		t.Fatal(err)
	}
	addr := &netlink.Addr{IPNet: &net.IPNet{IP: net.ParseIP(podIP), Mask: net.CIDRMask(32, 32)}}
	if err := netlink.AddrAdd(lo, addr); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.AddrDel(lo, addr) })

	crds := filepath.Join(plugintest.RepoRoot(t), "config", "crd")
	env := controllertest.NewEnvironment(controllertest.Assets(t), filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	env.ControlPlane.GetAPIServer().Configure().Set("enable-aggregator-routing", "true")
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	c, err := client.New(cfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	create := func(obj client.Object) {
		t.Helper()
		if err := c.Create(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}

	o := Defaults()
	o.Namespace = "plexus-system"
	o.Port = freePort(t)
	o.CertDir = t.TempDir()
	o.ProbeAddr = "127.0.0.1:" + fmt.Sprint(freePort(t))
	// What the chart installs: the Secret, empty; the Service and its
	// endpoints; the webhook configuration, without a caBundle.
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: o.Namespace}})
	create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.CertSecret}})
	create(&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: o.ServiceName},
		Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "webhook", Port: 443, TargetPort: intstr.FromInt32(int32(o.Port))}}}})
	ready, name, port := true, "webhook", int32(o.Port)
	create(&discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: o.Namespace, Name: o.ServiceName + "-1", Labels: map[string]string{discoveryv1.LabelServiceName: o.ServiceName}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{podIP}, Conditions: discoveryv1.EndpointConditions{Ready: &ready}}},
		Ports:       []discoveryv1.EndpointPort{{Name: &name, Port: &port}},
	})
	fail, none, path := admissionv1.Fail, admissionv1.SideEffectClassNone, admission.NetworksPath
	create(&admissionv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: o.WebhookConfiguration},
		Webhooks: []admissionv1.ValidatingWebhook{{
			Name:         "network-attachment-definitions.plexus.cni.dev",
			ClientConfig: admissionv1.WebhookClientConfig{Service: &admissionv1.ServiceReference{Namespace: o.Namespace, Name: o.ServiceName, Path: &path, Port: ptr(int32(443))}},
			Rules: []admissionv1.RuleWithOperations{{Operations: []admissionv1.OperationType{admissionv1.Create, admissionv1.Update},
				Rule: admissionv1.Rule{APIGroups: []string{"k8s.cni.cncf.io"}, APIVersions: []string{"v1"}, Resources: []string{"network-attachment-definitions"}}}},
			FailurePolicy: &fail, SideEffects: &none, AdmissionReviewVersions: []string{"v1"},
		}}})

	// The webhook runs as a user bound to the shipped roles
	// (config/webhook/webhook-rbac.yaml), which name its Secret and its webhook
	// configuration: it may not read the namespace's other Secrets.
	whCfg := shippedRoles(t, env, c, o.Namespace)
	create(&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: o.Namespace, Name: "other"}, StringData: map[string]string{"token": "x"}})
	wc, err := client.New(whCfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := wc.List(ctx, &corev1.SecretList{}, client.InNamespace(o.Namespace)); !apierrors.IsForbidden(err) {
		t.Errorf("the webhook's identity listing every Secret of its namespace: %v, want forbidden", err)
	}
	if err := wc.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: "other"}, &corev1.Secret{}); !apierrors.IsForbidden(err) {
		t.Errorf("the webhook's identity reading another Secret: %v, want forbidden", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(runCtx, whCfg, o) }()
	t.Cleanup(func() { cancel(); <-done })

	secret := &corev1.Secret{}
	eventually(t, "the Secret filled", func() bool {
		return c.Get(ctx, client.ObjectKey{Namespace: o.Namespace, Name: o.CertSecret}, secret) == nil && len(secret.Data["tls.crt"]) > 0
	})
	ca := secret.Data["ca.crt"]
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("ca.crt of the Secret is no certificate: %q", ca)
	}
	block, _ := pem.Decode(secret.Data["tls.crt"])
	if block == nil {
		t.Fatal("tls.crt is not PEM")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, dns := range o.DNSNames() {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: dns, Roots: pool}); err != nil {
			t.Errorf("serving certificate for %s: %v (it is for %v)", dns, err, cert.DNSNames)
		}
	}
	if !slices.Contains(o.DNSNames(), "plexus-webhook.plexus-system.svc") {
		t.Errorf("DNS names %v", o.DNSNames())
	}
	vwc := &admissionv1.ValidatingWebhookConfiguration{}
	eventually(t, "the caBundle injected", func() bool {
		return c.Get(ctx, client.ObjectKey{Name: o.WebhookConfiguration}, vwc) == nil && len(vwc.Webhooks[0].ClientConfig.CABundle) > 0
	})
	if !bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, ca) {
		t.Errorf("caBundle is not the Secret's CA")
	}

	// Not ready while the Secret is not mounted.
	eventually(t, "/readyz answering", func() bool { return readyz(o) != 0 })
	if code := readyz(o); code == http.StatusOK {
		t.Errorf("/readyz %d before the certificates are mounted", code)
	}
	// Mount it, as kubelet would.
	for _, f := range []string{"tls.crt", "tls.key", "ca.crt"} {
		if err := os.WriteFile(filepath.Join(o.CertDir, f), secret.Data[f], 0o600); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "/readyz ok once mounted and injected", func() bool { return readyz(o) == http.StatusOK })
	conn, err := tls.Dial("tcp", net.JoinHostPort(podIP, fmt.Sprint(o.Port)), &tls.Config{RootCAs: pool, ServerName: o.DNSNames()[0]})
	if err != nil {
		t.Fatalf("TLS to the webhook with the injected CA: %v", err)
	}
	conn.Close()

	// The API server reaches it through the Service and trusts it.
	bad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "garbled"},
		Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion": "1.0.0"`}}
	err = c.Create(ctx, bad)
	if err == nil || !strings.Contains(err.Error(), `admission webhook "network-attachment-definitions.plexus.cni.dev" denied the request: NetworkAttachmentDefinition team/garbled: spec.config`) {
		t.Errorf("a bad definition through the Service: %v", err)
	}
}

func ptr[T any](v T) *T { return &v }

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// selfSigned writes a self-signed serving certificate and its key into
// dir as tls.crt and tls.key, and returns the certificate's PEM.
func selfSigned(t *testing.T, dir string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "plexus-webhook.test.svc"},
		DNSNames: []string{"plexus-webhook.test.svc"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	for name, data := range map[string][]byte{"tls.crt": crt, "tls.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return crt
}

// The wait for certificates from elsewhere does not end on absent files,
// nor on the empty ones the chart's cert-manager Secret is mounted with
// until cert-manager fills it (serving those would stop the webhook), and
// ends on a key pair. Each call checks once: its context is already done.
func TestExternalCertificatesMustBeAKeyPair(t *testing.T) {
	dir := t.TempDir()
	done, cancel := context.WithCancel(context.Background())
	cancel()
	check := func() bool {
		ready := make(chan struct{})
		if err := waitForCertificates(done, dir, ready); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ready:
			return true
		default:
			return false
		}
	}
	if check() {
		t.Error("no files: ready")
	}
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(dir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if check() {
		t.Error("empty tls.crt and tls.key: ready")
	}
	selfSigned(t, dir)
	if !check() {
		t.Errorf("a key pair: not ready (%v)", certsUsable(dir))
	}
}

// With certificates from elsewhere (cert-manager), the webhook started
// on the chart's Secret as first mounted, tls.crt and tls.key empty, waits
// for them instead of failing, and serves them once written.
func TestExternalCertificatesAreAwaited(t *testing.T) {
	plugintest.RequireRoot(t)
	crds := filepath.Join(plugintest.RepoRoot(t), "config", "crd")
	env := controllertest.NewEnvironment(controllertest.Assets(t), filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	cfg, err := env.Start()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	o := Defaults()
	o.Certificates = CertificatesExternal
	o.Namespace = "plexus-system"
	o.Port = freePort(t)
	o.CertDir = t.TempDir()
	o.ProbeAddr = "127.0.0.1:" + fmt.Sprint(freePort(t))
	for _, f := range []string{"tls.crt", "tls.key"} {
		if err := os.WriteFile(filepath.Join(o.CertDir, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan error, 1)
	runCtx, cancel := context.WithCancel(context.Background())
	go func() { done <- run(runCtx, cfg, o) }()
	t.Cleanup(func() { cancel(); <-done })
	ended := func() bool {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("the webhook stopped on empty certificate files: %v", err)
		default:
		}
		return false
	}
	eventually(t, "/readyz answering", func() bool { return ended() || readyz(o) != 0 })
	if code := readyz(o); code == http.StatusOK {
		t.Errorf("/readyz %d on empty certificate files", code)
	}
	crt := selfSigned(t, o.CertDir)
	eventually(t, "/readyz ok once the certificate is written", func() bool { return ended() || readyz(o) == http.StatusOK })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(crt)
	conn, err := tls.Dial("tcp", net.JoinHostPort("127.0.0.1", fmt.Sprint(o.Port)), &tls.Config{RootCAs: pool, ServerName: "plexus-webhook.test.svc"})
	if err != nil {
		t.Fatalf("TLS to the webhook with the written certificate: %v", err)
	}
	conn.Close()
}

// readyz is the status code of the webhook's /readyz, 0 while it does not
// answer.
func readyz(o Options) int {
	resp, err := http.Get("http://" + o.ProbeAddr + "/readyz")
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
