package admission_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	admissionv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/webhook"
	cradmission "sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/admission"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// policy is the daemons' settings the tests' webhook applies.
var policy = plugin.PodPolicy{
	IsolateNamespaces:       true,
	GlobalNamespaces:        []string{"default"},
	DefaultNetworks:         []k8stypes.NamespacedName{{Namespace: "kube-system", Name: "mgmt"}},
	SystemNamespaces:        []string{"kube-system"},
	DefaultNetworkNamespace: "kube-system",
}

// webhookConfiguration is the ValidatingWebhookConfiguration both installs
// ship (config/webhook, rendered from the chart), but failurePolicy Fail: a
// webhook that is not reached must fail the test, not admit. envtest
// points its Services at the local server.
func webhookConfiguration(t *testing.T) *admissionv1.ValidatingWebhookConfiguration {
	t.Helper()
	c := &admissionv1.ValidatingWebhookConfiguration{}
	controllertest.Shipped(t, "webhook/webhook-configuration.yaml", "ValidatingWebhookConfiguration", c)
	fail := admissionv1.Fail
	for i := range c.Webhooks {
		c.Webhooks[i].FailurePolicy = &fail
	}
	return c
}

// warnings collects the API server's warnings of the requests made.
type warnings struct {
	mu   sync.Mutex
	list []string
}

func (w *warnings) HandleWarningHeaderWithContext(_ context.Context, _ int, _ string, text string) {
	w.mu.Lock()
	w.list = append(w.list, text)
	w.mu.Unlock()
}

func (w *warnings) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.list
	w.list = nil
	return out
}

// countingPods counts the pods that reach the webhook.
type countingPods struct {
	admission.PodValidator
	creates atomic.Int32
}

func (c *countingPods) ValidateCreate(ctx context.Context, obj runtime.Object) (cradmission.Warnings, error) {
	c.creates.Add(1)
	return c.PodValidator.ValidateCreate(ctx, obj)
}

// countingNetworks counts the definition updates that reach the webhook.
type countingNetworks struct {
	*admission.NetworkValidator
	updates atomic.Int32
}

func (c *countingNetworks) ValidateUpdate(ctx context.Context, oldObj, newObj runtime.Object) (cradmission.Warnings, error) {
	c.updates.Add(1)
	return c.NetworkValidator.ValidateUpdate(ctx, oldObj, newObj)
}

type fixture struct {
	t        *testing.T
	client   client.Client
	warnings *warnings
	pods     *countingPods
	networks *countingNetworks
}

// newFixture starts an API server with the webhook configuration
// registered (envtest points it at a local server with certificates of
// its own) and a manager serving the validators.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	plugintest.RequireRoot(t)
	crds := filepath.Join(plugintest.RepoRoot(t), "config", "crd")
	env := controllertest.NewEnvironment(controllertest.Assets(t), filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	env.WebhookInstallOptions = envtest.WebhookInstallOptions{ValidatingWebhooks: []*admissionv1.ValidatingWebhookConfiguration{webhookConfiguration(t)}}
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	wh := env.WebhookInstallOptions
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 controllers.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		WebhookServer:          webhook.NewServer(webhook.Options{Host: wh.LocalServingHost, Port: wh.LocalServingPort, CertDir: wh.LocalServingCertDir}),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, warnings: &warnings{}, pods: &countingPods{PodValidator: admission.PodValidator{Policy: policy}}}
	f.networks = &countingNetworks{NetworkValidator: &admission.NetworkValidator{Reader: mgr.GetClient()}}
	if err := ctrl.NewWebhookManagedBy(mgr).For(&nadv1.NetworkAttachmentDefinition{}).WithValidator(f.networks).Complete(); err != nil {
		t.Fatal(err)
	}
	if err := ctrl.NewWebhookManagedBy(mgr).For(&corev1.Pod{}).WithValidator(f.pods).Complete(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	started := mgr.GetWebhookServer().StartedChecker()
	f.eventually("the webhook server serving", func() bool { return started(&http.Request{}) == nil })

	cfg = rest.CopyConfig(cfg)
	cfg.WarningHandlerWithContext = f.warnings
	if f.client, err = client.New(cfg, client.Options{Scheme: controllers.Scheme()}); err != nil {
		t.Fatal(err)
	}
	for _, ns := range []string{"team", "other"} {
		f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}})
	}
	return f
}

