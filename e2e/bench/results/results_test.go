package results

import (
	"path/filepath"
	"slices"
	"testing"
)

func TestUpdateReplacesByNameAndKeepsTheRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.json")
	if err := Update(path, []Result{{Name: "a", Value: 1}, {Name: "cluster_pod_ready_s", Value: 9}}); err != nil {
		t.Fatal(err)
	}
	if err := Update(path, []Result{{Name: "a", Value: 2}, {Name: "b", Value: 3}}); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var values []float64
	for _, r := range got {
		names, values = append(names, r.Name), append(values, r.Value)
	}
	if !slices.Equal(names, []string{"a", "cluster_pod_ready_s", "b"}) || !slices.Equal(values, []float64{2, 9, 3}) {
		t.Errorf("after two updates: %v %v", names, values)
	}
}

func TestFormat(t *testing.T) {
	for v, want := range map[float64]string{1: "1", 0.5: "0.5", 12.34567: "12.346", -0.0001: "0"} {
		if got := Format(v); got != want {
			t.Errorf("Format(%v) = %q, want %q", v, got, want)
		}
	}
}
