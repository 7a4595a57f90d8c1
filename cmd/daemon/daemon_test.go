package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/controllertest"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

type M = plugintest.M

const node = "node-a"

// daemonNamespace is where the daemon's pod and DaemonSet are, as installed.
const daemonNamespace = "kube-system"

var shimOnce struct {
	sync.Once
	path string
	err  error
}

// shim builds the real CNI binary once per test run.
func shim(t *testing.T) string {
	t.Helper()
	shimOnce.Do(func() {
		dir, err := os.MkdirTemp("", "plexus-shim")
		if err != nil {
			shimOnce.err = err
			return
		}
		shimOnce.path = filepath.Join(dir, "plexus")
		out, err := exec.Command("go", "build", "-o", shimOnce.path, "github.com/plexus-cni/plexus/cmd/plexus").CombinedOutput()
		if err != nil {
			shimOnce.err = &buildError{string(out)}
		}
	})
	if shimOnce.err != nil {
		t.Fatalf("building the shim: %v", shimOnce.err)
	}
	return shimOnce.path
}

type buildError struct{ out string }

func (e *buildError) Error() string { return e.out }

// assets finds kube-apiserver and etcd built from source (make envtest-assets).
func assets(t *testing.T) string { t.Helper(); return controllertest.Assets(t) }

type fixture struct {
	t      *testing.T
	env    *envtest.Environment
	client client.Client
	api    *controllertest.APICounter
	dir    string
	opts   daemon.Options
	daemon *daemon.Daemon
	// daemonCfg is the daemon's identity: bound to the shipped ClusterRole.
	daemonCfg *rest.Config
	stop      context.CancelFunc
	stopped   chan struct{}
}

// newFixture starts an API server and a daemon; setup may change the
// daemon's options and the node's files before the daemon starts.
func newFixture(t *testing.T, setup ...func(*fixture)) *fixture {
	t.Helper()
	plugintest.RequireRoot(t)
	logSink.attach(t)
	crds := filepath.Join(plugintest.RepoRoot(t), "config", "crd")
	env := controllertest.NewEnvironment(assets(t), filepath.Join(crds, "npwg"), filepath.Join(crds, "bases"))
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("starting the API server: %v", err)
	}
	f := &fixture{t: t, env: env, dir: t.TempDir(), api: controllertest.NewAPICounter()}
	t.Cleanup(func() { _ = env.Stop() })
	f.client, err = client.New(cfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	confDir := filepath.Join(f.dir, "net.d")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		t.Fatal(err)
	}
	bridge := plugintest.Name("plxb")
	plugintest.DeleteLinkOnCleanup(t, bridge)
	if err := os.WriteFile(filepath.Join(confDir, "10-default.conflist"),
		[]byte(plugintest.BridgeList("defnet", "1.0.0", bridge, "10.240.0.0/24", f.ipamDir())), 0o644); err != nil {
		t.Fatal(err)
	}
	f.opts = daemon.Defaults()
	f.opts.NodeName = node
	f.opts.SocketPath = filepath.Join(f.dir, "run", "plexus.sock")
	f.opts.StateDir = filepath.Join(f.dir, "state")
	f.opts.CNIConfDir = confDir
	f.opts.CNIBinDir = plugintest.BinDir(t)
	f.opts.ShimSource = shim(t)
	f.opts.MetricsAddr = "0"
	f.opts.ProbeAddr = "0"

	for _, fn := range setup {
		fn(f)
	}
	f.create(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: node}})
	f.daemonCfg = f.shippedRBAC()
	f.daemonCfg.WrapTransport = f.api.Wrap
	f.startDaemon(f.daemonCfg)
	f.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team"}})
	return f
}

// logSink sends the daemon's logs to the running test's log, and drops
// what goroutines of a finished test still write. Its lines are JSON, as
// the daemon's are in production.
var logSink = &testLog{}

func init() { ctrl.SetLogger(zap.New(zap.WriteTo(logSink))) }

type testLog struct {
	mu    sync.Mutex
	t     *testing.T
	lines []map[string]any // the running test's lines, decoded
}

func (l *testLog) attach(t *testing.T) {
	l.mu.Lock()
	l.t, l.lines = t, nil
	l.mu.Unlock()
	t.Cleanup(func() {
		l.mu.Lock()
		l.t, l.lines = nil, nil
		l.mu.Unlock()
	})
}