func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			f.t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (f *fixture) create(obj client.Object) {
	f.t.Helper()
	if err := f.client.Create(context.Background(), obj); err != nil {
		f.t.Fatal(err)
	}
}

func nad(name, config string, annotations map[string]string) *nadv1.NetworkAttachmentDefinition {
	return &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Annotations: annotations},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	}
}

// nodeMessage is what a node says of a definition it rejects or warns
// about: the text the webhook must give.
func nodeMessage(t *testing.T, n *nadv1.NetworkAttachmentDefinition) string {
	t.Helper()
	_, warning, problem, _ := controllers.Validate(n, t.TempDir(), t.TempDir(), func(string) bool { return true })
	switch {
	case problem != nil:
		return problem.Message
	case warning != nil:
		return warning.Message
	}
	t.Fatalf("a node finds nothing wrong with %s", n.Spec.Config)
	return ""
}

// denied is the message of the webhook's refusal in a request's error, or
// "" when the request was not refused by the webhook.
func denied(err error) string {
	_, msg, ok := strings.Cut(fmt.Sprint(err), "denied the request: ")
	if !apierrors.IsForbidden(err) || !ok {
		return ""
	}
	return msg
}

func TestNetworkAttachmentDefinitionsAreCheckedWhenApplied(t *testing.T) {
	f := newFixture(t)
	// Two nodes have published their bin dirs: node-a lacks macvlan. A
	// third has published nothing yet and is not judged.
	for node, plugins := range map[string][]string{"node-a": {"bridge", "host-local"}, "node-b": {"bridge", "host-local", "macvlan"}, "node-c": nil} {
		nns := &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: node}}
		f.create(nns)
		nns.Status.Plugins = plugins
		if err := f.client.Status().Update(context.Background(), nns); err != nil {
			t.Fatal(err)
		}
	}
	macvlan := `{"cniVersion": "1.0.0", "type": "macvlan", "master": "eth0", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}`
	bridge := `{"cniVersion": "1.0.0", "type": "bridge", "ipam": {"type": "host-local", "subnet": "10.9.1.0/24"}}`
	const resourceKey = plugin.ResourceNameAnnotation
	cases := []struct {
		name string
		nad  *nadv1.NetworkAttachmentDefinition
		// refused: the message's parts, beyond the node's own message
		// when nodeSays.
		refused  []string
		nodeSays bool
		// warned: one warning, with these parts.
		warned []string
	}{
		{name: "invalid JSON", nad: nad("garbled", `{"cniVersion": "1.0.0", "type": "macvlan"`, nil), refused: []string{"spec.config"}, nodeSays: true},
		{name: "a plugin without type", nad: nad("typeless", `{"cniVersion": "1.0.0", "name": "x"}`, nil), refused: []string{"spec.config", `"type"`}, nodeSays: true},
		{name: "unsupported cniVersion", nad: nad("future", `{"cniVersion": "9.9.9", "type": "macvlan"}`, nil),
			refused: []string{"spec.config", `"cniVersion"`, `"9.9.9" is not a supported CNI version`}, nodeSays: true},
		{name: "delegates to plexus itself", nad: nad("loop", `{"cniVersion": "1.0.0", "type": "plexus"}`, nil),
			refused: []string{"spec.config", "delegates to plexus itself"}, nodeSays: true},
		{name: "resourceName without a domain", nad: nad("sriov", bridge, map[string]string{resourceKey: "sriov_netdevice"}),
			refused: []string{"annotation " + resourceKey, `"sriov_netdevice"`, "domain/name", "intel.com/sriov_netdevice"}},
		{name: "resourceName not a qualified name", nad: nad("sriov2", bridge, map[string]string{resourceKey: "intel.com/sriov netdevice"}),
			refused: []string{"annotation " + resourceKey, "extended resource name"}},
		{name: "resourceName of Kubernetes' own domain", nad: nad("sriov3", bridge, map[string]string{resourceKey: "kubernetes.io/sriov"}),
			refused: []string{"annotation " + resourceKey, "Kubernetes' own"}},
		{name: "defaulted cniVersion", nad: nad("unversioned", `{"type": "bridge"}`, nil), warned: []string{"spec.config", "no cniVersion, assuming", "set cniVersion"}},
		{name: "a plugin missing on a node", nad: nad("macvlan", macvlan, nil),
			warned: []string{"plugin macvlan is not in the CNI bin dir of node node-a:", "fail until it is installed"}},
		{name: "empty spec.config", nad: nad("from-files", "", nil), warned: []string{"spec.config is empty", `config named "from-files"`, "CNI conf dir"}},
		{name: "valid", nad: nad("plain", bridge, map[string]string{resourceKey: "intel.com/sriov_netdevice"})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f.warnings.take()
			err := f.client.Create(context.Background(), c.nad)
			got := f.warnings.take()
			if c.refused != nil {
				msg := denied(err)
				if msg == "" {
					t.Fatalf("create: %v, want the webhook's refusal", err)
				}
				want := c.refused
				if c.nodeSays {
					want = append(want, "NetworkAttachmentDefinition team/"+c.nad.Name+": "+nodeMessage(t, c.nad))
				}
				for _, w := range append(want, "team/"+c.nad.Name) {
					if !strings.Contains(msg, w) {
						t.Errorf("refusal %q lacks %q", msg, w)
					}
				}
				if c.nodeSays && !strings.HasSuffix(msg, nodeMessage(t, c.nad)) {
					t.Errorf("refusal %q does not end with the node's message %q", msg, nodeMessage(t, c.nad))
				}
				return
			}
			if err != nil {
				t.Fatalf("create: %v", err)
			}
			if c.warned == nil {
				if len(got) != 0 {
					t.Errorf("warnings %q, want none", got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("warnings %q, want one", got)
			}
			for _, w := range append(c.warned, "team/"+c.nad.Name) {
				if !strings.Contains(got[0], w) {
					t.Errorf("warning %q lacks %q", got[0], w)
				}
			}
			if strings.Contains(got[0], "node-b") || strings.Contains(got[0], "node-c") {
				t.Errorf("warning %q names a node that has the plugin or has not said", got[0])
			}
		})
	}
	t.Run("defaulted cniVersion is the node's warning", func(t *testing.T) {
		n := nad("unversioned", `{"type": "bridge"}`, nil)
		w, err := (&admission.NetworkValidator{}).ValidateCreate(context.Background(), n)
		if err != nil || len(w) != 1 || !strings.Contains(w[0], nodeMessage(t, n)) {
			t.Errorf("warnings %q (%v), want the node's %q", w, err, nodeMessage(t, n))
		}
	})

	// A name no node could store is refused by the API server itself,
	// before admission; the validator refuses it too, with the node's
	// message, should the API server ever let one through.
	t.Run("a name unusable on disk", func(t *testing.T) {
		bad := nad("Bad_Name", bridge, nil)
		err := f.client.Create(context.Background(), bad)
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "metadata.name") {
			t.Errorf("create: %v, want the API server's refusal of the name", err)
		}
		_, err = (&admission.NetworkValidator{}).ValidateCreate(context.Background(), bad)
		if want := "NetworkAttachmentDefinition team/Bad_Name: " + nodeMessage(t, bad); err == nil || err.Error() != want {
			t.Errorf("validator: %v, want %q", err, want)
		}
	})

	// An update is checked when spec.config or resourceName changes.
	t.Run("update", func(t *testing.T) {
		n := &nadv1.NetworkAttachmentDefinition{}
		if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "plain"}, n); err != nil {
			t.Fatal(err)
		}
		before := f.networks.updates.Load()
		n.Spec.Config = `{"cniVersion": "1.0.0"}`
		if msg := denied(f.client.Update(context.Background(), n)); !strings.Contains(msg, "team/plain") || !strings.Contains(msg, `"type"`) {
			t.Errorf("update to a config without type: %q, want the webhook's refusal", msg)
		}
		if got := f.networks.updates.Load() - before; got != 1 {
			t.Errorf("%d updates of spec.config reached the webhook, want 1", got)
		}
	})

	// A definition the node would reject, stored before the webhook
	// existed, can still be relabelled, annotated and given finalizers:
	// such updates never reach the webhook (the configuration's
	// matchConditions), so a webhook that is down cannot block them
	// either. A changed resourceName does reach it.
	t.Run("metadata-only updates of an invalid definition", func(t *testing.T) {
		// Made while the webhook configuration is away.
		ctx := context.Background()
		whc := &admissionv1.ValidatingWebhookConfiguration{}
		if err := f.client.Get(ctx, client.ObjectKey{Name: "plexus"}, whc); err != nil {
			t.Fatal(err)
		}
		if err := f.client.Delete(ctx, whc); err != nil {
			t.Fatal(err)
		}
		old := nad("stored-before", `{"cniVersion": "1.0.0", "name": "x"}`, nil)
		f.eventually("an invalid definition admitted without the webhook", func() bool {
			return f.client.Create(ctx, old.DeepCopy()) == nil
		})
		whc.ResourceVersion, whc.UID = "", ""
		f.create(whc)
		f.eventually("the webhook refusing again", func() bool {
			return denied(f.client.Create(ctx, nad("probe", `{"cniVersion": "1.0.0", "name": "x"}`, nil), client.DryRunAll)) != ""
		})
		if err := f.client.Get(ctx, client.ObjectKeyFromObject(old), old); err != nil {
			t.Fatal(err)
		}
		before := f.networks.updates.Load()
		old.Labels = map[string]string{"team": "storage"}
		old.Annotations = map[string]string{"note": "relabelled"}
		old.Finalizers = []string{"example.com/keep"}
		if err := f.client.Update(context.Background(), old); err != nil {
			t.Fatalf("metadata-only update: %v", err)
		}
		old.Finalizers = nil
		if err := f.client.Update(context.Background(), old); err != nil {
			t.Fatalf("removing the finalizer: %v", err)
		}
		if got := f.networks.updates.Load() - before; got != 0 {
			t.Errorf("%d metadata-only updates reached the webhook, want none", got)
		}
		old.Annotations[resourceKey] = "sriov_netdevice"
		if msg := denied(f.client.Update(context.Background(), old)); !strings.Contains(msg, resourceKey) {
			t.Errorf("update to a bad resourceName: %q, want the webhook's refusal", msg)
		}
	})
}

