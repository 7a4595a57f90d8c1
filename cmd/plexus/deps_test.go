package main

import (
	"os/exec"
	"strings"
	"testing"
)

// The shim is exec'd for every CNI call on every node, and must keep
// working when the daemon is broken: it links the standard library, the
// CNI library and plexus's own CNI-only packages, nothing else.
func TestShimImportsOnlyStdlibAndTheCNILibrary(t *testing.T) {
	allowed := map[string]bool{
		"github.com/plexus-cni/plexus/cmd/plexus":      true,
		"github.com/plexus-cni/plexus/plugin/record":   true,
		"github.com/plexus-cni/plexus/plugin/delegate": true,
		"github.com/plexus-cni/plexus/plugin/shimapi":  true,
	}
	for _, p := range deps(t, "github.com/containernetworking/cni/libcni", "github.com/containernetworking/cni/pkg/skel") {
		allowed[p] = true
	}
	for _, p := range deps(t, ".") {
		if !allowed[p] {
			t.Errorf("the shim links %s, which is neither the standard library nor the CNI library", p)
		}
	}
}

func deps(t *testing.T, pkgs ...string) []string {
	t.Helper()
	args := append([]string{"list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}"}, pkgs...)
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	return strings.Fields(string(out))
}
