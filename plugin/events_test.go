package plugin_test

import (
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/containernetworking/cni/libcni"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// eventLog keeps the Events the engine reports, in order; the daemon's
// tests cover the real sink against an API server.
type eventLog struct {
	mu     sync.Mutex
	events []reported
}

type reported struct {
	pod                   record.PodRef
	kind, reason, message string
}

func (l *eventLog) Event(pod record.PodRef, eventType, reason, message string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.events = append(l.events, reported{pod, eventType, reason, message})
}

func (l *eventLog) take() []reported {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.events
	l.events = nil
	return out
}

func TestAddReportsOneAddedInterfacePerInterface(t *testing.T) {
	f := newFixture(t, "1.0.0")
	events := &eventLog{}
	f.engine.Events = events
	f.addNAD("team", "static-net", f.staticNet("static-net"))
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	// A delegate that makes no interface and reports an empty result (the
	// faulty test plugin, passing, alone): nothing to announce.
	binDir := plugintest.BinDir(t)
	plugintest.InstallFaulty(t, binDir)
	f.engine.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	f.addNAD("team", "no-interface", plugintest.Conf(M{"cniVersion": "1.0.0", "plugins": []M{plugintest.Faulty("", 0, t.TempDir())}}))
	pod := f.addPod("team", "web", map[string]string{"k8s.v1.cni.cncf.io/networks": `[
	  {"name":"static-net","ips":["192.168.77.5/24"]},
	  {"name":"no-interface"},
	  {"name":"hl-net","interface":"data0"}]`})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	want := []*regexp.Regexp{
		regexp.MustCompile(`^Add eth0 \[10\.240\.0\.\d+/24\] from defnet$`),
		regexp.MustCompile(`^Add net1 \[192\.168\.77\.5/24\] from team/static-net$`),
		regexp.MustCompile(`^Add data0 \[10\.241\.0\.\d+/24\] from team/hl-net$`),
	}
	got := events.take()
	if len(got) != len(want) {
		t.Fatalf("events %+v, want %d AddedInterface", got, len(want))
	}
	for i, e := range got {
		if e.kind != plugin.EventNormal || e.reason != plugin.ReasonAddedInterface || !want[i].MatchString(e.message) {
			t.Errorf("event %d: %s %s %q, want Normal AddedInterface matching %s", i, e.kind, e.reason, e.message, want[i])
		}
		if e.pod != (record.PodRef{Namespace: "team", Name: "web", UID: "uid-web"}) {
			t.Errorf("event %d on %+v, want the pod with its UID", i, e.pod)
		}
	}
	// DEL reports nothing.
	f.mustDo(f.req("DEL", "c1", netns, pod))
	if got := events.take(); len(got) != 0 {
		t.Errorf("events of a DEL: %+v", got)
	}
	f.assertClean(netns, "c1", "hl-net")
}

func TestMissingNetworkIsAWarningAndAFailedAddAnnouncesNothing(t *testing.T) {
	f := newFixture(t, "1.0.0")
	events := &eventLog{}
	f.engine.Events = events
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "broken", plugintest.Conf(M{"cniVersion": "1.0.0", "type": "macvlan",
		"master": "plxnosuchlink0", "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)}))
	for _, c := range []struct {
		name        string
		annotations map[string]string
		warning     string // the missing network, or "" for none
	}{
		{"selected", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net, nope"}, "team/nope"},
		{"default-override", map[string]string{"v1.multus-cni.io/default-network": "other/alt"}, "other/alt"},
		// Attached, then rolled back: no interface stays, none is announced.
		{"rolled-back", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net, broken"}, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			f.engine.IsolateNamespaces = c.name != "default-override"
			pod := f.addPod("team", c.name, c.annotations)
			netns := plugintest.NewNS(t)
			if _, err := f.do(f.req("ADD", "c-"+c.name, netns, pod)); err == nil {
				t.Fatal("ADD succeeded")
			}
			f.assertClean(netns, "c-"+c.name, "hl-net", "broken")
			got := events.take()
			if c.warning == "" {
				if len(got) != 0 {
					t.Errorf("events of a failed ADD: %+v", got)
				}
				return
			}
			if len(got) != 1 || got[0].kind != plugin.EventWarning || got[0].reason != plugin.ReasonNoNetworkFound ||
				!strings.Contains(got[0].message, c.warning+" not found") || got[0].pod.UID != pod.UID {
				t.Errorf("events %+v, want one Warning NoNetworkFound naming %s on the pod", got, c.warning)
			}
		})
	}
}
