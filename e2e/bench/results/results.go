// Package results is the record of plexus's benchmark figures:
// bench/results.json, a JSON list with one object per figure. Several
// programs write figures into the same file (`make bench` on this machine,
// `make bench-cluster` on a real cluster), so a writer merges: it replaces
// the figures it measured, by name, and keeps the others with their time.
package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Result is one figure of one run.
type Result struct {
	// Name identifies the figure across runs: add_overhead_ms, ...
	Name  string  `json:"name"`
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
	// ComparedTo says what the figure was measured against, side by side
	// in the same run (a ratio's denominator, a difference's subtrahend).
	ComparedTo string `json:"compared_to"`
	// Params are the run's parameters and the raw numbers behind Value.
	Params map[string]interface{} `json:"params"`
	P50    *float64               `json:"p50,omitempty"`
	P90    *float64               `json:"p90,omitempty"`
	// Target is the project's goal for the figure, as text ("<= 2"), and
	// Met whether this run reached it; both absent for a figure without
	// a goal.
	Target string `json:"target,omitempty"`
	Met    *bool  `json:"met,omitempty"`
	// Time is when the figure was measured.
	Time time.Time `json:"time"`
}

// Ptr is a pointer to v, for the optional fields.
func Ptr[T any](v T) *T { return &v }

// Load reads a results file; a missing file is an empty list.
func Load(path string) ([]Result, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []Result
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// Merge replaces the figures of old that fresh has (by name), in place,
// and appends fresh's new ones in their order.
func Merge(old, fresh []Result) []Result {
	index := map[string]int{}
	out := append([]Result(nil), old...)
	for i, r := range out {
		index[r.Name] = i
	}
	for _, r := range fresh {
		if i, ok := index[r.Name]; ok {
			out[i] = r
			continue
		}
		index[r.Name] = len(out)
		out = append(out, r)
	}
	return out
}

// Update merges fresh into the file at path, writing it atomically.
func Update(path string, fresh []Result) error {
	old, err := Load(path)
	if err != nil {
		return err
	}
	data, err := json.MarshalIndent(Merge(old, fresh), "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Table prints figures for people: one line each, with the target and
// whether it was met.
func Table(w io.Writer, rs []Result) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "FIGURE\tVALUE\tUNIT\tP50\tP90\tTARGET\tMET\tCOMPARED TO")
	for _, r := range rs {
		met := "-"
		if r.Met != nil {
			met = map[bool]string{true: "yes", false: "NO"}[*r.Met]
		}
		target := r.Target
		if target == "" {
			target = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, Format(r.Value), r.Unit,
			formatPtr(r.P50), formatPtr(r.P90), target, met, r.ComparedTo)
	}
	return tw.Flush()
}

// Format prints a number with three significant decimals at most.
func Format(v float64) string {
	s := strconv.FormatFloat(v, 'f', 3, 64)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	if s == "-0" {
		return "0"
	}
	return s
}

func formatPtr(v *float64) string {
	if v == nil {
		return "-"
	}
	return Format(*v)
}
