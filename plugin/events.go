package plugin

import (
	current "github.com/containernetworking/cni/pkg/types/100"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/record"
)

// Event types, as the Kubernetes Event API spells them (corev1's
// EventTypeNormal and EventTypeWarning; the core imports no API types).
const (
	EventNormal  = "Normal"
	EventWarning = "Warning"
)

// announceInterfaces reports one AddedInterface Event per attachment of an
// ADD that succeeded, default network included, in attach order. The
// message has the shape Multus gives it, "Add <ifname> [<cidr> ...] from
// <network>", since runbooks and tests match on it; the addresses are every
// address the delegate reported, with their prefix length. A delegate
// that reported neither an interface nor an address (a plugin that only
// tunes the sandbox) made no interface to announce, as Multus also
// judges. An ADD that failed reports none: its interfaces were rolled
// back.
func (e *Engine) announceInterfaces(rec *record.Record, results []*current.Result) {
	if e.Events == nil {
		return
	}
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if i >= len(results) || results[i] == nil || (len(results[i].Interfaces) == 0 && len(results[i].IPs) == 0) {
			continue
		}
		ips := []string{}
		for _, ip := range results[i].IPs {
			ips = append(ips, ip.Address.String())
		}
		e.event(rec.Pod, EventNormal, ReasonAddedInterface, "Add %s %v from %s", a.IfName, ips, a.Network)
	}
}

// noNetworkFound reports a Warning that a network the pod selected (or
// named as its default network) does not exist, naming both ways to fix it.
func (e *Engine) noNetworkFound(pod *Pod, key k8stypes.NamespacedName) {
	if pod == nil {
		return
	}
	e.event(record.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}, EventWarning, ReasonNoNetworkFound,
		"NetworkAttachmentDefinition %s not found: create it in namespace %q, or correct the pod's network selection; a starting pod then starts, and a running pod gets it hot-plugged (hot-plug mode builtin)",
		key, key.Namespace)
}
