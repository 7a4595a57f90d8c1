package daemon_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/plexus-cni/plexus/api/v1alpha1"
	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/kube"
	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netstore"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

func (f *fixture) netStore() *netstore.Store {
	return &netstore.Store{Dir: daemon.NetworksDir(f.opts.StateDir)}
}

func (f *fixture) stored(name string) (*netstore.Entry, bool) {
	e, err := f.netStore().Get(k8stypes.NamespacedName{Namespace: "team", Name: name})
	return e, err == nil
}

func (f *fixture) events(object string) []corev1.Event {
	list := &corev1.EventList{}
	if err := f.client.List(context.Background(), list, client.InNamespace("team")); err != nil {
		f.t.Fatal(err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Name == object {
			out = append(out, e)
		}
	}
	return out
}

func (f *fixture) nodeStatus() *v1alpha1.NodeNetworkStatus {
	nns := &v1alpha1.NodeNetworkStatus{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Name: node}, nns); err != nil {
		return nil
	}
	return nns
}

func TestDefinitionsAreRenderedIntoTheNodeStore(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.eventually("blue rendered", func() bool { _, ok := f.stored("blue"); return ok })
	e, _ := f.stored("blue")
	if !strings.Contains(string(e.Config), "10.241.0.0/24") || !strings.Contains(string(e.Config), `"name":"blue"`) {
		t.Errorf("rendered config %s, want the definition's subnet and its name filled in", e.Config)
	}

	nad := &nadv1.NetworkAttachmentDefinition{}
	if err := f.client.Get(context.Background(), client.ObjectKey{Namespace: "team", Name: "blue"}, nad); err != nil {
		t.Fatal(err)
	}
	nad.Spec.Config = f.macvlanNet("10.249.0.0/24")
	if err := f.client.Update(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
	f.eventually("blue re-rendered", func() bool {
		e, ok := f.stored("blue")
		return ok && strings.Contains(string(e.Config), "10.249.0.0/24")
	})

	if err := f.client.Delete(context.Background(), nad); err != nil {
		t.Fatal(err)
	}
	f.eventually("blue removed from the store", func() bool { _, ok := f.stored("blue"); return !ok })
}

func TestInvalidDefinitionsAreRejectedWithAnEventAndInTheNodeStatus(t *testing.T) {
	f := newFixture(t)
	f.nad("garbled", `{"cniVersion": "1.0.0", "type": "macvlan"`)
	f.nad("exotic", `{"cniVersion": "1.0.0", "type": "plxnosuchplugin", "ipam": {"type": "host-local", "subnet": "10.9.0.0/24"}}`)
	f.nad("unversioned", `{"type": "macvlan", "master": "eth9"}`)

	for name, reason := range map[string]string{"garbled": controllers.ReasonInvalidConfig, "exotic": controllers.ReasonPluginMissing} {
		f.eventually(name+"'s event", func() bool {
			for _, e := range f.events(name) {
				if e.Reason == reason && e.Type == corev1.EventTypeWarning && strings.Contains(e.Message, "node "+node) {
					return true
				}
			}
			return false
		})
		if _, ok := f.stored(name); ok {
			t.Errorf("rejected definition %s is in the node store", name)
		}
	}
	f.eventually("unversioned rendered with a warning", func() bool { _, ok := f.stored("unversioned"); return ok })

	f.eventually("the node status lists the rejections", func() bool {
		nns := f.nodeStatus()
		return nns != nil && nns.Status.NetworksRejected == 2 && nns.Status.NetworksRendered == 1 && len(nns.Status.Warnings) == 1
	})
	st := f.nodeStatus().Status
	reasons := map[string]string{}
	for _, p := range st.Rejected {
		reasons[p.Name] = p.Reason + ": " + p.Message
	}
	if !strings.HasPrefix(reasons["garbled"], controllers.ReasonInvalidConfig+": spec.config") ||
		!strings.HasPrefix(reasons["exotic"], controllers.ReasonPluginMissing) || !strings.Contains(reasons["exotic"], "plxnosuchplugin") {
		t.Errorf("rejected %v", reasons)
	}
	if !slices.Equal(st.MissingPlugins, []string{"plxnosuchplugin"}) {
		t.Errorf("missingPlugins %v", st.MissingPlugins)
	}
	if st.Warnings[0].Name != "unversioned" || st.Warnings[0].Reason != controllers.ReasonDefaultedCNIVersion {
		t.Errorf("warnings %+v", st.Warnings)
	}

	// A pod asking for a rejected definition fails with its reason.
	pod := f.pod("web", "garbled")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err == nil || !strings.Contains(err.Error(), "team/garbled") ||
		!strings.Contains(err.Error(), "spec.config") {
		t.Errorf("ADD with a rejected definition: %v", err)
	}
}

// The status lists the bin dir's plugins, for the admission webhook's
// warnings, and follows the dir: a plugin installed later shows at the
// next refresh; hidden files (a copy being written) and dirs do not.
func TestNodeNetworkStatusListsTheBinDirPlugins(t *testing.T) {
	f := newFixture(t)
	has := func(names ...string) bool {
		nns := f.nodeStatus()
		if nns == nil {
			return false
		}
		for _, n := range names {
			if !slices.Contains(nns.Status.Plugins, n) {
				return false
			}
		}
		return true
	}
	f.eventually("the reference plugins and the shim listed", func() bool { return has("bridge", "host-local", "macvlan", controllers.ShimName) })
	if p := f.nodeStatus().Status.Plugins; !slices.IsSorted(p) {
		t.Errorf("plugins not sorted: %v", p)
	}
	for _, name := range []string{"plxlater", ".plxlater.tmp"} {
		if err := os.WriteFile(filepath.Join(f.opts.CNIBinDir, name), []byte("#!/bin/sh\n"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(f.opts.CNIBinDir, "plxsubdir"), 0o755); err != nil {
		t.Fatal(err)
	}
	f.daemon.NodeStatus.Poke()
	f.eventually("a plugin installed later listed", func() bool { return has("plxlater") })
	for _, p := range f.nodeStatus().Status.Plugins {
		if strings.HasPrefix(p, ".") || p == "plxsubdir" {
			t.Errorf("plugins list %q: %v", p, f.nodeStatus().Status.Plugins)
		}
	}
}

func TestNodeNetworkStatusReflectsTheNode(t *testing.T) {
	f := newFixture(t)
	f.eventually("the node's status Ready", func() bool {
		nns := f.nodeStatus()
		return nns != nil && meta.IsStatusConditionTrue(nns.Status.Conditions, v1alpha1.ConditionReady)
	})
	nns := f.nodeStatus()
	if len(nns.OwnerReferences) != 1 || nns.OwnerReferences[0].Kind != "Node" || nns.OwnerReferences[0].Name != node {
		t.Errorf("owner references %+v, want the Node", nns.OwnerReferences)
	}
	d := nns.Status.DefaultNetwork
	if d == nil || d.Name != "defnet" || d.Type != "bridge" || filepath.Base(d.File) != "10-default.conflist" || d.CNIVersion != "1.0.0" {
		t.Errorf("default network %+v", d)
	}
	for _, c := range []string{v1alpha1.ConditionDefaultNetworkFound, v1alpha1.ConditionConfigWritten, v1alpha1.ConditionShimInstalled} {
		if !meta.IsStatusConditionTrue(nns.Status.Conditions, c) {
			t.Errorf("condition %s not true: %+v", c, nns.Status.Conditions)
		}
	}
	if nns.Status.ConfigWritten == nil {
		t.Error("configWritten unset")
	}
	written, err := os.ReadFile(filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName))
	if err != nil || !strings.Contains(string(written), `"defaultNetwork": "defnet"`) {
		t.Errorf("node conflist %s (%v)", written, err)
	}
	if data, err := os.ReadFile(filepath.Join(f.opts.CNIBinDir, "plexus")); err != nil || len(data) == 0 {
		t.Errorf("shim not installed in the bin dir: %v", err)
	}

	// An ADD shows in the attachments count at the next refresh.
	pod := f.pod("web", "")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatal(err)
	}
	f.daemon.NodeStatus.Poke()
	f.eventually("attachments 1", func() bool { return f.nodeStatus().Status.Attachments == 1 })

	// What an operator sees.
	out := f.kubectl("get", "nodenetworkstatuses")
	for _, col := range []string{"NODE", "DEFAULT NETWORK", "READY", "NETWORKS", "ATTACHMENTS", "AGE"} {
		if !strings.Contains(out, col) {
			t.Errorf("kubectl get lacks column %s:\n%s", col, out)
		}
	}
	if !strings.Contains(out, node) || !strings.Contains(out, "defnet") || !strings.Contains(out, "True") {
		t.Errorf("kubectl get:\n%s", out)
	}
	t.Logf("kubectl get nodenetworkstatuses:\n%s\nkubectl get nodenetworkstatuses -o yaml:\n%s", out, f.kubectl("get", "nodenetworkstatuses", "-o", "yaml"))

	// The default network goes away (an upgrade rewriting its file): the
	// last good conflist stays, and the status says so.
	if err := os.Remove(filepath.Join(f.opts.CNIConfDir, "10-default.conflist")); err != nil {
		t.Fatal(err)
	}
	f.eventually("DefaultNetworkFound false", func() bool {
		return meta.IsStatusConditionFalse(f.nodeStatus().Status.Conditions, v1alpha1.ConditionDefaultNetworkFound)
	})
	if kept, err := os.ReadFile(filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName)); err != nil || string(kept) != string(written) {
		t.Errorf("node conflist after the default network went away: %s (%v), want the last good one", kept, err)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatal(err)
	}
}