func (l *testLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.t != nil {
		l.t.Log(strings.TrimRight(string(p), "\n"))
		line := map[string]any{}
		if json.Unmarshal(p, &line) == nil {
			l.lines = append(l.lines, line)
		}
	}
	return len(p), nil
}

// logged returns the running test's log lines for which keep is true.
func (l *testLog) logged(keep func(map[string]any) bool) []map[string]any {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []map[string]any
	for _, line := range l.lines {
		if keep(line) {
			out = append(out, line)
		}
	}
	return out
}

// signalAPIServer sends sig to the API server: SIGKILL takes it away at
// once, as a crash does (a graceful stop would wait for the daemon's
// watches); SIGSTOP and SIGCONT make it unreachable for a while.
func (f *fixture) signalAPIServer(sig syscall.Signal) {
	f.t.Helper()
	certDir := f.env.ControlPlane.APIServer.CertDir
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		cmdline, err := os.ReadFile(p)
		if err != nil || !bytes.Contains(cmdline, []byte("kube-apiserver")) || !bytes.Contains(cmdline, []byte(certDir)) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		if err := syscall.Kill(pid, sig); err != nil {
			f.t.Fatal(err)
		}
		if sig == syscall.SIGSTOP {
			f.t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
		}
		return
	}
	f.t.Fatal("kube-apiserver process not found")
}

// shippedRBAC returns a config for a user that has exactly the ClusterRole
// plexus ships (config/rbac/clusterrole.yaml, rendered from the chart), so
// that every test proves the daemon needs no more than that.
func (f *fixture) shippedRBAC() *rest.Config {
	f.t.Helper()
	role := &rbacv1.ClusterRole{}
	controllertest.Shipped(f.t, "rbac/clusterrole.yaml", "ClusterRole", role)
	const user = "plexus-daemon"
	role.ObjectMeta = metav1.ObjectMeta{Name: "plexus"}
	f.create(role)
	f.create(&rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "plexus"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	// And the Role of config/rbac/role.yaml, in the namespace the daemon's
	// pod runs in.
	owner := &rbacv1.Role{}
	controllertest.Shipped(f.t, "rbac/role.yaml", "Role", owner)
	owner.ObjectMeta = metav1.ObjectMeta{Name: "plexus", Namespace: daemonNamespace}
	f.create(owner)
	f.create(&rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "plexus", Namespace: daemonNamespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: owner.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: user}},
	})
	u, err := f.env.ControlPlane.AddUser(envtest.User{Name: user}, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	return rest.CopyConfig(u.Config())
}

func (f *fixture) ipamDir() string { return filepath.Join(f.dir, "ipam") }

func (f *fixture) startDaemon(cfg *rest.Config) {
	f.t.Helper()
	d, err := daemon.New(cfg, f.opts)
	if err != nil {
		f.t.Fatal(err)
	}
	f.daemon = d
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.stopped = cancel, make(chan struct{})
	go func() {
		defer close(f.stopped)
		if err := d.Manager.Start(ctx); err != nil {
			f.t.Errorf("daemon: %v", err)
		}
	}()
	f.t.Cleanup(f.stopDaemon)
	f.eventually("daemon serving", func() bool { return d.Server.Ready(nil) == nil })
	if _, err := os.Stat(filepath.Join(f.opts.CNIConfDir, "10-default.conflist")); err == nil {
		f.eventually("the node conflist", func() bool { return d.Node.Ready() == nil })
	}
}

func (f *fixture) stopDaemon() {
	if f.stop != nil {
		f.stop()
		<-f.stopped
		f.stop = nil
	}
}

func (f *fixture) create(obj client.Object) {
	f.t.Helper()
	if err := f.client.Create(context.Background(), obj); err != nil {
		f.t.Fatalf("creating %T %s: %v", obj, obj.GetName(), err)
	}
}

func (f *fixture) nad(name, config string) {
	f.create(&nadv1.NetworkAttachmentDefinition{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name},
		Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: config},
	})
}

func (f *fixture) macvlanNet(subnet string) string {
	return plugintest.Conf(M{"cniVersion": "1.0.0", "type": "macvlan", "master": plugintest.Veth(f.t),
		"mode": "bridge", "ipam": plugintest.HostLocal(subnet, f.ipamDir())})
}

