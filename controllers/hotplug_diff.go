package controllers

import (
	"fmt"
	"strings"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// hotplugPlan is what a pod's networks annotation asks of its live sandbox:
// the attachments to remove (first, so that their interface names are free
// again) and the elements to attach, plus what cannot be done.
type hotplugPlan struct {
	// Detach are attachments of the record the annotation no longer names.
	Detach []record.Attachment
	// Attach are elements of the annotation the record does not hold.
	Attach []selection.Selection
	// Refused says, one message per case, what cannot be hot-plugged or
	// unplugged (an element or attachment without an interface name).
	Refused []refusal
}

// refusal is one change the annotation asks for that hot-plug cannot make.
type refusal struct {
	Network   string
	Interface string // "" for an element that names none
	Message   string
}

// Empty reports whether there is nothing to do and nothing to say.
func (p *hotplugPlan) Empty() bool {
	return len(p.Detach) == 0 && len(p.Attach) == 0 && len(p.Refused) == 0
}

// hotpluggable reports whether a record attachment is one the networks
// annotation owns: an element attached by the sandbox's ADD, by hot-plug,
// or by the delegate API (whose client, the dynamic networks controller,
// also acts on the annotation: after a switch from mode delegate-api to
// builtin, the built-in controller takes its attachments over). The
// default network and the networks of --default-networks are never
// touched. Records written before origins existed hold "" on every
// attachment: a non-default one counts as a selection unless it is one of
// the node's --default-networks numbered netN, which an old record cannot
// tell apart otherwise.
func hotpluggable(a *record.Attachment, defaultNetworks map[string]bool) bool {
	if a.Default {
		return false
	}
	switch a.Origin {
	case record.OriginSelection, record.OriginHotplug, record.OriginDelegateAPI:
		return true
	case "":
		return !(defaultNetworks[a.Network] && isNumbered(a.IfName))
	}
	return false // OriginDefaultNetworks, anything newer
}

// interfaceRequested is Attachment.InterfaceRequested, inferred for a
// record written before that field existed: plexus numbers the interfaces
// it names net1, net2, ..., so any other name was the pod's.
func interfaceRequested(a *record.Attachment) bool {
	if a.Origin == "" {
		return !isNumbered(a.IfName)
	}
	return a.InterfaceRequested
}

// isNumbered reports whether name is net<digits>, the names plexus gives
// elements that name no interface.
func isNumbered(name string) bool {
	digits, ok := strings.CutPrefix(name, "net")
	if !ok || digits == "" {
		return false
	}
	for _, c := range digits {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// planHotplug compares a pod's networks annotation (parsed, namespaces
// filled) with its live sandbox's record. Elements and attachments are
// matched by network ("namespace/name") and interface name, as KubeVirt
// and the dynamic networks controller match them; other fields of an
// element (ips, mac, cni-args, ...) are read only when it is attached, so
// changing them on an attached element changes nothing. Elements without
// an interface name are matched, by count per network, against the
// attachments plexus numbered netN: one more of them in the annotation
// cannot be hot-plugged, one fewer cannot be unplugged, since neither names
// the interface concerned.
func planHotplug(pod k8stypes.NamespacedName, sels []selection.Selection, rec *record.Record, defaultNetworks map[string]bool) *hotplugPlan {
	plan := &hotplugPlan{}
	type named struct{ network, ifname string }
	want := map[named]bool{}
	unnamedWant := map[string]int{}
	var unnamedOrder []string
	for i := range sels {
		key := sels[i].Key().String()
		if sels[i].Interface == "" {
			if unnamedWant[key] == 0 {
				unnamedOrder = append(unnamedOrder, key)
			}
			unnamedWant[key]++
			continue
		}
		want[named{key, sels[i].Interface}] = true
	}

	have := map[named]bool{}
	unnamedHave := map[string][]string{} // network -> its netN interfaces
	var unnamedHaveOrder []string
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if !hotpluggable(a, defaultNetworks) {
			continue
		}
		if !interfaceRequested(a) {
			if len(unnamedHave[a.Network]) == 0 {
				unnamedHaveOrder = append(unnamedHaveOrder, a.Network)
			}
			unnamedHave[a.Network] = append(unnamedHave[a.Network], a.IfName)
			continue
		}
		k := named{a.Network, a.IfName}
		if !want[k] {
			plan.Detach = append(plan.Detach, *a)
			continue
		}
		// An attach that did not finish (a daemon crash, or a failed ADD
		// whose rollback failed too) is attached again: the engine undoes
		// what it left first.
		have[k] = a.Added()
	}
	for i := range sels {
		if sels[i].Interface == "" {
			continue
		}
		k := named{sels[i].Key().String(), sels[i].Interface}
		if !have[k] {
			plan.Attach = append(plan.Attach, sels[i])
			have[k] = true // a duplicate element is the engine's to refuse, once
		}
	}

	for _, network := range unnamedOrder {
		if extra := unnamedWant[network] - len(unnamedHave[network]); extra > 0 {
			plan.Refused = append(plan.Refused, refusal{Network: network, Message: fmt.Sprintf(
				"pod %s: network %s cannot be hot-plugged: its element in the networks annotation has no field \"interface\", "+
					"and hot-plug matches elements by network and interface name; give the element an interface name "+
					"(at most 15 characters): %q in the short form, or {\"name\": %q, \"namespace\": %q, \"interface\": \"<name>\"} in the JSON form",
				pod, network, network+"@<name>", nameOf(network), namespaceOf(network))})
		}
	}
	for _, network := range unnamedHaveOrder {
		ifnames := unnamedHave[network]
		if missing := len(ifnames) - unnamedWant[network]; missing > 0 {
			plan.Refused = append(plan.Refused, refusal{Network: network, Interface: strings.Join(ifnames, ","), Message: fmt.Sprintf(
				"pod %s: network %s (interface %s) cannot be hot-unplugged: it was attached without a field \"interface\" "+
					"(plexus numbered it), and hot-plug matches elements by network and interface name; "+
					"it stays attached until the pod is recreated; to unplug networks later, give their elements an interface name",
				pod, network, strings.Join(ifnames, " or "))})
		}
	}
	return plan
}

func namespaceOf(network string) string {
	ns, _, _ := strings.Cut(network, "/")
	return ns
}

func nameOf(network string) string {
	_, name, found := strings.Cut(network, "/")
	if !found {
		return network
	}
	return name
}