// kubectl runs the kubectl built from source against the test's API server.
func (f *fixture) kubectl(args ...string) string {
	f.t.Helper()
	kubectl := filepath.Join(assets(f.t), "kubectl")
	if _, err := os.Stat(kubectl); err != nil {
		f.t.Fatalf("kubectl not in %s (make envtest-assets)", filepath.Dir(kubectl))
	}
	user, err := f.env.ControlPlane.AddUser(envtestAdmin, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		f.t.Fatal(err)
	}
	path := filepath.Join(f.dir, "kubeconfig")
	if err := os.WriteFile(path, kubeconfig, 0o600); err != nil {
		f.t.Fatal(err)
	}
	out, err := exec.Command(kubectl, append([]string{"--kubeconfig", path}, args...)...).CombinedOutput()
	if err != nil {
		f.t.Fatalf("kubectl %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func TestResolutionFromTheNodeStoreNeedsNoAPIServer(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.eventually("blue rendered", func() bool { _, ok := f.stored("blue"); return ok })
	pod := f.pod("web", "blue")
	f.waitCached(pod)
	f.signalAPIServer(syscall.SIGKILL)

	// Readers that can only reach the dead API server: whatever resolves
	// comes from the store on disk.
	dead, err := client.New(f.env.Config, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	nets := &kube.Networks{Store: f.netStore(), Cache: dead, Live: dead}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nad, err := nets.Network(ctx, k8stypes.NamespacedName{Namespace: "team", Name: "blue"})
	if err != nil || !strings.Contains(nad.Spec.Config, "10.241.0.0/24") {
		t.Fatalf("resolving from the store with the API server down: %v %+v", err, nad)
	}
	if _, err := nets.Network(ctx, k8stypes.NamespacedName{Namespace: "team", Name: "absent"}); err == nil ||
		errors.Is(err, plugin.ErrNetworkNotFound) {
		t.Errorf("an unknown definition with the API server down: %v, want the API error, not not-found", err)
	}

	// And the running daemon attaches it.
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD with the API server down: %v", err)
	}
	if l, ok := plugintest.LinkIn(t, netns, "net1"); !ok || len(l.Addrs) != 1 {
		t.Errorf("net1 %+v present=%v", l, ok)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatal(err)
	}
}

var envtestAdmin = envtest.User{Name: "plexus-test-admin", Groups: []string{"system:masters"}}

func TestReadyOnlyOnceTheNodeIsConfigured(t *testing.T) {
	var defaultConf []byte
	f := newFixture(t, func(f *fixture) {
		// No default network yet: the node is not ready.
		path := filepath.Join(f.opts.CNIConfDir, "10-default.conflist")
		var err error
		if defaultConf, err = os.ReadFile(path); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(path); err != nil {
			t.Fatal(err)
		}
		f.opts.ProbeAddr = freeAddr(t)
	})
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + f.opts.ProbeAddr + "/readyz?verbose")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	f.eventually("/readyz answering", func() bool { code, _ := readyz(); return code != 0 })
	if code, body := readyz(); code == http.StatusOK || !strings.Contains(body, "node-config") {
		t.Errorf("/readyz %d with no default network:\n%s", code, body)
	}
	if _, err := os.Stat(filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName)); err == nil {
		t.Error("node conflist written with no default network")
	}
	if err := os.WriteFile(filepath.Join(f.opts.CNIConfDir, "10-default.conflist"), defaultConf, 0o644); err != nil {
		t.Fatal(err)
	}
	f.eventually("/readyz ok once the default network appears", func() bool { code, _ := readyz(); return code == http.StatusOK })
	if code, _ := readyz(); code != http.StatusOK {
		t.Errorf("/readyz %d", code)
	}
	resp, err := http.Get("http://" + f.opts.ProbeAddr + "/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz: %v %v", resp, err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
