package daemon_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
)

// leftoverMultus is 00-multus.conf as a thin Multus's install leaves it.
const leftoverMultus = `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus",` +
	`"kubeconfig":"/etc/cni/net.d/multus.d/multus.kubeconfig","delegates":[{"cniVersion":"0.3.1","name":"defnet","type":"bridge"}]}`

func (f *fixture) condition(t string) *metav1.Condition {
	nns := f.nodeStatus()
	if nns == nil {
		return nil
	}
	return meta.FindStatusCondition(nns.Status.Conditions, t)
}

// Migration from Multus, as the API sees it: a leftover set aside at start
// with a Normal Event saying how to restore it; an installed meta-plugin's
// config sorting first makes ConfigFirst and Ready False with a Warning
// Event naming the file and what to do, and is set aside once its binary
// is gone.
func TestMigrationShowsInTheNodeStatusAndEvents(t *testing.T) {
	var leftover string
	f := newFixture(t, func(f *fixture) {
		f.opts.Resync = 200 * time.Millisecond
		leftover = filepath.Join(f.opts.CNIConfDir, "00-multus.conf")
		if err := os.WriteFile(leftover, []byte(leftoverMultus), 0o600); err != nil {
			t.Fatal(err)
		}
	})
	aside := leftover + controllers.SetAsideSuffix
	if data, err := os.ReadFile(aside); err != nil || string(data) != leftoverMultus {
		t.Fatalf("set-aside copy %s: %q (%v)", aside, data, err)
	}
	mustBeGone(t, leftover)
	f.eventually("a LeftoverSetAside event", func() bool {
		return len(f.eventsOf("NodeNetworkStatus", node, controllers.ReasonLeftoverSetAside)) == 1
	})
	ev := f.eventsOf("NodeNetworkStatus", node, controllers.ReasonLeftoverSetAside)[0]
	if ev.Type != corev1.EventTypeNormal || !strings.Contains(ev.Message, "node "+node+": ") ||
		!strings.Contains(ev.Message, "mv "+aside+" "+leftover) {
		t.Errorf("event %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	t.Logf("event %s: %s", ev.Reason, ev.Message)
	f.eventually("Ready and ConfigFirst True", func() bool {
		first, ready := f.condition(v1alpha1.ConditionConfigFirst), f.condition(v1alpha1.ConditionReady)
		return first != nil && first.Status == metav1.ConditionTrue && ready != nil && ready.Status == metav1.ConditionTrue
	})

	// Multus's thick plugin, still installed.
	shim := filepath.Join(f.opts.CNIBinDir, "multus-shim")
	if err := os.WriteFile(shim, []byte("#!/bin/sh\nexit 1\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	installed := `{"cniVersion":"0.3.1","name":"multus-cni-network","type":"multus-shim"}`
	if err := os.WriteFile(leftover, []byte(installed), 0o600); err != nil {
		t.Fatal(err)
	}
	f.eventually("ConfigFirst False, MetaPluginInstalled", func() bool {
		c := f.condition(v1alpha1.ConditionConfigFirst)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == controllers.ReasonMetaPluginInstalled
	})
	c := f.condition(v1alpha1.ConditionConfigFirst)
	for _, want := range []string{leftover, "uninstall multus-shim first", shim} {
		if !strings.Contains(c.Message, want) {
			t.Errorf("ConfigFirst message %q lacks %q", c.Message, want)
		}
	}
	if r := f.condition(v1alpha1.ConditionReady); r.Status != metav1.ConditionFalse || !strings.Contains(r.Message, leftover) {
		t.Errorf("Ready %+v, want False naming %s", r, leftover)
	}
	f.eventually("a MetaPluginInstalled warning", func() bool {
		return len(f.eventsOf("NodeNetworkStatus", node, controllers.ReasonMetaPluginInstalled)) == 1
	})
	ev = f.eventsOf("NodeNetworkStatus", node, controllers.ReasonMetaPluginInstalled)[0]
	if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, leftover) {
		t.Errorf("event %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	t.Logf("event %s: %s", ev.Reason, ev.Message)
	if data, err := os.ReadFile(leftover); err != nil || string(data) != installed {
		t.Errorf("installed meta-plugin's config now %q (%v)", data, err)
	}
	if err := f.daemon.Node.Ready(); err == nil {
		t.Error("/readyz's node-config check passes while multus-shim's config sorts first")
	}

	// Its binary removed: a leftover now, set aside at the next resync.
	if err := os.Remove(shim); err != nil {
		t.Fatal(err)
	}
	f.eventually("Ready again", func() bool {
		r := f.condition(v1alpha1.ConditionReady)
		return r != nil && r.Status == metav1.ConditionTrue
	})
	mustBeGone(t, leftover)
	if data, err := os.ReadFile(aside + ".2"); err != nil || string(data) != installed {
		t.Errorf("second set-aside copy: %q (%v)", data, err)
	}
	t.Logf("kubectl get nodenetworkstatus -o yaml:\n%s", f.kubectl("get", "nodenetworkstatuses", "-o", "yaml"))
}

func mustBeGone(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Errorf("%s still there (%v)", path, err)
	}
}
