package daemon_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/plugin/plugintest"
	"github.com/plexus-cni/plexus/plugin/record"
)

// dynClient speaks the delegate API as the dynamic networks controller
// does (its pkg/multuscni client over Multus's pkg/server/api request):
// JSON over HTTP on the unix socket, to a host name that is ignored.
type dynClient struct {
	t      *testing.T
	socket string
	http   *http.Client
}

func newDynClient(t *testing.T, socket string) *dynClient {
	return &dynClient{t: t, socket: socket, http: &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", socket)
		},
	}}}
}

// delegateBody builds the request as the controller's CreateDelegateRequest
// does; attrs nil leaves interfaceAttributes out, as the controller does
// for a selection element that asks for none.
func delegateBody(command, containerID, netns, ifname string, pod *corev1.Pod, config []byte, attrs map[string]interface{}) map[string]interface{} {
	body := map[string]interface{}{
		"env": map[string]string{
			"CNI_COMMAND":     command,
			"CNI_CONTAINERID": containerID,
			"CNI_NETNS":       netns,
			"CNI_IFNAME":      ifname,
			"CNI_ARGS":        "K8S_POD_NAMESPACE=" + pod.Namespace + ";K8S_POD_NAME=" + pod.Name + ";K8S_POD_UID=" + string(pod.UID),
		},
		"config": config, // []byte: base64, as the controller's encoding/json sends it
	}
	if attrs != nil {
		body["interfaceAttributes"] = attrs
	}
	return body
}

