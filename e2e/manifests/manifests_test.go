// Package manifests_test checks the kustomize install under config/, which
// `make manifests` generates from the Helm chart (e2e/chart checks the
// chart itself): what kustomize makes of it, rendered by a real kubectl
// (built from source by `make envtest-assets`): the objects and their
// namespaces, the image a user sets, and the delegate-api overlay. Without
// kubectl the rendering tests skip, or fail when PLEXUS_REQUIRE_REAL is
// set (as `make test` does).
package manifests_test

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/yaml"

	cmdsettings "github.com/plexus-cni/plexus/cmd/settings"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/controllers/delegateapi"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

const (
	namespace = "kube-system"
	name      = "plexus"
	nadCRD    = "network-attachment-definitions.k8s.cni.cncf.io"
	nnsCRD    = "nodenetworkstatuses.plexus.cni.dev"
)

// clusterScoped are the kinds config/default holds that have no namespace.
var clusterScoped = []string{"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
	"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding", "ValidatingWebhookConfiguration"}

// TestDefault: `kubectl apply -k config/default` installs every object of
// plexus, the namespaced ones in kube-system and the cluster-scoped ones
// in none (the API server refuses a namespace on those), labelled as
// managed by kustomize, with the image its images entry names.
func TestDefault(t *testing.T) {
	docs := controllertest.SplitYAML(t, controllertest.Kustomize(t))
	var got []string
	for _, d := range docs {
		got = append(got, d.Key())
		if slices.Contains(clusterScoped, d.Kind) != (d.Namespace == "") || (d.Namespace != "" && d.Namespace != namespace) {
			t.Errorf("%s: namespace %q, want none for a cluster-scoped kind and %s for the others", d.Key(), d.Namespace, namespace)
		}
		if d.Kind == "CustomResourceDefinition" {
			continue // controller-gen's and the NPWG's, unlabelled
		}
		if d.Labels["app.kubernetes.io/instance"] != name || d.Labels["app.kubernetes.io/managed-by"] != "kustomize" {
			t.Errorf("%s: labels %v, want app.kubernetes.io/instance=%s (the e2e leak checks find objects by it), managed-by=kustomize",
				d.Key(), d.Labels, name)
		}
		if _, ok := d.Labels["helm.sh/chart"]; ok {
			t.Errorf("%s: labels %v: helm.sh/chart on an object helm does not manage", d.Key(), d.Labels)
		}
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
		"ValidatingAdmissionPolicy /plexus-node-scope",
		"ValidatingAdmissionPolicyBinding /plexus-node-scope",
		"ValidatingWebhookConfiguration /plexus",
	}
	if !slices.Equal(got, want) {
		t.Errorf("objects:\n got %q\nwant %q", got, want)
	}
	if got := images(t, docs); !slices.Equal(got, []string{"plexus:dev", "plexus:dev"}) {
		t.Errorf("images %q, want plexus:dev for the daemon and the webhook", got)
	}
}

