package manifests_test

import (
	"slices"
	"sort"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/controllers/controllertest"
)

// decodeKind finds kind ns/name in config/default and decodes it strictly.
func decodeKind(t *testing.T, kind, ns, n string, out any) {
	t.Helper()
	for _, doc := range controllertest.SplitYAML(t, controllertest.Kustomize(t)) {
		if doc.Kind == kind && doc.Namespace == ns && doc.Name == n {
			if err := yaml.UnmarshalStrict(doc.Raw, out); err != nil {
				t.Fatalf("%s: %v", doc.Key(), err)
			}
			return
		}
	}
	t.Fatalf("no %s %s/%s in config/default", kind, ns, n)
}

// TestWebhookRoles holds the webhook to what it needs: reading the nodes'
// statuses, and for its own certificates, watching Secrets of its
// namespace and webhook configurations, updating only its own of each.
func TestWebhookRoles(t *testing.T) {
	var role rbacv1.ClusterRole
	var nsRole rbacv1.Role
	decodeKind(t, "ClusterRole", "", name+"-webhook", &role)
	decodeKind(t, "Role", namespace, name+"-webhook", &nsRole)
	flat := func(rules []rbacv1.PolicyRule) []string {
		var out []string
		for _, r := range rules {
			for _, g := range r.APIGroups {
				for _, res := range r.Resources {
					for _, v := range r.Verbs {
						out = append(out, g+"/"+res+" "+v+" "+strings.Join(r.ResourceNames, ","))
					}
				}
			}
		}
		sort.Strings(out)
		return out
	}
	want := []string{
		"admissionregistration.k8s.io/validatingwebhookconfigurations get plexus",
		"admissionregistration.k8s.io/validatingwebhookconfigurations list plexus",
		"admissionregistration.k8s.io/validatingwebhookconfigurations update plexus",
		"admissionregistration.k8s.io/validatingwebhookconfigurations watch plexus",
		"plexus.cni.dev/nodenetworkstatuses get ",
		"plexus.cni.dev/nodenetworkstatuses list ",
		"plexus.cni.dev/nodenetworkstatuses watch ",
	}
	if got := flat(role.Rules); !slices.Equal(got, want) {
		t.Errorf("ClusterRole %s-webhook:\n got %q\nwant %q", name, got, want)
	}
	wantNS := []string{"/secrets get plexus-webhook-cert", "/secrets list plexus-webhook-cert", "/secrets update plexus-webhook-cert", "/secrets watch plexus-webhook-cert"}
	if got := flat(nsRole.Rules); !slices.Equal(got, wantNS) {
		t.Errorf("Role %s/%s-webhook:\n got %q\nwant %q", namespace, name, got, wantNS)
	}
}

// TestWebhookConfiguration: the API server calls the webhook's Service in
// the install's namespace, fails open, and sends only pods that ask for
// networks.
func TestWebhookConfiguration(t *testing.T) {
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	decodeKind(t, "ValidatingWebhookConfiguration", "", name, &vwc)
	var names []string
	for _, w := range vwc.Webhooks {
		names = append(names, w.Name)
		if s := w.ClientConfig.Service; s == nil || s.Namespace != namespace || s.Name != name+"-webhook" {
			t.Errorf("%s calls %+v, want the Service %s/%s-webhook", w.Name, s, namespace, name)
		}
		if w.FailurePolicy == nil || *w.FailurePolicy != admissionregistrationv1.Ignore {
			t.Errorf("%s: failurePolicy %v, want Ignore", w.Name, w.FailurePolicy)
		}
		if w.Name == "pods.plexus.cni.dev" && (len(w.MatchConditions) != 1 ||
			!strings.Contains(w.MatchConditions[0].Expression, "'k8s.v1.cni.cncf.io/networks' in object.metadata.annotations")) {
			t.Errorf("%s: matchConditions %+v, want the network annotations'", w.Name, w.MatchConditions)
		}
		if w.Name == "network-attachment-definitions.plexus.cni.dev" && (len(w.MatchConditions) != 1 ||
			!strings.Contains(w.MatchConditions[0].Expression, "request.operation != 'UPDATE'")) {
			t.Errorf("%s: matchConditions %+v, want creates and updates of spec or resourceName only", w.Name, w.MatchConditions)
		}
	}
	if want := []string{"network-attachment-definitions.plexus.cni.dev", "pods.plexus.cni.dev"}; !slices.Equal(names, want) {
		t.Errorf("webhooks %q, want %q", names, want)
	}
	var d appsv1.Deployment
	decodeKind(t, "Deployment", namespace, name+"-webhook", &d)
	if c := d.Spec.Template.Spec.Containers; len(c) != 1 || c[0].Image != "plexus:dev" || !slices.Contains(c[0].Args, "--certificates=self") {
		t.Errorf("webhook containers %+v: want one, plexus:dev, --certificates=self", c)
	}
}

// TestNodeScopePolicy: the policy is cluster-scoped, names the daemon's
// ServiceAccount in the install's namespace, and is bound to deny.
func TestNodeScopePolicy(t *testing.T) {
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
	decodeKind(t, "ValidatingAdmissionPolicy", "", name+"-node-scope", &p)
	decodeKind(t, "ValidatingAdmissionPolicyBinding", "", name+"-node-scope", &b)
	want := "request.userInfo.username == 'system:serviceaccount:" + namespace + ":" + name + "'"
	if len(p.Spec.MatchConditions) != 1 || p.Spec.MatchConditions[0].Expression != want {
		t.Errorf("matchConditions %+v, want %q", p.Spec.MatchConditions, want)
	}
	if b.Spec.PolicyName != p.Name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("binding %+v, want Deny with %s", b.Spec, p.Name)
	}
}
