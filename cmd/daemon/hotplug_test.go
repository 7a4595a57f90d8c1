package daemon_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// KubeVirt names a VM's pod interfaces "pod" and 11 hex characters of a
// hash of the network's name, and asks for the MAC it chose.
const (
	ifBlue  = "pod16477688c0e"
	ifGreen = "pod9f86d081884"
	ifRed   = "podb5a3b5bc3ee"
)

func element(network, ifname, mac string) map[string]any {
	e := map[string]any{"name": network, "namespace": "team", "interface": ifname}
	if mac != "" {
		e["mac"] = mac
	}
	return e
}

func networksJSON(t *testing.T, elements ...map[string]any) string {
	t.Helper()
	if elements == nil {
		elements = []map[string]any{}
	}
	data, err := json.Marshal(elements)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// setNetworks changes a pod's networks annotation, as KubeVirt does to
// hot-plug an interface.
func (f *fixture) setNetworks(pod *corev1.Pod, value string) {
	f.t.Helper()
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{
		"k8s.v1.cni.cncf.io/networks": value}}})
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.client.Patch(context.Background(), pod, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		f.t.Fatalf("changing the networks of pod %s: %v", pod.Name, err)
	}
}

// statusNames is "network@interface" of each network-status entry.
func (f *fixture) statusNames(pod *corev1.Pod) []string {
	var out []string
	for _, s := range f.networkStatus(pod) {
		out = append(out, s.Name+"@"+s.Interface)
	}
	return out
}

func (f *fixture) recordOf(id string) *record.Record {
	f.t.Helper()
	rec, err := f.daemon.Engine.Store.Load(id)
	if err != nil {
		f.t.Fatalf("record %s: %v", id, err)
	}
	return rec
}

func ifnames(rec *record.Record) []string {
	var out []string
	for _, a := range rec.Attachments {
		out = append(out, a.IfName)
	}
	return out
}

func hasLink(t *testing.T, netns ns.NetNS, name string) bool {
	_, ok := plugintest.LinkIn(t, netns, name)
	return ok
}

// A KubeVirt-shaped hot-plug: a second network appended (with the MAC the
// VM wants), the first removed, then the whole list replaced. Each change
// shows as a link in the pod's netns, an entry of its network-status, an
// Event and a count in the node's status; each removal frees its address.
func TestHotplugAppendsRemovesAndReplaces(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.nad("green", f.macvlanNet("10.242.0.0/24"))
	f.nad("red", f.macvlanNet("10.243.0.0/24"))
	pod := f.pod("virt-launcher-vm1", networksJSON(t, element("blue", ifBlue, "02:00:00:00:00:01")))
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("network-status of the ADD", func() bool { return len(f.networkStatus(pod)) == 2 })

	// Appended: attached, with its MAC and an address of its network.
	start := time.Now()
	f.setNetworks(pod, networksJSON(t, element("blue", ifBlue, "02:00:00:00:00:01"), element("green", ifGreen, "02:00:00:00:00:02")))
	f.eventually("green in network-status", func() bool {
		return slices.Equal(f.statusNames(pod), []string{"defnet@eth0", "team/blue@" + ifBlue, "team/green@" + ifGreen})
	})
	// The status is written once the attach is done (the link alone
	// appears before its delegate has set its address).
	if l, _ := plugintest.LinkIn(t, netns, ifGreen); l.MAC != "02:00:00:00:00:02" || len(l.Addrs) != 1 || !strings.HasPrefix(l.Addrs[0], "10.242.0.") {
		t.Errorf("hot-plugged link %+v, want MAC 02:00:00:00:00:02 and one address in 10.242.0.0/24", l)
	}
	// A figure, not a check: the goal is 2 s.
	t.Logf("annotation changed to network-status entry: %s", time.Since(start))
	if st := statusEntry(f.networkStatus(pod), ifGreen); st == nil || st.Mac != "02:00:00:00:00:02" || len(st.IPs) != 1 {
		t.Errorf("status entry of the hot-plugged interface %+v", st)
	}
	f.waitLong("the AddedInterface Event of green", func() bool { return f.eventWith("virt-launcher-vm1", plugin.ReasonAddedInterface, ifGreen) != nil })
	if e := f.eventWith("virt-launcher-vm1", plugin.ReasonAddedInterface, ifGreen); !strings.Contains(e.Message, "from team/green") {
		t.Errorf("AddedInterface %q", e.Message)
	} else {
		checkOnPod(t, *e, pod, corev1.EventTypeNormal)
	}
	if a := attachmentOf(f.recordOf("c1"), ifGreen); a == nil || a.Origin != record.OriginHotplug || !a.InterfaceRequested {
		t.Errorf("record entry of the hot-plugged interface %+v, want origin hotplug, interface requested", a)
	}

	// The first removed: its link goes, its address is released.
	f.setNetworks(pod, networksJSON(t, element("green", ifGreen, "02:00:00:00:00:02")))
	f.eventually("the blue link gone", func() bool { return !hasLink(t, netns, ifBlue) })
	f.eventually("blue's address released", func() bool { return len(allocations(f, "blue")) == 0 })
	f.eventually("network-status without blue", func() bool {
		return slices.Equal(f.statusNames(pod), []string{"defnet@eth0", "team/green@" + ifGreen})
	})
	f.waitLong("the RemovedInterface Event", func() bool {
		return f.eventWith("virt-launcher-vm1", controllers.ReasonRemovedInterface, ifBlue) != nil
	})

	// The whole list replaced.
	f.setNetworks(pod, networksJSON(t, element("red", ifRed, ""), element("blue", ifBlue, "")))
	f.eventually("red and blue in network-status", func() bool {
		return slices.Equal(f.statusNames(pod), []string{"defnet@eth0", "team/red@" + ifRed, "team/blue@" + ifBlue})
	})
	for link, want := range map[string]bool{ifRed: true, ifBlue: true, ifGreen: false} {
		if got := hasLink(t, netns, link); got != want {
			t.Errorf("link %s present %v, want %v", link, got, want)
		}
	}
	if got := allocations(f, "green"); len(got) != 0 {
		t.Errorf("green's addresses after it was removed: %v", got)
	}
	f.eventually("the node's hot-plug counts", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.Hotplug != nil && nns.Status.Hotplug.Added == 3 && nns.Status.Hotplug.Removed == 2
	})
	if h := f.nodeStatus().Status.Hotplug; h.Mode != "builtin" || h.Failures != 0 || h.LastFailure != nil {
		t.Errorf("node hot-plug status %+v", h)
	}

	// The pod's DEL takes what hot-plug attached too.
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green", "red")
}

