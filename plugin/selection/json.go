package selection

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// parseJSON parses the JSON form. The list is split into raw elements first
// so that a bad element is reported by its index (and network) instead of
// as one opaque decoding error for the whole annotation.
func parseJSON(value, podNamespace string) ([]Selection, error) {
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(value), &raws); err != nil {
		return nil, &Error{Index: -1, Reason: jsonReason(err)}
	}
	if len(raws) == 0 {
		return nil, nil
	}
	return parseItems(raws, podNamespace, func(raw json.RawMessage) (Selection, *Error) {
		return decodeElement(raw, podNamespace)
	})
}

// decodeElement decodes one list element. Unknown fields are ignored: the
// standard grows, and a pod written for a newer implementation should still
// get its networks here.
func decodeElement(raw json.RawMessage, podNamespace string) (Selection, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Selection{}, &Error{Reason: fmt.Sprintf("element is a JSON %s, want an object", jsonKind(raw))}
	}
	var e element
	if err := json.Unmarshal(raw, &e); err != nil {
		// encoding/json keeps decoding past a type error, so name and
		// namespace are usually known even when another field is wrong.
		if e.Namespace == "" {
			e.Namespace = podNamespace
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) { // the field path as the pod wrote it
			te.Field = strings.TrimPrefix(te.Field, "Selection.")
		}
		return Selection{}, &Error{Network: networkName(e.Selection), Field: jsonField(err), Reason: jsonReason(err)}
	}
	return e.merge(podNamespace)
}

// element is what one list element may hold: a Selection plus the
// spellings Multus still reads for compatibility. "interfaceRequest" is
// the name "interface" had before Multus 3.2.
type element struct {
	Selection
	InterfaceRequest string `json:"interfaceRequest"`
}

// merge folds the old spelling into the Selection. Both given and
// different is refused rather than one silently winning (Multus takes
// "interface"): the pod's owner meant one of them, and plexus cannot tell
// which.
func (e element) merge(podNamespace string) (Selection, *Error) {
	s := e.Selection
	switch {
	case e.InterfaceRequest == "" || e.InterfaceRequest == s.Interface:
	case s.Interface == "":
		s.Interface = e.InterfaceRequest
	default:
		if s.Namespace == "" {
			s.Namespace = podNamespace
		}
		return Selection{}, &Error{Network: networkName(s), Field: "interface", Reason: fmt.Sprintf(
			"\"interface\" is %q but \"interfaceRequest\" (its old spelling) is %q; keep only \"interface\"", s.Interface, e.InterfaceRequest)}
	}
	return s, nil
}

// jsonField names the top-level field a type error is about; nested paths
// such as "portMappings.containerPort" are reported under their top field,
// which is the one the user can look up in the standard.
func jsonField(err error) string {
	var te *json.UnmarshalTypeError
	if !errors.As(err, &te) {
		return ""
	}
	field, _, _ := strings.Cut(te.Field, ".")
	return field
}

// jsonReason words a decoding error for a pod's owner rather than for a Go
// programmer: no Go struct or type names.
func jsonReason(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		got := te.Value
		if got == "array" {
			got = "list" // the word the rest of the messages use
		}
		at := ""
		if strings.Contains(te.Field, ".") {
			at = " at " + te.Field
		}
		return fmt.Sprintf("wrong type%s: got a JSON %s, want %s", at, got, jsonTypeName(te.Type.Kind().String()))
	case errors.As(err, &se):
		return fmt.Sprintf("invalid JSON: %s (at byte %d)", se.Error(), se.Offset)
	}
	return "invalid JSON: " + strings.TrimPrefix(err.Error(), "json: ")
}

// jsonTypeName maps a Go kind to the JSON word a user would expect.
func jsonTypeName(kind string) string {
	switch kind {
	case "slice", "array":
		return "a list"
	case "struct", "map", "ptr":
		return "an object"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "float32", "float64":
		return "a number"
	}
	return "a whole number in range"
}

// jsonKind names the kind of a raw JSON value from its first byte, which is
// enough once the outer decode has proven the value well-formed.
func jsonKind(raw []byte) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '[':
		return "list"
	case '"':
		return "string"
	case 't', 'f':
		return "boolean"
	case 'n':
		return "null"
	}
	return "number"
}
