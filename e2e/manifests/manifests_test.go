// Package manifests_test checks what `kubectl apply -k config/default`
// installs: the objects, the ClusterRole's exact rules and the DaemonSet's
// shape, rendered by a real kubectl (built from source by
// `make envtest-assets`). Without kubectl the rendering tests skip, or fail
// when PLEXUS_REQUIRE_REAL is set (as `make test` does).
package manifests_test

import (
	"os"
	"path"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

const (
	namespace = "kube-system"
	name      = "plexus"
	nadCRD    = "network-attachment-definitions.k8s.cni.cncf.io"
	nnsCRD    = "nodenetworkstatuses.plexus.cni.dev"
)

// rendered holds the objects of config/default, by kind and name.
type rendered struct {
	crds     map[string]*apiextensionsv1.CustomResourceDefinition
	roles    map[string]*rbacv1.ClusterRole
	bindings map[string]*rbacv1.ClusterRoleBinding
	// nsRoles and nsBindings are the namespaced Roles and RoleBindings.
	nsRoles    map[string]*rbacv1.Role
	nsBindings map[string]*rbacv1.RoleBinding
	accounts   map[string]*corev1.ServiceAccount
	daemons    map[string]*appsv1.DaemonSet
	labels     map[string]map[string]string // "Kind ns/name" -> labels
}

func TestObjects(t *testing.T) {
	r := render(t)
	var got []string
	for k := range r.labels {
		got = append(got, k)
	}
	sort.Strings(got)
	want := []string{
		"ClusterRole /plexus",
		"ClusterRole /plexus-webhook",
		"ClusterRoleBinding /plexus",
		"ClusterRoleBinding /plexus-webhook",
		"ConfigMap kube-system/plexus-config",
		"CustomResourceDefinition /" + nadCRD,
		"CustomResourceDefinition /" + nnsCRD,
		"DaemonSet kube-system/plexus",
		"Deployment kube-system/plexus-webhook",
		"PodDisruptionBudget kube-system/plexus-webhook",
		"Role kube-system/plexus",
		"Role kube-system/plexus-webhook",
		"RoleBinding kube-system/plexus",
		"RoleBinding kube-system/plexus-webhook",
		"Secret kube-system/plexus-webhook-cert",
		"Service kube-system/plexus-webhook",
		"ServiceAccount kube-system/plexus",
		"ServiceAccount kube-system/plexus-webhook",
		// Cluster-scoped: config/default's transformer takes the
		// namespace kustomize gives them off again.
		"ValidatingAdmissionPolicy /plexus-node-scope",
		"ValidatingAdmissionPolicyBinding /plexus-node-scope",
		"ValidatingWebhookConfiguration /plexus",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects:\n got %q\nwant %q", got, want)
	}
	for k, l := range r.labels {
		if l["app.kubernetes.io/name"] != name {
			t.Errorf("%s: label app.kubernetes.io/name = %q, want %q", k, l["app.kubernetes.io/name"], name)
		}
	}
}

// TestClusterRole holds the daemon to exactly the permissions DESIGN.md's
// Security section allows: each (group, resource, verb) is listed once.
func TestClusterRole(t *testing.T) {
	role := render(t).roles[name]
	if role == nil {
		t.Fatalf("no ClusterRole %s", name)
	}
	if role.AggregationRule != nil {
		t.Errorf("ClusterRole %s aggregates other roles", name)
	}
	want := permissions(map[string][]string{
		"/pods":        {"get", "list", "watch"},
		"/pods/status": {"patch"},
		"k8s.cni.cncf.io/network-attachment-definitions": {"get", "list", "watch"},
		"/events":                            {"create", "patch"},
		"events.k8s.io/events":               {"create", "patch"},
		"/nodes":                             {"get"},
		"plexus.cni.dev/nodenetworkstatuses": {"get", "list", "watch", "create", "update", "patch", "delete"},
		"plexus.cni.dev/nodenetworkstatuses/status": {"get", "update", "patch"},
	})
	var got []string
	for i, rule := range role.Rules {
		if len(rule.NonResourceURLs) > 0 {
			t.Errorf("rule %d: non-resource URLs %q", i, rule.NonResourceURLs)
		}
		for _, s := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs, rule.ResourceNames) {
			if strings.Contains(s, "*") {
				t.Errorf("rule %d: wildcard %q", i, s)
			}
		}
		for _, g := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, v := range rule.Verbs {
					got = append(got, g+"/"+res+" "+v)
				}
			}
		}
	}
	sort.Strings(got)
	if !slices.Equal(got, want) {
		t.Errorf("ClusterRole %s permissions:\n got %q\nwant %q", name, got, want)
	}
}

