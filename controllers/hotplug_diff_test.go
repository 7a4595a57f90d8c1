package controllers

import (
	"slices"
	"strings"
	"testing"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

var vm = k8stypes.NamespacedName{Namespace: "team", Name: "virt-launcher-vm1"}

func att(network, ifname, origin string, requested bool) record.Attachment {
	return record.Attachment{Network: network, IfName: ifname, Origin: origin, InterfaceRequested: requested, Result: []byte(`{}`)}
}

func sandbox(atts ...record.Attachment) *record.Record {
	all := append([]record.Attachment{{Network: "defnet", IfName: "eth0", Default: true, Result: []byte(`{}`)}}, atts...)
	return &record.Record{ContainerID: "c1", Attachments: all}
}

func parse(t *testing.T, v string) []selection.Selection {
	t.Helper()
	sels, err := selection.Parse(v, "team")
	if err != nil {
		t.Fatal(err)
	}
	return sels
}

func names(p *hotplugPlan) (detach, attach []string) {
	for _, a := range p.Detach {
		detach = append(detach, a.Network+"@"+a.IfName)
	}
	for _, s := range p.Attach {
		attach = append(attach, s.Key().String()+"@"+s.Interface)
	}
	return detach, attach
}

func TestPlanHotplugMatchesByNetworkAndInterface(t *testing.T) {
	for _, c := range []struct {
		name, annotation string
		rec              *record.Record
		detach, attach   []string
		refused          int
	}{
		{name: "unchanged", annotation: "blue@pod1a2b3c4d5e6",
			rec: sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true))},
		{name: "appended", annotation: "blue@pod1a2b3c4d5e6, green@pod7f8e9d0c1b2",
			rec:    sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true)),
			attach: []string{"team/green@pod7f8e9d0c1b2"}},
		{name: "first removed", annotation: "green@pod7f8e9d0c1b2",
			rec: sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true),
				att("team/green", "pod7f8e9d0c1b2", record.OriginHotplug, true)),
			detach: []string{"team/blue@pod1a2b3c4d5e6"}},
		{name: "all removed", annotation: "",
			rec:    sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true)),
			detach: []string{"team/blue@pod1a2b3c4d5e6"}},
		{name: "same interface, other network: replaced", annotation: "green@pod1a2b3c4d5e6",
			rec:    sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true)),
			detach: []string{"team/blue@pod1a2b3c4d5e6"}, attach: []string{"team/green@pod1a2b3c4d5e6"}},
		{name: "other namespace is another network", annotation: "infra/blue@pod1a2b3c4d5e6",
			rec:    sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true)),
			detach: []string{"team/blue@pod1a2b3c4d5e6"}, attach: []string{"infra/blue@pod1a2b3c4d5e6"}},
		{name: "attributes changed: nothing", annotation: `[{"name": "blue", "interface": "pod1a2b3c4d5e6", "mac": "02:00:00:00:00:09"}]`,
			rec: sandbox(att("team/blue", "pod1a2b3c4d5e6", record.OriginSelection, true))},
		{name: "default networks untouched", annotation: "",
			rec: sandbox(att("kube-system/sidecar", "net1", record.OriginDefaultNetworks, false))},
		{name: "delegate API's attachments taken over after a mode switch", annotation: "green@dnc1",
			rec:    sandbox(att("team/blue", "dnc0", record.OriginDelegateAPI, true), att("team/green", "dnc1", record.OriginDelegateAPI, true)),
			detach: []string{"team/blue@dnc0"}},
		{name: "unnamed elements kept", annotation: "blue, blue, green@data0",
			rec:    sandbox(att("team/blue", "net1", record.OriginSelection, false), att("team/blue", "net2", record.OriginSelection, false)),
			attach: []string{"team/green@data0"}},
		{name: "unnamed element added: refused", annotation: "blue, green",
			rec:     sandbox(att("team/blue", "net1", record.OriginSelection, false)),
			refused: 1},
		{name: "unnamed element removed: refused", annotation: "green@data0",
			rec:    sandbox(att("team/blue", "net1", record.OriginSelection, false)),
			attach: []string{"team/green@data0"}, refused: 1},
		{name: "old record: named selection unplugged", annotation: "",
			rec:    sandbox(att("team/blue", "data0", "", false)),
			detach: []string{"team/blue@data0"}},
		{name: "old record: numbered selection refused", annotation: "",
			rec:     sandbox(att("team/blue", "net1", "", false)),
			refused: 1},
		{name: "old record: a default network numbered netN is not the annotation's", annotation: "",
			rec: sandbox(att("kube-system/sidecar", "net1", "", false))},
		{name: "an attach cut short is attached again (the engine undoes it first)", annotation: "green@pod7f8e9d0c1b2",
			rec:    sandbox(record.Attachment{Network: "team/green", IfName: "pod7f8e9d0c1b2", Origin: record.OriginHotplug, InterfaceRequested: true}),
			attach: []string{"team/green@pod7f8e9d0c1b2"}},
		{name: "an attach cut short and no longer wanted is detached", annotation: "",
			rec:    sandbox(record.Attachment{Network: "team/green", IfName: "pod7f8e9d0c1b2", Origin: record.OriginHotplug, InterfaceRequested: true}),
			detach: []string{"team/green@pod7f8e9d0c1b2"}},
		{name: "duplicate element attached once", annotation: "green@x0, green@x0",
			rec: sandbox(), attach: []string{"team/green@x0"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := planHotplug(vm, parse(t, c.annotation), c.rec, map[string]bool{"kube-system/sidecar": true})
			detach, attach := names(p)
			if !slices.Equal(detach, c.detach) || !slices.Equal(attach, c.attach) || len(p.Refused) != c.refused {
				t.Errorf("detach %v attach %v refused %+v; want detach %v attach %v, %d refused",
					detach, attach, p.Refused, c.detach, c.attach, c.refused)
			}
		})
	}
}

