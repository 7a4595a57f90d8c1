package plugin

import (
	"errors"
	"strings"

	"k8s.io/klog/v2"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// The daemon's log lines name what they are about with one key per kind of
// object, always in the same form, so that one search finds every line of
// a pod or a network whichever part of the daemon wrote it:
//
//   - "pod": the pod, klog.KRef (namespace/name);
//   - "network": the network, klog.KRef of its NetworkAttachmentDefinition
//     (namespace/name), or the bare name of a configuration file's network;
//   - "node": the node's name;
//   - "containerID": the sandbox, as CNI_CONTAINERID names it;
//   - "interface": the interface's name in the pod.
//
// The one who learns an object adds it to the logger in the context
// (logr.NewContext), and the lines below inherit it.

// PodRef is a pod's "pod" log value.
func PodRef(p record.PodRef) klog.ObjectRef { return klog.KRef(p.Namespace, p.Name) }

// NetworkRef is a network's "network" log value, from its record form:
// "namespace/name" of a definition, or the name of a conf-dir network.
func NetworkRef(network string) klog.ObjectRef {
	ns, name, found := strings.Cut(network, "/")
	if !found {
		return klog.KRef("", network)
	}
	return klog.KRef(ns, name)
}

// RequestLogValues are the key/values naming what a CNI call is about: its
// sandbox and interface, and its pod when CNI_ARGS names one (GC and
// STATUS name none of them).
func RequestLogValues(req *Request) []any {
	var kv []any
	if req.ContainerID != "" {
		kv = append(kv, "containerID", req.ContainerID)
	}
	if req.IfName != "" {
		kv = append(kv, "interface", req.IfName)
	}
	if _, pod := parseArgs(req.Args); pod.Name != "" {
		kv = append(kv, "pod", klog.KRef(pod.Namespace, pod.Name))
	}
	return kv
}

// ErrorLogValues names the network an error is about, when a delegate or
// a selection of that network failed; none otherwise.
func ErrorLogValues(err error) []any {
	var delegateErr *delegate.Error
	if errors.As(err, &delegateErr) && delegateErr.Network != "" {
		return []any{"network", NetworkRef(delegateErr.Network)}
	}
	var netErr *networkError
	if errors.As(err, &netErr) {
		return []any{"network", NetworkRef(netErr.network)}
	}
	var selErr *selection.Error
	if errors.As(err, &selErr) && selErr.Network != "" {
		return []any{"network", NetworkRef(selErr.Network)}
	}
	return nil
}
