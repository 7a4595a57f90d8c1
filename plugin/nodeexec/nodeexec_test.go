package nodeexec_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/plexus-cni/plexus/plugin/nodeexec"
	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// nodeRoot makes a small node root filesystem: a static busybox as its
// shell, a file only the node has, an "iptables" on the node's PATH only,
// and CNI plugins that are shell scripts, one reached through a link that
// is absolute on the node.
func nodeRoot(t *testing.T) string {
	t.Helper()
	return plugintest.NodeRoot(t, map[string]string{
		"etc/node-marker":   "only-on-the-node",
		"usr/sbin/iptables": "#!/bin/sh\necho iptables-of-the-node\n",
		// probe answers with what it saw, in a result's dns section.
		"usr/lib/cni/probe": `#!/bin/sh
B=/bin/busybox
$B cat > /tmp/stdin
printf '{"cniVersion":"1.0.0","dns":{"domain":"%s","search":["%s","%s","%s"]}}' \
  "$($B cat /etc/node-marker)" "$(iptables)" "$($B pwd)" "$($B env | $B sort | $B tr '\n' ' ')"
`,
		"opt/cni/bin/refuses": "#!/bin/sh\nprintf '{\"code\":11,\"msg\":\"come back later\"}'\nexit 1\n",
		"opt/cni/bin/crashes": "#!/bin/sh\necho 'out of sorts' >&2\nexit 3\n",
	}, map[string]string{"opt/cni/bin/probe": "/usr/lib/cni/probe"})
}

func list(t *testing.T, plugin string) *libcni.NetworkConfigList {
	t.Helper()
	l, err := libcni.NetworkConfFromBytes([]byte(`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"` + plugin + `"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// A plugin runs in the node's root, from the node's "/", with the node's
// PATH (where it finds the node's iptables) and the call's CNI variables,
// and sees nothing of the daemon's environment. Its dir is given, and
// found, as the node names it, through a link absolute on the node.
func TestPluginsRunInTheNodesRoot(t *testing.T) {
	root := nodeRoot(t)
	t.Setenv("PLEXUS_DAEMON_SECRET", "daemon-only")
	cni := nodeexec.NewCNI(&nodeexec.NodeExec{Root: root, Path: "/usr/sbin:/bin"}, []string{"/opt/cni/bin"}, t.TempDir())
	if !cni.Has("probe") || cni.Has("iptables") || cni.Has("absent") {
		t.Errorf("Has: probe %t, iptables %t, absent %t; want only probe", cni.Has("probe"), cni.Has("iptables"), cni.Has("absent"))
	}
	res, err := cni.AddNetworkList(context.Background(), list(t, "probe"), &libcni.RuntimeConf{
		ContainerID: "c1", NetNS: "/var/run/netns/pod", IfName: "eth0", Args: [][2]string{{"K8S_POD_NAME", "web"}}})
	if err != nil {
		t.Fatalf("ADD: %v", err)
	}
	r, err := current.NewResultFromResult(res)
	if err != nil {
		t.Fatal(err)
	}
	if r.DNS.Domain != "only-on-the-node" || len(r.DNS.Search) != 3 {
		t.Fatalf("the plugin saw %+v, want the node's files", r.DNS)
	}
	tool, cwd, env := r.DNS.Search[0], r.DNS.Search[1], r.DNS.Search[2]
	if tool != "iptables-of-the-node" || cwd != "/" {
		t.Errorf("the plugin found %q on its PATH and ran in %q; want the node's iptables, in /", tool, cwd)
	}
	for _, want := range []string{"PATH=/usr/sbin:/bin", "CNI_COMMAND=ADD", "CNI_PATH=/opt/cni/bin", "CNI_NETNS=/var/run/netns/pod", "CNI_ARGS=K8S_POD_NAME=web"} {
		if !strings.Contains(env, want) {
			t.Errorf("the plugin's environment %q lacks %s", env, want)
		}
	}
	if strings.Contains(env, "PLEXUS_DAEMON_SECRET") {
		t.Errorf("the daemon's environment reached the plugin: %q", env)
	}
	if _, err := os.Stat(filepath.Join(root, "tmp/stdin")); err != nil {
		t.Errorf("the plugin's write did not land in the node's root: %v", err)
	}
}

// A plugin's failure keeps its CNI error and code; one that printed none
// says what it wrote on stderr; a plugin that is not there is named.
func TestPluginFailuresKeepTheirCNIError(t *testing.T) {
	root := nodeRoot(t)
	cni := nodeexec.NewCNI(&nodeexec.NodeExec{Root: root}, []string{"/opt/cni/bin"}, t.TempDir())
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: "/var/run/netns/pod", IfName: "eth0"}
	_, err := cni.AddNetworkList(context.Background(), list(t, "refuses"), rt)
	var cniErr *types.Error
	if !errors.As(err, &cniErr) || cniErr.Code != 11 || !strings.Contains(cniErr.Msg, "come back later") {
		t.Errorf("a plugin's CNI error: %v, want code 11 and its message", err)
	}
	_, err = cni.AddNetworkList(context.Background(), list(t, "crashes"), rt)
	if err == nil || !strings.Contains(err.Error(), "out of sorts") || !strings.Contains(err.Error(), "exit status 3") {
		t.Errorf("a plugin that printed no CNI error: %v, want its stderr and exit status", err)
	}
	_, err = cni.AddNetworkList(context.Background(), list(t, "absent"), rt)
	if err == nil || !strings.Contains(err.Error(), `"absent"`) || !strings.Contains(err.Error(), "/opt/cni/bin") {
		t.Errorf("a plugin not on the node: %v, want it and the node's dir named", err)
	}
}

// The reference plugins work through a NodeExec (here with the test's own
// root as the node's): bridge and host-local ADD and DEL in a real netns,
// host-local calling back into CNI_PATH for its IPAM.
func TestReferencePluginsRunThroughANodeExec(t *testing.T) {
	plugintest.RequireRoot(t)
	bin, data := plugintest.PluginsDir(t), t.TempDir()
	bridge := plugintest.Name("plxb")
	plugintest.DeleteLinkOnCleanup(t, bridge)
	l, err := libcni.NetworkConfFromBytes([]byte(plugintest.BridgeList("n", "1.0.0", bridge, "10.250.0.0/24", data)))
	if err != nil {
		t.Fatal(err)
	}
	cni := nodeexec.NewCNI(&nodeexec.NodeExec{Root: "/"}, []string{bin}, t.TempDir())
	netns := plugintest.NewNS(t)
	rt := &libcni.RuntimeConf{ContainerID: "c1", NetNS: netns.Path(), IfName: "eth0"}
	if _, err := cni.AddNetworkList(context.Background(), l, rt); err != nil {
		t.Fatalf("ADD: %v", err)
	}
	if got := plugintest.Allocations(t, data, "n"); len(got) != 1 {
		t.Errorf("allocations after ADD: %v", got)
	}
	if err := cni.DelNetworkList(context.Background(), l, rt); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	if got := plugintest.Allocations(t, data, "n"); len(got) != 0 {
		t.Errorf("allocations after DEL: %v", got)
	}
}
