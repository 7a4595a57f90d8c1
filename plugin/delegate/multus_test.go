package delegate_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
)

// multusEntry is one delegate of a Multus cache file, as Multus marshals
// its DelegateNetConf: the parsed "Conf"/"ConfList" and its libcni list,
// "Name", the requests under their JSON tags, the gateway flags, and the
// raw config as base64 "Bytes". extra overrides or adds fields.
func multusEntry(name, config string, extra string) string {
	conf, list := `{"cniVersion":"","name":"","type":""}`, `{"cniVersion":"","name":"","plugins":null}`
	if strings.Contains(config, `"plugins"`) {
		list = config
	} else {
		conf = config
	}
	entry := fmt.Sprintf(`{"Conf":%s,"ConfList":%s,"CNINetworkConfigList":{"Name":"","CNIVersion":"","DisableCheck":false,"DisableGC":false,"Plugins":null,"Bytes":null},`+
		`"Name":%q,"IsFilterV4Gateway":false,"IsFilterV6Gateway":false,"Bytes":%q%s}`,
		conf, list, name, base64.StdEncoding.EncodeToString([]byte(config)), extra)
	var check map[string]interface{}
	if err := json.Unmarshal([]byte(entry), &check); err != nil {
		panic(err)
	}
	return entry
}

const (
	flannelConf = `{"cniVersion":"0.3.1","name":"cbr0","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}`
	macvlanConf = `{"cniVersion":"1.0.0","name":"storage","type":"macvlan","master":"eth1","capabilities":{"ips":true,"mac":true},"ipam":{"type":"static"}}`
	bridgeList  = `{"name":"blue","plugins":[{"type":"bridge","bridge":"br1","ipam":{"type":"host-local","subnet":"10.9.0.0/24"}},{"type":"tuning"}]}`
	sriovConf   = `{"cniVersion":"0.4.0","name":"sriov-net","type":"sriov","capabilities":{"deviceID":true,"CNIDeviceInfoFile":true},"deviceID":"0000:03:00.2","pciBusID":"0000:03:00.2"}`
)

