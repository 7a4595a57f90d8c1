package chart_test

import (
	"slices"
	"strings"
	"testing"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

// The webhook's objects, as the chart at its defaults names them.
const (
	webhookName   = "plexus-webhook"
	webhookSecret = "plexus-webhook-cert"
	policyName    = "plexus-node-scope"
)

// webhookObjects are the objects webhook.enabled adds, and policyObjects
// those nodeScopedAuthority.enabled adds, at the chart's defaults.
var (
	webhookObjects = []string{
		"ClusterRole /plexus-webhook",
		"ClusterRoleBinding /plexus-webhook",
		"Deployment kube-system/plexus-webhook",
		"PodDisruptionBudget kube-system/plexus-webhook",
		"Role kube-system/plexus-webhook",
		"RoleBinding kube-system/plexus-webhook",
		"Secret kube-system/plexus-webhook-cert",
		"Service kube-system/plexus-webhook",
		"ServiceAccount kube-system/plexus-webhook",
		"ValidatingWebhookConfiguration /plexus",
	}
	policyObjects = []string{
		"ValidatingAdmissionPolicy /plexus-node-scope",
		"ValidatingAdmissionPolicyBinding /plexus-node-scope",
	}
)

// TestWebhookAndPolicyToggles: each of webhook.enabled and
// nodeScopedAuthority.enabled adds its objects and nothing else.
func TestWebhookAndPolicyToggles(t *testing.T) {
	base := parse(t, template(t, "--set", "webhook.enabled=false", "--set", "nodeScopedAuthority.enabled=false")).keys()
	for _, k := range base {
		if strings.Contains(k, "webhook") || strings.Contains(k, "Validating") {
			t.Errorf("%s rendered with the webhook and the policies off", k)
		}
	}
	for _, tc := range []struct {
		args []string
		adds []string
	}{
		{nil, slices.Concat(webhookObjects, policyObjects)},
		{[]string{"--set", "nodeScopedAuthority.enabled=false"}, webhookObjects},
		{[]string{"--set", "webhook.enabled=false"}, policyObjects},
	} {
		got := parse(t, template(t, tc.args...)).keys()
		want := slices.Concat(base, tc.adds)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("helm template %q:\n got %q\nwant %q", tc.args, got, want)
		}
	}
}

// TestWebhookDefaults: the webhook at the chart's defaults, as the
// contract with plexus-webhook and the API server has it.
func TestWebhookDefaults(t *testing.T) {
	objs := parse(t, template(t))
	d := webhookDeployment(t, objs, namespace, webhookName)
	c := d.Spec.Template.Spec.Containers[0]
	if *d.Spec.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", *d.Spec.Replicas)
	}
	f := flags(t, c.Args)
	for flag, want := range map[string]string{
		"--certificates":          "self",
		"--cert-secret":           webhookSecret,
		"--webhook-configuration": "plexus",
		"--service-name":          webhookName,
		"--port":                  "9443",
	} {
		if f[flag] != want {
			t.Errorf("flag %s = %q, want %q", flag, f[flag], want)
		}
	}
	if d.Spec.Template.Spec.PriorityClassName != "" {
		t.Errorf("priorityClassName = %q, want none", d.Spec.Template.Spec.PriorityClassName)
	}
	checkWebhookPod(t, objs, d)
	vwc := webhookConfiguration(t, objs, "plexus")
	if _, ok := vwc.Annotations["cert-manager.io/inject-ca-from"]; ok {
		t.Errorf("cert-manager's CA injection asked for with certificates: self")
	}
	checkWebhookConfiguration(t, vwc, namespace, webhookName, admissionregistrationv1.Ignore, 5)
	var secret corev1.Secret
	objs.mustDecode(t, "Secret", namespace, webhookSecret, &secret)
	if secret.Type != corev1.SecretTypeOpaque || len(secret.Data) != 0 {
		t.Errorf("Secret %s: type %s, %d keys; want an empty Opaque Secret for the webhook to fill", webhookSecret, secret.Type, len(secret.Data))
	}
	var pdb policyv1.PodDisruptionBudget
	objs.mustDecode(t, "PodDisruptionBudget", namespace, webhookName, &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 1 || pdb.Spec.MinAvailable != nil {
		t.Errorf("PodDisruptionBudget: minAvailable %v, maxUnavailable %v; want maxUnavailable 1 alone", pdb.Spec.MinAvailable, pdb.Spec.MaxUnavailable)
	}
	checkSelects(t, "PodDisruptionBudget", pdb.Spec.Selector, d)
	checkWebhookRBAC(t, objs, namespace, webhookName, true)
	checkPolicy(t, objs, "plexus-node-scope", "system:serviceaccount:kube-system:plexus")
}