// post sends body (marshalled, or raw if it is a []byte) and returns the
// status and the answer.
func (c *dynClient) post(body interface{}) (int, []byte) {
	c.t.Helper()
	data, ok := body.([]byte)
	if !ok {
		var err error
		if data, err = json.Marshal(body); err != nil {
			c.t.Fatal(err)
		}
	}
	req, err := http.NewRequest(http.MethodPost, "http://dummy/delegate", bytes.NewReader(data))
	if err != nil {
		c.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	return c.do(req)
}

func (c *dynClient) do(req *http.Request) (int, []byte) {
	c.t.Helper()
	resp, err := c.http.Do(req)
	if err != nil {
		c.t.Fatalf("%s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, out
}

// add runs an ADD that must succeed and returns its result, decoded as
// the controller decodes it.
func (c *dynClient) add(body map[string]interface{}) *current.Result {
	c.t.Helper()
	code, out := c.post(body)
	if code != http.StatusOK {
		c.t.Fatalf("ADD: status %d: %s", code, out)
	}
	var resp struct{ Result *current.Result }
	if err := json.Unmarshal(out, &resp); err != nil || resp.Result == nil {
		c.t.Fatalf("ADD answer %s: want {\"Result\": <CNI result>} (%v)", out, err)
	}
	return resp.Result
}

// withDelegateAPI runs the daemon in delegate-api mode, its socket in the
// test's dir.
func withDelegateAPI(f *fixture) {
	f.opts.HotplugMode = controllers.HotplugDelegateAPI
	f.opts.DelegateAPISocket = filepath.Join(f.dir, "run", "multus", "multus.sock")
}

// nadConfig is what the controller sends as config: the definition's
// spec.config with its name filled in.
func nadConfig(t *testing.T, name, specConfig string) []byte {
	t.Helper()
	conf, err := nadutils.GetCNIConfigFromSpec(specConfig, name)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// runningPod creates a pod and ADDs its sandbox c1 through the shim.
func (f *fixture) runningPod(name, networks string) (*corev1.Pod, ns.NetNS) {
	f.t.Helper()
	pod := f.pod(name, networks)
	f.waitCached(pod)
	netns := plugintest.NewNS(f.t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		f.t.Fatalf("ADD of the sandbox: %v", err)
	}
	f.eventually("the daemon's delegate API", func() bool { return f.daemon.DelegateAPI.Ready(nil) == nil })
	return pod, netns
}

// annotate sets the pod's networks annotation, as a user (or KubeVirt)
// does before the controller calls the delegate API.
func (f *fixture) annotate(pod *corev1.Pod, networks string) {
	f.t.Helper()
	patch := client.RawPatch(k8stypes.MergePatchType, []byte(`{"metadata": {"annotations": {"`+nadv1.NetworkAttachmentAnnot+`": `+strconv.Quote(networks)+`}}}`))
	if err := f.client.Patch(context.Background(), pod, patch); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) attachment(id, ifname string) (record.Attachment, bool) {
	f.t.Helper()
	rec, err := f.daemon.Engine.Store.Load(id)
	if err != nil {
		f.t.Fatal(err)
	}
	for _, a := range rec.Attachments {
		if a.IfName == ifname {
			return a, true
		}
	}
	return record.Attachment{}, false
}

func TestDelegateAPIAddsAndRemovesAnInterfaceOfARunningPod(t *testing.T) {
	f := newFixture(t, withDelegateAPI)
	spec := f.macvlanNet("10.243.0.0/24")
	pod, netns := f.runningPod("vm", "")
	c := newDynClient(t, f.opts.DelegateAPISocket)
	const ifname, mac = "pod0f3a1c", "02:11:22:33:44:55"
	f.annotate(pod, `[{"name": "hot", "interface": "`+ifname+`", "mac": "`+mac+`"}]`)
	body := delegateBody("ADD", "c1", netns.Path(), ifname, pod, nadConfig(t, "hot", spec),
		map[string]interface{}{"mac": mac, "ips": nil, "cni-args": nil})

	res := c.add(body)
	if res.CNIVersion != "1.0.0" || len(res.Interfaces) == 0 || res.Interfaces[0].Name != ifname || res.Interfaces[0].Mac != mac || len(res.IPs) != 1 {
		t.Fatalf("ADD result %+v: want CNI 1.0.0, interface %s with MAC %s and one address", res, ifname, mac)
	}
	link, ok := plugintest.LinkIn(t, netns, ifname)
	if !ok || link.MAC != mac || !slices.Contains(link.Addrs, res.IPs[0].Address.String()) {
		t.Fatalf("in the netns: %s = %+v (present %v), want MAC %s and %s", ifname, link, ok, mac, res.IPs[0].Address.String())
	}
	a, ok := f.attachment("c1", ifname)
	if !ok || a.Origin != record.OriginDelegateAPI || !a.Added() || a.Network != "team/hot" {
		t.Fatalf("record: attachment %s = %+v (present %v), want an added one of network team/hot (the annotation element's, as the controller names it), origin %q",
			ifname, a, ok, record.OriginDelegateAPI)
	}
	if got := allocations(f, "hot"); len(got) != 1 {
		t.Fatalf("host-local allocations of hot: %v, want 1", got)
	}

	// The controller ADDs again when its status write failed (its issue
	// 235): the same attachment answers with its result, nothing runs.
	again := c.add(body)
	if again.IPs[0].Address.String() != res.IPs[0].Address.String() || len(allocations(f, "hot")) != 1 {
		t.Fatalf("second ADD: %v, allocations %v: want the first result and one allocation", again.IPs, allocations(f, "hot"))
	}

	code, out := c.post(delegateBody("DEL", "c1", netns.Path(), ifname, pod, nadConfig(t, "hot", spec), nil))
	if code != http.StatusOK || len(out) != 0 {
		t.Fatalf("DEL: status %d, body %q: want 200 and no body", code, out)
	}
	if _, ok := plugintest.LinkIn(t, netns, ifname); ok {
		t.Errorf("%s still in the netns after DEL", ifname)
	}
	if _, ok := f.attachment("c1", ifname); ok {
		t.Errorf("record still holds %s after DEL", ifname)
	}
	if got := allocations(f, "hot"); len(got) != 0 {
		t.Errorf("allocations of hot after DEL: %v", got)
	}
	// DEL is idempotent.
	if code, out := c.post(delegateBody("DEL", "c1", netns.Path(), ifname, pod, nadConfig(t, "hot", spec), nil)); code != http.StatusOK {
		t.Errorf("second DEL: %d %s", code, out)
	}
	// The node's NodeNetworkStatus counts what the API did: the repeated
	// ADD and DEL changed nothing, so count nothing.
	if st := f.daemon.HotplugActivity.Status(); st.Mode != controllers.HotplugDelegateAPI || st.Added != 1 || st.Removed != 1 || st.Failures != 0 {
		t.Errorf("hot-plug activity %+v: want mode delegate-api, 1 added, 1 removed, no failure", st)
	}
	if links := plugintest.Links(t, netns); !slices.Equal(links, []string{"eth0", "lo"}) && !slices.Equal(links, []string{"lo", "eth0"}) {
		t.Errorf("links after DEL: %v, want lo and eth0", links)
	}
}

func TestDelegateAPIAttachmentIsReleasedByThePodsOwnDEL(t *testing.T) {
	f := newFixture(t, withDelegateAPI)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod, netns := f.runningPod("vm", "blue@pod1")
	c := newDynClient(t, f.opts.DelegateAPISocket)
	c.add(delegateBody("ADD", "c1", netns.Path(), "pod2", pod, nadConfig(t, "hot", f.macvlanNet("10.243.0.0/24")), nil))
	if got := allocations(f, "defnet", "blue", "hot"); len(got) != 3 {
		t.Fatalf("allocations %v, want 3", got)
	}
	if _, err := f.cni("DEL", "c1", netns, pod); err != nil {
		t.Fatalf("the pod's DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue", "hot")
}

func TestDelegateAPIRefusesBadRequestsNamingTheField(t *testing.T) {
	f := newFixture(t, withDelegateAPI)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	pod, netns := f.runningPod("vm", "blue@pod1")
	other := f.pod("other", "")
	c := newDynClient(t, f.opts.DelegateAPISocket)
	hot := nadConfig(t, "hot", f.macvlanNet("10.243.0.0/24"))
	body := func(mutate func(b map[string]interface{}, env map[string]string)) map[string]interface{} {
		b := delegateBody("ADD", "c1", netns.Path(), "pod2", pod, hot, nil)
		mutate(b, b["env"].(map[string]string))
		return b
	}
	for _, tc := range []struct {
		name string
		body interface{}
		code int
		want string
	}{
		{"bad JSON", []byte(`{"env": {"CNI_COMMAND": "ADD"`), 400, "body"},
		{"no CNI_COMMAND", body(func(_ map[string]interface{}, env map[string]string) { delete(env, "CNI_COMMAND") }), 400, "CNI_COMMAND"},
		{"CHECK", body(func(_ map[string]interface{}, env map[string]string) { env["CNI_COMMAND"] = "CHECK" }), 400, "CNI_COMMAND"},
		{"no CNI_IFNAME", body(func(_ map[string]interface{}, env map[string]string) { delete(env, "CNI_IFNAME") }), 400, "CNI_IFNAME"},
		{"no CNI_CONTAINERID", body(func(_ map[string]interface{}, env map[string]string) { delete(env, "CNI_CONTAINERID") }), 400, "CNI_CONTAINERID"},
		{"no pod UID", body(func(_ map[string]interface{}, env map[string]string) {
			env["CNI_ARGS"] = "K8S_POD_NAMESPACE=team;K8S_POD_NAME=vm"
		}), 400, "K8S_POD_UID"},
		{"unknown container", body(func(_ map[string]interface{}, env map[string]string) { env["CNI_CONTAINERID"] = "c9" }), 409, "CNI_CONTAINERID"},
		{"pod mismatch", body(func(_ map[string]interface{}, env map[string]string) {
			env["CNI_ARGS"] = "K8S_POD_NAMESPACE=team;K8S_POD_NAME=other;K8S_POD_UID=" + string(other.UID)
		}), 404, "CNI_ARGS"},
		{"config without type", body(func(b map[string]interface{}, _ map[string]string) {
			b["config"] = []byte(`{"cniVersion": "1.0.0", "name": "hot"}`)
		}), 400, `"type"`},
		{"no config", body(func(b map[string]interface{}, _ map[string]string) { delete(b, "config") }), 400, "config"},
		{"bad MAC", body(func(b map[string]interface{}, _ map[string]string) {
			b["interfaceAttributes"] = map[string]interface{}{"mac": "zz"}
		}), 400, "interfaceAttributes.mac"},
		{"the default network", body(func(_ map[string]interface{}, env map[string]string) { env["CNI_IFNAME"] = "eth0" }), 409, "default network"},
		{"an interface of another network", body(func(_ map[string]interface{}, env map[string]string) { env["CNI_IFNAME"] = "pod1" }), 409, "team/blue"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.t = t
			code, out := c.post(tc.body)
			if code != tc.code || !strings.Contains(string(out), tc.want) {
				t.Errorf("status %d, %q: want %d and a text naming %s", code, out, tc.code, tc.want)
			}
		})
	}
	c.t = t
	rec, err := f.daemon.Engine.Store.Load("c1")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.Attachments) != 2 || len(allocations(f, "hot")) != 0 {
		t.Errorf("after refused requests: %d attachments, allocations of hot %v: want the sandbox's 2 and none", len(rec.Attachments), allocations(f, "hot"))
	}

	req, _ := http.NewRequest(http.MethodGet, "http://dummy/healthz", nil)
	if code, _ := c.do(req); code != http.StatusOK {
		t.Errorf("GET /healthz: %d, want 200", code)
	}
	req, _ = http.NewRequest(http.MethodGet, "http://dummy/delegate", nil)
	if code, _ := c.do(req); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /delegate: %d, want 405", code)
	}
}

func TestDelegateAPISocketIsRootOnlyAndOnlyServedInItsMode(t *testing.T) {
	socket := ""
	f := newFixture(t, withDelegateAPI, func(f *fixture) {
		// A socket left by a daemon that died: replaced.
		socket = f.opts.DelegateAPISocket
		if err := os.MkdirAll(filepath.Dir(socket), 0o700); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("unix", socket)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close()
	})
	f.eventually("the delegate API", func() bool { return f.daemon.DelegateAPI.Ready(nil) == nil })
	fi, err := os.Stat(socket)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %s: %v %v: want a socket, mode 0600 (root only, as Multus's)", socket, fi.Mode(), err)
	}
	req, _ := http.NewRequest(http.MethodGet, "http://dummy/healthz", nil)
	if code, _ := newDynClient(t, socket).do(req); code != http.StatusOK {
		t.Fatalf("GET /healthz: %d", code)
	}

	for _, mode := range []string{controllers.HotplugBuiltin, controllers.HotplugOff} {
		g := newFixture(t, withDelegateAPI, func(g *fixture) { g.opts.HotplugMode = mode })
		if g.daemon.DelegateAPI != nil {
			t.Errorf("mode %s: the delegate API server is built", mode)
		}
		time.Sleep(100 * time.Millisecond)
		if _, err := os.Stat(g.opts.DelegateAPISocket); !os.IsNotExist(err) {
			t.Errorf("mode %s: %s exists (%v): the socket must not be served", mode, g.opts.DelegateAPISocket, err)
		}
	}
}

// The status writer: a pod's network-status still waiting to be written
// is rebuilt from the record when it is written, so an attachment the
// delegate API added meanwhile is not dropped and one it removed is not
// brought back.
func TestPendingStatusIsRebuiltFromTheRecord(t *testing.T) {
	f := newFixture(t, withDelegateAPI)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	f.daemon.Status.Delay = 3 * time.Second // the ADD's status waits
	pod := f.pod("vm", "blue@pod1")
	f.waitCached(pod)
	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, pod); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if f.daemon.Status.Pending() != 1 {
		t.Fatalf("pending statuses: %d, want the ADD's", f.daemon.Status.Pending())
	}
	c := newDynClient(t, f.opts.DelegateAPISocket)
	f.annotate(pod, "hot@pod2")
	c.add(delegateBody("ADD", "c1", netns.Path(), "pod2", pod, nadConfig(t, "hot", f.macvlanNet("10.243.0.0/24")), nil))
	code, out := c.post(delegateBody("DEL", "c1", netns.Path(), "pod1", pod, nadConfig(t, "blue", f.macvlanNet("10.241.0.0/24")), nil))
	if code != http.StatusOK {
		t.Fatalf("DEL of pod1: %d %s", code, out)
	}
	if f.daemon.Status.Pending() != 1 {
		t.Fatalf("pending statuses: %d: the ADD's should still wait", f.daemon.Status.Pending())
	}
	var status []nadv1.NetworkStatus
	f.eventually("the ADD's status written", func() bool {
		status = f.networkStatus(pod)
		return status != nil
	})
	var entries []string
	for _, s := range status {
		entries = append(entries, s.Name+" "+s.Interface)
	}
	if !slices.Equal(entries, []string{"defnet eth0", "team/hot pod2"}) {
		t.Errorf("network-status %v: want the record's now, defnet on eth0 and team/hot (as the controller names it) on pod2, not the ADD's eth0 and pod1", entries)
	}
}
