package chart_test

import (
	"encoding/json"
	"os"
	"path"
	"reflect"
	"slices"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"
)

func TestDefaultValues(t *testing.T) {
	objs := parse(t, template(t))
	var ds appsv1.DaemonSet
	objs.mustDecode(t, "DaemonSet", namespace, "plexus", &ds)
	c := container(t, &ds)
	version, err := os.ReadFile(repoRoot(t) + "/VERSION")
	if err != nil {
		t.Fatal(err)
	}
	if want := "plexus:" + strings.TrimSpace(string(version)); c.Image != want {
		t.Errorf("image = %q, want %q (the chart's appVersion)", c.Image, want)
	}
	f := settings(t, objs, &ds)
	for _, flag := range []string{"--default-network", "--readiness-indicator-file"} {
		if v, ok := f[flag]; ok {
			t.Errorf("%s=%s given, want it left to the daemon", flag, v)
		}
	}
	if s := objs.ofKind("Service"); len(s) != 1 || s[0].Name != webhookName {
		t.Errorf("Services %q rendered, want the webhook's alone by default (no metrics Service)", s.keys())
	}
	if n := objs.ofKind("NetworkAttachmentDefinition"); len(n) != 0 {
		t.Errorf("networks %q rendered, want none by default", n.keys())
	}
	if spec := ds.Spec.Template.Spec; len(spec.NodeSelector) != 0 || len(spec.ImagePullSecrets) != 0 {
		t.Errorf("nodeSelector %v, imagePullSecrets %v: want none", spec.NodeSelector, spec.ImagePullSecrets)
	}
	if a := ds.Spec.Template.Annotations; len(a) != 1 || a["checksum/config"] == "" {
		t.Errorf("pod annotations %v, want checksum/config alone", a)
	}
	checkConsistent(t, objs)
	checkFlagsOnHostPaths(t, objs, &ds)
}

// customValues is testdata/values-custom.yaml, decoded.
type customValues struct {
	ExtraNetworks []struct {
		Name, Namespace, ResourceName string
		Config                        any
	} `json:"extraNetworks"`
}

