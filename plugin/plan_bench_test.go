package plugin

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
)

// The benchmarks of this file time the pure work of an ADD, with no
// delegate run and no root needed: resolving a pod's networks into the
// record of what to call, and building the network-status from a record.
// `make bench` runs them with -benchmem (docs/benchmarks.md).

// benchNode is a node as the daemon sees it: a conf dir with plexus's
// conflist, the default network and two other configs, and the pod's
// definitions as the node store renders them (normalised conflists).
type benchNode struct {
	engine *Engine
	req    *Request
	found  *netconf.Network
}

type benchPods map[string]*Pod

func (p benchPods) Pod(_ context.Context, ns, name, _ string) (*Pod, error) {
	return p[ns+"/"+name], nil
}

type benchNetworks map[k8stypes.NamespacedName]*nadv1.NetworkAttachmentDefinition

func (n benchNetworks) Network(_ context.Context, key k8stypes.NamespacedName) (*nadv1.NetworkAttachmentDefinition, error) {
	if nad, ok := n[key]; ok {
		return nad, nil
	}
	return nil, ErrNetworkNotFound
}

const (
	benchDefault = `{"cniVersion":"1.0.0","name":"defnet","plugins":[
  {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":true,
   "ipam":{"type":"host-local","ranges":[[{"subnet":"10.240.0.0/24"}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":"/var/lib/cni/networks"}},
  {"type":"portmap","capabilities":{"portMappings":true},"snat":true}]}`
	benchStatic = `{"cniVersion":"1.0.0","name":"static-net","plugins":[
  {"type":"macvlan","master":"eth1","mode":"bridge","capabilities":{"ips":true,"mac":true},"ipam":{"type":"static"}}]}`
	benchHostLocal = `{"cniVersion":"1.0.0","type":"ipvlan","master":"eth2","mode":"l2",
  "ipam":{"type":"host-local","subnet":"10.241.0.0/24","rangeStart":"10.241.0.10","rangeEnd":"10.241.0.200"}}`
)

func newBenchNode(b *testing.B) *benchNode {
	b.Helper()
	dir := b.TempDir()
	for name, content := range map[string]string{
		"00-plexus.conflist":  `{"cniVersion":"1.0.0","name":"defnet","plugins":[{"type":"plexus","defaultNetwork":"defnet"}]}`,
		"10-default.conflist": benchDefault,
		"20-storage.conf":     `{"cniVersion":"1.0.0","name":"storage","type":"macvlan","master":"eth3","ipam":{"type":"dhcp"}}`,
		"99-loopback.conf":    `{"cniVersion":"1.0.0","name":"lo","type":"loopback"}`,
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			b.Fatal(err)
		}
	}
	nets := benchNetworks{}
	for name, config := range map[string]string{"static-net": benchStatic, "hl-net": benchHostLocal} {
		n, err := netconf.Load([]byte(config), name)
		if err != nil {
			b.Fatal(err)
		}
		nets[k8stypes.NamespacedName{Namespace: "team", Name: name}] = &nadv1.NetworkAttachmentDefinition{
			ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: name},
			Spec:       nadv1.NetworkAttachmentDefinitionSpec{Config: string(n.List.Bytes)},
		}
	}
	found, _, err := netconf.FindDefault(dir, "defnet", IsOwnConfig)
	if err != nil {
		b.Fatal(err)
	}
	pods := benchPods{"team/web": {Namespace: "team", Name: "web", UID: "uid-web", Annotations: map[string]string{
		"k8s.v1.cni.cncf.io/networks": `[{"name":"static-net","ips":["192.168.77.5/24"],"mac":"02:00:00:00:00:05"},{"name":"hl-net"}]`}}}
	return &benchNode{
		engine: &Engine{ConfDir: dir, Pods: pods, Networks: nets, PodPolicy: PodPolicy{IsolateNamespaces: true, GlobalNamespaces: []string{"default"}}},
		req: &Request{Command: "ADD", ContainerID: "0123456789abcdef", NetNS: "/var/run/netns/cni-1234", IfName: "eth0",
			Args:   "IgnoreUnknown=1;K8S_POD_NAMESPACE=team;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=0123456789abcdef;K8S_POD_UID=uid-web",
			Config: []byte(`{"cniVersion":"1.0.0","name":"defnet","type":"plexus","defaultNetwork":"defnet","runtimeConfig":{"portMappings":[{"hostPort":8080,"containerPort":80,"protocol":"tcp"}]}}`)},
		found: found,
	}
}

// BenchmarkPlan resolves a 3-network pod (the default network and two
// definitions) into the record of what ADD will call, from the runtime's
// config: what an ADD does besides its lock, record writes and delegates.
// found-default takes the default network from the node config, as the
// daemon does; conf-dir-scan reads the conf dir for it, as without one.
func BenchmarkPlan(b *testing.B) {
	for _, tt := range []struct {
		name  string
		found bool
	}{{"found-default", true}, {"conf-dir-scan", false}} {
		b.Run(tt.name, func(b *testing.B) {
			node := newBenchNode(b)
			if tt.found {
				node.engine.DefaultFound = func() *netconf.Network { return node.found }
			}
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				conf, err := parseNetConf(node.req.Config)
				if err != nil {
					b.Fatal(err)
				}
				rec, err := node.engine.plan(ctx, node.req, conf)
				if err != nil || len(rec.Attachments) != 3 {
					b.Fatalf("plan: %+v, %v", rec, err)
				}
			}
		})
	}
}

// BenchmarkNetworkStatus builds the network-status of a 3-network pod from
// its record, as ADD does before handing it to the status writer.
func BenchmarkNetworkStatus(b *testing.B) {
	rec := &record.Record{ContainerID: "0123456789abcdef"}
	for i, a := range []struct{ network, ifname, addr, gw, mac string }{
		{"defnet", "eth0", "10.240.0.7/24", "10.240.0.1", "0a:58:0a:f0:00:07"},
		{"team/static-net", "net1", "192.168.77.5/24", "", "02:00:00:00:00:05"},
		{"team/hl-net", "net2", "10.241.0.12/24", "10.241.0.1", "0a:58:0a:f1:00:0c"},
	} {
		ip, ipnet, err := net.ParseCIDR(a.addr)
		if err != nil {
			b.Fatal(err)
		}
		ipnet.IP = ip
		res := &current.Result{CNIVersion: "1.0.0",
			Interfaces: []*current.Interface{{Name: a.ifname, Mac: a.mac, Sandbox: "/var/run/netns/cni-1234"}},
			IPs:        []*current.IPConfig{{Interface: current.Int(0), Address: *ipnet, Gateway: net.ParseIP(a.gw)}}}
		if i == 0 {
			res.Interfaces = append([]*current.Interface{{Name: "cni0", Mac: "0a:58:0a:f0:00:01"}}, res.Interfaces...)
			res.IPs[0].Interface = current.Int(1)
			_, all, _ := net.ParseCIDR("0.0.0.0/0")
			res.Routes = append(res.Routes, &types.Route{Dst: *all})
		}
		data, err := json.Marshal(res)
		if err != nil {
			b.Fatal(err)
		}
		rec.Attachments = append(rec.Attachments, record.Attachment{Network: a.network, Default: i == 0, IfName: a.ifname, Result: data})
	}
	b.ReportAllocs()
	for b.Loop() {
		status, err := NetworkStatus(rec)
		if err != nil || len(status) != 3 || len(status[0].Gateway) != 1 {
			b.Fatalf("status %+v, %v", status, err)
		}
	}
}
