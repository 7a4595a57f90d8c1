// Command helm-docs writes the Helm chart's values table into docs/install.md,
// from the comments in values.yaml (see e2e/chart/valuesdoc). `make
// helm-docs` runs it; e2e/chart fails when the table is stale.
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"

	"github.com/plexus-cni/plexus/e2e/chart/valuesdoc"
)

func main() {
	values := flag.String("values", "charts/plexus/values.yaml", "the chart's values.yaml")
	readme := flag.String("readme", "docs/install.md", "the page holding the table between its markers")
	flag.Parse()
	if err := run(*values, *readme); err != nil {
		fmt.Fprintln(os.Stderr, "helm-docs:", err)
		os.Exit(1)
	}
}

func run(valuesPath, readmePath string) error {
	values, err := os.ReadFile(valuesPath)
	if err != nil {
		return err
	}
	rows, err := valuesdoc.Parse(values)
	if err != nil {
		return fmt.Errorf("%s: %w", valuesPath, err)
	}
	old, err := os.ReadFile(readmePath)
	if err != nil {
		return err
	}
	updated, err := valuesdoc.Splice(old, valuesdoc.Table(rows))
	if err != nil {
		return fmt.Errorf("%s: %w", readmePath, err)
	}
	if bytes.Equal(old, updated) {
		return nil
	}
	info, err := os.Stat(readmePath)
	if err != nil {
		return err
	}
	return os.WriteFile(readmePath, updated, info.Mode().Perm())
}
