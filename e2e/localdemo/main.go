// Command localdemo shows plexus attaching a pod to three extra networks,
// with everything real but the kubelet: a kube-apiserver built from source,
// the plexus daemon, the plexus shim exec'd exactly as a container runtime
// execs it, the reference CNI plugins and a real network namespace standing
// in for the pod sandbox. Run it through `make demo` (as root).
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/plugins/pkg/testutils"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/plexus-cni/plexus/cmd/daemon"
	"github.com/plexus-cni/plexus/controllers"
	"github.com/plexus-cni/plexus/controllers/controllertest"
)

type obj = map[string]interface{}

func main() {
	shim := flag.String("shim", "bin/plexus", "the plexus CNI binary")
	cniBin := flag.String("cni-bin", "", "directory of the reference CNI plugins")
	assets := flag.String("assets", "", "directory holding kube-apiserver and etcd")
	flag.Parse()
	if err := run(*shim, *cniBin, *assets); err != nil {
		fmt.Fprintln(os.Stderr, "demo failed:", err)
		os.Exit(1)
	}
}

func step(format string, args ...interface{}) {
	fmt.Printf("\n==> "+format+"\n", args...)
}

func run(shim, cniBin, assets string) error {
	ctrl.SetLogger(zap.New(zap.Level(zap.Options{}.Level), zap.WriteTo(os.Stderr), func(o *zap.Options) { o.DestWriter = nilWriter{} }))
	fmt.Println(`plexus local demo: a real kube-apiserver, the real plexus daemon and shim, the
reference CNI plugins and a real network namespace. No kubelet or container
runtime here: the demo execs the shim with the CNI environment a runtime sets.`)
	work, err := os.MkdirTemp("", "plexus-demo")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	step("starting kube-apiserver and etcd (built from source)")
	env := controllertest.NewEnvironment(assets, "config/crd/npwg")
	cfg, err := env.Start()
	if err != nil {
		return err
	}
	defer env.Stop()
	c, err := client.New(cfg, client.Options{Scheme: controllers.Scheme()})
	if err != nil {
		return err
	}

	step("preparing the node: default network (bridge + host-local) and two veths as macvlan masters")
	confDir, ipamDir := filepath.Join(work, "net.d"), filepath.Join(work, "ipam")
	if err := os.MkdirAll(confDir, 0o755); err != nil {
		return err
	}
	defaultNet := obj{"cniVersion": "1.0.0", "name": "cluster", "plugins": []obj{{"type": "bridge", "bridge": "plxdemo0",
		"isGateway": true, "ipam": obj{"type": "host-local", "subnet": "10.88.0.0/24", "dataDir": ipamDir,
			"routes": []obj{{"dst": "0.0.0.0/0"}}}}}}
	if err := os.WriteFile(filepath.Join(confDir, "10-cluster.conflist"), mustJSON(defaultNet), 0o644); err != nil {
		return err
	}
	for _, name := range []string{"plxdemo-a", "plxdemo-b"} {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: name + "p"}
		if err := netlink.LinkAdd(veth); err != nil {
			return fmt.Errorf("veth %s: %w", name, err)
		}
		defer netlink.LinkDel(veth)
		if err := netlink.LinkSetUp(veth); err != nil {
			return err
		}
	}
	defer func() {
		if l, err := netlink.LinkByName("plxdemo0"); err == nil {
			_ = netlink.LinkDel(l)
		}
	}()

	step("starting the plexus daemon")
	o := daemon.Defaults()
	o.NodeName, o.SocketPath, o.StateDir = "demo-node", filepath.Join(work, "plexus.sock"), filepath.Join(work, "state")
	o.CNIConfDir, o.CNIBinDir, o.MetricsAddr, o.ProbeAddr = confDir, cniBin, "0", "0"
	d, err := daemon.New(cfg, o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = d.Manager.Start(ctx) }()
	if err := waitFor(func() bool { return d.Server.Ready(nil) == nil }); err != nil {
		return fmt.Errorf("daemon not serving: %w", err)
	}

	step("creating three NetworkAttachmentDefinitions in namespace demo")
	ctx2 := context.Background()
	if err := c.Create(ctx2, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "demo"}}); err != nil {
		return err
	}
	nads := map[string]obj{
		// macvlan with a static IP and MAC taken from the pod's selection.
		"storage": {"cniVersion": "1.0.0", "type": "macvlan", "master": "plxdemo-a", "mode": "bridge",
			"capabilities": obj{"ips": true, "mac": true}, "ipam": obj{"type": "static"}},
		// host-local addressing on a second master (ipvlan is not in this kernel; macvlan stands in).
		"data": {"cniVersion": "1.0.0", "type": "macvlan", "master": "plxdemo-b", "mode": "bridge",
			"ipam": obj{"type": "host-local", "subnet": "10.77.0.0/24", "dataDir": ipamDir}},
		// a bridge whose address the pod picks through cni-args.
		"backplane": {"cniVersion": "1.0.0", "type": "bridge", "bridge": "plxdemo1",
			"ipam": obj{"type": "host-local", "subnet": "10.66.0.0/24", "dataDir": ipamDir}},
	}
	defer func() {
		if l, err := netlink.LinkByName("plxdemo1"); err == nil {
			_ = netlink.LinkDel(l)
		}
	}()
	for _, name := range []string{"storage", "data", "backplane"} {
		nad := &nadv1.NetworkAttachmentDefinition{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: name},
			Spec: nadv1.NetworkAttachmentDefinitionSpec{Config: string(mustJSON(nads[name]))}}
		if err := c.Create(ctx2, nad); err != nil {
			return err
		}
		fmt.Printf("    %-10s %s\n", name, nad.Spec.Config)
	}

	networks := `[
  {"name": "storage", "interface": "stor0", "ips": ["192.168.50.10/24"], "mac": "02:00:00:5e:00:10"},
  {"name": "data"},
  {"name": "backplane", "cni-args": {"ips": ["10.66.0.42"]}}
]`
	step("creating pod demo/multi-nic with k8s.v1.cni.cncf.io/networks:\n%s", networks)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "multi-nic",
		Annotations: map[string]string{nadv1.NetworkAttachmentAnnot: networks}},
		Spec: corev1.PodSpec{NodeName: "demo-node", Containers: []corev1.Container{{Name: "app", Image: "busybox"}}}}
	if err := c.Create(ctx2, pod); err != nil {
		return err
	}
	time.Sleep(300 * time.Millisecond) // the daemon's pod watch

	sandbox, err := testutils.NewNS()
	if err != nil {
		return err
	}
	defer func() { _ = sandbox.Close(); _ = testutils.UnmountNS(sandbox) }()
	cniEnv := []string{"CNI_CONTAINERID=demo0001", "CNI_NETNS=" + sandbox.Path(), "CNI_IFNAME=eth0", "CNI_PATH=" + cniBin,
		"CNI_ARGS=IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=multi-nic;K8S_POD_INFRA_CONTAINER_ID=demo0001;K8S_POD_UID=" + string(pod.UID)}
	stdin := mustJSON(obj{"cniVersion": "1.0.0", "name": "plexus", "type": "plexus", "socketPath": o.SocketPath, "stateDir": o.StateDir})

	step("CNI ADD through the plexus shim, as the runtime calls it")
	start := time.Now()
	out, err := runShim(shim, "ADD", cniEnv, stdin)
	if err != nil {
		return err
	}
	fmt.Printf("    ADD took %s; the runtime got a %d-byte result\n", time.Since(start).Round(time.Millisecond), len(out))

	step("inside the pod: ip -o addr")
	ipOut, err := exec.Command("ip", "netns", "exec", filepath.Base(sandbox.Path()), "ip", "-o", "-4", "addr").CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip addr: %v: %s", err, ipOut)
	}
	fmt.Print(indent(string(ipOut)))
	linkOut, _ := exec.Command("ip", "netns", "exec", filepath.Base(sandbox.Path()), "ip", "-o", "link").CombinedOutput()
	for _, l := range strings.Split(string(linkOut), "\n") {
		if strings.Contains(l, "stor0") {
			fmt.Print(indent(l + "\n"))
		}
	}

	step("the pod's k8s.v1.cni.cncf.io/network-status annotation")
	var status string
	if err := waitFor(func() bool {
		got := &corev1.Pod{}
		if c.Get(ctx2, client.ObjectKeyFromObject(pod), got) != nil {
			return false
		}
		status = got.Annotations[nadv1.NetworkStatusAnnot]
		return status != ""
	}); err != nil {
		return fmt.Errorf("network-status never appeared: %w", err)
	}
	fmt.Print(indent(status + "\n"))

	step("CNI DEL, then a look for leftovers")
	if _, err := runShim(shim, "DEL", cniEnv, stdin); err != nil {
		return err
	}
	left, _ := filepath.Glob(filepath.Join(ipamDir, "*", "[0-9]*"))
	records, _ := filepath.Glob(filepath.Join(o.StateDir, "records", "*.json"))
	results, _ := filepath.Glob(filepath.Join(o.StateDir, "records", "*.results"))
	records = append(records, results...)
	fmt.Printf("    host-local allocations left: %d, attachment records left: %d\n", len(left), len(records))
	if len(left)+len(records) > 0 {
		return fmt.Errorf("leaked: %v %v", left, records)
	}
	fmt.Println("\ndemo done.")
	return nil
}

func runShim(shim, command string, env []string, stdin []byte) ([]byte, error) {
	cmd := exec.Command(shim)
	cmd.Env = append([]string{"CNI_COMMAND=" + command}, env...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("plexus %s: %v: %s%s", command, err, stdout.String(), stderr.String())
	}
	return stdout.Bytes(), nil
}

func waitFor(cond func() bool) error {
	return wait.PollUntilContextTimeout(context.Background(), 20*time.Millisecond, 30*time.Second, true,
		func(context.Context) (bool, error) { return cond(), nil })
}

func mustJSON(v interface{}) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n    ") + "\n"
}

type nilWriter struct{}

func (nilWriter) Write(p []byte) (int, error) { return len(p), nil }
