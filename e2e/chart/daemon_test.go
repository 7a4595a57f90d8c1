package chart_test

import (
	"maps"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
)

// TestDaemonRBAC holds the daemon to exactly the permissions DESIGN.md's
// Security section allows: each (group, resource, verb) is listed once,
// with no wildcard and no aggregation. (The daemon's tests in cmd/daemon
// run it with exactly these rules, rendered into config/rbac.)
func TestDaemonRBAC(t *testing.T) {
	var role rbacv1.ClusterRole
	parse(t, template(t)).mustDecode(t, "ClusterRole", "", release, &role)
	if role.AggregationRule != nil {
		t.Errorf("ClusterRole %s aggregates other roles", release)
	}
	want := []string{
		"/events create", "/events patch",
		"/nodes get",
		"/pods get", "/pods list", "/pods watch",
		"/pods/status patch",
		"events.k8s.io/events create", "events.k8s.io/events patch",
		"k8s.cni.cncf.io/network-attachment-definitions get", "k8s.cni.cncf.io/network-attachment-definitions list",
		"k8s.cni.cncf.io/network-attachment-definitions watch",
		"plexus.cni.dev/nodenetworkstatuses create", "plexus.cni.dev/nodenetworkstatuses delete",
		"plexus.cni.dev/nodenetworkstatuses get", "plexus.cni.dev/nodenetworkstatuses list",
		"plexus.cni.dev/nodenetworkstatuses patch", "plexus.cni.dev/nodenetworkstatuses update",
		"plexus.cni.dev/nodenetworkstatuses watch",
		"plexus.cni.dev/nodenetworkstatuses/status get", "plexus.cni.dev/nodenetworkstatuses/status patch",
		"plexus.cni.dev/nodenetworkstatuses/status update",
	}
	var got []string
	for i, rule := range role.Rules {
		if len(rule.NonResourceURLs) > 0 || len(rule.ResourceNames) > 0 {
			t.Errorf("rule %d: non-resource URLs %q, resource names %q", i, rule.NonResourceURLs, rule.ResourceNames)
		}
		for _, s := range slices.Concat(rule.APIGroups, rule.Resources, rule.Verbs) {
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
		t.Errorf("ClusterRole %s permissions:\n got %q\nwant %q", release, got, want)
	}
}

// TestDaemonPod: the daemon's pod at the chart's defaults, as the node
// needs it: on the host's network and PID namespace, privileged, on every
// node, last to be evicted, with the downward API the daemon reads, probes
// on its health port, and exactly the host directories it reaches.
func TestDaemonPod(t *testing.T) {
	var ds appsv1.DaemonSet
	parse(t, template(t)).mustDecode(t, "DaemonSet", namespace, release, &ds)
	spec := ds.Spec.Template.Spec
	if !spec.HostNetwork || !spec.HostPID || spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("hostNetwork %v, hostPID %v, dnsPolicy %q; want true, true, ClusterFirstWithHostNet", spec.HostNetwork, spec.HostPID, spec.DNSPolicy)
	}
	if spec.ServiceAccountName != release || spec.PriorityClassName != "system-node-critical" {
		t.Errorf("serviceAccountName %q, priorityClassName %q", spec.ServiceAccountName, spec.PriorityClassName)
	}
	if !slices.Equal(spec.Tolerations, []corev1.Toleration{{Operator: corev1.TolerationOpExists}}) {
		t.Errorf("tolerations %+v, want a bare `operator: Exists`", spec.Tolerations)
	}
	if u := ds.Spec.UpdateStrategy; u.Type != appsv1.RollingUpdateDaemonSetStrategyType ||
		u.RollingUpdate == nil || u.RollingUpdate.MaxUnavailable == nil || u.RollingUpdate.MaxUnavailable.IntValue() != 1 {
		t.Errorf("updateStrategy = %+v, want RollingUpdate with maxUnavailable 1", u)
	}
	// e2e/cluster and the e2e suite find the daemon's pods by these,
	// whichever way it was installed.
	if l := ds.Spec.Template.Labels; l["app.kubernetes.io/name"] != "plexus" || l["app.kubernetes.io/component"] != "node-daemon" {
		t.Errorf("pod labels %v lack app.kubernetes.io/name=plexus, app.kubernetes.io/component=node-daemon", l)
	}
	checkSelector(t, &ds)

	c := container(t, &ds)
	if !slices.Equal(c.Command, []string{"/usr/local/bin/plexus-daemon"}) || c.ImagePullPolicy != corev1.PullIfNotPresent {
		t.Errorf("command %q, imagePullPolicy %q", c.Command, c.ImagePullPolicy)
	}
	f := flags(t, c.Args)
	for flag, want := range map[string]string{
		"--shim-source":          "/usr/local/bin/plexus",
		"--socket":               "/run/plexus/plexus.sock",
		"--metrics-bind-address": ":9091",
		"--host-prefix":          "/host",
		"--runtime-cache-dir":    "/host/var/lib/cni",
	} {
		if f[flag] != want {
			t.Errorf("flag %s = %q, want %q", flag, f[flag], want)
		}
	}
	for env, field := range map[string]string{"NODE_NAME": "spec.nodeName", "POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"} {
		if !slices.ContainsFunc(c.Env, func(e corev1.EnvVar) bool {
			return e.Name == env && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == field
		}) {
			t.Errorf("env %+v lacks %s from %s", c.Env, env, field)
		}
	}
	if sc := c.SecurityContext; sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Errorf("the container is not privileged")
	}
	for name, p := range map[string]*corev1.Probe{"/healthz": c.LivenessProbe, "/readyz": c.ReadinessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Path != name || p.HTTPGet.Port.StrVal != "health" {
			t.Errorf("probe %+v, want %s on the health port", p, name)
		}
	}
	checkPort(t, c, "health", 9092)

	// Every host directory the daemon reaches: a new one is a change to
	// what it can touch on the node.
	want := map[string]mount{
		// The node's root: delegates run chrooted into it; the conf and
		// bin dirs and the runtime's CNI cache are reached through it.
		"/":                                {path: "/host", propagation: corev1.MountPropagationHostToContainer},
		"/var/lib/plexus":                  {path: "/var/lib/plexus"},
		"/run/plexus":                      {path: "/run/plexus"},
		"/var/run/netns":                   {path: "/var/run/netns", propagation: corev1.MountPropagationHostToContainer},
		"/var/lib/kubelet/pod-resources":   {path: "/var/lib/kubelet/pod-resources", readOnly: true},
		"/var/run/k8s.cni.cncf.io/devinfo": {path: "/var/run/k8s.cni.cncf.io/devinfo", readOnly: true},
	}
	if got := hostMounts(t, &ds); !maps.Equal(got, want) {
		t.Errorf("host paths mounted:\n got %+v\nwant %+v", got, want)
	}
	for _, v := range spec.Volumes {
		if hp := v.HostPath; hp != nil && (hp.Path == "/var/lib/plexus" || hp.Path == "/run/plexus") &&
			(hp.Type == nil || *hp.Type != corev1.HostPathDirectoryOrCreate) {
			t.Errorf("host path %s: type %v, want DirectoryOrCreate (the daemon owns it)", hp.Path, hp.Type)
		}
	}
}
