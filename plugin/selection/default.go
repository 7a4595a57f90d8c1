package selection

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/types"
)

// ParseDefault parses the default-network annotation ("name" or "ns/name").
// The JSON form (a single object or a one-element list) is accepted too, as
// the short form's JSON twin, so a pod can use one syntax in both annotations.
//
// Only the network's identity is returned: the default network always gets
// the runtime's interface name, and its other request fields are not
// applied. They are still validated, so a typo is not silently ignored.
// Errors unwrap to *Error.
func ParseDefault(value, podNamespace string) (types.NamespacedName, error) {
	list, err := parseDefaultList(strings.TrimSpace(value), podNamespace)
	if err != nil {
		var pe *Error
		if errors.As(err, &pe) {
			return types.NamespacedName{}, &defaultNetworkError{err: pe}
		}
		return types.NamespacedName{}, err
	}
	if len(list) != 1 {
		return types.NamespacedName{}, &defaultNetworkError{err: &Error{
			Index:  -1,
			Reason: fmt.Sprintf("want exactly one network, got %d", len(list)),
		}}
	}
	return list[0].Key(), nil
}

// parseDefaultList accepts a lone JSON object as well, which Parse refuses
// because the networks annotation is a list.
func parseDefaultList(v, podNamespace string) ([]Selection, error) {
	if v == "" || v[0] != '{' {
		return Parse(v, podNamespace)
	}
	s, e := decodeElement(json.RawMessage(v), podNamespace)
	if e != nil {
		e.Index = 0
		return nil, e
	}
	if err := complete(&s, 0, podNamespace); err != nil {
		return nil, err
	}
	return []Selection{s}, nil
}