func TestPlanHotplugRefusalsSayWhatAndHow(t *testing.T) {
	p := planHotplug(vm, parse(t, "green"), sandbox(att("team/blue", "net1", record.OriginSelection, false)), nil)
	if len(p.Refused) != 2 {
		t.Fatalf("refused %+v, want the added and the removed element", p.Refused)
	}
	for _, r := range p.Refused {
		for _, want := range []string{"pod team/virt-launcher-vm1", "network team/", `field "interface"`, "hot-"} {
			if !strings.Contains(r.Message, want) {
				t.Errorf("refusal %q lacks %q", r.Message, want)
			}
		}
	}
	if added := p.Refused[0].Message; !strings.Contains(added, `"team/green@<name>"`) || !strings.Contains(added, `"interface": "<name>"`) {
		t.Errorf("refusal of an added element %q does not say how to name its interface", added)
	}
	if removed := p.Refused[1].Message; !strings.Contains(removed, "net1") || !strings.Contains(removed, "until the pod is recreated") {
		t.Errorf("refusal of a removed element %q does not name its interface and what happens to it", removed)
	}
}

func TestIsNumbered(t *testing.T) {
	for name, want := range map[string]bool{"net1": true, "net12": true, "net": false, "net1a": false, "eth1": false, "pod1a2b3c4d5e6": false, "netx": false} {
		if got := isNumbered(name); got != want {
			t.Errorf("isNumbered(%q) = %v, want %v", name, got, want)
		}
	}
}

// Breaker (issue 15): after a switch from delegate-api to builtin, a pod's
// annotation still lists the interface the dynamic networks controller
// attached through the delegate API. The plan must not attach it again:
// on the real cluster every reconcile of such a pod (each annotation or
// network-status change) ran Engine.Attach on it, which answered the
// stored result, and wrote a spurious AddedInterface Event and raised
// NodeNetworkStatus.status.hotplug.added (seen: count 7, added 8 for one
// real attach).
func TestPlanHotplugDelegateAPIAttachmentListedIsNotAttachedAgain(t *testing.T) {
	p := planHotplug(vm, parse(t, "blue@dnc0"),
		sandbox(att("team/blue", "dnc0", record.OriginDelegateAPI, true)), nil)
	detach, attach := names(p)
	if len(detach) != 0 || len(attach) != 0 {
		t.Fatalf("a delegate-API attachment the annotation lists: want no change, got detach %v attach %v", detach, attach)
	}
}

// Breaker (issue 15): an attachment hot-plug began but did not finish (no
// result: a daemon crash cut it short, or its ADD failed and so did the
// rollback's DEL, e.g. macvlan with dhcp IPAM and no dhcp daemon) is in
// the record. The engine's Attach redoes such an entry ("deleted and
// attached again", README), but the plan counts it as attached and never
// asks: on the real cluster the element stayed unattached, with no retry
// and no further Event, while the annotation listed it.
func TestPlanHotplugUnfinishedAttachIsAttachedAgain(t *testing.T) {
	unfinished := att("team/blue", "pod1a2b3c4d5e6", record.OriginHotplug, true)
	unfinished.Result = nil
	p := planHotplug(vm, parse(t, "blue@pod1a2b3c4d5e6"), sandbox(unfinished), nil)
	_, attach := names(p)
	if !slices.Equal(attach, []string{"team/blue@pod1a2b3c4d5e6"}) {
		t.Fatalf("an unfinished hot-plug attach the annotation lists: want it attached again, got attach %v", attach)
	}
}
