package selection

import (
	"fmt"
	"strings"
)

// parseShort parses the comma-separated form `name, ns/name, name@ifname`.
func parseShort(value, podNamespace string) ([]Selection, error) {
	return parseItems(strings.Split(value, ","), podNamespace, parseShortItem)
}

// parseShortItem splits one `[ns/]name[@ifname]` item. '@' is split first
// because an interface name may not contain '/', so "a@b/c" is a bad ifname
// rather than a namespace "a@b".
//
// An empty part reads as Multus reads it: "/name" is the pod's own
// namespace and "name@" the default interface name (netN), so annotations
// written for Multus keep working. A missing name is left to validate,
// which words it the same way for both forms.
func parseShortItem(item string) (Selection, *Error) {
	item = strings.TrimSpace(item)
	if item == "" {
		return Selection{}, &Error{Field: "name", Reason: "empty item (stray comma?)"}
	}
	ref, ifName, _ := strings.Cut(item, "@")
	if strings.Contains(ifName, "@") {
		return Selection{}, &Error{Field: "interface", Reason: fmt.Sprintf("more than one '@' in %q", item)}
	}
	ns, name, hasNS := strings.Cut(ref, "/")
	if !hasNS { // Cut puts the whole string in its first result
		ns, name = "", ref
	}
	if strings.Contains(name, "/") {
		return Selection{}, &Error{Field: "name", Reason: fmt.Sprintf("more than one '/' in %q", item)}
	}
	return Selection{
		Name:      strings.TrimSpace(name),
		Namespace: strings.TrimSpace(ns),
		Interface: strings.TrimSpace(ifName),
	}, nil
}
