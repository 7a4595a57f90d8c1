// Command manifests writes the kustomize install under config/ from the
// Helm chart (package hack/manifests). `make manifests` runs it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"

	"github.com/plexus-cni/plexus/hack/manifests"
)

func main() {
	var o manifests.Options
	flag.StringVar(&o.Helm, "helm", "helm", "the helm binary (make helm builds one)")
	flag.StringVar(&o.Chart, "chart", "charts/plexus", "the chart")
	flag.StringVar(&o.Values, "values", "hack/manifests/values.yaml", "the chart's values for the kustomize install")
	flag.StringVar(&o.Config, "config", "config", "the kustomize tree to write (config/crd is left alone)")
	flag.StringVar(&o.Image, "image", "plexus", "the image name of the values, which config/default's images entry names")
	flag.Parse()
	if err := manifests.Write(context.Background(), o); err != nil {
		fmt.Fprintln(os.Stderr, "manifests:", err)
		os.Exit(1)
	}
}
