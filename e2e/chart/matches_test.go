package chart_test

import (
	"path"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/plexus-cni/plexus/cmd/daemon"
	cmdsettings "github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/controllers/delegateapi"
)

// The chart at its defaults and config/default install the same thing: the
// same objects, the same RBAC rules, the same daemon pod. What may differ
// is what is each one's own: labels, the image reference, and flags the
// chart spells out at the daemon's own defaults.

func TestSameObjectsAsConfig(t *testing.T) {
	chart := parse(t, template(t, "--include-crds"))
	config := kustomize(t)
	if got, want := chart.keys(), config.keys(); !slices.Equal(got, want) {
		t.Errorf("objects:\n chart          %q\n config/default %q", got, want)
	}
	for _, o := range chart {
		if o.Kind == "CustomResourceDefinition" {
			continue // the files are compared byte for byte
		}
		if o.Labels["app.kubernetes.io/name"] != "plexus" || o.Labels["app.kubernetes.io/instance"] != release {
			t.Errorf("%s: labels %v lack app.kubernetes.io/name=plexus, instance=%s", o.Key(), o.Labels, release)
		}
	}
}

func TestSameRBACAsConfig(t *testing.T) {
	chart, config := parse(t, template(t)), kustomize(t)
	var chartRole, configRole rbacv1.ClusterRole
	chart.mustDecode(t, "ClusterRole", "", "plexus", &chartRole)
	config.mustDecode(t, "ClusterRole", "", "plexus", &configRole)
	same(t, "ClusterRole rules", chartRole.Rules, configRole.Rules)
	if chartRole.AggregationRule != nil {
		t.Errorf("the chart's ClusterRole aggregates other roles")
	}
	var chartBinding, configBinding rbacv1.ClusterRoleBinding
	chart.mustDecode(t, "ClusterRoleBinding", "", "plexus", &chartBinding)
	config.mustDecode(t, "ClusterRoleBinding", "", "plexus", &configBinding)
	same(t, "ClusterRoleBinding roleRef", chartBinding.RoleRef, configBinding.RoleRef)
	same(t, "ClusterRoleBinding subjects", chartBinding.Subjects, configBinding.Subjects)
	var chartOwner, configOwner rbacv1.Role
	chart.mustDecode(t, "Role", namespace, "plexus", &chartOwner)
	config.mustDecode(t, "Role", namespace, "plexus", &configOwner)
	same(t, "Role rules", chartOwner.Rules, configOwner.Rules)
	var chartOwnerBinding, configOwnerBinding rbacv1.RoleBinding
	chart.mustDecode(t, "RoleBinding", namespace, "plexus", &chartOwnerBinding)
	config.mustDecode(t, "RoleBinding", namespace, "plexus", &configOwnerBinding)
	same(t, "RoleBinding roleRef", chartOwnerBinding.RoleRef, configOwnerBinding.RoleRef)
	same(t, "RoleBinding subjects", chartOwnerBinding.Subjects, configOwnerBinding.Subjects)
}

func TestSameDaemonSetAsConfig(t *testing.T) {
	var chart, config appsv1.DaemonSet
	chartObjs, configObjs := parse(t, template(t)), kustomize(t)
	chartObjs.mustDecode(t, "DaemonSet", namespace, "plexus", &chart)
	configObjs.mustDecode(t, "DaemonSet", namespace, "plexus", &config)
	cc, kc := container(t, &chart), container(t, &config)

	sameSettings(t, settings(t, chartObjs, &chart), settings(t, configObjs, &config))
	same(t, "env", cc.Env, kc.Env)
	same(t, "volumeMounts", cc.VolumeMounts, kc.VolumeMounts)
	same(t, "volumes", chart.Spec.Template.Spec.Volumes, config.Spec.Template.Spec.Volumes)
	same(t, "livenessProbe", cc.LivenessProbe, kc.LivenessProbe)
	same(t, "readinessProbe", cc.ReadinessProbe, kc.ReadinessProbe)
	same(t, "securityContext", cc.SecurityContext, kc.SecurityContext)
	same(t, "ports", cc.Ports, kc.Ports)
	same(t, "resources", cc.Resources, kc.Resources)
	same(t, "tolerations", chart.Spec.Template.Spec.Tolerations, config.Spec.Template.Spec.Tolerations)
	same(t, "updateStrategy", chart.Spec.UpdateStrategy, config.Spec.UpdateStrategy)
	// And everything else, with what may differ taken out.
	same(t, "the rest of the DaemonSet", comparable(&chart), comparable(&config))

	if cc.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("imagePullPolicy = %q, want IfNotPresent", cc.ImagePullPolicy)
	}
	// e2e/cluster finds the daemon's pods by these, whichever way it was
	// installed.
	for _, ds := range []*appsv1.DaemonSet{&chart, &config} {
		l := ds.Spec.Template.Labels
		if l["app.kubernetes.io/name"] != "plexus" || l["app.kubernetes.io/component"] != "node-daemon" {
			t.Errorf("pod labels %v lack app.kubernetes.io/name=plexus, app.kubernetes.io/component=node-daemon", l)
		}
		checkSelector(t, ds)
	}
}