// TestWebhookFailurePolicyAndTimeout: the values reach both webhooks.
func TestWebhookFailurePolicyAndTimeout(t *testing.T) {
	objs := parse(t, template(t, "--set", "webhook.failurePolicy=Fail", "--set", "webhook.timeoutSeconds=12"))
	checkWebhookConfiguration(t, webhookConfiguration(t, objs, "plexus"), namespace, webhookName, admissionregistrationv1.Fail, 12)
}

// TestWebhookCertManager: with certificates: cert-manager the webhook only
// serves; a Certificate writes its Secret, cert-manager's injector its CA,
// and the webhook may touch neither.
func TestWebhookCertManager(t *testing.T) {
	t.Run("self-signed issuer", func(t *testing.T) {
		objs := parse(t, template(t, "--set", "webhook.certificates=cert-manager"))
		want := slices.Concat(webhookObjects, policyObjects, []string{
			"Certificate kube-system/plexus-webhook", "Issuer kube-system/plexus-webhook-selfsigned"})
		want = slices.DeleteFunc(want, func(k string) bool { return strings.HasPrefix(k, "Role") }) // checkWebhookRBAC
		for _, k := range want {
			if !slices.Contains(objs.keys(), k) {
				t.Errorf("no %s among %q", k, objs.keys())
			}
		}
		issuer := certManagerObject(t, objs, "Issuer", "plexus-webhook-selfsigned")
		if _, ok := issuer["spec"].(map[string]any)["selfSigned"]; !ok {
			t.Errorf("Issuer spec %v, want selfSigned", issuer["spec"])
		}
		checkCertificate(t, objs, map[string]any{"name": "plexus-webhook-selfsigned", "kind": "Issuer", "group": "cert-manager.io"})
		checkCertManagerWebhook(t, objs)
	})
	t.Run("given issuer", func(t *testing.T) {
		objs := parse(t, template(t, "--set", "webhook.certificates=cert-manager",
			"--set", "webhook.certManager.issuerRef.name=corp-ca", "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer"))
		for _, k := range objs.keys() {
			if strings.HasPrefix(k, "Issuer ") {
				t.Errorf("%s rendered although an issuer is given", k)
			}
		}
		checkCertificate(t, objs, map[string]any{"name": "corp-ca", "kind": "ClusterIssuer"})
		checkCertManagerWebhook(t, objs)
	})
}

func checkCertManagerWebhook(t *testing.T, objs objects) {
	t.Helper()
	d := webhookDeployment(t, objs, namespace, webhookName)
	if f := flags(t, d.Spec.Template.Spec.Containers[0].Args); f["--certificates"] != "external" {
		t.Errorf("--certificates=%s, want external", f["--certificates"])
	}
	checkWebhookPod(t, objs, d)
	vwc := webhookConfiguration(t, objs, "plexus")
	if got := vwc.Annotations["cert-manager.io/inject-ca-from"]; got != "kube-system/plexus-webhook" {
		t.Errorf("cert-manager.io/inject-ca-from = %q, want the Certificate kube-system/plexus-webhook", got)
	}
	var secret corev1.Secret
	objs.mustDecode(t, "Secret", namespace, webhookSecret, &secret)
	if secret.Type != corev1.SecretTypeTLS {
		t.Errorf("Secret type %s: cert-manager writes kubernetes.io/tls and will not change another type", secret.Type)
	}
	checkWebhookRBAC(t, objs, namespace, webhookName, false)
}

func checkCertificate(t *testing.T, objs objects, issuerRef map[string]any) {
	t.Helper()
	cert := certManagerObject(t, objs, "Certificate", webhookName)
	spec := cert["spec"].(map[string]any)
	want := map[string]any{
		"secretName": webhookSecret,
		"dnsNames":   []any{"plexus-webhook.kube-system.svc", "plexus-webhook.kube-system.svc.cluster.local"},
		"issuerRef":  issuerRef,
	}
	same(t, "Certificate spec", spec, want)
}