// permissions flattens "group/resource" -> verbs into sorted
// "group/resource verb" lines.
func permissions(m map[string][]string) []string {
	var out []string
	for res, verbs := range m {
		for _, v := range verbs {
			out = append(out, res+" "+v)
		}
	}
	sort.Strings(out)
	return out
}

func TestClusterRoleBinding(t *testing.T) {
	r := render(t)
	// The daemon's and the webhook's, each its ServiceAccount's.
	for _, n := range []string{name, name + "-webhook"} {
		b := r.bindings[n]
		if b == nil {
			t.Fatalf("no ClusterRoleBinding %s", n)
		}
		wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: n, Namespace: namespace}}
		if !slices.Equal(b.Subjects, wantSubjects) || b.RoleRef.Name != n {
			t.Errorf("ClusterRoleBinding %s: %+v %+v, want %+v to %s", n, b.RoleRef, b.Subjects, wantSubjects, n)
		}
	}
	b := r.bindings[name]
	if b == nil {
		t.Fatalf("no ClusterRoleBinding %s", name)
	}
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name}
	if b.RoleRef != wantRef {
		t.Errorf("roleRef = %+v, want %+v", b.RoleRef, wantRef)
	}
	wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}}
	if !slices.Equal(b.Subjects, wantSubjects) {
		t.Errorf("subjects = %+v, want %+v", b.Subjects, wantSubjects)
	}
	if r.accounts[name] == nil || r.accounts[name].Namespace != namespace {
		t.Errorf("no ServiceAccount %s/%s", namespace, name)
	}
}

// TestOwnerRole: in its own namespace the daemon may read its own
// DaemonSet, and nothing else, and only its ServiceAccount may.
func TestOwnerRole(t *testing.T) {
	r := render(t)
	role, b := r.nsRoles[name], r.nsBindings[name]
	if role == nil || b == nil {
		t.Fatalf("no Role or RoleBinding %s", name)
	}
	want := []rbacv1.PolicyRule{{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{daemonSet(t).Name}, Verbs: []string{"get"}}}
	if role.Namespace != namespace || len(role.Rules) != 1 || !equalRule(role.Rules[0], want[0]) {
		t.Errorf("Role %s/%s rules %+v, want %+v", role.Namespace, role.Name, role.Rules, want)
	}
	wantRef := rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name}
	wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: name, Namespace: namespace}}
	if b.Namespace != namespace || b.RoleRef != wantRef || !slices.Equal(b.Subjects, wantSubjects) {
		t.Errorf("RoleBinding %s/%s: %+v %+v, want %+v %+v", b.Namespace, b.Name, b.RoleRef, b.Subjects, wantRef, wantSubjects)
	}
}

func equalRule(a, b rbacv1.PolicyRule) bool {
	return slices.Equal(a.APIGroups, b.APIGroups) && slices.Equal(a.Resources, b.Resources) &&
		slices.Equal(a.ResourceNames, b.ResourceNames) && slices.Equal(a.Verbs, b.Verbs) && len(a.NonResourceURLs) == 0
}

func TestDaemonSetPod(t *testing.T) {
	ds := daemonSet(t)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID {
		t.Errorf("hostNetwork = %v, hostPID = %v, want both true", spec.HostNetwork, spec.HostPID)
	}
	if spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("dnsPolicy = %q", spec.DNSPolicy)
	}
	if spec.ServiceAccountName != name {
		t.Errorf("serviceAccountName = %q, want %q", spec.ServiceAccountName, name)
	}
	if spec.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName = %q", spec.PriorityClassName)
	}
	everywhere := corev1.Toleration{Operator: corev1.TolerationOpExists}
	if !slices.Contains(spec.Tolerations, everywhere) {
		t.Errorf("tolerations %+v lack a bare `operator: Exists`", spec.Tolerations)
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("updateStrategy = %+v, want RollingUpdate with maxUnavailable 1", u)
	}
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("selector: %v", err)
	}
	if !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %s does not match the pod labels %v", sel, ds.Spec.Template.Labels)
	}
}

func TestDaemonSetContainer(t *testing.T) {
	c := container(t, daemonSet(t))
	if c.Image != "plexus:dev" {
		t.Errorf("image = %q, want plexus:dev (kustomize's images entry)", c.Image)
	}
	if !slices.Equal(c.Command, []string{"/usr/local/bin/plexus-daemon"}) {
		t.Errorf("command = %q", c.Command)
	}
	for _, arg := range []string{
		"--cni-conf-dir=/host/etc/cni/net.d",
		"--cni-bin-dir=/host/opt/cni/bin",
		"--host-prefix=/host",
		"--runtime-cache-dir=/host/var/lib/cni",
		"--shim-source=/usr/local/bin/plexus",
		"--state-dir=/var/lib/plexus",
		"--socket=/run/plexus/plexus.sock",
		"--metrics-bind-address=:9091",
		"--health-probe-bind-address=:9092",
	} {
		if !slices.Contains(c.Args, arg) {
			t.Errorf("args %q lack %s", c.Args, arg)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
		return e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil &&
			e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}) {
		t.Errorf("env %+v lacks NODE_NAME from spec.nodeName", c.Env)
	}
	for env, field := range map[string]string{"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == env && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field
		}) {
			t.Errorf("env %+v lacks %s from %s: the daemon could not tell an uninstall from a restart", c.Env, env, field)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("container is not privileged")
	}
	checkProbe(t, "liveness", c, c.LivenessProbe, "/healthz", 9092)
	checkProbe(t, "readiness", c, c.ReadinessProbe, "/readyz", 9092)
}