func (f *fixture) pod(name, networks string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name,
			Annotations: map[string]string{"k8s.v1.cni.cncf.io/networks": networks}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	f.create(p)
	return p
}

// webOnBlueAndGreen makes team/web, asking for two macvlan networks
// (blue as net1, green as data0), and a netns for its sandbox, once the
// daemon's cache has the pod.
func (f *fixture) webOnBlueAndGreen() (*corev1.Pod, ns.NetNS) {
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.nad("green", f.macvlanNet("10.242.0.0/24"))
	pod := f.pod("web", "blue, green@data0")
	f.waitCached(pod)
	return pod, plugintest.NewNS(f.t)
}

func (f *fixture) eventually(what string, cond func() bool) {
	f.t.Helper()
	f.waitFor(what, 30*time.Second, cond)
}

// waitFor polls cond every 20 ms until it holds, failing the test after
// timeout.
func (f *fixture) waitFor(what string, timeout time.Duration, cond func() bool) {
	f.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, timeout, true,
		func(context.Context) (bool, error) { return cond(), nil })
	if err != nil {
		f.t.Fatalf("timed out waiting for %s", what)
	}
}

// runtimeConf is the shim's stdin as a runtime builds it from the node
// conflist the daemon wrote: its one plugin with the list's name and
// cniVersion.
func (f *fixture) runtimeConf() []byte {
	f.t.Helper()
	list, err := libcni.NetworkConfFromFile(filepath.Join(f.opts.CNIConfDir, controllers.ConfigFileName))
	if err != nil {
		f.t.Fatalf("the node conflist: %v", err)
	}
	plugin := map[string]interface{}{}
	if err := json.Unmarshal(list.Plugins[0].Bytes, &plugin); err != nil {
		f.t.Fatal(err)
	}
	plugin["name"], plugin["cniVersion"] = list.Name, list.CNIVersion
	data, err := json.Marshal(plugin)
	if err != nil {
		f.t.Fatal(err)
	}
	return data
}

