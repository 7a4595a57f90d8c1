// Package valuesdoc turns a Helm chart's values.yaml, documented in place by
// a comment above every value, into the markdown table docs/install.md shows,
// and splices that table into that page between two markers.
package valuesdoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Begin and End enclose the generated table in docs/install.md.
const (
	Begin = "<!-- values table: generated from charts/plexus/values.yaml by `make helm-docs`; do not edit -->"
	End   = "<!-- end of values table -->"
)

// Row is one documented value.
type Row struct {
	Key     string // dotted path, e.g. image.repository
	Default string // the value in values.yaml, as compact JSON
	Doc     string // the comment above it, on one line
}

// Parse reads values.yaml. Every key needs a comment above it. A mapping
// whose keys are all documented is a group: its keys become rows and the
// group itself does not. A mapping with no documented key (resources, say)
// is one value. Anything in between is an error, so a value cannot slip in
// undocumented.
func Parse(values []byte) ([]Row, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(values, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		return nil, errors.New("values: not a YAML mapping")
	}
	var rows []Row
	if err := walk(doc.Content[0], "", &rows); err != nil {
		return nil, err
	}
	return rows, nil
}

func walk(m *yaml.Node, prefix string, rows *[]Row) error {
	for i := 0; i < len(m.Content); i += 2 {
		key, val := m.Content[i], m.Content[i+1]
		path := prefix + key.Value
		doc := comment(key.HeadComment)
		if doc == "" {
			return fmt.Errorf("values: %s has no comment above it", path)
		}
		if isGroup(val) {
			if err := walk(val, path+".", rows); err != nil {
				return err
			}
			continue
		}
		def, err := compact(val)
		if err != nil {
			return fmt.Errorf("values: %s: %w", path, err)
		}
		*rows = append(*rows, Row{Key: path, Default: def, Doc: doc})
	}
	return nil
}

// isGroup says whether a value's keys are documented one by one: when any
// is, it is a group, and walk then requires all of them to be.
func isGroup(n *yaml.Node) bool {
	if n.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i < len(n.Content); i += 2 {
		if comment(n.Content[i].HeadComment) != "" {
			return true
		}
	}
	return false
}

// comment joins a head comment's lines into one, without the #s.
func comment(c string) string {
	var words []string
	for _, line := range strings.Split(c, "\n") {
		line = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#"))
		if line != "" {
			words = append(words, line)
		}
	}
	return strings.Join(words, " ")
}

// compact renders a value as one line of JSON, as --set-json would take it.
func compact(n *yaml.Node) (string, error) {
	var v any
	if err := n.Decode(&v); err != nil {
		return "", err
	}
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return strings.TrimSpace(b.String()), nil
}

// Table renders rows as a markdown table.
func Table(rows []Row) string {
	var b strings.Builder
	b.WriteString("| value | default | meaning |\n|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| `%s` | `%s` | %s |\n", cell(r.Key), cell(r.Default), cell(r.Doc))
	}
	return b.String()
}

// cell escapes what would end a table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Splice replaces what lies between Begin and End in readme by table.
func Splice(readme []byte, table string) ([]byte, error) {
	s := string(readme)
	i := strings.Index(s, Begin)
	j := strings.Index(s, End)
	if i < 0 || j < i || strings.Count(s, Begin) != 1 || strings.Count(s, End) != 1 {
		return nil, fmt.Errorf("want one %q followed by one %q", Begin, End)
	}
	return []byte(s[:i+len(Begin)] + "\n" + table + s[j:]), nil
}