// certManagerObject decodes a cert-manager object loosely: its types are
// not a dependency of plexus.
func certManagerObject(t *testing.T, objs objects, kind, name string) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o.Kind == kind && o.Name == name {
			var out map[string]any
			if err := yaml.Unmarshal(o.Raw, &out); err != nil {
				t.Fatal(err)
			}
			if out["apiVersion"] != "cert-manager.io/v1" {
				t.Errorf("%s: apiVersion %v", o.Key(), out["apiVersion"])
			}
			return out
		}
	}
	t.Fatalf("no %s %s among %q", kind, name, objs.keys())
	return nil
}

// TestWebhookReleaseName: under another release name and namespace the
// webhook's objects still find each other, and the policy names that
// release's daemon.
func TestWebhookReleaseName(t *testing.T) {
	out, err := helmRun(t, "template", "net", chartPath(t), "--namespace", "networking")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	objs := parse(t, out)
	d := webhookDeployment(t, objs, "networking", "net-plexus-webhook")
	f := flags(t, d.Spec.Template.Spec.Containers[0].Args)
	for flag, want := range map[string]string{
		"--cert-secret":           "net-plexus-webhook-cert",
		"--webhook-configuration": "net-plexus",
		"--service-name":          "net-plexus-webhook",
	} {
		if f[flag] != want {
			t.Errorf("flag %s = %q, want %q", flag, f[flag], want)
		}
	}
	checkWebhookPod(t, objs, d)
	checkWebhookConfiguration(t, webhookConfiguration(t, objs, "net-plexus"), "networking", "net-plexus-webhook", admissionregistrationv1.Ignore, 5)
	checkWebhookRBAC(t, objs, "networking", "net-plexus-webhook", true)
	checkPolicy(t, objs, "net-plexus-node-scope", "system:serviceaccount:networking:net-plexus")
}

func TestWebhookInvalidValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--set", "webhook.failurePolicy=Maybe"}, `webhook.failurePolicy must be Ignore or Fail, not "Maybe"`},
		{[]string{"--set", "webhook.timeoutSeconds=0"}, "webhook.timeoutSeconds must be 1 to 30"},
		{[]string{"--set", "webhook.timeoutSeconds=31"}, "webhook.timeoutSeconds must be 1 to 30"},
		{[]string{"--set", "webhook.certificates=vault"}, `webhook.certificates must be self or cert-manager, not "vault"`},
		{[]string{"--set", "webhook.certificates=cert-manager", "--set", "webhook.certManager.issuerRef.kind=ClusterIssuer"}, "webhook.certManager.issuerRef.name must be set"},
	} {
		out, err := helmRun(t, slices.Concat([]string{"template", release, chartPath(t), "--namespace", namespace}, tc.args)...)
		if err == nil || !strings.Contains(string(out), tc.want) {
			t.Errorf("helm template %q: %v\n%s\nwant an error containing %q", tc.args, err, out, tc.want)
		}
	}
}

func webhookDeployment(t *testing.T, objs objects, ns, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	objs.mustDecode(t, "Deployment", ns, name, &d)
	if len(d.Spec.Template.Spec.Containers) != 1 {
		t.Fatalf("Deployment %s has %d containers, want 1", name, len(d.Spec.Template.Spec.Containers))
	}
	return &d
}

func webhookConfiguration(t *testing.T, objs objects, name string) *admissionregistrationv1.ValidatingWebhookConfiguration {
	t.Helper()
	var vwc admissionregistrationv1.ValidatingWebhookConfiguration
	objs.mustDecode(t, "ValidatingWebhookConfiguration", "", name, &vwc)
	return &vwc
}

