package selection

import (
	"fmt"
	"strings"
)

// Error is what Parse returns for a bad element. It names the element index,
// the network and the field, because a pod's owner has to find the mistake
// in an annotation that may list many networks.
type Error struct {
	Index   int    // position in the list, 0-based; -1 when the whole value is bad
	Network string // "ns/name" if known, else ""
	Field   string // JSON field name, e.g. "mac", "ips", "interface", "name"
	Reason  string
}

// Error formats as `networks[1] "ns/name": field "mac": invalid MAC address "zz"`.
// Network is quoted because it comes from the user and may hold anything.
func (e *Error) Error() string {
	prefix := "networks annotation"
	if e.Index >= 0 {
		prefix = fmt.Sprintf("networks[%d]", e.Index)
	}
	return prefix + e.detail()
}

// detail is the part after the prefix, shared with defaultNetworkError so
// both annotations report a bad field the same way.
func (e *Error) detail() string {
	var b strings.Builder
	if e.Network != "" {
		fmt.Fprintf(&b, " %q", e.Network)
	}
	if e.Field != "" {
		fmt.Fprintf(&b, ": field %q", e.Field)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}

// defaultNetworkError reports a problem in the default-network annotation.
// It does not reuse *Error's message, which would blame the networks
// annotation, but unwraps to it so callers can still read Field.
type defaultNetworkError struct {
	err *Error
}

func (e *defaultNetworkError) Error() string {
	return "default-network annotation" + e.err.detail()
}

func (e *defaultNetworkError) Unwrap() error { return e.err }