// What names no interface cannot be matched, so hot-plug neither attaches
// it nor detaches it: a Warning says so, nothing changes. The same holds
// for an annotation that does not parse.
func TestHotplugRefusesWhatItCannotMatch(t *testing.T) {
	f := newFixture(t)
	pod, netns := f.webOnBlueAndGreen()
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("network-status of the ADD", func() bool { return len(f.networkStatus(pod)) == 3 })

	for _, c := range []struct {
		name, networks string
		says           []string
	}{
		{"unnamed element added", "blue, green@data0, team/green", []string{"pod team/web", "network team/green", `field "interface"`, "team/green@<name>"}},
		{"numbered interface removed", "green@data0", []string{"pod team/web", "network team/blue", "net1", `field "interface"`}},
		{"unparsable", `[{"name": "blue"`, []string{"pod team/web", "networks annotation: invalid JSON"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.setNetworks(pod, c.networks)
			var warning *corev1.Event
			f.waitLong("the Warning", func() bool {
				for _, e := range f.eventsOf("Pod", "web", controllers.ReasonHotplugRefused) {
					if strings.Contains(e.Message, c.says[1]) {
						warning = &e
						return true
					}
				}
				return false
			})
			checkOnPod(t, *warning, pod, corev1.EventTypeWarning)
			for _, s := range c.says {
				if !strings.Contains(warning.Message, s) {
					t.Errorf("Warning %q lacks %q", warning.Message, s)
				}
			}
			if got := ifnames(f.recordOf("c1")); !slices.Equal(got, []string{"eth0", "net1", "data0"}) {
				t.Errorf("attachments %v after a refused change, want them unchanged", got)
			}
		})
	}
	if links := plugintest.Links(t, netns); !slices.Equal(slices.Sorted(slices.Values(links)), []string{"data0", "eth0", "lo", "net1"}) {
		t.Errorf("links %v, want those of the ADD", links)
	}
	if h := f.daemon.HotplugActivity.Status(); h.Added != 0 || h.Removed != 0 {
		t.Errorf("hot-plug counts %+v after refused changes only", h)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

// appendGreenAndWarn runs a pod on network blue, appends network green
// (ifGreen) to its annotation, and waits for the Warning of reason about
// green, which must name the pod and the network and contain want.
func (f *fixture) appendGreenAndWarn(reason string, want ...string) (*corev1.Pod, ns.NetNS) {
	t := f.t
	t.Helper()
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("virt-launcher-vm1", networksJSON(t, element("blue", ifBlue, "")))
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.setNetworks(pod, networksJSON(t, element("blue", ifBlue, ""), element("green", ifGreen, "")))
	f.waitLong("the "+reason+" Warning", func() bool { return f.eventWith("virt-launcher-vm1", reason, ifGreen) != nil })
	w := f.eventWith("virt-launcher-vm1", reason, ifGreen)
	for _, s := range append([]string{"pod team/virt-launcher-vm1", "network team/green"}, want...) {
		if !strings.Contains(w.Message, s) {
			t.Errorf("Warning %q lacks %q", w.Message, s)
		}
	}
	return pod, netns
}

// An element the engine refuses (here: its network does not exist yet)
// gets a HotplugRefused Warning and is not retried in a loop; creating the
// definition attaches it, without waiting out a backoff.
func TestHotplugRefusedUntilTheNetworkExists(t *testing.T) {
	f := newFixture(t)
	pod, netns := f.appendGreenAndWarn(controllers.ReasonHotplugRefused, "not found")
	if f.eventWith("virt-launcher-vm1", controllers.ReasonHotplugFailed, ifGreen) != nil {
		t.Error("a refusal was reported as a failure to retry")
	}
	f.nad("green", f.macvlanNet("10.242.0.0/24"))
	f.eventually("green attached once its definition exists", func() bool { return hasLink(t, netns, ifGreen) })
	f.eventually("green in network-status", func() bool { return statusEntry(f.networkStatus(pod), ifGreen) != nil })
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

// A delegate that fails (here: macvlan's master link is not there yet)
// gets a HotplugFailed Warning, counts in NodeNetworkStatus, and is
// retried with backoff until it succeeds.
func TestHotplugFailureIsReportedAndRetried(t *testing.T) {
	f := newFixture(t)
	master := plugintest.Name("plxm")
	f.nad("green", plugintest.Conf(M{"cniVersion": "1.0.0", "type": "macvlan", "master": master,
		"mode": "bridge", "ipam": plugintest.HostLocal("10.242.0.0/24", f.ipamDir())}))
	pod, netns := f.appendGreenAndWarn(controllers.ReasonHotplugFailed, "retrying", "Link not found")
	f.eventually("the failure in the node's status", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.Hotplug != nil && nns.Status.Hotplug.Failures > 0
	})
	last := f.nodeStatus().Status.Hotplug.LastFailure
	if last == nil || last.Pod != "team/virt-launcher-vm1" || last.Network != "team/green" || last.Interface != ifGreen ||
		last.Message == "" || last.Time.IsZero() {
		t.Errorf("last failure %+v", last)
	}
	if hasLink(t, netns, ifGreen) {
		t.Error("a failed attach left its link")
	}
	if ips := plugintest.Allocations(t, f.ipamDir(), "green"); len(ips) > 0 {
		t.Errorf("a failed attach left its address: %v", ips)
	}

	// The master appears: a retry attaches it.
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: master}, PeerName: master + "p"}
	if err := netlink.LinkAdd(veth); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = netlink.LinkDel(veth) })
	if err := netlink.LinkSetUp(veth); err != nil {
		t.Fatal(err)
	}
	f.eventually("green attached on a retry", func() bool { return hasLink(t, netns, ifGreen) })
	f.eventually("green in network-status", func() bool { return statusEntry(f.networkStatus(pod), ifGreen) != nil })
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

