package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// running gives a pod the status kubelet writes once the runtime set up
// its sandbox's network (the runtime's CNI ADD returned), or, with up
// false, once kubelet found that sandbox gone. A merge patch, as kubelet's,
// so that plexus's own network-status patch does not make it conflict.
func (f *fixture) running(pod *corev1.Pod, ip string, up corev1.ConditionStatus) {
	f.t.Helper()
	orig := pod.DeepCopy()
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReadyToStartContainers, Status: up,
			LastTransitionTime: metav1.Now()}},
	}
	if err := f.client.Status().Patch(context.Background(), pod, client.MergeFrom(orig)); err != nil {
		f.t.Fatalf("pod %s status: %v", pod.Name, err)
	}
}

// podWith creates a pod of the node with the given annotations and spec
// change.
func (f *fixture) podWith(name string, annotations map[string]string, change func(*corev1.PodSpec)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name, Annotations: annotations},
		Spec:       corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	if change != nil {
		change(&p.Spec)
	}
	f.create(p)
	return p
}

// eventsOf lists the events about one object, of any namespace.
func (f *fixture) eventsOf(kind, name, reason string) []corev1.Event {
	f.t.Helper()
	list := &corev1.EventList{}
	if err := f.client.List(context.Background(), list); err != nil {
		f.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == kind && e.InvolvedObject.Name == name && e.Reason == reason {
			out = append(out, e)
		}
	}
	return out
}

func bypassedNames(st v1alpha1.NodeNetworkStatusStatus) []string {
	var names []string
	for _, b := range st.Bypassed {
		names = append(names, b.Name)
	}
	return names
}

