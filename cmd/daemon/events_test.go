package daemon_test

import (
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// waitLong is f.eventually with room for the Events writer's retry: an
// Event the API server did not answer is tried again up to 10 s later.
func (f *fixture) waitLong(what string, cond func() bool) {
	f.t.Helper()
	f.waitFor(what, 90*time.Second, cond)
}

func TestAddPutsItsEventsOnThePod(t *testing.T) {
	f := newFixture(t)
	pod, netns := f.webOnBlueAndGreen()
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("AddedInterface Events", func() bool { return len(f.eventsOf("Pod", "web", "AddedInterface")) == 3 })
	want := map[string]*regexp.Regexp{
		"eth0":  regexp.MustCompile(`^Add eth0 \[10\.240\.0\.\d+/24\] from defnet$`),
		"net1":  regexp.MustCompile(`^Add net1 \[10\.241\.0\.\d+/24\] from team/blue$`),
		"data0": regexp.MustCompile(`^Add data0 \[10\.242\.0\.\d+/24\] from team/green$`),
	}
	for _, e := range f.eventsOf("Pod", "web", "AddedInterface") {
		ifname := strings.Fields(e.Message)[1]
		if re, ok := want[ifname]; !ok || !re.MatchString(e.Message) {
			t.Errorf("AddedInterface %q, want one of %v", e.Message, want)
		}
		delete(want, ifname)
		checkOnPod(t, e, pod, corev1.EventTypeNormal)
	}

	// A missing network: a Warning on the pod, and the runtime's retry
	// (kubelet retries the sandbox) raises its count rather than adding
	// an Event.
	lost := f.pod("lost", "blue, nope")
	f.waitCached(lost)
	for i, id := range []string{"c2", "c3"} {
		if _, err := f.cni("ADD", id, plugintest.NewNS(t), lost); err == nil {
			t.Fatal("ADD of a pod naming a missing network succeeded")
		}
		f.eventually("the NoNetworkFound Warning", func() bool {
			events := f.eventsOf("Pod", "lost", "NoNetworkFound")
			return len(events) == 1 && int(events[0].Count) == i+1
		})
	}
	warning := f.eventsOf("Pod", "lost", "NoNetworkFound")[0]
	checkOnPod(t, warning, lost, corev1.EventTypeWarning)
	if !strings.Contains(warning.Message, "team/nope not found") {
		t.Errorf("NoNetworkFound message %q does not name team/nope", warning.Message)
	}
	if got := f.eventsOf("Pod", "lost", "AddedInterface"); len(got) != 0 {
		t.Errorf("AddedInterface Events of a failed ADD: %+v", got)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

func checkOnPod(t *testing.T, e corev1.Event, pod *corev1.Pod, eventType string) {
	t.Helper()
	o := e.InvolvedObject
	if o.Kind != "Pod" || o.APIVersion != "v1" || o.Namespace != pod.Namespace || o.Name != pod.Name || o.UID != pod.UID {
		t.Errorf("Event %s on %+v, want pod %s/%s UID %s", e.Reason, o, pod.Namespace, pod.Name, pod.UID)
	}
	if e.Type != eventType || e.Source.Component != "plexus" || e.Source.Host != node || e.Namespace != pod.Namespace {
		t.Errorf("Event %s: type %s, source %+v, namespace %s; want %s from plexus on %s in %s",
			e.Reason, e.Type, e.Source, e.Namespace, eventType, node, pod.Namespace)
	}
}

func TestAddedInterfaceEventsOffLeaveOnePatchPerAdd(t *testing.T) {
	f := newFixture(t, func(f *fixture) { f.opts.AddedInterfaceEvents = false })
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("web", "blue")
	lost := f.pod("lost", "nope")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)

	f.api.Take()
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("network-status", func() bool { return len(f.networkStatus(pod)) == 2 })
	time.Sleep(200 * time.Millisecond) // let any stray request show
	if counts, events := controllertest.ForPods(f.api.Take()); counts["PATCH pods/status"] != 1 || len(counts) != 1 || len(events) != 0 {
		t.Errorf("API requests per ADD with AddedInterface Events off: %v, want exactly one PATCH of pods/status", counts)
	}

	// Warnings are still written. The writer keeps its queue's order, so
	// once the Warning is there, an AddedInterface of the earlier ADD
	// would be too.
	if _, err := f.cni("ADD", "c2", plugintest.NewNS(t), lost); err == nil {
		t.Fatal("ADD of a pod naming a missing network succeeded")
	}
	f.eventually("the NoNetworkFound Warning", func() bool { return len(f.eventsOf("Pod", "lost", "NoNetworkFound")) == 1 })
	if got := f.eventsOf("Pod", "web", "AddedInterface"); len(got) != 0 {
		t.Errorf("AddedInterface Events with --added-interface-events=false: %+v", got)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

// An ADD neither waits for nor fails on its Events: not with the API
// server frozen, and not with the writer's queue full.
func TestEventsNeverHoldOrFailAnAdd(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("web", "blue")
	late := f.pod("late", "blue")
	f.waitCached(pod)
	netns, lateNetns := plugintest.NewNS(t), plugintest.NewNS(t)

	f.signalAPIServer(syscall.SIGSTOP)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD with the API server frozen: %v", err)
	}
	// Far more Events than the queue holds (1,000 waiting, 1,000 in the
	// writer's channel): each call returns at once, the rest are dropped.
	flood := record.PodRef{Namespace: "team", Name: "flood", UID: "0000"}
	for i := 0; i < 5000; i++ {
		f.daemon.Events.Event(flood, corev1.EventTypeWarning, "Flood", "the same Event again")
	}
	if _, err := f.cni("ADD", "c2", lateNetns, late); err != nil {
		t.Fatalf("ADD with the API server frozen and the Events queue full: %v", err)
	}
	f.signalAPIServer(syscall.SIGCONT)

	f.waitLong("the frozen ADD's AddedInterface Events", func() bool { return len(f.eventsOf("Pod", "web", "AddedInterface")) == 2 })
	f.eventually("both network-status", func() bool { return len(f.networkStatus(pod)) == 2 && len(f.networkStatus(late)) == 2 })
	// The flood is one Event whose count the spam filter held to its
	// burst, not thousands of writes.
	f.waitLong("the flood's Event", func() bool { return len(f.eventsOf("Pod", "flood", "Flood")) == 1 })
	if c := f.eventsOf("Pod", "flood", "Flood")[0].Count; c < 1 || c > 25 {
		t.Errorf("the flood's Event has count %d, want at most 25 (the per-pod burst)", c)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if _, err := f.cni("DEL", "c2", lateNetns, late); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue")
	f.assertClean(lateNetns, "defnet", "blue")
}
