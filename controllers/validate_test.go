package controllers_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin/nodeexec"
)

// Whether a definition's plugins are installed is asked the way the
// delegates will be run: a daemon running them in the node's root finds a
// plugin that is a link absolute on the node, which a look in the bin dir
// from the daemon's container would call missing.
func TestValidateFindsPluginsAsDelegatesRun(t *testing.T) {
	root := t.TempDir()
	binDir := filepath.Join(root, "opt/cni/bin")
	for _, d := range []string{"opt/cni/bin", "usr/lib/cni"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(root, "usr/lib/cni/macvlan"), []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/lib/cni/macvlan", filepath.Join(binDir, "macvlan")); err != nil {
		t.Fatal(err)
	}
	nad := &nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "mv"},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: `{"cniVersion":"1.0.0","type":"macvlan","ipam":{"type":"static"}}`},
	}

	_, _, problem, missing := controllers.Validate(nad, t.TempDir(), binDir, nil)
	if problem == nil || !slices.Equal(missing, []string{"macvlan", "static"}) {
		t.Fatalf("looking in the bin dir from outside the node's root: %+v, missing %v; want macvlan and static missing", problem, missing)
	}
	cni := nodeexec.NewCNI(&nodeexec.NodeExec{Root: root}, []string{"/opt/cni/bin"}, t.TempDir())
	_, _, problem, missing = controllers.Validate(nad, t.TempDir(), binDir, cni.Has)
	if problem == nil || problem.Reason != controllers.ReasonPluginMissing || !slices.Equal(missing, []string{"static"}) {
		t.Errorf("asking the node's root: %+v, missing %v; want static alone missing", problem, missing)
	}
}