func TestCustomValues(t *testing.T) {
	objs := parse(t, template(t, "--values", testdata("values-custom.yaml")))
	var ds appsv1.DaemonSet
	objs.mustDecode(t, "DaemonSet", namespace, "plexus", &ds)
	spec := ds.Spec.Template.Spec
	c := container(t, &ds)

	if c.Image != "registry.example.com/net/plexus:v9.8.7" || c.ImagePullPolicy != corev1.PullAlways {
		t.Errorf("image %q, pull policy %q", c.Image, c.ImagePullPolicy)
	}
	if want := []corev1.LocalObjectReference{{Name: "registry-creds"}}; !slices.Equal(spec.ImagePullSecrets, want) {
		t.Errorf("imagePullSecrets = %v, want %v", spec.ImagePullSecrets, want)
	}
	f := settings(t, objs, &ds)
	for flag, want := range map[string]string{
		"--default-network":           "cbr0",
		"--cni-conf-dir":              "/host/etc/kubernetes/cni/net.d", // the trailing / cleaned
		"--cni-bin-dir":               "/host/usr/libexec/cni",
		"--state-dir":                 "/var/lib/plexus-custom",
		"--namespace-isolation":       "false",
		"--global-namespaces":         "default,shared-networks",
		"--default-networks":          "sidecar,infra/storage",
		"--system-namespaces":         "kube-system,admin",
		"--default-network-namespace": "plexus-system",
		"--readiness-indicator-file":  "/run/flannel/subnet.env",
		"--zap-log-level":             "debug",
		"--set-aside-leftovers":       "false",
		"--added-interface-events":    "false",
		"--hotplug":                   "off",
		"--operation-timeout":         "1m",
		"--metrics-bind-address":      ":19091",
		"--health-probe-bind-address": ":19092",
	} {
		if f[flag] != want {
			t.Errorf("flag %s = %q, want %q", flag, f[flag], want)
		}
	}
	mounts := hostMounts(t, &ds)
	for host, want := range map[string]mount{
		// The conf and bin dirs are the node root's, under /host.
		"/":                      {path: "/host", propagation: corev1.MountPropagationHostToContainer},
		"/var/lib/plexus-custom": {path: "/var/lib/plexus-custom"},
		// The readiness indicator's directory, at its own path, for the
		// daemon to watch.
		"/run/flannel": {path: "/run/flannel", readOnly: true},
	} {
		if mounts[host] != want {
			t.Errorf("host path %s mounted as %+v, want %+v", host, mounts[host], want)
		}
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KUBERNETES_SERVICE_HOST" && e.Value == "10.0.0.1" }) ||
		c.Env[0].Name != "NODE_NAME" {
		t.Errorf("env %+v: want NODE_NAME, then KUBERNETES_SERVICE_HOST=10.0.0.1", c.Env)
	}
	if want := map[string]string{"kubernetes.io/os": "linux", "plexus.cni.dev/enabled": "true"}; !reflect.DeepEqual(spec.NodeSelector, want) {
		t.Errorf("nodeSelector = %v, want %v", spec.NodeSelector, want)
	}
	wantTolerations := []corev1.Toleration{
		{Key: "node-role.kubernetes.io/control-plane", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule},
		{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "network", Effect: corev1.TaintEffectNoExecute},
	}
	if !slices.Equal(spec.Tolerations, wantTolerations) {
		t.Errorf("tolerations = %+v, want %+v", spec.Tolerations, wantTolerations)
	}
	if spec.PriorityClassName != "network-critical" {
		t.Errorf("priorityClassName = %q", spec.PriorityClassName)
	}
	if u := ds.Spec.UpdateStrategy.RollingUpdate; u == nil || u.MaxUnavailable == nil || u.MaxUnavailable.String() != "25%" {
		t.Errorf("updateStrategy = %+v, want maxUnavailable 25%%", ds.Spec.UpdateStrategy)
	}
	if got := c.Resources.Requests[corev1.ResourceCPU]; got.Cmp(resource.MustParse("100m")) != 0 {
		t.Errorf("cpu request = %s, want 100m", got.String())
	}
	if ds.Spec.Template.Annotations["example.com/owner"] != "network-team" {
		t.Errorf("pod annotations = %v", ds.Spec.Template.Annotations)
	}
	checkPort(t, c, "metrics", 19091)
	checkPort(t, c, "health", 19092)
	for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Port.StrVal != "health" {
			t.Errorf("probe %+v is not on the health port", p)
		}
	}

	var svc corev1.Service
	objs.mustDecode(t, "Service", namespace, "plexus-metrics", &svc)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 19091 || svc.Spec.Ports[0].TargetPort.StrVal != "metrics" {
		t.Errorf("metrics Service ports = %+v, want 19091 to the metrics port", svc.Spec.Ports)
	}
	if !labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(ds.Spec.Template.Labels)) || len(svc.Spec.Selector) == 0 {
		t.Errorf("metrics Service selector %v does not select the daemon's pods %v", svc.Spec.Selector, ds.Spec.Template.Labels)
	}
	if svc.Spec.Type != corev1.ServiceTypeNodePort {
		t.Errorf("metrics Service type = %q, want NodePort", svc.Spec.Type)
	}
	if svc.Annotations["prometheus.io/scrape"] != "true" {
		t.Errorf("metrics Service annotations = %v", svc.Annotations)
	}

	checkNetworks(t, objs)
	checkConsistent(t, objs)
	checkFlagsOnHostPaths(t, objs, &ds)
	checkCustomWebhook(t, objs)
}