func TestNodeListIsCapped(t *testing.T) {
	var nodes []string
	for i := range 8 {
		nodes = append(nodes, fmt.Sprintf("node-%d", i))
	}
	nns := &v1alpha1.NodeNetworkStatusList{}
	for _, n := range nodes {
		nns.Items = append(nns.Items, v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: n}, Status: v1alpha1.NodeNetworkStatusStatus{Plugins: []string{"bridge"}}})
	}
	v := &admission.NetworkValidator{Reader: listReader{nns}}
	w, err := v.ValidateCreate(context.Background(), nad("macvlan", `{"cniVersion": "1.0.0", "type": "macvlan"}`, nil))
	if err != nil || len(w) != 1 {
		t.Fatalf("warnings %q, %v", w, err)
	}
	if want := fmt.Sprintf("8 nodes: node-0, node-1, node-2, node-3, node-4 and %d more", 8-admission.MaxNodesNamed); !strings.Contains(w[0], want) {
		t.Errorf("warning %q lacks %q", w[0], want)
	}
}

// listReader lists fixed NodeNetworkStatuses: the cap is pure logic.
type listReader struct {
	list *v1alpha1.NodeNetworkStatusList
}

func (r listReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	return errors.New("not implemented")
}

func (r listReader) List(_ context.Context, list client.ObjectList, _ ...client.ListOption) error {
	r.list.DeepCopyInto(list.(*v1alpha1.NodeNetworkStatusList))
	return nil
}