// cni runs the real shim the way a container runtime does.
func (f *fixture) cni(command, id string, netns ns.NetNS, pod *corev1.Pod) ([]byte, error) {
	f.t.Helper()
	cmd := exec.Command(shim(f.t))
	netnsPath := ""
	if netns != nil {
		netnsPath = netns.Path()
	}
	args := ""
	if pod != nil {
		args = "IgnoreUnknown=1;K8S_POD_NAMESPACE=" + pod.Namespace + ";K8S_POD_NAME=" + pod.Name +
			";K8S_POD_INFRA_CONTAINER_ID=" + id + ";K8S_POD_UID=" + string(pod.UID)
	}
	cmd.Env = []string{"CNI_COMMAND=" + command, "CNI_CONTAINERID=" + id, "CNI_NETNS=" + netnsPath,
		"CNI_IFNAME=eth0", "CNI_ARGS=" + args, "CNI_PATH=" + f.opts.CNIBinDir}
	cmd.Stdin = bytes.NewReader(f.runtimeConf())
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		cniErr := &types.Error{}
		if json.Unmarshal(stdout.Bytes(), cniErr) == nil && cniErr.Msg != "" {
			return nil, cniErr
		}
		f.t.Fatalf("shim %s: %v: %s %s", command, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func (f *fixture) networkStatus(pod *corev1.Pod) []nadv1.NetworkStatus {
	got := &corev1.Pod{}
	if err := f.client.Get(context.Background(), client.ObjectKeyFromObject(pod), got); err != nil {
		f.t.Fatal(err)
	}
	v, ok := got.Annotations[nadv1.NetworkStatusAnnot]
	if !ok {
		return nil
	}
	var status []nadv1.NetworkStatus
	if err := json.Unmarshal([]byte(v), &status); err != nil {
		f.t.Fatalf("network-status annotation %q: %v", v, err)
	}
	return status
}

func (f *fixture) waitCached(pod *corev1.Pod) {
	// The daemon's pod cache is fed by a watch; give it the pod before an
	// ADD, as kubelet's own watch delay does in a cluster.
	time.Sleep(300 * time.Millisecond)
}

// assertClean checks that a torn-down sandbox left nothing: no interface
// but lo in its netns (if it still exists) and no host-local allocation.
func (f *fixture) assertClean(netns ns.NetNS, networks ...string) {
	f.t.Helper()
	if got := allocations(f, networks...); len(got) != 0 {
		f.t.Errorf("allocations left: %v", got)
	}
	if netns != nil {
		if links := plugintest.Links(f.t, netns); !slices.Equal(links, []string{"lo"}) {
			f.t.Errorf("links left: %v", links)
		}
	}
}

func allocations(f *fixture, networks ...string) []string {
	var all []string
	for _, n := range networks {
		all = append(all, plugintest.Allocations(f.t, f.ipamDir(), n)...)
	}
	return all
}

func TestAddWritesStatusWithOnePatchAndNoReads(t *testing.T) {
	f := newFixture(t)
	pod, netns := f.webOnBlueAndGreen()

	f.api.Take()
	out, err := f.cni("ADD", "c1", netns, pod)
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("network-status", func() bool { return len(f.networkStatus(pod)) == 3 })
	time.Sleep(200 * time.Millisecond) // let any stray request show
	f.eventually("AddedInterface Events", func() bool { return len(f.eventsOf("Pod", pod.Name, "AddedInterface")) == 3 })
	time.Sleep(200 * time.Millisecond) // let any stray request show
	counts, events := controllertest.ForPods(f.api.Take())
	t.Logf("API requests during one ADD: %v, and its Events: %v", counts, events)
	if counts["PATCH pods/status"] != 1 || len(counts) != 1 {
		t.Errorf("API requests per ADD %v, want exactly one PATCH of pods/status", counts)
	}
	if events["POST "+controllertest.PodEvents] != 3 || len(events) != 1 {
		t.Errorf("Event requests per ADD %v, want one POST per interface (3)", events)
	}

	res := &current.Result{}
	if err := json.Unmarshal(out, res); err != nil || len(res.IPs) != 1 {
		t.Fatalf("result %s (%v)", out, err)
	}
	status := f.networkStatus(pod)
	var names []string
	for _, s := range status {
		names = append(names, s.Name+"@"+s.Interface)
	}
	if !slices.Equal(names, []string{"defnet@eth0", "team/blue@net1", "team/green@data0"}) || !status[0].Default {
		t.Errorf("network-status %+v", status)
	}
	if ip := res.IPs[0].Address.IP.String(); !slices.Equal(status[0].IPs, []string{ip}) {
		t.Errorf("default entry IPs %v, result %s", status[0].IPs, ip)
	}
	for _, link := range []string{"eth0", "net1", "data0"} {
		if l, ok := plugintest.LinkIn(t, netns, link); !ok || len(l.Addrs) != 1 {
			t.Errorf("%s in the pod: %+v present=%v", link, l, ok)
		}
	}

	// DEL makes no API request at all.
	f.api.Take()
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if counts, events := controllertest.ForPods(f.api.Take()); len(counts)+len(events) != 0 {
		t.Errorf("API requests per DEL %v, want none", counts)
	}
	f.assertClean(netns, "defnet", "blue", "green")
}

func TestDelWorksWithTheAPIServerDown(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("web", "blue")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := allocations(f, "defnet", "blue"); len(got) != 2 {
		t.Fatalf("allocations after ADD %v, want 2", got)
	}
	f.signalAPIServer(syscall.SIGKILL)
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL with the API server down: %v", err)
	}
	f.assertClean(netns, "defnet", "blue")
}

func TestShimTearsDownWhenTheDaemonIsDown(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("web", "blue")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.stopDaemon()

	_, err := f.cni("ADD", "c2", plugintest.NewNS(t), pod)
	cniErr, ok := err.(*types.Error)
	if !ok || cniErr.Code != types.ErrTryAgainLater || !strings.Contains(cniErr.Msg, "daemon") {
		t.Errorf("ADD with the daemon down: %v, want a try-again-later error naming the daemon", err)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL with the daemon down: %v", err)
	}
	f.assertClean(netns, "defnet", "blue")
}

func TestBadNetworksGiveClearErrorsAndLeaveNothing(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	for _, c := range []struct{ name, networks, want string }{
		{"missing", "blue, nope", "pod team/missing: network team/nope not found"},
		{"malformed", `[{"name": "blue"`, "pod team/malformed: networks annotation: invalid JSON"},
	} {
		t.Run(c.name, func(t *testing.T) {
			pod := f.pod(c.name, c.networks)
			f.waitCached(pod)
			netns := plugintest.NewNS(t)
			_, err := f.cni("ADD", "c-"+c.name, netns, pod)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("ADD error %v, want it to contain %q", err, c.want)
			}
			f.assertClean(netns, "defnet", "blue")
			if st := f.networkStatus(pod); st != nil {
				t.Errorf("status written for a failed ADD: %+v", st)
			}
		})
	}
}