// checkCustomWebhook: the webhook's values of values-custom.yaml.
func checkCustomWebhook(t *testing.T, objs objects) {
	t.Helper()
	d := webhookDeployment(t, objs, namespace, webhookName)
	spec := d.Spec.Template.Spec
	c := spec.Containers[0]
	if *d.Spec.Replicas != 3 || spec.PriorityClassName != "system-cluster-critical" {
		t.Errorf("webhook replicas %d, priorityClassName %q", *d.Spec.Replicas, spec.PriorityClassName)
	}
	if c.Image != "registry.example.com/net/plexus:v9.8.7" || c.ImagePullPolicy != corev1.PullAlways ||
		!slices.Equal(spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "registry-creds"}}) {
		t.Errorf("webhook image %q, pull policy %q, secrets %v: want the daemon's", c.Image, c.ImagePullPolicy, spec.ImagePullSecrets)
	}
	if got := c.Resources.Requests[corev1.ResourceMemory]; got.Cmp(resource.MustParse("48Mi")) != 0 {
		t.Errorf("webhook memory request = %s, want 48Mi", got.String())
	}
	if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "KUBERNETES_SERVICE_HOST" && e.Value == "10.0.0.2" }) {
		t.Errorf("webhook env %+v: want KUBERNETES_SERVICE_HOST=10.0.0.2", c.Env)
	}
	if _, ok := spec.NodeSelector["node-role.kubernetes.io/control-plane"]; !ok || len(spec.Tolerations) != 1 {
		t.Errorf("webhook nodeSelector %v, tolerations %+v", spec.NodeSelector, spec.Tolerations)
	}
	checkWebhookConfiguration(t, webhookConfiguration(t, objs, "plexus"), namespace, webhookName, "Fail", 10)
	checkCertificate(t, objs, map[string]any{"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"})
	checkCertManagerWebhook(t, objs)
	var pdb policyv1.PodDisruptionBudget
	objs.mustDecode(t, "PodDisruptionBudget", namespace, webhookName, &pdb)
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.IntValue() != 2 {
		t.Errorf("PodDisruptionBudget maxUnavailable %v, want 2", pdb.Spec.MaxUnavailable)
	}
	if p := objs.ofKind("ValidatingAdmissionPolicy"); len(p) != 0 {
		t.Errorf("policies %q rendered with nodeScopedAuthority.enabled=false", p.keys())
	}
}

// checkNetworks: each of extraNetworks is a definition whose config is the
// JSON of the value's config (an object) or the value itself (a string).
func checkNetworks(t *testing.T, objs objects) {
	t.Helper()
	b, err := os.ReadFile(testdata("values-custom.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var values customValues
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatal(err)
	}
	if got := objs.ofKind("NetworkAttachmentDefinition"); len(got) != len(values.ExtraNetworks) || len(got) != 2 {
		t.Errorf("networks %q, want the 2 of the values", got.keys())
	}
	for _, want := range values.ExtraNetworks {
		ns := want.Namespace
		if ns == "" {
			ns = "default"
		}
		var nad nadv1.NetworkAttachmentDefinition
		objs.mustDecode(t, "NetworkAttachmentDefinition", ns, want.Name, &nad)
		var got map[string]any
		if err := json.Unmarshal([]byte(nad.Spec.Config), &got); err != nil {
			t.Errorf("%s/%s: config %q is not JSON: %v", ns, want.Name, nad.Spec.Config, err)
			continue
		}
		switch cfg := want.Config.(type) {
		case string:
			if nad.Spec.Config != cfg {
				t.Errorf("%s/%s: config %q, want the string as given, %q", ns, want.Name, nad.Spec.Config, cfg)
			}
		case map[string]any:
			if !reflect.DeepEqual(got, cfg) {
				t.Errorf("%s/%s: config %v, want %v", ns, want.Name, got, cfg)
			}
		default:
			t.Fatalf("%s: config of type %T in the test values", want.Name, cfg)
		}
		if got := nad.Annotations["k8s.v1.cni.cncf.io/resourceName"]; got != want.ResourceName {
			t.Errorf("%s/%s: resourceName annotation %q, want %q", ns, want.Name, got, want.ResourceName)
		}
		if nad.Labels["app.kubernetes.io/instance"] != release {
			t.Errorf("%s/%s: labels %v", ns, want.Name, nad.Labels)
		}
	}
	var storage nadv1.NetworkAttachmentDefinition
	objs.mustDecode(t, "NetworkAttachmentDefinition", "team-a", "storage", &storage)
	if !strings.Contains(storage.Spec.Config, `"mtu":9000`) {
		t.Errorf("storage: config %s: want the number 9000 as is", storage.Spec.Config)
	}
}

// TestReleaseName: with another release name every object is named after
// it, and the references between them still meet.
func TestReleaseName(t *testing.T) {
	out, err := helmRun(t, "template", "net", chartPath(t), "--namespace", "networking", "--set", "metrics.service.enabled=true")
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, out)
	}
	objs := parse(t, out)
	want := []string{
		"ClusterRole /net-plexus",
		"ClusterRole /net-plexus-webhook",
		"ClusterRoleBinding /net-plexus",
		"ClusterRoleBinding /net-plexus-webhook",
		"ConfigMap networking/net-plexus-config",
		"DaemonSet networking/net-plexus",
		"Deployment networking/net-plexus-webhook",
		"PodDisruptionBudget networking/net-plexus-webhook",
		"Role networking/net-plexus",
		"Role networking/net-plexus-webhook",
		"RoleBinding networking/net-plexus",
		"RoleBinding networking/net-plexus-webhook",
		"Secret networking/net-plexus-webhook-cert",
		"Service networking/net-plexus-metrics",
		"Service networking/net-plexus-webhook",
		"ServiceAccount networking/net-plexus",
		"ServiceAccount networking/net-plexus-webhook",
		"ValidatingAdmissionPolicy /net-plexus-node-scope",
		"ValidatingAdmissionPolicyBinding /net-plexus-node-scope",
		"ValidatingWebhookConfiguration /net-plexus",
	}
	if got := objs.keys(); !slices.Equal(got, want) {
		t.Errorf("objects %q, want %q", got, want)
	}
	checkConsistent(t, objs)
}

