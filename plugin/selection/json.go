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
	out := make([]Selection, 0, len(raws))
	for i, raw := range raws {
		s, err := decodeElement(raw, podNamespace)
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

// decodeElement decodes one list element. Unknown fields are ignored: the
// standard grows, and a pod written for a newer implementation should still
// get its networks here.
func decodeElement(raw json.RawMessage, podNamespace string) (Selection, *Error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return Selection{}, &Error{Reason: fmt.Sprintf("element is a JSON %s, want an object", jsonKind(raw))}
	}
	var s Selection
	if err := json.Unmarshal(raw, &s); err != nil {
		// encoding/json keeps decoding past a type error, so name and
		// namespace are usually known even when another field is wrong.
		if s.Namespace == "" {
			s.Namespace = podNamespace
		}
		return Selection{}, &Error{Network: networkName(s), Field: jsonField(err), Reason: jsonReason(err)}
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