func TestUIDMismatchIsRefused(t *testing.T) {
	f := newFixture(t)
	pod := f.pod("web", "")
	f.waitCached(pod)
	stale := pod.DeepCopy()
	stale.UID = k8stypes.UID("00000000-0000-0000-0000-000000000000")
	_, err := f.cni("ADD", "c1", plugintest.NewNS(t), stale)
	if err == nil || !strings.Contains(err.Error(), "UID") {
		t.Fatalf("ADD for a pod with another UID: %v, want a UID error", err)
	}
}

func TestAddNeitherWaitsForNorFailsOnAnUnreachableAPIServer(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod := f.pod("web", "blue")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)

	f.signalAPIServer(syscall.SIGSTOP)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD with the API server unreachable: %v", err)
	}
	if n := f.daemon.Status.Pending(); n != 1 {
		t.Errorf("pending statuses while the API server is away: %d, want 1", n)
	}
	f.signalAPIServer(syscall.SIGCONT)
	f.eventually("network-status after the API server is back", func() bool { return len(f.networkStatus(pod)) == 2 })
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

func TestStatusOfAGonePodIsDroppedNotRetried(t *testing.T) {
	f := newFixture(t)
	// A sandbox whose pod is deleted from the API before its DEL: its
	// record is still there, so its status is written, and refused.
	pod := f.pod("ghost", "")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	f.eventually("the ADD's status written", func() bool { return f.daemon.Status.Pending() == 0 })
	if err := f.client.Delete(context.Background(), pod, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	f.eventually("the pod gone", func() bool {
		return apierrors.IsNotFound(f.client.Get(context.Background(), client.ObjectKeyFromObject(pod), &corev1.Pod{}))
	})
	f.api.Take()
	f.daemon.Status.Publish(record.PodRef{Namespace: "team", Name: "ghost", UID: string(pod.UID)}, "c1",
		[]nadv1.NetworkStatus{{Name: "defnet", Interface: "eth0", Default: true}})
	f.eventually("the status dropped", func() bool { return f.daemon.Status.Pending() == 0 })
	time.Sleep(300 * time.Millisecond) // a retry would come within the first backoff steps
	if counts := f.api.Take(); counts["PATCH pods/status"] != 1 {
		t.Errorf("API requests for a gone pod: %v, want one PATCH and no retry", counts)
	}

	// A status whose sandbox has no record any more (its DEL ran) is
	// dropped without a request.
	f.daemon.Status.Publish(record.PodRef{Namespace: "team", Name: "ghost", UID: string(pod.UID)}, "c2",
		[]nadv1.NetworkStatus{{Name: "defnet", Interface: "eth0", Default: true}})
	f.eventually("the status dropped", func() bool { return f.daemon.Status.Pending() == 0 })
	time.Sleep(300 * time.Millisecond)
	if counts := f.api.Take(); counts["PATCH pods/status"] != 0 {
		t.Errorf("API requests for a sandbox without a record: %v, want none", counts)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}

func TestStatusIsRepublishedAfterADaemonRestart(t *testing.T) {
	f := newFixture(t)
	pod := f.pod("web", "")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	f.signalAPIServer(syscall.SIGSTOP)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	// The daemon goes away before it could write the status.
	f.stopDaemon()
	f.signalAPIServer(syscall.SIGCONT)
	if st := f.networkStatus(pod); st != nil {
		t.Fatalf("status written by a daemon that never reached the API server: %+v", st)
	}
	f.startDaemon(f.daemonCfg)
	f.eventually("network-status from the new daemon", func() bool { return len(f.networkStatus(pod)) == 1 })
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("DEL: %v", err)
	}
}