func checkProbe(t *testing.T, kind string, c *corev1.Container, p *corev1.Probe, path string, port int32) {
	t.Helper()
	if p == nil || p.HTTPGet == nil {
		t.Errorf("no HTTP %s probe", kind)
		return
	}
	got := p.HTTPGet.Port.IntVal
	if name := p.HTTPGet.Port.StrVal; name != "" {
		got = 0
		for _, cp := range c.Ports {
			if cp.Name == name {
				got = cp.ContainerPort
			}
		}
	}
	if p.HTTPGet.Path != path || got != port {
		t.Errorf("%s probe: %s on port %d (%s), want %s on %d", kind, p.HTTPGet.Path, got, p.HTTPGet.Port.String(), path, port)
	}
}

// mount is one host directory as the container sees it.
type mount struct {
	path        string
	readOnly    bool
	propagation corev1.MountPropagationMode
}

// TestDaemonSetHostPaths lists every host directory the daemon reaches: a
// new one is a change to what the daemon can touch on the node.
func TestDaemonSetHostPaths(t *testing.T) {
	ds := daemonSet(t)
	got := hostMounts(t, ds)
	want := map[string]mount{
		// The node's root: delegates run chrooted into it; the conf and
		// bin dirs and the runtime's CNI cache are reached through it.
		"/":                              {path: "/host", propagation: corev1.MountPropagationHostToContainer},
		"/var/lib/plexus":                {path: "/var/lib/plexus"},
		"/run/plexus":                    {path: "/run/plexus"},
		"/var/run/netns":                 {path: "/var/run/netns", propagation: corev1.MountPropagationHostToContainer},
		"/var/lib/kubelet/pod-resources": {path: "/var/lib/kubelet/pod-resources", readOnly: true},
		// NPWG device-info files of device plugins.
		"/var/run/k8s.cni.cncf.io/devinfo": {path: "/var/run/k8s.cni.cncf.io/devinfo", readOnly: true},
	}
	for host, w := range want {
		if g, ok := got[host]; !ok {
			t.Errorf("host path %s not mounted", host)
		} else if g != w {
			t.Errorf("host path %s mounted as %+v, want %+v", host, g, w)
		}
	}
	for host, g := range got {
		if _, ok := want[host]; !ok {
			t.Errorf("unexpected host path %s mounted at %s", host, g.path)
		}
	}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if hp := v.HostPath; hp != nil && (hp.Path == "/var/lib/plexus" || hp.Path == "/run/plexus") &&
			(hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate) {
			t.Errorf("host path %s: type %v, want DirectoryOrCreate (the daemon owns it)", hp.Path, hp.Type)
		}
	}
}

// hostMounts maps each host path to where the container mounts it.
func hostMounts(t *testing.T, ds *appsv1.DaemonSet) map[string]mount {
	t.Helper()
	hostPaths := map[string]string{} // volume -> host path
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	out := map[string]mount{}
	for _, vm := range container(t, ds).VolumeMounts {
		host, ok := hostPaths[vm.Name]
		if !ok {
			continue
		}
		m := mount{path: vm.MountPath, readOnly: vm.ReadOnly}
		if vm.MountPropagation != nil {
			m.propagation = *vm.MountPropagation
		}
		if _, dup := out[host]; dup {
			t.Errorf("host path %s mounted twice", host)
		}
		out[host] = m
	}
	return out
}