func pod(ns, name string, annotations map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: annotations},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
}

func TestPodsAreRefusedWithTheADDsMessage(t *testing.T) {
	f := newFixture(t)
	nets, def := selection.NetworksAnnotation, selection.DefaultNetworkAnnotation
	cases := []struct {
		name        string
		annotations map[string]string
		// refused: parts of the message, besides the ADD's whole text.
		refused []string
	}{
		{"unparsable networks annotation", map[string]string{nets: `[{"name":"blue"`}, []string{"JSON"}},
		{"namespace isolation", map[string]string{nets: "other/private"},
			[]string{"other/private", "namespace isolation", `add "other" to globalNamespaces`, "--namespace-isolation=false"}},
		{"duplicate interface names", map[string]string{nets: `[{"name":"blue","interface":"a1"},{"name":"red","interface":"a1"}]`},
			[]string{`field "interface"`, `"a1" is already used by network team/blue`}},
		{"the default networks' net1", map[string]string{nets: `[{"name":"blue","interface":"net1"}]`},
			[]string{`"net1" is already used by network kube-system/mgmt`}},
		{"invalid interface name", map[string]string{nets: `[{"name":"blue","interface":"much-too-long-name0"}]`}, []string{"team/blue", `field "interface"`}},
		{"bad default-network annotation", map[string]string{def: "a/b/c"}, []string{"annotation " + def}},
		{"default network across namespace isolation", map[string]string{def: "other/private"}, []string{"other/private", "namespace isolation"}},
		{"valid", map[string]string{nets: `[{"name":"blue","interface":"a1"},{"name":"shared","namespace":"default"}]`, def: "special"}, nil},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := pod("team", fmt.Sprintf("web-%d", i), c.annotations)
			before := f.pods.creates.Load()
			err := f.client.Create(context.Background(), p)
			if got := f.pods.creates.Load() - before; got != 1 {
				t.Errorf("%d requests reached the webhook, want 1", got)
			}
			if c.refused == nil {
				if err != nil {
					t.Fatalf("create: %v", err)
				}
				return
			}
			msg := denied(err)
			if msg == "" {
				t.Fatalf("create: %v, want the webhook's refusal", err)
			}
			_, add := policy.CheckPodNetworks(&plugin.Pod{Namespace: p.Namespace, Name: p.Name, Annotations: p.Annotations}, plugin.PodIfName)
			if add == nil || msg != add.Error() {
				t.Errorf("refusal %q\nwant the ADD's %q", msg, add)
			}
			for _, w := range append(c.refused, "pod team/"+p.Name) {
				if !strings.Contains(msg, w) {
					t.Errorf("refusal %q lacks %q", msg, w)
				}
			}
		})
	}

	// Pods without the annotations never reach the webhook (the
	// configuration's matchConditions), and neither does an update.
	before := f.pods.creates.Load()
	plain := pod("team", "plain", map[string]string{"team": "web"})
	f.create(plain)
	f.create(pod("team", "bare", nil))
	plain.Labels = map[string]string{"app": "x"}
	if err := f.client.Update(context.Background(), plain); err != nil {
		t.Fatal(err)
	}
	if got := f.pods.creates.Load() - before; got != 0 {
		t.Errorf("%d requests of pods without network annotations reached the webhook", got)
	}

	// A generated name is the pod's by the time validating webhooks run.
	gen := pod("team", "", map[string]string{nets: "other/private"})
	gen.GenerateName = "gen-"
	if msg := denied(f.client.Create(context.Background(), gen)); !strings.HasPrefix(msg, "pod team/gen-") || strings.HasPrefix(msg, "pod team/gen-:") {
		t.Errorf("refusal of a pod with a generated name: %q, want it named", msg)
	}

	// A host-network pod is admitted: no CNI call is made for it.
	hostNet := pod("team", "host", map[string]string{nets: "other/private"})
	hostNet.Spec.HostNetwork = true
	f.create(hostNet)
}
