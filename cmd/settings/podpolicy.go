// Package settings holds what plexus-daemon and plexus-webhook share of
// their configuration: the settings file both read (ApplyConfigFile), the
// names of each program's settings in it, and the pod policy settings
// (PodPolicy), whose flags both define with BindPodPolicyFlags. It links
// neither program's machinery, so the webhook does not link the daemon.
package settings

import (
	"flag"
	"fmt"
	"strings"

	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/plexus-cni/plexus/plugin"
)

// PodPolicy are the settings that decide what a pod may ask for, as the
// flags give them (PodPolicyNames): the daemon applies them when it
// attaches a pod, the webhook when the pod is created, from the same
// settings file. Policy parses them into the plugin.PodPolicy both use.
type PodPolicy struct {
	// IsolateNamespaces: pods may use definitions of their own namespace
	// and of GlobalNamespaces only (--namespace-isolation).
	IsolateNamespaces bool
	// GlobalNamespaces are the namespaces whose definitions every pod may
	// use (--global-namespaces).
	GlobalNamespaces []string
	// DefaultNetworks are attached to every pod outside SystemNamespaces
	// (see plugin.Engine.DefaultNetworks): "name" (in
	// DefaultNetworkNamespace) or "namespace/name" (--default-networks).
	DefaultNetworks []string
	// SystemNamespaces are the namespaces whose pods do not get
	// DefaultNetworks (--system-namespaces).
	SystemNamespaces []string
	// DefaultNetworkNamespace is where bare names of DefaultNetworks and
	// of pods' default-network annotations are looked up
	// (--default-network-namespace).
	DefaultNetworkNamespace string
}

// DefaultPodPolicy is the pod policy when nothing is configured:
// isolation on, "default" global, no default networks, kube-system the
// system and the default-network namespace.
func DefaultPodPolicy() PodPolicy {
	return PodPolicy{
		IsolateNamespaces:       true,
		GlobalNamespaces:        []string{"default"},
		SystemNamespaces:        []string{"kube-system"},
		DefaultNetworkNamespace: "kube-system",
	}
}

// BindPodPolicyFlags defines the pod policy's flags on fs, with p's values
// as their defaults; parsing fs sets p. The lists are comma-separated.
func BindPodPolicyFlags(fs *flag.FlagSet, p *PodPolicy) {
	fs.BoolVar(&p.IsolateNamespaces, "namespace-isolation", p.IsolateNamespaces,
		"pods may use network definitions of their own namespace and the global namespaces only")
	fs.Var(commaList{&p.GlobalNamespaces}, "global-namespaces",
		"comma-separated namespaces whose network definitions every pod may use")
	fs.Var(commaList{&p.DefaultNetworks}, "default-networks",
		"comma-separated networks attached to every pod outside the system namespaces, after the default network and before the pod's own (net1, net2, ...): \"name\" (in --default-network-namespace) or \"namespace/name\"")
	fs.Var(commaList{&p.SystemNamespaces}, "system-namespaces",
		"comma-separated namespaces whose pods do not get --default-networks")
	fs.StringVar(&p.DefaultNetworkNamespace, "default-network-namespace", p.DefaultNetworkNamespace,
		"where a bare name in --default-networks or in a pod's v1.multus-cni.io/default-network annotation is looked up (never the pod's namespace); namespace isolation does not apply to those")
}

// Policy is p as the engine and the admission webhook apply it, its
// default networks parsed (ParseDefaultNetworks; a bad one is the error).
func (p PodPolicy) Policy() (plugin.PodPolicy, error) {
	defaultNetworks, err := ParseDefaultNetworks(p.DefaultNetworks, p.DefaultNetworkNamespace)
	if err != nil {
		return plugin.PodPolicy{}, err
	}
	return plugin.PodPolicy{
		IsolateNamespaces:       p.IsolateNamespaces,
		GlobalNamespaces:        p.GlobalNamespaces,
		DefaultNetworks:         defaultNetworks,
		SystemNamespaces:        p.SystemNamespaces,
		DefaultNetworkNamespace: p.DefaultNetworkNamespace,
	}, nil
}

// commaList is a flag of a comma-separated list: each Set replaces the
// list by the text's items, trimmed, the empty ones dropped.
type commaList struct{ list *[]string }

func (l commaList) String() string {
	if l.list == nil {
		return ""
	}
	return strings.Join(*l.list, ",")
}

func (l commaList) Set(s string) error {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	*l.list = out
	return nil
}

// ParseDefaultNetworks reads --default-networks: each "name" (looked up
// in home, the default-network namespace) or "namespace/name", both
// DNS-1123 names. A bad entry is an error naming it, so the daemon does
// not start with a network every pod would fail on.
func ParseDefaultNetworks(list []string, home string) ([]k8stypes.NamespacedName, error) {
	out := make([]k8stypes.NamespacedName, 0, len(list))
	for _, item := range list {
		ns, name, found := strings.Cut(item, "/")
		if !found {
			ns, name = home, item
		}
		errs := validation.IsDNS1123Subdomain(name)
		if nsErrs := validation.IsDNS1123Label(ns); len(nsErrs) > 0 {
			errs = append(errs, "namespace: "+strings.Join(nsErrs, "; "))
		}
		if len(errs) > 0 {
			return nil, fmt.Errorf("--default-networks (chart value defaultNetworks): %q: want \"name\" (looked up in the default-network namespace %q) or \"namespace/name\" of a NetworkAttachmentDefinition: %s",
				item, home, strings.Join(errs, "; "))
		}
		out = append(out, k8stypes.NamespacedName{Namespace: ns, Name: name})
	}
	return out, nil
}