// checkConsistent: the DaemonSet runs as the ServiceAccount the binding
// grants the ClusterRole to, and its selector selects its pods.
func checkConsistent(t *testing.T, objs objects) {
	t.Helper()
	objs = objs.notWebhook()
	sa, ds, role, binding := objs.ofKind("ServiceAccount"), objs.ofKind("DaemonSet"), objs.ofKind("ClusterRole"), objs.ofKind("ClusterRoleBinding")
	if len(sa) != 1 || len(ds) != 1 || len(role) != 1 || len(binding) != 1 {
		t.Fatalf("objects %q: want one ServiceAccount, DaemonSet, ClusterRole, ClusterRoleBinding", objs.keys())
	}
	var d appsv1.DaemonSet
	var b rbacv1.ClusterRoleBinding
	objs.mustDecode(t, "DaemonSet", ds[0].Namespace, ds[0].Name, &d)
	objs.mustDecode(t, "ClusterRoleBinding", "", binding[0].Name, &b)
	if d.Spec.Template.Spec.ServiceAccountName != sa[0].Name || sa[0].Namespace != d.Namespace {
		t.Errorf("DaemonSet %s runs as %q, the ServiceAccount is %s", d.Name, d.Spec.Template.Spec.ServiceAccountName, sa[0].Key())
	}
	wantSubjects := []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa[0].Name, Namespace: sa[0].Namespace}}
	if !slices.Equal(b.Subjects, wantSubjects) || b.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role[0].Name}) {
		t.Errorf("binding %+v %+v, want %+v to ClusterRole %s", b.Subjects, b.RoleRef, wantSubjects, role[0].Name)
	}
	checkSelector(t, &d)

	// The daemon may read its own DaemonSet, by name, in its namespace.
	var r rbacv1.Role
	var rb rbacv1.RoleBinding
	objs.mustDecode(t, "Role", d.Namespace, d.Name, &r)
	objs.mustDecode(t, "RoleBinding", d.Namespace, d.Name, &rb)
	if len(r.Rules) != 1 || !slices.Equal(r.Rules[0].ResourceNames, []string{d.Name}) || !slices.Equal(r.Rules[0].Resources, []string{"daemonsets"}) {
		t.Errorf("Role %s rules %+v: want get on daemonsets named %s", r.Name, r.Rules, d.Name)
	}
	if !slices.Equal(rb.Subjects, wantSubjects) || rb.RoleRef != (rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: r.Name}) {
		t.Errorf("RoleBinding %+v %+v, want %+v to Role %s", rb.Subjects, rb.RoleRef, wantSubjects, r.Name)
	}
}

func checkPort(t *testing.T, c *corev1.Container, name string, port int32) {
	t.Helper()
	for _, p := range c.Ports {
		if p.Name == name {
			if p.ContainerPort != port {
				t.Errorf("port %s = %d, want %d", name, p.ContainerPort, port)
			}
			return
		}
	}
	t.Errorf("no port %s in %+v", name, c.Ports)
}