// TestSetImage: what `kustomize edit set image plexus=REGISTRY/plexus:TAG`
// writes into a kustomization over config/default reaches both the daemon
// and the webhook.
func TestSetImage(t *testing.T) {
	dir := t.TempDir()
	base, err := filepath.Rel(dir, filepath.Join(plugintest.RepoRoot(t), "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	overlay := "resources:\n- " + base + "\nimages:\n- name: plexus\n  newName: registry.example.com/net/plexus\n  newTag: v9.8.7\n"
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(overlay), 0o644); err != nil {
		t.Fatal(err)
	}
	docs := controllertest.SplitYAML(t, controllertest.KustomizePath(t, dir))
	const want = "registry.example.com/net/plexus:v9.8.7"
	if got := images(t, docs); !slices.Equal(got, []string{want, want}) {
		t.Errorf("images %q, want %s for the daemon and the webhook", got, want)
	}
}

// TestDelegateAPI: config/delegate-api installs what config/default does,
// with the daemon in hotplug mode delegate-api, serving Multus's socket
// from its directory mounted at its node path.
func TestDelegateAPI(t *testing.T) {
	def := controllertest.SplitYAML(t, controllertest.Kustomize(t))
	docs := controllertest.SplitYAML(t, controllertest.KustomizeDir(t, "delegate-api"))
	if got, want := keys(docs), keys(def); !slices.Equal(got, want) {
		t.Errorf("objects:\n got %q\nwant config/default's %q", got, want)
	}
	for _, tc := range []struct {
		docs            []controllertest.Doc
		hotplug, socket string
		mounted         bool
		what            string
	}{
		{def, controllers.HotplugBuiltin, "", false, "config/default"},
		{docs, controllers.HotplugDelegateAPI, delegateapi.DefaultSocket, true, "config/delegate-api"},
	} {
		var ds appsv1.DaemonSet
		decode(t, tc.docs, "DaemonSet", name, &ds)
		var cm corev1.ConfigMap
		decode(t, tc.docs, "ConfigMap", name+"-config", &cm)
		settings, err := cmdsettings.ParseConfig([]byte(cm.Data["config.yaml"]))
		if err != nil {
			t.Fatalf("%s: the daemon's settings: %v", tc.what, err)
		}
		if settings["hotplug"] != tc.hotplug || settings["delegate-api-socket"] != tc.socket {
			t.Errorf("%s: settings %v, want hotplug %q, delegate-api-socket %q", tc.what, settings, tc.hotplug, tc.socket)
		}
		dir := filepath.Dir(delegateapi.DefaultSocket)
		var hostPath bool
		for _, v := range ds.Spec.Template.Spec.Volumes {
			hostPath = hostPath || (v.HostPath != nil && v.HostPath.Path == dir)
		}
		mounted := slices.ContainsFunc(ds.Spec.Template.Spec.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == dir })
		if hostPath != tc.mounted || mounted != tc.mounted {
			t.Errorf("%s: the node's %s a volume %v, mounted at its path %v; want %v", tc.what, dir, hostPath, mounted, tc.mounted)
		}
		for _, c := range ds.Spec.Template.Spec.Containers {
			if strings.Contains(strings.Join(c.Args, " "), "--hotplug") {
				t.Errorf("%s: args %q: the mode is the settings file's", tc.what, c.Args)
			}
		}
	}
}

// TestStatusCRD reads the generated CRD itself, so it needs no kubectl.
func TestStatusCRD(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(plugintest.RepoRoot(t), "config", "crd", "bases", "plexus.cni.dev_nodenetworkstatuses.yaml"))
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
	want := []string{"Node", "Default Network", "Ready", "Networks", "Attachments", "Heartbeat", "Age"}
	if !slices.Equal(columns, want) {
		t.Errorf("printer columns %q, want %q", columns, want)
	}
}

// images lists the images of the DaemonSet's and the Deployment's
// containers, in that order.
func images(t *testing.T, docs []controllertest.Doc) []string {
	t.Helper()
	var ds appsv1.DaemonSet
	var d appsv1.Deployment
	decode(t, docs, "DaemonSet", name, &ds)
	decode(t, docs, "Deployment", name+"-webhook", &d)
	var out []string
	for _, spec := range []corev1.PodSpec{ds.Spec.Template.Spec, d.Spec.Template.Spec} {
		for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
			out = append(out, c.Image)
		}
	}
	return out
}

// decode finds kind kube-system/n among docs and decodes it strictly.
func decode(t *testing.T, docs []controllertest.Doc, kind, n string, out any) {
	t.Helper()
	for _, d := range docs {
		if d.Kind == kind && d.Namespace == namespace && d.Name == n {
			if err := yaml.UnmarshalStrict(d.Raw, out); err != nil {
				t.Fatalf("%s: %v", d.Key(), err)
			}
			return
		}
	}
	t.Fatalf("no %s %s/%s among %q", kind, namespace, n, keys(docs))
}

func keys(docs []controllertest.Doc) []string {
	var out []string
	for _, d := range docs {
		out = append(out, d.Key())
	}
	sort.Strings(out)
	return out
}
