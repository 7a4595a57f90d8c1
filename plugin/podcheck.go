package plugin

import (
	"slices"
	"strconv"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/selection"
)

// PodPolicy is what the daemon's settings allow a pod to ask for: the
// rules an ADD applies to a pod's network annotations before it looks any
// network up, and that the admission webhook applies, with the same
// settings, when the pod is created (CheckPodNetworks).
type PodPolicy struct {
	// IsolateNamespaces restricts pods to definitions of their own
	// namespace and of GlobalNamespaces (--namespace-isolation).
	IsolateNamespaces bool
	// GlobalNamespaces are the namespaces whose definitions every pod may
	// use (--global-namespaces).
	GlobalNamespaces []string
	// DefaultNetworks are attached to every pod outside SystemNamespaces,
	// after the default network and before the networks the pod selects,
	// as net1, net2, ... (the pod's unnamed networks are numbered on
	// from there). The administrator sets them, so namespace isolation
	// does not apply to them. (Multus's defaultNetworks;
	// --default-networks.)
	DefaultNetworks []k8stypes.NamespacedName
	// SystemNamespaces are the namespaces whose pods do not get
	// DefaultNetworks (--system-namespaces).
	SystemNamespaces []string
	// DefaultNetworkNamespace is where a bare name in a pod's
	// default-network annotation is looked up, never the pod's own
	// namespace; isolation does not apply there (Multus's
	// multusNamespace; --default-network-namespace). Empty uses the pod's
	// namespace.
	DefaultNetworkNamespace string
}

// PodIfName is the interface name Kubernetes runtimes give a pod's
// default network (CNI_IFNAME): the name the admission webhook counts as
// taken when it checks a pod's interface names before any runtime call.
const PodIfName = "eth0"

// PodNetworks is what a pod's network annotations ask for, once checked.
type PodNetworks struct {
	// DefaultNetwork is the network the v1.multus-cni.io/default-network
	// annotation names in place of the node's default network; nil
	// without the annotation.
	DefaultNetwork *k8stypes.NamespacedName
	// DefaultNetworkBare says the annotation gave a bare name, looked up
	// in DefaultNetworkNamespace without namespace isolation.
	DefaultNetworkBare bool
	// DefaultNetworks are the policy's DefaultNetworks this pod gets
	// (none in a system namespace), in order: net1, net2, ...
	DefaultNetworks []k8stypes.NamespacedName
	// Selections are the networks of the k8s.v1.cni.cncf.io/networks
	// annotation, in its order.
	Selections []selection.Selection
}

// CheckPodNetworks checks what a pod's network annotations ask for against
// the policy, without looking any network up (whether a definition exists
// and loads is each node's business): the default-network annotation
// parses, the networks annotation parses (selection.Parse), interface names
// are valid and unique (defaultIf is the default network's, PodIfName on a
// node; the DefaultNetworks take net1, net2, ...), at most one network
// owns each address family's default route, and namespace isolation allows
// every network named. The error is the one an ADD of the pod returns, a
// *types.Error with code ErrInvalidNetworkConfig and a message naming the
// pod, the annotation or network and field, and the fix; the checks run in
// the order an ADD meets them.
func (p *PodPolicy) CheckPodNetworks(pod *Pod, defaultIf string) (*PodNetworks, error) {
	out := &PodNetworks{}
	if v := pod.Annotations[selection.DefaultNetworkAnnotation]; v != "" {
		key, bare, err := p.defaultNetworkKey(pod, v)
		if err != nil {
			return nil, planError(pod, "annotation %s: %v", selection.DefaultNetworkAnnotation, err)
		}
		if !bare {
			if err := p.checkNamespace(pod, key); err != nil {
				return nil, err
			}
		}
		out.DefaultNetwork, out.DefaultNetworkBare = &key, bare
	}
	if !slices.Contains(p.SystemNamespaces, pod.Namespace) {
		out.DefaultNetworks = p.DefaultNetworks
	}
	sels, err := selection.Parse(pod.Annotations[selection.NetworksAnnotation], pod.Namespace)
	if err != nil {
		return nil, planError(pod, "%v", err)
	}
	if err := checkNames(pod, defaultIf, out.DefaultNetworks, sels); err != nil {
		return nil, err
	}
	if err := checkRouteOwners(pod, sels, len(out.DefaultNetworks)); err != nil {
		return nil, err
	}
	for i := range sels {
		if err := p.checkNamespace(pod, sels[i].Key()); err != nil {
			return nil, err
		}
	}
	out.Selections = sels
	return out, nil
}

// checkNames refuses duplicate interface names before anything exists:
// the default network's defaultIf, then the default networks' net1, net2,
// ..., then the selections'.
func checkNames(pod *Pod, defaultIf string, defaults []k8stypes.NamespacedName, sels []selection.Selection) error {
	seen := map[string]string{defaultIf: "the default network"}
	for i, key := range defaults {
		if name := netIfName(i); seen[name] == "" {
			seen[name] = "network " + key.String()
		}
	}
	for i := range sels {
		name := ifName(&sels[i], len(defaults)+i)
		if err := selection.CheckIfName(name); err != nil {
			return planError(pod, "network %s: field \"interface\": %v", sels[i].Key(), err)
		}
		if owner, dup := seen[name]; dup {
			return planError(pod, "network %s: field \"interface\": %q is already used by %s", sels[i].Key(), name, owner)
		}
		seen[name] = "network " + sels[i].Key().String()
	}
	return nil
}

// netIfName is the generated interface name of the i-th (0-based) extra
// attachment: net1, net2, ...
func netIfName(i int) string { return "net" + strconv.Itoa(i+1) }

// defaultNetworkKey reads the default-network annotation: the network it
// names, and whether it named a bare name (no namespace), which is looked
// up in DefaultNetworkNamespace.
func (p *PodPolicy) defaultNetworkKey(pod *Pod, v string) (k8stypes.NamespacedName, bool, error) {
	home := p.DefaultNetworkNamespace
	if home == "" || home == pod.Namespace {
		key, err := selection.ParseDefault(v, pod.Namespace)
		return key, false, err
	}
	key, err := selection.ParseDefault(v, home)
	if err != nil {
		return key, false, err
	}
	// A bare name takes the namespace it is parsed for; a named one keeps
	// its own whatever that is.
	asPods, err := selection.ParseDefault(v, pod.Namespace)
	return key, err == nil && asPods.Namespace != key.Namespace, err
}

// checkNamespace applies namespace isolation to a network a pod names.
func (p *PodPolicy) checkNamespace(pod *Pod, key k8stypes.NamespacedName) error {
	if !p.IsolateNamespaces || key.Namespace == pod.Namespace || slices.Contains(p.GlobalNamespaces, key.Namespace) {
		return nil
	}
	return planError(pod, "network %s: namespace isolation: pods of namespace %q may use networks of their own namespace and of %v only; "+
		"add %q to globalNamespaces (--global-namespaces), or set namespaceIsolation: false (--namespace-isolation=false) to let pods use any namespace's networks",
		key, pod.Namespace, p.GlobalNamespaces, key.Namespace)
}