// TestDaemonSetFlagsOnHostPaths checks that each path flag points into the
// host directory it is about, so the shim on the host and the daemon in
// its container see the same files.
func TestDaemonSetFlagsOnHostPaths(t *testing.T) {
	ds := daemonSet(t)
	mounts := hostMounts(t, ds)
	flags := map[string]string{}
	for _, a := range container(t, ds).Args {
		if k, v, ok := strings.Cut(a, "="); ok {
			flags[k] = v
		}
	}
	for flag, host := range map[string]string{
		"--state-dir":   "/var/lib/plexus",
		"--socket":      "/run/plexus",
		"--host-prefix": "/",
	} {
		v := flags[flag]
		if flag == "--socket" {
			v = path.Dir(v)
		}
		if m, ok := mounts[host]; !ok || m.path != v {
			t.Errorf("%s=%s is not the mount of host %s (%+v)", flag, flags[flag], host, m)
		}
	}
	// The dirs the daemon reaches through the node's root are there at
	// their node paths.
	for flag, host := range map[string]string{
		"--cni-conf-dir":      "/etc/cni/net.d",
		"--cni-bin-dir":       "/opt/cni/bin",
		"--runtime-cache-dir": "/var/lib/cni",
	} {
		if want := flags["--host-prefix"] + host; flags[flag] != want {
			t.Errorf("%s=%s, want %s: the node's %s under --host-prefix", flag, flags[flag], want, host)
		}
	}
}

// TestStatusCRD reads the generated CRD itself, so it needs no kubectl.
func TestStatusCRD(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "config", "crd", "bases", "plexus.cni.dev_nodenetworkstatuses.yaml"))
	if err != nil {
		t.Fatalf("%v (run `make manifests`)", err)
	}
	var crd apiextensionsv1.CustomResourceDefinition
	if err := yaml.UnmarshalStrict(b, &crd); err != nil {
		t.Fatal(err)
	}
	if crd.Name != nnsCRD || crd.Spec.Scope != apiextensionsv1.ClusterScoped {
		t.Errorf("CRD %s scope %s, want %s scope Cluster", crd.Name, crd.Spec.Scope, nnsCRD)
	}
	if len(crd.Spec.Versions) != 1 || crd.Spec.Versions[0].Name != "v1alpha1" {
		t.Fatalf("versions %+v, want v1alpha1 only", crd.Spec.Versions)
	}
	v := crd.Spec.Versions[0]
	if v.Subresources == nil || v.Subresources.Status == nil {
		t.Errorf("no status subresource")
	}
	var columns []string
	for _, c := range v.AdditionalPrinterColumns {
		if c.Priority == 0 {
			columns = append(columns, c.Name)
		}
	}
	want := []string{"Node", "Default Network", "Ready", "Networks", "Attachments", "Age"}
	if !slices.Equal(columns, want) {
		t.Errorf("printer columns %q, want %q", columns, want)
	}
}

func daemonSet(t *testing.T) *appsv1.DaemonSet {
	t.Helper()
	ds := render(t).daemons[name]
	if ds == nil || ds.Namespace != namespace {
		t.Fatalf("no DaemonSet %s/%s", namespace, name)
	}
	return ds
}

func container(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("DaemonSet %s has %d containers, want 1", ds.Name, len(cs))
	}
	return &cs[0]
}

// render runs `kubectl kustomize config/default` and decodes every object
// strictly, so a misspelt field in the YAML fails here.
func render(t *testing.T) *rendered {
	t.Helper()
	r := &rendered{
		crds:       map[string]*apiextensionsv1.CustomResourceDefinition{},
		roles:      map[string]*rbacv1.ClusterRole{},
		bindings:   map[string]*rbacv1.ClusterRoleBinding{},
		nsRoles:    map[string]*rbacv1.Role{},
		nsBindings: map[string]*rbacv1.RoleBinding{},
		accounts:   map[string]*corev1.ServiceAccount{},
		daemons:    map[string]*appsv1.DaemonSet{},
		labels:     map[string]map[string]string{},
	}
	for _, doc := range controllertest.SplitYAML(t, controllertest.Kustomize(t)) {
		r.add(t, doc)
	}
	return r
}

func (r *rendered) add(t *testing.T, doc controllertest.Doc) {
	t.Helper()
	r.labels[doc.Key()] = doc.Labels
	var obj any
	switch doc.Kind {
	case "CustomResourceDefinition":
		obj = put(r.crds, doc.Name)
	case "ClusterRole":
		obj = put(r.roles, doc.Name)
	case "ClusterRoleBinding":
		obj = put(r.bindings, doc.Name)
	case "Role":
		obj = put(r.nsRoles, doc.Name)
	case "RoleBinding":
		obj = put(r.nsBindings, doc.Name)
	case "ServiceAccount":
		obj = put(r.accounts, doc.Name)
	case "DaemonSet":
		obj = put(r.daemons, doc.Name)
	default:
		return // TestObjects reports it
	}
	if err := yaml.UnmarshalStrict(doc.Raw, obj); err != nil {
		t.Errorf("%s: %v", doc.Key(), err)
	}
}

// repoRoot is the module root.
func repoRoot(t *testing.T) string { return plugintest.RepoRoot(t) }

// put makes a new object for name in m, for the decoder to fill.
func put[T any](m map[string]*T, name string) *T {
	v := new(T)
	m[name] = v
	return v
}