// The chart with hotplug.mode=delegate-api and config/delegate-api run the
// same daemon: the same settings, the socket's directory mounted at its
// node path.
func TestSameDelegateAPIDaemonAsConfig(t *testing.T) {
	var chart, config appsv1.DaemonSet
	chartObjs := parse(t, template(t, "--set", "hotplug.mode=delegate-api"))
	configObjs := parse(t, controllertest.KustomizeDir(t, "delegate-api"))
	chartObjs.mustDecode(t, "DaemonSet", namespace, "plexus", &chart)
	configObjs.mustDecode(t, "DaemonSet", namespace, "plexus", &config)
	chartSettings := settings(t, chartObjs, &chart)
	sameSettings(t, chartSettings, settings(t, configObjs, &config))
	if chartSettings["--hotplug"] != controllers.HotplugDelegateAPI || chartSettings["--delegate-api-socket"] != delegateapi.DefaultSocket {
		t.Errorf("chart settings %v: want --hotplug=%s --delegate-api-socket=%s", chartSettings, controllers.HotplugDelegateAPI, delegateapi.DefaultSocket)
	}
	cc, kc := container(t, &chart), container(t, &config)
	// kustomize's patch puts its items first: compare them in name order.
	byName := func(a, b corev1.VolumeMount) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(cc.VolumeMounts, byName)
	slices.SortFunc(kc.VolumeMounts, byName)
	volumeByName := func(a, b corev1.Volume) int { return strings.Compare(a.Name, b.Name) }
	slices.SortFunc(chart.Spec.Template.Spec.Volumes, volumeByName)
	slices.SortFunc(config.Spec.Template.Spec.Volumes, volumeByName)
	same(t, "volumeMounts", cc.VolumeMounts, kc.VolumeMounts)
	same(t, "volumes", chart.Spec.Template.Spec.Volumes, config.Spec.Template.Spec.Volumes)
	mounted := false
	for _, m := range cc.VolumeMounts {
		mounted = mounted || m.MountPath == path.Dir(delegateapi.DefaultSocket)
	}
	if !mounted {
		t.Errorf("the socket's directory %s is not mounted: %v", path.Dir(delegateapi.DefaultSocket), cc.VolumeMounts)
	}
}

// sameSettings compares the daemon's settings (flags and config file):
// each of config/default's with the same value, and those the chart adds
// only at the daemon's defaults (as `plexus-daemon --help` prints them), so
// that the two run the same daemon.
func sameSettings(t *testing.T, chart, config map[string]string) {
	t.Helper()
	d := daemon.Defaults()
	atDefault := map[string]string{
		"--namespace-isolation":       strconv.FormatBool(d.IsolateNamespaces),
		"--global-namespaces":         strings.Join(d.GlobalNamespaces, ","),
		"--default-networks":          strings.Join(d.DefaultNetworks, ","),
		"--system-namespaces":         strings.Join(d.SystemNamespaces, ","),
		"--default-network-namespace": d.DefaultNetworkNamespace,
		"--hotplug":                   d.HotplugMode,
		// controller-runtime's zap logs at info outside development mode.
		"--zap-log-level": "info",
	}
	for flag, v := range config {
		if c, ok := chart[flag]; !ok || c != v {
			t.Errorf("flag %s: chart %q, config/default %q", flag, c, v)
		}
	}
	for flag, v := range chart {
		if _, ok := config[flag]; ok {
			continue
		}
		if want, ok := atDefault[flag]; !ok || v != want {
			t.Errorf("flag %s=%s is the chart's only, and not at the daemon's default (%q)", flag, v, want)
		}
	}
}

