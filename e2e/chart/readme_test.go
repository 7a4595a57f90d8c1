package chart_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/plexus-cni/plexus/e2e/chart/valuesdoc"
)

// TestReadmeValuesTable: the values table of docs/install.md is the one values.yaml's
// comments generate, and every value has a comment.
func TestReadmeValuesTable(t *testing.T) {
	root := repoRoot(t)
	values, err := os.ReadFile(filepath.Join(root, chartDir, "values.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rows, err := valuesdoc.Parse(values)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "docs", "install.md"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := valuesdoc.Splice(readme, valuesdoc.Table(rows))
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != string(readme) {
		t.Errorf("docs/install.md's values table is not what %s/values.yaml generates: run `make helm-docs`", chartDir)
	}
}
