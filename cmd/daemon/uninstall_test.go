package daemon_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
)

// installDaemonSet creates a DaemonSet named plexus and a pod of it on the
// node, as the DaemonSet controller would (envtest runs no controllers),
// and returns the pod's name.
func (f *fixture) installDaemonSet(podName string, nodeSelector map[string]string) string {
	f.t.Helper()
	labels := map[string]string{"app.kubernetes.io/name": "plexus"}
	podSpec := corev1.PodSpec{NodeName: node, NodeSelector: nodeSelector, Containers: []corev1.Container{{Name: "plexus", Image: "plexus:dev"}}}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "plexus", Namespace: daemonNamespace},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: podSpec},
		},
	}
	f.create(ds)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: daemonNamespace, Labels: labels,
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID, Controller: ptr.To(true)}}},
		Spec: podSpec,
	}
	f.create(pod)
	return pod.Name
}

// ownerKnown waits until the daemon has found its DaemonSet.
func (f *fixture) ownerKnown() {
	f.t.Helper()
	f.eventually("the daemon to know its DaemonSet", func() bool {
		_, why := f.daemon.Owner.Uninstalled(context.Background())
		return why == "DaemonSet "+daemonNamespace+"/plexus is still installed"
	})
}

func (f *fixture) conflist() string {
	return filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName)
}

// readyAs requires the node's Ready condition to be status with reason,
// its message containing text.
func (f *fixture) readyAs(status metav1.ConditionStatus, reason, text string) {
	f.t.Helper()
	c := f.condition(v1alpha1.ConditionReady)
	if c == nil || c.Status != status || c.Reason != reason || !strings.Contains(c.Message, text) {
		f.t.Errorf("Ready condition %+v, want %s %s with %q", c, status, reason, text)
	}
}

// configRemoved requires the node's ConfigWritten condition to say the
// conflist is gone, as it is: not True, reason ReasonUninstalled.
func (f *fixture) configRemoved() {
	f.t.Helper()
	c := f.condition(v1alpha1.ConditionConfigWritten)
	if c == nil || c.Status != metav1.ConditionFalse || c.Reason != controllers.ReasonUninstalled || !strings.Contains(c.Message, "was removed") {
		f.t.Errorf("ConfigWritten condition %+v, want False %s: the conflist was removed", c, controllers.ReasonUninstalled)
	}
}

// serving waits for the node's Ready condition to be True.
func (f *fixture) serving() {
	f.t.Helper()
	f.eventually("the node status Ready", func() bool {
		c := f.condition(v1alpha1.ConditionReady)
		return c != nil && c.Status == metav1.ConditionTrue
	})
}

func (f *fixture) requireFile(path string, want bool) {
	f.t.Helper()
	_, err := os.Stat(path)
	if got := err == nil; got != want {
		f.t.Errorf("%s exists: %t, want %t (%v)", path, got, want, err)
	}
}

// A restart (an upgrade's rolling update) keeps the node conflist, so no
// pod started meanwhile silently misses its networks; an uninstall removes
// it, so the default network serves the node's new pods again, and the
// default network's own config is left as it was.
func TestUninstallRemovesTheNodeConflistARestartKeepsIt(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.opts.PodName, f.opts.PodNamespace = "plexus-x7k2p", daemonNamespace
	})
	defaultConf := filepath.Join(f.opts.CNIConfDir, "10-default.conflist")
	before, err := os.ReadFile(defaultConf)
	if err != nil {
		t.Fatal(err)
	}
	f.installDaemonSet(f.opts.PodName, nil)
	f.ownerKnown()
	f.serving()

	f.stopDaemon()
	f.requireFile(f.conflist(), true)
	if c := f.condition(v1alpha1.ConditionConfigWritten); c == nil || c.Status != metav1.ConditionTrue {
		t.Errorf("ConfigWritten condition %+v after a restart, want True: the conflist stays", c)
	}
	// A node whose daemon is gone never reads as serving.
	f.readyAs(metav1.ConditionFalse, controllers.ReasonDaemonStopped, "00-plexus.conflist stays for the next daemon")

	f.startDaemon(f.daemonCfg)
	f.ownerKnown()
	f.serving()
	if err := f.client.Delete(context.Background(), &appsv1.DaemonSet{ObjectMeta: metav1.ObjectMeta{Name: "plexus", Namespace: daemonNamespace}},
		client.PropagationPolicy(metav1.DeletePropagationBackground)); err != nil {
		t.Fatal(err)
	}
	f.stopDaemon()
	f.requireFile(f.conflist(), false)
	f.readyAs(metav1.ConditionFalse, controllers.ReasonUninstalled, "00-plexus.conflist was removed, so new pods get the node's default network alone")
	f.configRemoved()
	if after, err := os.ReadFile(defaultConf); err != nil || string(after) != string(before) {
		t.Errorf("the default network's config changed: %v\n%s", err, after)
	}
}

// An uninstall may delete the daemon's RBAC before its pod is stopped: the
// API server then refuses the daemon, which counts as uninstalled.
func TestUninstallIsToldByRevokedCredentials(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.opts.PodName, f.opts.PodNamespace = "plexus-q9r4d", daemonNamespace
	})
	f.installDaemonSet(f.opts.PodName, nil)
	f.ownerKnown()
	ctx := context.Background()
	for _, obj := range []client.Object{
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "plexus"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "plexus", Namespace: daemonNamespace}},
	} {
		if err := f.client.Delete(ctx, obj); err != nil {
			t.Fatal(err)
		}
	}
	f.eventually("the API server to refuse the daemon", func() bool {
		gone, _ := f.daemon.Owner.Uninstalled(ctx)
		return gone
	})
	f.stopDaemon()
	f.requireFile(f.conflist(), false)
}

// A node relabelled out of the DaemonSet's nodeSelector loses its daemon
// for good: its conflist goes with it. While it still matches, a stop is a
// restart.
func TestNodeOutOfTheNodeSelectorRemovesTheNodeConflist(t *testing.T) {
	f := newFixture(t, func(f *fixture) {
		f.opts.PodName, f.opts.PodNamespace = "plexus-n5m8w", daemonNamespace
	})
	ctx := context.Background()
	label := func(value string) {
		n := &corev1.Node{}
		if err := f.client.Get(ctx, client.ObjectKey{Name: node}, n); err != nil {
			t.Fatal(err)
		}
		n.Labels = map[string]string{"plexus.cni.dev/enabled": value}
		if err := f.client.Update(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	label("true")
	f.installDaemonSet(f.opts.PodName, map[string]string{"plexus.cni.dev/enabled": "true"})
	f.ownerKnown()
	f.stopDaemon()
	f.requireFile(f.conflist(), true)

	f.startDaemon(f.daemonCfg)
	f.ownerKnown()
	f.serving()
	label("false")
	f.stopDaemon()
	f.requireFile(f.conflist(), false)
	// The selector as a user writes it, not Go's map syntax.
	f.readyAs(metav1.ConditionFalse, controllers.ReasonUninstalled, "no longer matches DaemonSet "+daemonNamespace+"/plexus's nodeSelector plexus.cni.dev/enabled=true")
	f.configRemoved()
}

// Without its pod's name the daemon cannot tell, and keeps the conflist.
func TestNoPodNameKeepsTheNodeConflist(t *testing.T) {
	f := newFixture(t)
	if gone, why := f.daemon.Owner.Uninstalled(context.Background()); gone {
		t.Errorf("uninstalled without a pod name: %s", why)
	}
	f.stopDaemon()
	f.requireFile(f.conflist(), true)
}