// The daemon stops between the annotation change and the attach: the
// daemon that comes next attaches at start, once.
func TestHotplugAfterADaemonRestart(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.nad("green", f.macvlanNet("10.242.0.0/24"))
	pod := f.pod("virt-launcher-vm1", networksJSON(t, element("blue", ifBlue, "")))
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.stopDaemon()
	f.setNetworks(pod, networksJSON(t, element("blue", ifBlue, ""), element("green", ifGreen, "")))
	f.startDaemon(f.daemonCfg)
	f.eventually("green attached by the next daemon", func() bool { return hasLink(t, netns, ifGreen) })
	f.eventually("green in network-status", func() bool {
		return slices.Equal(f.statusNames(pod), []string{"defnet@eth0", "team/blue@" + ifBlue, "team/green@" + ifGreen})
	})
	f.waitLong("the AddedInterface Event of green", func() bool { return f.eventWith("virt-launcher-vm1", plugin.ReasonAddedInterface, ifGreen) != nil })
	if got := ifnames(f.recordOf("c1")); !slices.Equal(got, []string{"eth0", ifBlue, ifGreen}) {
		t.Errorf("attachments %v, want green once", got)
	}
	if n := len(allocations(f, "green")); n != 1 {
		t.Errorf("green holds %d addresses, want 1", n)
	}
	if h := f.daemon.HotplugActivity.Status(); h.Added != 1 {
		t.Errorf("the restarted daemon hot-plugged %d attachments, want 1", h.Added)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

// A sandbox torn down while its pod's annotation changes, or before the
// controller got to it: nothing leaks, nothing is attached to a sandbox
// that is gone.
func TestHotplugRacingTheSandboxsDel(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.nad("green", f.macvlanNet("10.242.0.0/24"))
	for i := range 5 {
		pod := f.pod("virt-launcher-vm"+string(rune('a'+i)), networksJSON(t, element("blue", ifBlue, "")))
		f.waitCached(pod)
		netns := plugintest.NewNS(t)
		id := "race" + string(rune('a'+i))
		if _, err := f.cni("ADD", id, netns, pod); err != nil {
			t.Fatalf("ADD: %v", err)
		}
		f.setNetworks(pod, networksJSON(t, element("blue", ifBlue, ""), element("green", ifGreen, "")))
		if i%2 == 1 {
			f.eventually("green attached", func() bool { return hasLink(t, netns, ifGreen) })
		}
		if _, err := f.cni("DEL", id, netns, pod); err != nil {
			t.Fatalf("DEL: %v", err)
		}
		if err := f.client.Delete(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
		f.assertClean(netns, "defnet", "blue", "green")
		if _, err := f.daemon.Engine.Store.Load(id); err == nil {
			t.Errorf("record of %s left after its DEL", id)
		}
	}
	if ids, _ := f.daemon.Engine.Store.IDs(); len(ids) != 0 {
		t.Errorf("records left: %v", ids)
	}
}

// A host-network pod has no sandbox netns to attach to: one Warning.
func TestHotplugWarnsAHostNetworkPod(t *testing.T) {
	f := newFixture(t)
	pod := f.podWith("host", map[string]string{"k8s.v1.cni.cncf.io/networks": "blue@data0"}, func(s *corev1.PodSpec) { s.HostNetwork = true })
	f.waitLong("the Warning", func() bool { return len(f.eventsOf("Pod", "host", controllers.ReasonHotplugRefused)) == 1 })
	e := f.eventsOf("Pod", "host", controllers.ReasonHotplugRefused)[0]
	checkOnPod(t, e, pod, corev1.EventTypeWarning)
	if !strings.Contains(e.Message, "hostNetwork") || !strings.Contains(e.Message, "pod team/host") {
		t.Errorf("Warning %q", e.Message)
	}
	// Status changes of the pod bring it back to the controller; the
	// Warning stays one.
	f.running(pod, "10.250.0.1", corev1.ConditionTrue)
	f.setNetworks(pod, "blue@data0")
	time.Sleep(500 * time.Millisecond)
	if evs := f.eventsOf("Pod", "host", controllers.ReasonHotplugRefused); len(evs) != 1 || evs[0].Count != 1 {
		t.Errorf("Warnings %+v, want one, sent once", evs)
	}
}

// In the other modes the built-in controller does not run.
func TestHotplugModes(t *testing.T) {
	for _, c := range []struct {
		mode, want string
		err        bool
	}{{"", "builtin", false}, {"builtin", "builtin", false}, {"delegate-api", "delegate-api", false}, {"off", "off", false}, {"auto", "", true}} {
		got, err := daemon.ParseHotplugMode(c.mode)
		if got != c.want || (err != nil) != c.err {
			t.Errorf("ParseHotplugMode(%q) = %q, %v; want %q, error %v", c.mode, got, err, c.want, c.err)
		}
		if err != nil && (!strings.Contains(err.Error(), "--hotplug") || !strings.Contains(err.Error(), "hotplug.mode")) {
			t.Errorf("error %q names neither the flag nor the chart value", err)
		}
	}
	f := newFixture(t, func(f *fixture) { f.opts.HotplugMode = "off" })
	if f.daemon.Hotplug != nil {
		t.Error("the built-in controller is set up with --hotplug=off")
	}
	f.eventually("the mode in the node's status", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.Hotplug != nil && nns.Status.Hotplug.Mode == "off"
	})
}

func (f *fixture) eventWith(pod, reason, substring string) *corev1.Event {
	for _, e := range f.eventsOf("Pod", pod, reason) {
		if strings.Contains(e.Message, substring) {
			return &e
		}
	}
	return nil
}

func statusEntry(status []nadv1.NetworkStatus, ifname string) *nadv1.NetworkStatus {
	for i := range status {
		if status[i].Interface == ifname {
			return &status[i]
		}
	}
	return nil
}

func attachmentOf(rec *record.Record, ifname string) *record.Attachment {
	for i := range rec.Attachments {
		if rec.Attachments[i].IfName == ifname {
			return &rec.Attachments[i]
		}
	}
	return nil
}