// checkWebhookPod: the webhook pod runs as its ServiceAccount, non-root
// on a read-only root, with the daemon's settings file where --config
// says, its Secret where --cert-dir says, POD_NAMESPACE set, probes on the
// health port, and the Service and the anti-affinity select it.
func checkWebhookPod(t *testing.T, objs objects, d *appsv1.Deployment) {
	t.Helper()
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if spec.ServiceAccountName != d.Name {
		t.Errorf("webhook runs as %q, want its own ServiceAccount %s", spec.ServiceAccountName, d.Name)
	}
	if !slices.Equal(c.Command, []string{"/usr/local/bin/plexus-webhook"}) {
		t.Errorf("command = %q", c.Command)
	}
	sc, psc := c.SecurityContext, spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 ||
		sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
		sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation || sc.Privileged != nil ||
		sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
		t.Errorf("security contexts pod %+v container %+v: want non-root, read-only root, no escalation, no capabilities", psc, sc)
	}
	if spec.HostNetwork {
		t.Errorf("the webhook is on the host network")
	}
	f := flags(t, c.Args)
	volumeAt := func(dir string) *corev1.Volume {
		for _, m := range c.VolumeMounts {
			if m.MountPath == dir && m.ReadOnly {
				for i := range spec.Volumes {
					if spec.Volumes[i].Name == m.Name {
						return &spec.Volumes[i]
					}
				}
			}
		}
		t.Errorf("nothing mounted read-only at %s: %+v", dir, c.VolumeMounts)
		return &corev1.Volume{}
	}
	if v := volumeAt(f["--cert-dir"]); v.Secret == nil || v.Secret.SecretName != f["--cert-secret"] {
		t.Errorf("--cert-dir=%s holds %+v, want the Secret %s", f["--cert-dir"], v.VolumeSource, f["--cert-secret"])
	}
	if dir, file, _ := strings.Cut(f["--config"], "/config.yaml"); file != "" || dir == "" {
		t.Errorf("--config=%s: want <dir>/config.yaml", f["--config"])
	} else if v := volumeAt(dir); v.ConfigMap == nil || v.ConfigMap.Name != strings.TrimSuffix(d.Name, "-webhook")+"-config" {
		t.Errorf("--config=%s is in %+v, want the daemon's ConfigMap", f["--config"], v.VolumeSource)
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "POD_NAMESPACE" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "metadata.namespace"
	}) {
		t.Errorf("env %+v lacks POD_NAMESPACE", c.Env)
	}
	if f["--health-probe-bind-address"] != ":8081" {
		t.Errorf("--health-probe-bind-address=%s, want :8081", f["--health-probe-bind-address"])
	}
	checkPort(t, &c, "health", 8081)
	checkPort(t, &c, "webhook", 9443)
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "health" {
			t.Errorf("probe %+v is not on the health port", p)
		}
	}
	checkSelects(t, "Deployment", d.Spec.Selector, d)
	anti := spec.Affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	if len(anti) != 1 || anti[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Errorf("pod anti-affinity %+v: want one preferred term across hostnames", anti)
	} else {
		checkSelects(t, "anti-affinity", anti[0].PodAffinityTerm.LabelSelector, d)
	}
	var svc corev1.Service
	objs.mustDecode(t, "Service", d.Namespace, d.Name, &svc)
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("Service %s selector %v does not select the webhook pods %v", svc.Name, svc.Spec.Selector, d.Spec.Template.Labels)
	}
	if l := d.Spec.Template.Labels; l["app.kubernetes.io/component"] != "webhook" {
		t.Errorf("webhook pod labels %v: want app.kubernetes.io/component=webhook, apart from the daemon's", l)
	}
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "webhook" {
		t.Errorf("Service %s ports %+v, want 443 to the webhook port", svc.Name, svc.Spec.Ports)
	}
}

func checkSelects(t *testing.T, what string, s *metav1.LabelSelector, d *appsv1.Deployment) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(s)
	if err != nil {
		t.Fatalf("%s selector: %v", what, err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(d.Spec.Template.Labels)) {
		t.Errorf("%s selector %q does not select the webhook pods %v", what, sel, d.Spec.Template.Labels)
	}
	daemon := labels.Set{"app.kubernetes.io/name": "plexus", "app.kubernetes.io/instance": release, "app.kubernetes.io/component": "node-daemon"}
	if sel.Matches(daemon) {
		t.Errorf("%s selector %q selects the daemon's pods too", what, sel)
	}
}

