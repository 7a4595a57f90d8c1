// Package selection reads what a pod asks for in its NPWG annotations: the
// networks to attach (k8s.v1.cni.cncf.io/networks) and the network that
// replaces the cluster default (v1.multus-cni.io/default-network).
//
// Parsing is pure: it looks at the annotation value and the pod's namespace
// only. Whether a network exists, whether its delegate can honour ips or mac,
// and whether interface names collide with each other are decided by the
// caller, which sees all of them together.
package selection

import (
	"strings"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Annotation keys. They are the NPWG and Multus names, so that pods written
// for Multus work unchanged.
const (
	NetworksAnnotation       = "k8s.v1.cni.cncf.io/networks"
	DefaultNetworkAnnotation = "v1.multus-cni.io/default-network"
	NetworkStatusAnnotation  = "k8s.v1.cni.cncf.io/network-status"
)

// Selection is one network a pod asks for (one element of the networks
// annotation). The field names and JSON tags are those of the NPWG standard,
// so a Selection marshals back to the annotation's JSON form.
type Selection struct {
	Name           string                 `json:"name"`
	Namespace      string                 `json:"namespace,omitempty"`
	Interface      string                 `json:"interface,omitempty"`
	IPs            []string               `json:"ips,omitempty"`
	MAC            string                 `json:"mac,omitempty"`
	InfinibandGUID string                 `json:"infiniband-guid,omitempty"`
	PortMappings   []nadv1.PortMapEntry   `json:"portMappings,omitempty"`
	Bandwidth      *nadv1.BandwidthEntry  `json:"bandwidth,omitempty"`
	CNIArgs        map[string]interface{} `json:"cni-args,omitempty"`
	DefaultRoute   []string               `json:"default-route,omitempty"`
	DeviceID       string                 `json:"deviceID,omitempty"`
	// IPAMClaimReference names the IPAMClaim (NPWG v1.3) that holds this
	// attachment's addresses across pod restarts, as KubeVirt's persistent
	// IPs set it. plexus only forwards it to the delegate.
	IPAMClaimReference string `json:"ipam-claim-reference,omitempty"`
}

// Key returns "namespace/name", the identity of the NetworkAttachmentDefinition
// the selection refers to; two selections with the same Key attach the same
// network twice.
func (s Selection) Key() types.NamespacedName {
	return types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
}

// Parse parses the networks annotation value. podNamespace fills a missing
// namespace, because a bare name means "the network in my own namespace".
// An empty value returns nil, nil: a pod without extra networks is the
// common case, not an error. A value of whitespace alone is an error, as
// with Multus: something meant to name networks names none.
//
// Every error is an *Error, so the caller can report which element and which
// field were wrong.
func Parse(value, podNamespace string) ([]Selection, error) {
	v := strings.TrimSpace(value)
	switch {
	case value == "":
		return nil, nil
	case v == "":
		return nil, &Error{Index: -1, Reason: "whitespace only: names no network; remove the annotation or list the networks"}
	case v[0] == '[':
		return parseJSON(v, podNamespace)
	case v[0] == '{':
		// Read as the short form this would fail on the name with a
		// confusing message; say what is actually wrong instead.
		return nil, &Error{Index: -1, Reason: "invalid JSON: want a list of objects, got a single object"}
	}
	return parseShort(v, podNamespace)
}

// parseItems reads the items of either form with parse and completes each
// (complete); the first bad item is the error, with its index.
func parseItems[T any](items []T, podNamespace string, parse func(T) (Selection, *Error)) ([]Selection, error) {
	out := make([]Selection, 0, len(items))
	for i, item := range items {
		s, err := parse(item)
		if err != nil {
			err.Index = i
			return nil, err
		}
		if err := complete(&s, i, podNamespace); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// complete fills the pod's namespace and validates s, so that both forms go
// through exactly the same checks.
func complete(s *Selection, index int, podNamespace string) error {
	if s.Namespace == "" {
		s.Namespace = podNamespace
	}
	if e := validate(*s); e != nil {
		e.Index = index
		return e
	}
	return nil
}
