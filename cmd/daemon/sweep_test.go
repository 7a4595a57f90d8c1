package daemon_test

import (
	"context"
	"os"
	"testing"

	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/containernetworking/plugins/pkg/testutils"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// A sandbox whose pod is gone and whose netns is gone, and of which plexus
// never got the DEL (the pod was deleted while plexus was uninstalled, so
// the runtime called the default network alone), is torn down by the
// sweep: its extra network's address is released. A sandbox whose pod is
// gone but whose netns still exists (its teardown is under way), and one
// whose netns is gone but whose pod is still there, are left alone.
func TestSweepTearsDownSandboxesGoneWithoutADel(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.243.0.0/24"))
	gone, tearingDown, restarting := f.pod("gone", "blue"), f.pod("tearing-down", "blue"), f.pod("restarting", "blue")
	f.waitCached(gone)
	netnsGone, netnsTearingDown, netnsRestarting := plugintest.NewNS(t), plugintest.NewNS(t), plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c-gone", netnsGone, gone); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cni("ADD", "c-tearing-down", netnsTearingDown, tearingDown); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cni("ADD", "c-restarting", netnsRestarting, restarting); err != nil {
		t.Fatal(err)
	}
	if got := allocations(f, "blue"); len(got) != 3 {
		t.Fatalf("blue allocations after three ADDs: %v", got)
	}

	// The runtime drops two sandboxes without a DEL through plexus.
	for _, n := range []ns.NetNS{netnsGone, netnsRestarting} {
		_ = n.Close()
		if err := testutils.UnmountNS(n); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(n.Path()); !os.IsNotExist(err) {
			t.Fatalf("netns %s still there: %v", n.Path(), err)
		}
	}
	ctx := context.Background()
	for _, p := range []string{"gone", "tearing-down"} {
		if err := f.client.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: p}}, client.GracePeriodSeconds(0)); err != nil {
			t.Fatal(err)
		}
	}
	f.eventually("the pods gone from the daemon's cache", func() bool {
		for _, p := range []string{"gone", "tearing-down"} {
			err := f.daemon.Manager.GetCache().Get(ctx, client.ObjectKey{Namespace: "team", Name: p}, &corev1.Pod{})
			if !apierrors.IsNotFound(err) {
				return false
			}
		}
		return true
	})

	// The daemon also sweeps on its own, at start and periodically; either
	// way the outcome is the same.
	f.daemon.Sweep(ctx)
	store := f.daemon.Engine.Store
	for id, want := range map[string]bool{"c-gone": false, "c-tearing-down": true, "c-restarting": true} {
		if _, err := store.Load(id); (err == nil) != want {
			t.Errorf("record %s kept: %t, want %t (%v)", id, err == nil, want, err)
		}
	}
	if got := allocations(f, "blue"); len(got) != 2 {
		t.Errorf("blue allocations after the sweep: %v, want the two of the sandboxes left", got)
	}
	if n := f.daemon.Sweep(ctx); n != 0 {
		t.Errorf("a second sweep tore down %d more", n)
	}
}