// checkWebhookConfiguration: both webhooks call the Service at the
// contract's paths, for the contract's requests, with the values' failure
// policy and timeout; the pod webhook only for pods with a network
// annotation.
func checkWebhookConfiguration(t *testing.T, vwc *admissionregistrationv1.ValidatingWebhookConfiguration, ns, service string,
	policy admissionregistrationv1.FailurePolicyType, timeout int32) {
	t.Helper()
	want := map[string]struct {
		path string
		rule admissionregistrationv1.RuleWithOperations
	}{
		"network-attachment-definitions.plexus.cni.dev": {"/validate-k8s-cni-cncf-io-v1-networkattachmentdefinition",
			admissionregistrationv1.RuleWithOperations{Operations: []admissionregistrationv1.OperationType{"CREATE", "UPDATE"},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{"k8s.cni.cncf.io"}, APIVersions: []string{"v1"}, Resources: []string{"network-attachment-definitions"}}}},
		"pods.plexus.cni.dev": {"/validate--v1-pod",
			admissionregistrationv1.RuleWithOperations{Operations: []admissionregistrationv1.OperationType{"CREATE"},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
	}
	if len(vwc.Webhooks) != len(want) {
		t.Fatalf("%d webhooks, want %d", len(vwc.Webhooks), len(want))
	}
	for _, w := range vwc.Webhooks {
		exp, ok := want[w.Name]
		if !ok {
			t.Errorf("unexpected webhook %s", w.Name)
			continue
		}
		s := w.ClientConfig.Service
		if s == nil || s.Namespace != ns || s.Name != service || s.Path == nil || *s.Path != exp.path || s.Port == nil || *s.Port != 443 {
			t.Errorf("%s calls %+v, want %s/%s:443%s", w.Name, s, ns, service, exp.path)
		}
		if w.ClientConfig.URL != nil || len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("%s: url %v, caBundle %d bytes; want neither (the CA is injected)", w.Name, w.ClientConfig.URL, len(w.ClientConfig.CABundle))
		}
		if len(w.Rules) != 1 {
			t.Errorf("%s: rules %+v", w.Name, w.Rules)
		} else {
			r := w.Rules[0]
			r.Scope = nil
			same(t, w.Name+" rule", r, exp.rule)
		}
		if w.FailurePolicy == nil || *w.FailurePolicy != policy || w.TimeoutSeconds == nil || *w.TimeoutSeconds != timeout {
			t.Errorf("%s: failurePolicy %v, timeoutSeconds %v; want %s, %d", w.Name, w.FailurePolicy, w.TimeoutSeconds, policy, timeout)
		}
		if w.SideEffects == nil || *w.SideEffects != admissionregistrationv1.SideEffectClassNone || !slices.Equal(w.AdmissionReviewVersions, []string{"v1"}) {
			t.Errorf("%s: sideEffects %v, admissionReviewVersions %q", w.Name, w.SideEffects, w.AdmissionReviewVersions)
		}
		if w.NamespaceSelector != nil || w.ObjectSelector != nil {
			t.Errorf("%s: selectors %+v %+v, want none", w.Name, w.NamespaceSelector, w.ObjectSelector)
		}
		switch w.Name {
		case "pods.plexus.cni.dev":
			if len(w.MatchConditions) != 1 {
				t.Errorf("%s: matchConditions %+v, want one", w.Name, w.MatchConditions)
				break
			}
			e := w.MatchConditions[0].Expression
			for _, a := range []string{"'k8s.v1.cni.cncf.io/networks' in object.metadata.annotations", "'v1.multus-cni.io/default-network' in object.metadata.annotations", "has(object.metadata.annotations) &&"} {
				if !strings.Contains(e, a) {
					t.Errorf("%s: matchConditions expression %q lacks %q", w.Name, e, a)
				}
			}
		case "network-attachment-definitions.plexus.cni.dev":
			// Metadata-only updates are not sent: with failurePolicy Fail a
			// down webhook must not block relabelling a definition.
			if len(w.MatchConditions) != 1 {
				t.Errorf("%s: matchConditions %+v, want one", w.Name, w.MatchConditions)
				break
			}
			e := w.MatchConditions[0].Expression
			for _, a := range []string{"request.operation != 'UPDATE'", "has(object.spec) != has(oldObject.spec)", "'k8s.v1.cni.cncf.io/resourceName' in oldObject.metadata.annotations"} {
				if !strings.Contains(e, a) {
					t.Errorf("%s: matchConditions expression %q lacks %q", w.Name, e, a)
				}
			}
		default:
			t.Errorf("unexpected webhook %s", w.Name)
		}
	}
}

