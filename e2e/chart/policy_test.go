package chart_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers/controllertest"
)

// TestNodeScopePolicyOnAPIServer loads the chart's node-scope policy, for
// a release that is not the default one, into a real kube-apiserver, which
// compiles its expressions, and makes the requests it is about as that
// release's daemon (impersonated, with the node name a bound token
// carries): its own node's pod status and NodeNetworkStatus are allowed,
// another node's refused with the policy's message, a token with no node
// refused; other users are not matched. The e2e suite does the same with
// real tokens on the cluster.
func TestNodeScopePolicyOnAPIServer(t *testing.T) {
	const ns, daemonUser = "networking", "system:serviceaccount:networking:net-plexus"
	out, err := helmRun(t, "template", "net", chartPath(t), "--namespace", ns,
		"--show-only", "templates/node-scope-policy.yaml", "--show-only", "templates/clusterrole.yaml", "--show-only", "templates/clusterrolebinding.yaml")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	crds := filepath.Join(repoRoot(t), "config", "crd")
	env := controllertest.NewEnvironment(controllertest.Assets(t), filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := v1alpha1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(admin.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	for _, doc := range parse(t, out) {
		u := &unstructured.Unstructured{}
		must(yaml.Unmarshal(doc.Raw, &u.Object))
		must(admin.Create(ctx, u))
	}
	pods := map[string]*corev1.Pod{}
	for _, node := range []string{"node-a", "node-b"} {
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "on-" + node},
			Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "app", Image: "busybox"}}},
		}
		must(admin.Create(ctx, p))
		pods[node] = p
	}
	as := func(user string, node ...string) client.Client {
		c := rest.CopyConfig(cfg)
		c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
		if len(node) > 0 {
			c.Impersonate.Extra = map[string][]string{"authentication.kubernetes.io/node-name": node}
		}
		cl, err := client.New(c, client.Options{Scheme: scheme})
		must(err)
		return cl
	}
	patch := client.RawPatch(types.MergePatchType, []byte(`{"metadata":{"annotations":{"k8s.v1.cni.cncf.io/network-status":"[]"}}}`))
	daemonA := as(daemonUser, "node-a")

	// The API server loads a new policy in the background: wait for its
	// first refusal.
	refusal := func(err error, want string) bool {
		t.Helper()
		if err == nil {
			return false
		}
		if !strings.Contains(err.Error(), "net-plexus-node-scope") || !strings.Contains(err.Error(), want) {
			t.Fatalf("refused, but not by the policy as expected: %v\nwant %q", err, want)
		}
		return true
	}
	deadline := time.Now().Add(30 * time.Second)
	for !refusal(daemonA.Status().Patch(ctx, pods["node-b"].DeepCopy(), patch),
		"the plexus daemon of node node-a may write the status of pods on that node only; pod networking/on-node-b is on node node-b") {
		if time.Now().After(deadline) {
			t.Fatal("node-a's daemon patched the status of a pod on node-b: the policy is not applied")
		}
		time.Sleep(200 * time.Millisecond)
	}
	must(daemonA.Status().Patch(ctx, pods["node-a"].DeepCopy(), patch))
	if err := daemonA.Create(ctx, &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-b"}}); !refusal(err,
		"the plexus daemon of node node-a may write only the NodeNetworkStatus node-a, not node-b") {
		t.Errorf("node-a's daemon created node-b's NodeNetworkStatus: %v", err)
	}
	nns := &v1alpha1.NodeNetworkStatus{ObjectMeta: metav1.ObjectMeta{Name: "node-a"}}
	must(daemonA.Create(ctx, nns))
	must(daemonA.Status().Update(ctx, nns))
	if err := as(daemonUser, "node-b").Delete(ctx, nns); !refusal(err, "may write only the NodeNetworkStatus node-b, not node-a") {
		t.Errorf("node-b's daemon deleted node-a's NodeNetworkStatus: %v", err)
	}
	if err := as(daemonUser).Status().Patch(ctx, pods["node-a"].DeepCopy(), patch); !refusal(err, "the plexus daemon's token names no node") {
		t.Errorf("a token with no node patched a pod's status: %v", err)
	}
	// Another release's daemon, or anyone else, is not matched.
	must(admin.Status().Patch(ctx, pods["node-b"].DeepCopy(), patch))
	if err := as("system:serviceaccount:kube-system:plexus", "node-a").Status().Patch(ctx, pods["node-b"].DeepCopy(), patch); err == nil ||
		strings.Contains(err.Error(), "node-scope") {
		t.Errorf("kube-system/plexus (no RBAC here, and not this release's daemon) patching node-b's pod: %v, want RBAC's refusal alone", err)
	}
}