// Pods that ask for networks but run on a sandbox plexus never attached
// (started while plexus was not installed or its conflist was absent) get
// one Warning Event each and are counted and listed in the node's status.
// Pods plexus attached, host-network pods, pods that ask for nothing and
// pods whose sandbox is not up (yet, or again) are not, nor are pods Multus
// attached (their network-status names their networks); a pod that goes away or gets a
// record leaves the count at the next check.
func TestPodsThatBypassedPlexusAreReported(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.opts.BypassCheckEvery = 200 * time.Millisecond })
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.eventually("blue rendered", func() bool { _, ok := f.stored("blue"); return ok })
	networks := func(v string) map[string]string { return map[string]string{"k8s.v1.cni.cncf.io/networks": v} }

	bypassed := f.podWith("bypassed", networks("blue, storage@data0"), nil)
	garbled := f.podWith("garbled", networks(`[{"name": "blue"`), nil)
	replaced := f.podWith("replaced", map[string]string{"v1.multus-cni.io/default-network": "other/fast"}, nil)
	late := f.podWith("late", networks("blue"), nil)
	attached := f.podWith("attached", networks("blue"), nil)
	host := f.podWith("host", networks("blue"), func(s *corev1.PodSpec) { s.HostNetwork = true })
	plain := f.podWith("plain", nil, nil)
	f.podWith("starting", networks("blue"), nil) // no sandbox yet: kubelet reported nothing
	// Multus attached it before plexus replaced Multus: it has its
	// networks, and Multus's network-status says so.
	multus := f.podWith("multus", map[string]string{"k8s.v1.cni.cncf.io/networks": "blue",
		"k8s.v1.cni.cncf.io/network-status": `[{"name":"cbr0","interface":"eth0","default":true},{"name":"team/blue","interface":"net1"}]`}, nil)
	// Its sandbox is being replaced: the old one's DEL took its record,
	// the new one's ADD has not run yet, kubelet keeps its IP.
	restarting := f.podWith("restarting", networks("blue"), nil)
	f.waitCached(attached)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c-attached", netns, attached); err != nil {
		t.Fatal(err)
	}
	for i, p := range []*corev1.Pod{bypassed, garbled, replaced, late, attached, host, plain, multus} {
		f.running(p, fmt.Sprintf("10.250.0.%d", i+1), corev1.ConditionTrue)
	}
	f.running(restarting, "10.250.0.99", corev1.ConditionFalse)

	f.eventually("four bypassed pods in the node status", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.BypassedPods == 4
	})
	st := f.nodeStatus().Status
	if got := bypassedNames(st); !slices.Equal(got, []string{"bypassed", "garbled", "late", "replaced"}) {
		t.Errorf("bypassed list %v, want bypassed, garbled, late, replaced", got)
	}
	want := map[string]v1alpha1.BypassedPod{
		"bypassed": {Namespace: "team", Name: "bypassed", Networks: []string{"team/blue", "team/storage"}},
		"garbled":  {Namespace: "team", Name: "garbled", Networks: []string{`[{"name": "blue"`}},
		"replaced": {Namespace: "team", Name: "replaced", DefaultNetwork: "other/fast"},
	}
	for _, b := range st.Bypassed {
		if w, ok := want[b.Name]; ok && (b.Namespace != w.Namespace || !slices.Equal(b.Networks, w.Networks) || b.DefaultNetwork != w.DefaultNetwork) {
			t.Errorf("bypassed entry %+v, want %+v", b, w)
		}
	}

	// Several checks later, still one Event per pod, saying what it lacks
	// and what to do.
	time.Sleep(time.Second)
	for name, says := range map[string][]string{
		"bypassed": {"lacks networks team/blue, team/storage", "delete the pod so that it is recreated through plexus"},
		"garbled":  {`[{\"name\": \"blue\"`, "does not parse", "fix the annotation, then delete the pod"},
		"replaced": {"its default network other/fast"},
		"late":     {"lacks network team/blue;"},
	} {
		evs := f.eventsOf("Pod", name, controllers.ReasonNetworksNotAttached)
		if len(evs) != 1 || evs[0].Count > 1 || evs[0].Type != corev1.EventTypeWarning {
			t.Errorf("pod %s: events %+v, want one Warning sent once", name, evs)
			continue
		}
		for _, s := range says {
			if !strings.Contains(evs[0].Message, s) {
				t.Errorf("pod %s: event message %q lacks %q", name, evs[0].Message, s)
			}
		}
		t.Logf("pod %s: %s: %s", name, evs[0].Reason, evs[0].Message)
	}
	for _, name := range []string{"attached", "host", "plain", "starting", "restarting", "multus"} {
		if evs := f.eventsOf("Pod", name, controllers.ReasonNetworksNotAttached); len(evs) != 0 {
			t.Errorf("pod %s is not bypassed, yet got %+v", name, evs)
		}
	}

	// One goes away, one gets its sandbox through plexus: both leave.
	if err := f.client.Delete(context.Background(), bypassed, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	lateNS := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c-late", lateNS, late); err != nil {
		t.Fatal(err)
	}
	f.eventually("two bypassed pods left", func() bool { return f.nodeStatus().Status.BypassedPods == 2 })
	if got := bypassedNames(f.nodeStatus().Status); !slices.Equal(got, []string{"garbled", "replaced"}) {
		t.Errorf("bypassed list %v, want garbled, replaced", got)
	}
	if _, err := f.cni("DEL", "c-attached", netns, attached); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cni("DEL", "c-late", lateNS, late); err != nil {
		t.Fatal(err)
	}
}

