package daemon_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/plugins/pkg/ns"
	corev1 "k8s.io/api/core/v1"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// runtimeAdd attaches a sandbox the way the runtime does without plexus:
// libcni straight on the node's default conflist, with the given result
// cache. It returns what the runtime's DEL would need to look the cached
// result up.
func (f *fixture) runtimeAdd(cacheDir, id string, netns ns.NetNS, pod *corev1.Pod) (*libcni.CNIConfig, *libcni.NetworkConfigList, *libcni.RuntimeConf) {
	f.t.Helper()
	list, err := libcni.NetworkConfFromFile(filepath.Join(f.opts.CNIConfDir, "10-default.conflist"))
	if err != nil {
		f.t.Fatal(err)
	}
	runtime := libcni.NewCNIConfigWithCacheDir([]string{f.opts.CNIBinDir}, cacheDir, nil)
	rt := &libcni.RuntimeConf{ContainerID: id, NetNS: netns.Path(), IfName: "eth0", Args: [][2]string{
		{"IgnoreUnknown", "1"}, {"K8S_POD_NAMESPACE", pod.Namespace}, {"K8S_POD_NAME", pod.Name},
		{"K8S_POD_INFRA_CONTAINER_ID", id}, {"K8S_POD_UID", string(pod.UID)}}}
	if _, err := runtime.AddNetworkList(context.Background(), list, rt); err != nil {
		f.t.Fatalf("the runtime's own ADD of %s: %v", id, err)
	}
	return runtime, list, rt
}

// Pods the runtime attached before plexus was installed are deleted
// through plexus: their DEL has no record, and releases the default
// network's address all the same, through the daemon (with the runtime's
// cached result, which it then drops) and through the shim alone when the
// daemon is down (from the config the node conflist carries).
func TestSandboxesPlexusNeverAttachedAreReleased(t *testing.T) {
	runtimeCache := ""
	f := newFixture(t, func(f *fixture) {
		runtimeCache = filepath.Join(f.dir, "runtime-cache")
		f.opts.RuntimeCacheDir = runtimeCache
	})
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("old", "blue")

	viaDaemon := plugintest.NewNS(t)
	runtime, list, rt := f.runtimeAdd(runtimeCache, "c-daemon", viaDaemon, pod)
	if got := allocations(f, "defnet"); len(got) != 1 {
		t.Fatalf("default network allocations after the runtime's ADD: %v", got)
	}
	if _, err := f.cni("DEL", "c-daemon", viaDaemon, pod); err != nil {
		t.Fatalf("DEL through the daemon: %v", err)
	}
	f.assertClean(viaDaemon, "defnet", "blue")
	if cached, _ := runtime.GetNetworkListCachedResult(list, rt); cached != nil {
		t.Errorf("the runtime's cached result is still there: the DEL did not read the runtime's cache")
	}

	viaShim := plugintest.NewNS(t)
	f.runtimeAdd(t.TempDir(), "c-shim", viaShim, pod)
	f.stopDaemon()
	if _, err := f.cni("DEL", "c-shim", viaShim, pod); err != nil {
		t.Fatalf("DEL through the shim with the daemon down: %v", err)
	}
	f.assertClean(viaShim, "defnet", "blue")
	if _, err := f.cni("DEL", "c-shim", viaShim, pod); err != nil {
		t.Errorf("a second DEL with nothing left to undo: %v", err)
	}
}

// A failed ADD whose rollback a delegate refused keeps its record, and
// the sweep retries the teardown on its own, with a backoff, even when no
// DEL from the runtime ever comes: a retry before the backoff has passed
// runs nothing; the record goes, and the address is released, only once
// a DEL succeeded.
func TestTheSweepRetriesAFailedTeardown(t *testing.T) {
	faultyState := ""
	f := newFixture(t, func(f *fixture) {
		plugintest.InstallFaulty(t, f.opts.CNIBinDir)
		faultyState = filepath.Join(f.dir, "faulty")
		f.opts.SweepEvery = 0 // the test sweeps
	})
	f.nad("flaky", plugintest.Conf(M{"cniVersion": "1.0.0", "plugins": []M{
		{"type": "macvlan", "master": plugintest.Veth(t), "ipam": plugintest.HostLocal("10.242.0.0/24", f.ipamDir())},
		plugintest.Faulty("no iptables here", 2, faultyState),
	}}))
	pod := f.pod("web", "flaky")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	_, err := f.cni("ADD", "c1", netns, pod)
	if err == nil || !strings.Contains(err.Error(), "no iptables here") || !strings.Contains(err.Error(), "rolling back failed") {
		t.Fatalf("ADD error %v, want faulty's error and the failed rollback", err)
	}
	store := f.daemon.Engine.Store
	attempts := func() int {
		t.Helper()
		rec, err := store.Load("c1")
		if errors.Is(err, os.ErrNotExist) {
			return 0
		}
		if err != nil || rec.Failed == nil {
			t.Fatalf("record c1: %+v, %v; want it marked failed", rec, err)
		}
		return rec.Failed.Attempts
	}
	backdate := func() {
		t.Helper()
		rec, err := store.Load("c1")
		if err != nil {
			t.Fatal(err)
		}
		rec.Failed.Attempts-- // MarkFailed counts one more
		if err := store.MarkFailed(rec, "ADD", errors.New(rec.Failed.Error), time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if got := attempts(); got != 1 {
		t.Fatalf("attempts after the rollback: %d, want 1", got)
	}

	if n := f.daemon.Sweep(ctx); n != 0 || attempts() != 1 {
		t.Errorf("a sweep before the backoff passed tore down %d, attempts %d; want 0 and 1", n, attempts())
	}
	backdate()
	if n := f.daemon.Sweep(ctx); n != 0 || attempts() != 2 {
		t.Errorf("a sweep whose DEL is refused tore down %d, attempts %d; want 0 and 2", n, attempts())
	}
	if got := allocations(f, "flaky"); len(got) != 1 {
		t.Errorf("allocations while the teardown is owed: %v, want 1", got)
	}
	backdate()
	if n := f.daemon.Sweep(ctx); n != 1 || attempts() != 0 {
		t.Errorf("the sweep whose DEL succeeds tore down %d, attempts %d; want 1 and the record gone", n, attempts())
	}
	f.assertClean(netns, "defnet", "flaky")
}

// The backoff between retries of a failed teardown: 10 s, doubling, at
// most 10 min.
func TestRetryBackoff(t *testing.T) {
	for attempts, want := range map[int]time.Duration{1: 10 * time.Second, 2: 20 * time.Second, 3: 40 * time.Second, 7: 10 * time.Minute, 6: 320 * time.Second, 50: 10 * time.Minute} {
		if got := daemon.RetryBackoff(attempts); got != want {
			t.Errorf("backoff after %d failures: %v, want %v", attempts, got, want)
		}
	}
}