// settings is what the daemon of ds runs with: its --flag=value arguments,
// and the settings of the ConfigMap file its --config names, as
// --setting=value, the command line winning as in the daemon. It fails
// unless that file is in a ConfigMap of objs mounted where --config points.
func settings(t *testing.T, objs objects, ds *appsv1.DaemonSet) map[string]string {
	t.Helper()
	c := container(t, ds)
	out := flags(t, c.Args)
	file, ok := out["--config"]
	if !ok {
		return out
	}
	delete(out, "--config")
	var volume string
	for _, m := range c.VolumeMounts {
		if m.MountPath == path.Dir(file) {
			volume = m.Name
		}
	}
	var cmName string
	for _, v := range ds.Spec.Template.Spec.Volumes {
		if v.Name == volume && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
	}
	if cmName == "" {
		t.Fatalf("--config=%s: no ConfigMap volume mounted at %s", file, path.Dir(file))
	}
	var cm corev1.ConfigMap
	objs.mustDecode(t, "ConfigMap", ds.Namespace, cmName, &cm)
	data, ok := cm.Data[path.Base(file)]
	if !ok {
		t.Fatalf("ConfigMap %s has no %s (keys %v)", cmName, path.Base(file), cm.Data)
	}
	fromFile, err := cmdsettings.ParseConfig([]byte(data))
	if err != nil {
		t.Fatalf("ConfigMap %s, %s: %v", cmName, path.Base(file), err)
	}
	for k, v := range fromFile {
		if _, onCommandLine := out["--"+k]; !onCommandLine {
			out["--"+k] = v
		}
	}
	return out
}

// flags maps --flag=value arguments by flag; a flag given twice fails.
func flags(t *testing.T, args []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, a := range args {
		k, v, ok := strings.Cut(a, "=")
		if !ok || !strings.HasPrefix(k, "--") {
			t.Errorf("argument %q is not --flag=value", a)
			continue
		}
		if _, dup := out[k]; dup {
			t.Errorf("flag %s given twice in %q", k, args)
		}
		out[k] = v
	}
	return out
}

// comparable is a DaemonSet without what legitimately differs between the
// chart and config/default: labels, the image reference, the flags
// (compared by sameArgs).
func comparable(ds *appsv1.DaemonSet) *appsv1.DaemonSet {
	ds = ds.DeepCopy()
	ds.ObjectMeta = metav1.ObjectMeta{Name: ds.Name, Namespace: ds.Namespace}
	ds.Spec.Selector = nil
	ds.Spec.Template.ObjectMeta = metav1.ObjectMeta{}
	for i := range ds.Spec.Template.Spec.Containers {
		c := &ds.Spec.Template.Spec.Containers[i]
		c.Image, c.ImagePullPolicy, c.Args = "", "", nil
	}
	return ds
}

// same fails when two values differ, printing both as YAML.
func same(t *testing.T, what string, chart, config any) {
	t.Helper()
	a, err := yaml.Marshal(chart)
	if err != nil {
		t.Fatal(err)
	}
	b, err := yaml.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) {
		t.Errorf("%s differ:\n--- chart\n%s--- config/default\n%s", what, a, b)
	}
}

func container(t *testing.T, ds *appsv1.DaemonSet) *corev1.Container {
	t.Helper()
	cs := ds.Spec.Template.Spec.Containers
	if len(cs) != 1 {
		t.Fatalf("DaemonSet %s has %d containers, want 1", ds.Name, len(cs))
	}
	return &cs[0]
}

func checkSelector(t *testing.T, ds *appsv1.DaemonSet) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(ds.Spec.Selector)
	if err != nil {
		t.Fatalf("selector: %v", err)
	}
	if sel.Empty() || !sel.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("selector %q does not match the pod labels %v", sel, ds.Spec.Template.Labels)
	}
}