// A node conflist removed or altered by someone else while the daemon runs
// is put back, with a Warning Event on the node's NodeNetworkStatus and its
// ConfigWritten condition saying Restored, since when, and why. A new
// default network rewrites the file too, but is no restore.
func TestARestoredNodeConflistIsAnEventAndACondition(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.opts.Resync = 200 * time.Millisecond })
	f.eventually("the node's status Ready", func() bool {
		nns := f.nodeStatus()
		return nns != nil && meta.IsStatusConditionTrue(nns.Status.Conditions, v1alpha1.ConditionReady)
	})
	conflist := filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName)
	condition := func() *metav1.Condition {
		return meta.FindStatusCondition(f.nodeStatus().Status.Conditions, v1alpha1.ConditionConfigWritten)
	}
	if c := condition(); c.Reason != "Written" {
		t.Fatalf("ConfigWritten %+v before any restore, want reason Written", c)
	}

	// A new default network: the file is rewritten, and that is no restore.
	before, _ := os.ReadFile(conflist)
	defaultFile := filepath.Join(f.opts.CNIConfDir, "10-default.conflist")
	def, err := os.ReadFile(defaultFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(defaultFile, []byte(strings.Replace(string(def), "10.240.0.0/24", "10.240.1.0/24", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	f.eventually("the conflist wraps the new default network", func() bool {
		now, _ := os.ReadFile(conflist)
		return len(now) > 0 && string(now) != string(before)
	})

	// Removed by someone else.
	removed := time.Now().Truncate(time.Second)
	if err := os.Remove(conflist); err != nil {
		t.Fatal(err)
	}
	f.eventually("ConfigWritten Restored", func() bool {
		c := condition()
		return c.Status == metav1.ConditionTrue && c.Reason == "Restored"
	})
	if _, err := os.Stat(conflist); err != nil {
		t.Errorf("conflist not restored: %v", err)
	}
	c := condition()
	if c.LastTransitionTime.Time.Before(removed) || !strings.Contains(c.Message, "was removed by someone else and restored at") ||
		!strings.Contains(c.Message, "restore 1 since") || !strings.Contains(c.Message, "may lack their networks") {
		t.Errorf("ConfigWritten after a removal %+v, want a transition at or after %v and a message saying what happened", c, removed)
	}
	f.eventually("a ConfigRestored event", func() bool {
		return len(f.eventsOf("NodeNetworkStatus", node, controllers.ReasonConfigRestored)) == 1
	})
	ev := f.eventsOf("NodeNetworkStatus", node, controllers.ReasonConfigRestored)[0]
	if ev.Type != corev1.EventTypeWarning || !strings.Contains(ev.Message, "node "+node+": ") || !strings.Contains(ev.Message, "removed") {
		t.Errorf("event %s %s: %s", ev.Type, ev.Reason, ev.Message)
	}
	t.Logf("event %s: %s", ev.Reason, ev.Message)

	// Altered by someone else: noticed at the next resync.
	first := c.LastTransitionTime
	time.Sleep(time.Second) // so that the transition time can move
	if err := os.WriteFile(conflist, []byte(`{"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "bridge"}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f.eventually("a second restore", func() bool { return strings.Contains(condition().Message, "restore 2 since") })
	if c := condition(); !strings.Contains(c.Message, "was changed by someone else") || !c.LastTransitionTime.After(first.Time) {
		t.Errorf("ConfigWritten after an alteration %+v, want a later transition than %v", c, first)
	}
	if now, err := os.ReadFile(conflist); err != nil || strings.Contains(string(now), `"mine"`) {
		t.Errorf("conflist after the alteration: %s (%v), want plexus's", now, err)
	}
	f.eventually("two ConfigRestored events", func() bool {
		return len(f.eventsOf("NodeNetworkStatus", node, controllers.ReasonConfigRestored)) == 2
	})
	t.Logf("kubectl get nodenetworkstatus -o yaml:\n%s", f.kubectl("get", "nodenetworkstatuses", "-o", "yaml"))
}

// A record marked as owing a teardown counts in teardownsPending until its
// DEL finishes.
func TestTeardownsPendingCountsRecordsMarkedFailed(t *testing.T) {
	f := newFixture(t)
	pod := f.pod("web", "")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatal(err)
	}
	db := f.pod("db", "")
	f.waitCached(db)
	dbNS := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c2", dbNS, db); err != nil {
		t.Fatal(err)
	}
	store := f.daemon.Engine.Store
	rec, err := store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if err := store.MarkFailed(rec, "DEL", errors.New("delegate bridge: DEL: device busy"), time.Now()); err != nil {
		t.Fatal(err)
	}
	f.daemon.NodeStatus.Poke()
	f.eventually("teardownsPending 1", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.TeardownsPending == 1 && nns.Status.Attachments == 2
	})
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatal(err)
	}
	f.daemon.NodeStatus.Poke()
	f.eventually("teardownsPending 0", func() bool {
		st := f.nodeStatus().Status
		return st.TeardownsPending == 0 && st.Attachments == 1
	})
	if _, err := f.cni("DEL", "c2", dbNS, db); err != nil {
		t.Fatal(err)
	}
}
