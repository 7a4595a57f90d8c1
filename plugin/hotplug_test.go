package plugin_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/testutils"
	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

func (f *fixture) attach(pod *plugin.Pod, sel selection.Selection) (*current.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.engine.Attach(ctx, &plugin.AttachRequest{Pod: podRef(pod), Selection: &sel, Origin: record.OriginHotplug})
}

func (f *fixture) detach(id, ifname string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return f.engine.Detach(ctx, id, ifname, false)
}

func podRef(p *plugin.Pod) record.PodRef {
	return record.PodRef{Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

func (f *fixture) ifnames(id string) []string {
	f.t.Helper()
	rec, err := f.engine.Store.Load(id)
	if err != nil {
		f.t.Fatal(err)
	}
	var out []string
	for _, a := range rec.Attachments {
		out = append(out, a.IfName)
	}
	return out
}

// A running pod gets a network added and removed, with the real plugins:
// macvlan with the MAC and address it asks for, and bridge + host-local;
// its status follows, a second attach of the same runs nothing, a second
// detach is a no-op, and the sandbox's DEL releases what hot-plug added.
func TestAttachAndDetachOnALiveSandbox(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "static-net", f.staticNet("static-net"))
	bridge := newBridge(t)
	f.addNAD("team", "hl2", plugintest.Conf(M{"cniVersion": "1.0.0", "name": "hl2", "plugins": []M{
		{"type": "bridge", "bridge": bridge, "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)}}}))
	pod := f.addPod("team", "vm", map[string]string{"k8s.v1.cni.cncf.io/networks": `[{"name":"hl-net","interface":"pod1a"}]`})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	if rec, err := f.engine.Sandbox(podRef(pod)); err != nil || rec.ContainerID != "c1" {
		t.Fatalf("Sandbox(pod) = %v, %v; want the record of c1", rec, err)
	}
	sel := selection.Selection{Name: "static-net", Namespace: "team", Interface: "pod2b", IPs: []string{"192.168.77.9/24"}, MAC: "02:aa:bb:cc:dd:09"}
	res, err := f.attach(pod, sel)
	if err != nil {
		t.Fatalf("attach: %v", err)
	}
	link, ok := plugintest.LinkIn(t, netns, "pod2b")
	if !ok || link.MAC != "02:aa:bb:cc:dd:09" || !slices.Equal(link.Addrs, []string{"192.168.77.9/24"}) {
		t.Errorf("pod2b = %+v (present %v), want MAC 02:aa:bb:cc:dd:09 and 192.168.77.9/24", link, ok)
	}
	if len(res.IPs) != 1 || res.IPs[0].Address.String() != "192.168.77.9/24" {
		t.Errorf("attach result IPs = %v", res.IPs)
	}
	status := f.published.status["c1"]
	if len(status) != 3 || status[2].Interface != "pod2b" || status[2].Name != "team/static-net" || status[2].Mac != "02:aa:bb:cc:dd:09" ||
		!slices.Equal(status[2].IPs, []string{"192.168.77.9"}) {
		t.Errorf("published status after attach = %+v, want eth0, pod1a, then pod2b with exactly the asked MAC and IP", status)
	}
	rec, _ := f.engine.Store.Load("c1")
	if a := rec.Attachments[2]; a.Origin != record.OriginHotplug || !a.InterfaceRequested || !a.Added() {
		t.Errorf("record entry = origin %q requested %v added %v", a.Origin, a.InterfaceRequested, a.Added())
	}
	if a := rec.Attachments[1]; a.Origin != record.OriginSelection || !a.InterfaceRequested {
		t.Errorf("ADD's selection entry = origin %q requested %v", a.Origin, a.InterfaceRequested)
	}

	// The same attach again (a controller retrying) runs nothing.
	again, err := f.attach(pod, sel)
	if err != nil || again.IPs[0].Address.String() != "192.168.77.9/24" {
		t.Fatalf("second attach = %v, %v", again, err)
	}
	if got := f.ifnames("c1"); !slices.Equal(got, []string{"eth0", "pod1a", "pod2b"}) {
		t.Errorf("record after a repeated attach = %v", got)
	}

	if _, err := f.attach(pod, selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod3c"}); err != nil {
		t.Fatalf("attach hl2: %v", err)
	}
	if ips := plugintest.Allocations(t, f.dataDir, "hl2"); len(ips) != 1 {
		t.Errorf("hl2 allocations after attach = %v, want one", ips)
	}
	if ports := bridgePorts(t, bridge); len(ports) != 1 {
		t.Errorf("ports of bridge %s after attach = %v, want the pod's one", bridge, ports)
	}
	if err := f.detach("c1", "pod3c"); err != nil {
		t.Fatalf("detach: %v", err)
	}
	if _, ok := plugintest.LinkIn(t, netns, "pod3c"); ok {
		t.Errorf("pod3c still in the pod after detach: %v", plugintest.Links(t, netns))
	}
	if ips := plugintest.Allocations(t, f.dataDir, "hl2"); len(ips) > 0 {
		t.Errorf("hl2 allocation not released by detach: %v", ips)
	}
	if ports := bridgePorts(t, bridge); len(ports) > 0 {
		t.Errorf("host end of the detached interface still on bridge %s: %v", bridge, ports)
	}
	if got := f.ifnames("c1"); !slices.Equal(got, []string{"eth0", "pod1a", "pod2b"}) {
		t.Errorf("record after detach = %v", got)
	}
	if s := f.published.status["c1"]; len(s) != 3 || s[2].Interface != "pod2b" {
		t.Errorf("status after detach = %+v", s)
	}
	if err := f.detach("c1", "pod3c"); err != nil {
		t.Errorf("second detach: %v, want nil (idempotent)", err)
	}
	if err := f.detach("c1", "eth0"); err == nil || !strings.Contains(err.Error(), "default network") {
		t.Errorf("detach of eth0 = %v, want a refusal naming the default network", err)
	}

	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl-net", "hl2")
	if err := f.detach("c1", "pod2b"); err != nil {
		t.Errorf("detach after the sandbox is gone: %v, want nil", err)
	}
	if _, err := f.engine.Sandbox(podRef(pod)); !errors.Is(err, plugin.ErrNoSandbox) {
		t.Errorf("Sandbox after DEL = %v, want ErrNoSandbox", err)
	}
	if _, err := f.attach(pod, sel); !errors.Is(err, plugin.ErrNoSandbox) {
		t.Errorf("attach after DEL = %v, want ErrNoSandbox", err)
	}
}

// An attach whose delegate fails is rolled back: its interface and its
// address are gone, the record is as before, and the sandbox lives on.
func TestFailedAttachIsRolledBack(t *testing.T) {
	f := newFixture(t, "1.0.0")
	binDir := plugintest.BinDir(t)
	plugintest.InstallFaulty(t, binDir)
	f.engine.CNI = libcni.NewCNIConfigWithCacheDir([]string{binDir}, t.TempDir(), nil)
	f.addNAD("team", "chained", plugintest.Conf(M{"cniVersion": "1.0.0", "plugins": []M{
		{"type": "macvlan", "master": plugintest.Veth(t), "ipam": plugintest.HostLocal("10.243.0.0/24", f.dataDir)},
		plugintest.Faulty("no room for this one", 0, t.TempDir()),
	}}))
	pod := f.addPod("team", "vm", nil)
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	_, err := f.attach(pod, selection.Selection{Name: "chained", Namespace: "team", Interface: "pod9"})
	if err == nil || !strings.Contains(err.Error(), "no room for this one") {
		t.Fatalf("attach = %v, want the delegate's error", err)
	}
	if _, ok := plugintest.LinkIn(t, netns, "pod9"); ok {
		t.Errorf("pod9 left in the pod: %v", plugintest.Links(t, netns))
	}
	if ips := plugintest.Allocations(t, f.dataDir, "chained"); len(ips) > 0 {
		t.Errorf("address of the failed attach leaked: %v", ips)
	}
	if got := f.ifnames("c1"); !slices.Equal(got, []string{"eth0"}) {
		t.Errorf("record after a failed attach = %v, want eth0 alone", got)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "chained")
}

// A detach needs no netns: the pod's netns is gone (the pod is dying), and
// the address is still released.
func TestDetachWithTheNetnsGone(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl2", f.hostLocalNet("10.243.0.0/24"))
	pod := f.addPod("team", "vm", nil)
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	if _, err := f.attach(pod, selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod1"}); err != nil {
		t.Fatal(err)
	}
	if err := netns.Close(); err != nil {
		t.Fatal(err)
	}
	if err := testutils.UnmountNS(netns); err != nil {
		t.Fatal(err)
	}
	if err := f.detach("c1", "pod1"); err != nil {
		t.Fatalf("detach with the netns gone: %v", err)
	}
	if ips := plugintest.Allocations(t, f.dataDir, "hl2"); len(ips) > 0 {
		t.Errorf("address not released: %v", ips)
	}
	f.mustDo(f.req("DEL", "c1", nil, pod))
	f.assertClean(nil, "c1", "hl2")
}

// The daemon died after recording an attach and running its delegate,
// before the result was stored: the next attach of that interface undoes
// the unfinished one first, so the pod ends with one interface and one
// address, not two.
func TestUnfinishedAttachIsRedoneOnce(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl2", f.hostLocalNet("10.243.0.0/24"))
	pod := f.addPod("team", "vm", nil)
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))
	sel := selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod1"}
	if _, err := f.attach(pod, sel); err != nil {
		t.Fatal(err)
	}
	// Make the record look as the crash left it: entry on disk, no result.
	rec, _ := f.engine.Store.Load("c1")
	rec.Attachments[1].Result = nil
	if err := f.engine.Store.Rewrite(rec); err != nil {
		t.Fatal(err)
	}
	if _, err := f.engine.Sandbox(podRef(pod)); err != nil {
		t.Fatalf("a sandbox with an unfinished attach must stay live: %v", err)
	}
	if _, err := f.attach(pod, sel); err != nil {
		t.Fatalf("attach after the crash: %v", err)
	}
	if ips := plugintest.Allocations(t, f.dataDir, "hl2"); len(ips) != 1 {
		t.Errorf("hl2 allocations = %v, want exactly one", ips)
	}
	if got := f.ifnames("c1"); !slices.Equal(got, []string{"eth0", "pod1"}) {
		t.Errorf("record = %v", got)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl2")
}

// The sandbox-wide rules hold for an attach: an interface name in use, a
// second claim on the default route, a bad name, a network the pod may
// not use, and an attach without an interface name are refused before
// anything runs.
func TestAttachRefusals(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "hl2", f.hostLocalNet("10.243.0.0/24"))
	f.addNAD("other", "private", f.hostLocalNet("10.244.0.0/24"))
	pod := f.addPod("team", "vm", map[string]string{"k8s.v1.cni.cncf.io/networks": `[{"name":"hl-net","interface":"pod1","default-route":[]}]`})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	for _, c := range []struct {
		sel  selection.Selection
		want string
	}{
		{selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod1"}, `"pod1" is already used by network team/hl-net`},
		{selection.Selection{Name: "hl2", Namespace: "team", Interface: "eth0"}, `"eth0" is already used`},
		{selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod2", DefaultRoute: []string{"10.243.0.1"}}, "already has the pod's IPv4 default route"},
		{selection.Selection{Name: "hl2", Namespace: "team", Interface: "a/b"}, `field "interface"`},
		{selection.Selection{Name: "hl2", Namespace: "team"}, `field "interface" is empty`},
		{selection.Selection{Name: "private", Namespace: "other", Interface: "pod3"}, "namespace isolation"},
	} {
		if _, err := f.attach(pod, c.sel); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("attach %+v = %v, want an error containing %q", c.sel, err, c.want)
		}
	}
	if got := f.ifnames("c1"); !slices.Equal(got, []string{"eth0", "pod1"}) {
		t.Errorf("record after refusals = %v", got)
	}
	if ips := plugintest.Allocations(t, f.dataDir, "hl2"); len(ips) > 0 {
		t.Errorf("a refused attach allocated: %v", ips)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl-net")
}

// A record an earlier plexus wrote (results by position, no origin, no
// pod index) still loads with its results, is found by its pod after
// Reindex, takes an attach, and is torn down whole.
func TestEarlierRecordStillWorks(t *testing.T) {
	f := newFixture(t, "1.0.0")
	f.addNAD("team", "hl-net", f.hostLocalNet("10.241.0.0/24"))
	f.addNAD("team", "hl2", f.hostLocalNet("10.243.0.0/24"))
	pod := f.addPod("team", "vm", map[string]string{"k8s.v1.cni.cncf.io/networks": "hl-net"})
	netns := plugintest.NewNS(t)
	f.mustDo(f.req("ADD", "c1", netns, pod))

	// Rewrite the files as an earlier plexus wrote them.
	dir := f.stateDir
	rec, _ := f.engine.Store.Load("c1")
	var old struct {
		ContainerID string            `json:"containerID"`
		Results     []json.RawMessage `json:"results"`
	}
	old.ContainerID = "c1"
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		r, _ := json.Marshal(map[string]json.RawMessage{"result": a.Result})
		old.Results = append(old.Results, r)
		a.Result, a.Origin, a.InterfaceRequested = nil, "", false
	}
	v1, _ := json.Marshal(rec)
	res1, _ := json.Marshal(old)
	if err := os.WriteFile(filepath.Join(dir, "c1.json"), v1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "c1.results"), res1, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "pods")); err != nil {
		t.Fatal(err)
	}

	loaded, err := f.engine.Store.Load("c1")
	if err != nil || !loaded.Attachments[0].Added() || !loaded.Attachments[1].Added() {
		t.Fatalf("earlier record = %+v, %v; want both results back", loaded, err)
	}
	if _, err := f.engine.Sandbox(podRef(pod)); !errors.Is(err, plugin.ErrNoSandbox) {
		t.Errorf("Sandbox before Reindex = %v, want ErrNoSandbox (no index link yet)", err)
	}
	if n, err := f.engine.Store.Reindex(); err != nil || n != 1 {
		t.Errorf("Reindex = %d, %v; want 1 link made", n, err)
	}
	if _, err := f.attach(pod, selection.Selection{Name: "hl2", Namespace: "team", Interface: "pod1"}); err != nil {
		t.Fatalf("attach to a sandbox an earlier plexus attached: %v", err)
	}
	f.mustDo(f.req("DEL", "c1", netns, pod))
	f.assertClean(netns, "c1", "hl-net", "hl2")
}

// bridgePorts lists the links enslaved to a bridge of the test's netns.
func bridgePorts(t *testing.T, bridge string) []string {
	t.Helper()
	br, err := netlink.LinkByName(bridge)
	if err != nil {
		t.Fatalf("bridge %s: %v", bridge, err)
	}
	links, err := netlink.LinkList()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range links {
		if l.Attrs().MasterIndex == br.Attrs().Index {
			out = append(out, l.Attrs().Name)
		}
	}
	return out
}