// checkWebhookRBAC: the webhook's roles, bound to its ServiceAccount; with
// its own certificates (self) it may update its Secret and its webhook
// configuration by name, else neither.
func checkWebhookRBAC(t *testing.T, objs objects, ns, name string, self bool) {
	t.Helper()
	var role rbacv1.ClusterRole
	var binding rbacv1.ClusterRoleBinding
	objs.mustDecode(t, "ClusterRole", "", name, &role)
	objs.mustDecode(t, "ClusterRoleBinding", "", name, &binding)
	subjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: ns}}
	if !slices.Equal(binding.Subjects, subjects) || binding.RoleRef.Name != name || binding.RoleRef.Kind != "ClusterRole" {
		t.Errorf("ClusterRoleBinding %s: %+v %+v", name, binding.RoleRef, binding.Subjects)
	}
	vwc := strings.TrimSuffix(name, "-webhook")
	want := []rbacv1.PolicyRule{{APIGroups: []string{"plexus.cni.dev"}, Resources: []string{"nodenetworkstatuses"}, Verbs: []string{"get", "list", "watch"}}}
	if self {
		want = append(want,
			rbacv1.PolicyRule{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"validatingwebhookconfigurations"}, ResourceNames: []string{vwc}, Verbs: []string{"get", "list", "watch", "update"}})
	}
	same(t, "ClusterRole "+name+" rules", role.Rules, want)
	var r rbacv1.Role
	var rb rbacv1.RoleBinding
	if !self {
		if objs.decode(t, "Role", ns, name, &r) {
			t.Errorf("Role %s/%s rendered with cert-manager's certificates: the webhook touches no Secret", ns, name)
		}
		return
	}
	objs.mustDecode(t, "Role", ns, name, &r)
	objs.mustDecode(t, "RoleBinding", ns, name, &rb)
	same(t, "Role "+name+" rules", r.Rules, []rbacv1.PolicyRule{
		{APIGroups: []string{""}, Resources: []string{"secrets"}, ResourceNames: []string{name + "-cert"}, Verbs: []string{"get", "list", "watch", "update"}},
	})
	if !slices.Equal(rb.Subjects, subjects) || rb.RoleRef.Name != name || rb.RoleRef.Kind != "Role" {
		t.Errorf("RoleBinding %s: %+v %+v", name, rb.RoleRef, rb.Subjects)
	}
}

// checkPolicy: the policy matches the daemon's ServiceAccount, by its
// username, on pods/status and NodeNetworkStatuses, and its binding denies.
func checkPolicy(t *testing.T, objs objects, name, user string) {
	t.Helper()
	var p admissionregistrationv1.ValidatingAdmissionPolicy
	var b admissionregistrationv1.ValidatingAdmissionPolicyBinding
	objs.mustDecode(t, "ValidatingAdmissionPolicy", "", name, &p)
	objs.mustDecode(t, "ValidatingAdmissionPolicyBinding", "", name, &b)
	want := []admissionregistrationv1.MatchCondition{{Name: "plexus-daemon", Expression: "request.userInfo.username == '" + user + "'"}}
	same(t, "policy matchConditions", p.Spec.MatchConditions, want)
	if p.Spec.FailurePolicy == nil || *p.Spec.FailurePolicy != admissionregistrationv1.Fail {
		t.Errorf("policy failurePolicy %v, want Fail", p.Spec.FailurePolicy)
	}
	var resources []string
	for _, r := range p.Spec.MatchConstraints.ResourceRules {
		for _, res := range r.Resources {
			resources = append(resources, strings.Join(r.APIGroups, ",")+"/"+res+" "+strings.Join(opStrings(r.Operations), ","))
		}
	}
	same(t, "policy resources", resources, []string{"/pods/status UPDATE",
		"plexus.cni.dev/nodenetworkstatuses CREATE,UPDATE,DELETE", "plexus.cni.dev/nodenetworkstatuses/status CREATE,UPDATE,DELETE"})
	if len(p.Spec.Variables) != 1 || !strings.Contains(p.Spec.Variables[0].Expression, "request.userInfo.extra['authentication.kubernetes.io/node-name'][0]") {
		t.Errorf("policy variables %+v: want the node from the token's authentication.kubernetes.io/node-name", p.Spec.Variables)
	}
	if b.Spec.PolicyName != name || !slices.Equal(b.Spec.ValidationActions, []admissionregistrationv1.ValidationAction{admissionregistrationv1.Deny}) {
		t.Errorf("binding %+v, want Deny with %s", b.Spec, name)
	}
}

func opStrings(ops []admissionregistrationv1.OperationType) []string {
	var out []string
	for _, o := range ops {
		out = append(out, string(o))
	}
	return out
}