// Multus's cache files, as Multus (thin or thick, v3.x/v4.x) writes them
// per sandbox, parse into the DELs Multus's own DEL would have run: the
// first delegate is the default network, with the runtime's interface;
// the others get net<i> or the interface they asked for, the runtime's
// CNI_ARGS with IgnoreUnknown=true, the runtime's runtimeConfig plus the
// requests Multus saved, and their config as a conflist.
func TestParseMultusCache(t *testing.T) {
	const cid, rawArgs = "3f2a9c", "IgnoreUnknown=1;K8S_POD_NAMESPACE=team;K8S_POD_NAME=web;K8S_POD_INFRA_CONTAINER_ID=3f2a9c;K8S_POD_UID=u1"
	kubelet := map[string]interface{}{"portMappings": []interface{}{map[string]interface{}{"hostPort": 8080.0, "containerPort": 80.0, "protocol": "tcp"}}}
	wantArgs := [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_NAMESPACE", "team"}, {"K8S_POD_NAME", "web"},
		{"K8S_POD_INFRA_CONTAINER_ID", "3f2a9c"}, {"K8S_POD_UID", "u1"}}
	type want struct {
		network, ifname, list string
		caps                  map[string]interface{}
	}
	withKubelet := func(extra map[string]interface{}) map[string]interface{} {
		out := map[string]interface{}{"portMappings": kubelet["portMappings"]}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		file  string
		want  []want // the default network first
		error string
	}{{
		name: "default conflist, a conf with ips and mac, a conflist with an interface and no cniVersion",
		file: "[" + multusEntry("cbr0", flannelConf, "") + "," +
			multusEntry("team/storage", macvlanConf, `,"macRequest":"02:00:00:5e:00:10","ipRequest":["192.168.50.10/24"]`) + "," +
			multusEntry("team/blue", bridgeList, `,"ifnameRequest":"blue0"`) + "]",
		want: []want{
			{"cbr0", "eth0", `flannel+portmap 0.3.1 cbr0`, kubelet},
			{"team/storage", "net1", `macvlan 1.0.0 storage`, withKubelet(map[string]interface{}{"ips": []string{"192.168.50.10/24"}, "mac": "02:00:00:5e:00:10"})},
			{"team/blue", "blue0", `bridge+tuning 0.3.1 blue`, kubelet},
		},
	}, {
		name: "a device plugin network: deviceID and Multus's device-info path",
		file: "[" + multusEntry("cbr0", flannelConf, "") + "," +
			multusEntry("team/sriov-net", sriovConf, `,"deviceID":"0000:03:00.2","resourceName":"intel.com/sriov"`) + "]",
		want: []want{
			{"cbr0", "eth0", `flannel+portmap 0.3.1 cbr0`, kubelet},
			{"team/sriov-net", "net1", `sriov 0.4.0 sriov-net`, withKubelet(map[string]interface{}{"deviceID": "0000:03:00.2",
				"CNIDeviceInfoFile": "/var/run/k8s.cni.cncf.io/devinfo/cni/team-sriov-net-3f2a9c_net1"})},
		},
	}, {
		name: "the default network alone (a pod with no extra networks)",
		file: "[" + multusEntry("cbr0", flannelConf, "") + "]",
		want: []want{{"cbr0", "eth0", `flannel+portmap 0.3.1 cbr0`, kubelet}},
	}, {
		name: "a conf without a name takes the definition's",
		file: "[" + multusEntry("cbr0", flannelConf, "") + "," + multusEntry("team/noname", `{"cniVersion":"1.0.0","type":"macvlan"}`, "") + "]",
		want: []want{{"cbr0", "eth0", `flannel+portmap 0.3.1 cbr0`, kubelet}, {"team/noname", "net1", `macvlan 1.0.0 noname`, kubelet}},
	},
		{name: "not JSON", file: `[{"Name":"cbr0",`, error: "not a list of Multus delegates"},
		{name: "an object, not a list", file: `{"Name":"cbr0"}`, error: "not a list of Multus delegates"},
		{name: "an empty list", file: `[]`, error: "empty"},
		{name: "null", file: `null`, error: "empty"},
		{name: "a delegate without its config", file: `[{"Name":"cbr0"}]`, error: `delegate 0 (cbr0): no config ("Bytes")`},
		{name: "a config that is not JSON", file: "[" + multusEntry("cbr0", flannelConf, "") + `,{"Name":"team/x","Bytes":"` + base64.StdEncoding.EncodeToString([]byte("{x")) + `"}]`, error: "delegate 1 (team/x): config"},
		{name: "a plugin named by path", file: "[" + multusEntry("cbr0", `{"cniVersion":"1.0.0","name":"cbr0","type":"../../bin/sh"}`, "") + "]", error: `plugin type "../../bin/sh" is not a plugin name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := delegate.ParseMultusCache([]byte(tc.file), cid, "eth0", rawArgs, "0.3.1", kubelet)
			if tc.error != "" {
				if err == nil || !strings.Contains(err.Error(), tc.error) {
					t.Fatalf("error %v, want one saying %q", err, tc.error)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			atts := append([]record.Attachment{got.Default}, got.Extra...)
			if len(atts) != len(tc.want) {
				t.Fatalf("%d attachments, want %d", len(atts), len(tc.want))
			}
			for i, w := range tc.want {
				a := atts[i]
				list, err := delegate.ConfList(&a)
				if err != nil {
					t.Fatalf("attachment %d: %v", i, err)
				}
				if got := delegate.PluginTypes(list) + " " + list.CNIVersion + " " + list.Name; got != w.list {
					t.Errorf("attachment %d config %q, want %q", i, got, w.list)
				}
				if a.Network != w.network || a.IfName != w.ifname || a.Default != (i == 0) {
					t.Errorf("attachment %d: network %q ifname %q default %t, want %q %q %t", i, a.Network, a.IfName, a.Default, w.network, w.ifname, i == 0)
				}
				if !reflect.DeepEqual(a.Args, wantArgs) {
					t.Errorf("attachment %d args %v, want %v", i, a.Args, wantArgs)
				}
				if !reflect.DeepEqual(a.CapabilityArgs, w.caps) {
					t.Errorf("attachment %d runtimeConfig %v, want %v", i, a.CapabilityArgs, w.caps)
				}
				if a.Added() {
					t.Errorf("attachment %d counts as added by plexus; a plugin gone since Multus's ADD must not hold the DEL", i)
				}
			}
		})
	}
}