// mount is one host directory as the container sees it.
type mount struct {
	path        string
	readOnly    bool
	propagation corev1.MountPropagationMode
}

// hostMounts maps each host path to where the container mounts it.
func hostMounts(t *testing.T, ds *appsv1.DaemonSet) map[string]mount {
	t.Helper()
	hostPaths := map[string]string{}
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	out := map[string]mount{}
	seen := map[string]bool{}
	for _, vm := range container(t, ds).VolumeMounts {
		if seen[vm.MountPath] {
			t.Errorf("%s mounted twice: kubelet refuses such a pod", vm.MountPath)
		}
		seen[vm.MountPath] = true
		host, ok := hostPaths[vm.Name]
		if !ok {
			continue
		}
		if _, dup := out[host]; dup {
			t.Errorf("host path %s mounted twice", host)
		}
		out[host] = mount{path: vm.MountPath, readOnly: vm.ReadOnly}
		if vm.MountPropagation != nil {
			out[host] = mount{path: vm.MountPath, readOnly: vm.ReadOnly, propagation: *vm.MountPropagation}
		}
	}
	return out
}

// checkFlagsOnHostPaths: each path flag points into the mount of the host
// directory it is about (the conf and bin dirs and the runtime's cache
// into the node's root at /host, at their node paths), and the state dir
// and the socket are at their host paths, where the shim on the host looks
// for them.
func checkFlagsOnHostPaths(t *testing.T, objs objects, ds *appsv1.DaemonSet) {
	t.Helper()
	mounts := hostMounts(t, ds)
	f := settings(t, objs, ds)
	for flag, hostFlag := range map[string]string{"--cni-conf-dir": "", "--cni-bin-dir": "", "--runtime-cache-dir": "",
		"--state-dir": "same", "--socket": "same", "--readiness-indicator-file": "same"} {
		v, ok := f[flag]
		if !ok {
			continue
		}
		if flag == "--socket" || flag == "--readiness-indicator-file" {
			v = path.Dir(v)
		}
		found := false
		for host, m := range mounts {
			if m.path == v {
				found = true
				if hostFlag == "same" && host != v {
					t.Errorf("%s=%s is host path %s in the container, want the same path", flag, f[flag], host)
				}
			}
			if host == "/" && hostFlag == "" && strings.HasPrefix(v, m.path+"/") {
				found = true
			}
		}
		if !found {
			t.Errorf("%s=%s is on no host path mount (%+v)", flag, f[flag], mounts)
		}
	}
}

func TestImageDigestAndFullname(t *testing.T) {
	const digest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	objs := parse(t, template(t, "--set", "image.digest="+digest, "--set", "fullnameOverride=cni-plexus"))
	var ds appsv1.DaemonSet
	objs.mustDecode(t, "DaemonSet", namespace, "cni-plexus", &ds)
	if c := container(t, &ds); c.Image != "plexus@"+digest {
		t.Errorf("image = %q, want plexus@%s", c.Image, digest)
	}
	checkConsistent(t, objs)
}

// A changed setting must roll the daemons, which read their ConfigMap only
// at start; a changed value that is not a setting must not.
func TestConfigChecksumRollsTheDaemons(t *testing.T) {
	checksum := func(args ...string) string {
		var ds appsv1.DaemonSet
		parse(t, template(t, args...)).mustDecode(t, "DaemonSet", namespace, "plexus", &ds)
		return ds.Spec.Template.Annotations["checksum/config"]
	}
	base := checksum()
	for _, set := range []string{"logLevel=debug", "namespaceIsolation=false", "defaultNetwork=cbr0", "globalNamespaces={default,infra}", "readinessIndicatorFile=/run/flannel/subnet.env"} {
		if got := checksum("--set", set); got == base {
			t.Errorf("--set %s left checksum/config at %s: the daemons would keep the old setting", set, base)
		}
	}
	if got := checksum("--set", "resources.limits.memory=300Mi"); got != base {
		t.Errorf("a resources change moved checksum/config from %s to %s", base, got)
	}
}
