package selection

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/types"
)

const podNS = "pod-ns"

// fullJSON sets every field of the JSON form, plus fields the standard does
// not define, which must be ignored.
const fullJSON = `[
  {
    "name": "sriov-net",
    "namespace": "infra",
    "interface": "pod1a2b3c4d5e6",
    "ips": ["10.1.1.11/24", "fd00::11/64"],
    "mac": "02:00:00:00:00:01",
    "infiniband-guid": "c2:11:22:33:44:55:66:77",
    "portMappings": [
      {"hostPort": 8080, "containerPort": 80, "protocol": "TCP", "hostIP": "192.0.2.1"},
      {"containerPort": 53, "protocol": "udp"}
    ],
    "bandwidth": {"ingressRate": 1000, "ingressBurst": 2000, "egressRate": 3000, "egressBurst": 4000},
    "cni-args": {"debug": true, "level": 3, "nested": {"list": ["x", 1.5], "empty": null}},
    "default-route": ["10.1.1.1"],
    "deviceID": "0000:03:00.1",
    "ipam-claim-reference": "claim-1",
    "futureField": {"anything": [1, 2, 3]}
  }
]`

var fullSelection = Selection{
	Name:           "sriov-net",
	Namespace:      "infra",
	Interface:      "pod1a2b3c4d5e6",
	IPs:            []string{"10.1.1.11/24", "fd00::11/64"},
	MAC:            "02:00:00:00:00:01",
	InfinibandGUID: "c2:11:22:33:44:55:66:77",
	PortMappings: []nadv1.PortMapEntry{
		{HostPort: 8080, ContainerPort: 80, Protocol: "TCP", HostIP: "192.0.2.1"},
		{ContainerPort: 53, Protocol: "udp"},
	},
	Bandwidth: &nadv1.BandwidthEntry{IngressRate: 1000, IngressBurst: 2000, EgressRate: 3000, EgressBurst: 4000},
	CNIArgs: map[string]interface{}{
		"debug": true,
		"level": float64(3),
		"nested": map[string]interface{}{
			"list":  []interface{}{"x", 1.5},
			"empty": nil,
		},
	},
	DefaultRoute:       []string{"10.1.1.1"},
	DeviceID:           "0000:03:00.1",
	IPAMClaimReference: "claim-1",
}

var parseTests = []struct {
	name  string
	value string
	want  []Selection
}{
	{"empty", "", nil},
	{"empty JSON list", " [ ] ", nil},
	{"short single name", "a", []Selection{{Name: "a", Namespace: podNS}}},
	{"short all shapes", "a, b@net5, other-ns/c, other-ns/d@net6", []Selection{
		{Name: "a", Namespace: podNS},
		{Name: "b", Namespace: podNS, Interface: "net5"},
		{Name: "c", Namespace: "other-ns"},
		{Name: "d", Namespace: "other-ns", Interface: "net6"},
	}},
	{"short whitespace around items and parts", "  a ,\tb @ net5 ,\n other-ns / c  ,other-ns/ d @net6\n", []Selection{
		{Name: "a", Namespace: podNS},
		{Name: "b", Namespace: podNS, Interface: "net5"},
		{Name: "c", Namespace: "other-ns"},
		{Name: "d", Namespace: "other-ns", Interface: "net6"},
	}},
	{"short dotted name", "macvlan.conf-1", []Selection{{Name: "macvlan.conf-1", Namespace: podNS}}},
	{"short same network twice", "a@net1, a@net2, a", []Selection{
		{Name: "a", Namespace: podNS, Interface: "net1"},
		{Name: "a", Namespace: podNS, Interface: "net2"},
		{Name: "a", Namespace: podNS},
	}},
	{"short duplicate interface left to caller", "a@net1,b@net1", []Selection{
		{Name: "a", Namespace: podNS, Interface: "net1"},
		{Name: "b", Namespace: podNS, Interface: "net1"},
	}},
	{"JSON minimal with namespace default", `[{"name":"a"},{"name":"b","namespace":""}]`, []Selection{
		{Name: "a", Namespace: podNS},
		{Name: "b", Namespace: podNS},
	}},
	{"JSON same network twice", `[{"name":"a","interface":"net1"},{"name":"a","interface":"net2"}]`, []Selection{
		{Name: "a", Namespace: podNS, Interface: "net1"},
		{Name: "a", Namespace: podNS, Interface: "net2"},
	}},
	{"JSON every field and unknown fields", fullJSON, []Selection{fullSelection}},
	{"JSON surrounded by whitespace", "\n  [ {\"name\" : \"a\" } ]  \n", []Selection{{Name: "a", Namespace: podNS}}},
	{"JSON nulls are absent fields", `[{"name":"a","ips":null,"bandwidth":null,"cni-args":null}]`, []Selection{
		{Name: "a", Namespace: podNS},
	}},
	// What Multus accepts (issue 14, point 4).
	{"JSON ips without a prefix", `[{"name":"a","ips":["10.1.1.5","fd00::5","10.1.2.5/24"]}]`, []Selection{
		{Name: "a", Namespace: podNS, IPs: []string{"10.1.1.5", "fd00::5", "10.1.2.5/24"}},
	}},
	{"short empty interface is the default name", "a@, ns/b @ ", []Selection{
		{Name: "a", Namespace: podNS},
		{Name: "b", Namespace: "ns"},
	}},
	{"short empty namespace is the pod's", "/a, /b@net7, / c", []Selection{
		{Name: "a", Namespace: podNS},
		{Name: "b", Namespace: podNS, Interface: "net7"},
		{Name: "c", Namespace: podNS},
	}},
	{"short empty namespace and interface", "/a@", []Selection{{Name: "a", Namespace: podNS}}},
	{"JSON interfaceRequest is the old spelling of interface", `[{"name":"a","interfaceRequest":"net9"}]`, []Selection{
		{Name: "a", Namespace: podNS, Interface: "net9"},
	}},
	{"JSON interfaceRequest equal to interface", `[{"name":"a","interface":"net9","interfaceRequest":"net9"}]`, []Selection{
		{Name: "a", Namespace: podNS, Interface: "net9"},
	}},
	{"JSON empty interfaceRequest", `[{"name":"a","interface":"net9","interfaceRequest":""}]`, []Selection{
		{Name: "a", Namespace: podNS, Interface: "net9"},
	}},
	{"JSON one gateway of each family", `[{"name":"a","default-route":["10.1.1.1","fd00::1"]}]`, []Selection{
		{Name: "a", Namespace: podNS, DefaultRoute: []string{"10.1.1.1", "fd00::1"}},
	}},
	// The network-attachment-definition client (v1.7.7) no longer refuses
	// ips beside ipam-claim-reference, so neither does plexus.
	{"JSON ips beside ipam-claim-reference", `[{"name":"a","ips":["10.1.1.5/24"],"ipam-claim-reference":"vm1.data"}]`, []Selection{
		{Name: "a", Namespace: podNS, IPs: []string{"10.1.1.5/24"}, IPAMClaimReference: "vm1.data"},
	}},
	{"JSON IPv6 gateway and sctp", `[{"name":"a","default-route":["fd00::1"],"portMappings":[{"containerPort":9,"hostPort":65535,"protocol":"SCTP"}]}]`, []Selection{
		{Name: "a", Namespace: podNS, DefaultRoute: []string{"fd00::1"},
			PortMappings: []nadv1.PortMapEntry{{ContainerPort: 9, HostPort: 65535, Protocol: "SCTP"}}},
	}},
}

func TestParse(t *testing.T) {
	for _, tt := range parseTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.value, podNS)
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.value, err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Parse(%q)\n got %#v\nwant %#v", tt.value, got, tt.want)
			}
		})
	}
}

func TestKey(t *testing.T) {
	got := Selection{Name: "a", Namespace: "ns"}.Key()
	if want := (types.NamespacedName{Namespace: "ns", Name: "a"}); got != want || got.String() != "ns/a" {
		t.Errorf("Key() = %v, want %v", got, want)
	}
}

var parseErrorTests = []struct {
	name    string
	value   string
	index   int
	network string
	field   string
	reason  string // substring of Reason
}{
	// Whole value.
	{"JSON unterminated", `[{"name":"a"}`, -1, "", "", "invalid JSON"},
	{"JSON trailing garbage", `[{"name":"a"}] x`, -1, "", "", "invalid JSON"},
	{"JSON single object", `{"name":"a"}`, -1, "", "", "single object"},
	{"whitespace only", " \t\n ", -1, "", "", "whitespace only"},
	{"a single space", " ", -1, "", "", "whitespace only"},
	// Element shape.
	{"element is a string", `[{"name":"a"}, "b"]`, 1, "", "", "JSON string, want an object"},
	{"element is null", `[null]`, 0, "", "", "JSON null"},
	{"element is a list", `[[{"name":"a"}]]`, 0, "", "", "JSON list"},
	{"element is a number", `[1]`, 0, "", "", "JSON number"},
	{"field of wrong type", `[{"name":"a","ips":"10.0.0.1/24"}]`, 0, podNS + "/a", "ips", "wrong type"},
	{"nested field of wrong type", `[{"name":"a","portMappings":[{"containerPort":"80"}]}]`, 0, podNS + "/a", "portMappings", "wrong type"},
	{"name of wrong type", `[{"name":5}]`, 0, "", "name", "wrong type"},
	{"cni-args not an object", `[{"name":"a","cni-args":[1]}]`, 0, podNS + "/a", "cni-args", "wrong type"},
	// Name and namespace.
	{"JSON missing name", `[{"namespace":"x","interface":"net1"}]`, 0, "", "name", "required"},
	{"JSON empty name", `[{"name":"a"},{"name":""}]`, 1, "", "name", "required"},
	{"JSON bad name", `[{"name":"Bad_Name"}]`, 0, podNS + "/Bad_Name", "name", "invalid network name"},
	{"short bad name", "a, b c", 1, podNS + "/b c", "name", "invalid network name"},
	{"JSON bad namespace", `[{"name":"a","namespace":"in.fra"}]`, 0, "in.fra/a", "namespace", "invalid namespace"},
	{"short bad namespace", "Infra/a", 0, "Infra/a", "namespace", "invalid namespace"},
	// Short form syntax.
	{"short empty item", "a,,b", 1, "", "name", "empty item"},
	{"short trailing comma", "a, b,", 2, "", "name", "empty item"},
	{"short leading comma", ",a", 0, "", "name", "empty item"},
	{"short two slashes", "a/b/c", 0, "", "name", "more than one '/'"},
	{"short two ats", "a@b@c", 0, "", "interface", "more than one '@'"},
	{"short empty name after slash", "ns/", 0, "", "name", "required"},
	{"short empty name and interface", "ns/@", 0, "", "name", "required"},
	{"short interface only", "@net1", 0, "", "name", "required"},
	// The old spelling of interface.
	{"interfaceRequest differs from interface", `[{"name":"a","interface":"net1","interfaceRequest":"net2"}]`, 0, podNS + "/a", "interface", `"interface" is "net1" but "interfaceRequest" (its old spelling) is "net2"`},
	{"bad interfaceRequest", `[{"name":"a","interfaceRequest":"net/2"}]`, 0, podNS + "/a", "interface", `'/'`},
	{"interfaceRequest of wrong type", `[{"name":"a","interfaceRequest":2}]`, 0, podNS + "/a", "interfaceRequest", "wrong type"}, // Interface.
	{"ifname 16 bytes", `[{"name":"a","interface":"abcdefghijklmnop"}]`, 0, podNS + "/a", "interface", "16 bytes"},
	{"short ifname 16 bytes", "a@abcdefghijklmnop", 0, podNS + "/a", "interface", "16 bytes"},
	{"ifname slash", `[{"name":"a","interface":"net/1"}]`, 0, podNS + "/a", "interface", `'/'`},
	{"ifname slash via short form", "a@net/1", 0, podNS + "/a", "interface", `'/'`},
	{"ifname colon", `[{"name":"a","interface":"eth0:1"}]`, 0, podNS + "/a", "interface", `':'`},
	{"ifname space", `[{"name":"a","interface":"net 1"}]`, 0, podNS + "/a", "interface", `' '`},
	{"ifname dot", `[{"name":"a","interface":"."}]`, 0, podNS + "/a", "interface", "invalid interface name"},
	{"ifname dotdot", `[{"name":"a","interface":".."}]`, 0, podNS + "/a", "interface", "invalid interface name"},
	{"ifname NUL", `[{"name":"a","interface":"net\u00001"}]`, 0, podNS + "/a", "interface", `'\x00'`},
	// Addresses.
	{"bad CIDR", `[{"name":"a","ips":["10.0.0.1/24","10.0.0.300/24"]}]`, 0, podNS + "/a", "ips", `entry 1: invalid CIDR "10.0.0.300/24"`},
	{"bad plain IP in ips", `[{"name":"a","ips":["10.0.0.1","10.0.0.300"]}]`, 0, podNS + "/a", "ips", `entry 1: invalid IP address "10.0.0.300"`},
	{"empty prefix in ips", `[{"name":"a","ips":["10.0.0.1/"]}]`, 0, podNS + "/a", "ips", `invalid CIDR "10.0.0.1/"`},
	{"name in ips", `[{"name":"a","ips":["host.example"]}]`, 0, podNS + "/a", "ips", "invalid IP address"},
	{"bad MAC", `[{"name":"a"},{"name":"name","namespace":"ns","mac":"zz"}]`, 1, "ns/name", "mac", `invalid MAC address "zz"`},
	{"8-byte MAC", `[{"name":"a","mac":"00:11:22:33:44:55:66:77"}]`, 0, podNS + "/a", "mac", "8 bytes"},
	{"20-byte MAC", `[{"name":"a","mac":"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01"}]`, 0, podNS + "/a", "mac", "20 bytes"},
	{"bad default-route", `[{"name":"a","default-route":["10.0.0.300"]}]`, 0, podNS + "/a", "default-route", "invalid IP address"},
	{"two IPv4 gateways", `[{"name":"a","default-route":["10.50.0.1","10.50.0.2"]}]`, 0, podNS + "/a", "default-route", "two IPv4 gateways, 10.50.0.1 and 10.50.0.2"},
	{"two IPv6 gateways", `[{"name":"a","default-route":["fd00::1","10.1.1.1","fd00::2"]}]`, 0, podNS + "/a", "default-route", "two IPv6 gateways, fd00::1 and fd00::2"},
	{"bad ipam-claim-reference", `[{"name":"a","ipam-claim-reference":"Claim_1"}]`, 0, podNS + "/a", "ipam-claim-reference", "invalid IPAMClaim name"},
	{"ipam-claim-reference of wrong type", `[{"name":"a","ipam-claim-reference":["c"]}]`, 0, podNS + "/a", "ipam-claim-reference", "wrong type"},
	{"CIDR as default-route", `[{"name":"a","default-route":["10.0.0.1/24"]}]`, 0, podNS + "/a", "default-route", "invalid IP address"},
	{"bad infiniband-guid", `[{"name":"a","infiniband-guid":"zz"}]`, 0, podNS + "/a", "infiniband-guid", "InfiniBand GUID"},
	{"6-byte infiniband-guid", `[{"name":"a","infiniband-guid":"00:11:22:33:44:55"}]`, 0, podNS + "/a", "infiniband-guid", "InfiniBand GUID"},
	// Port mappings and bandwidth.
	{"containerPort 0", `[{"name":"a","portMappings":[{"hostPort":80}]}]`, 0, podNS + "/a", "portMappings", "containerPort 0"},
	{"containerPort too big", `[{"name":"a","portMappings":[{"containerPort":65536}]}]`, 0, podNS + "/a", "portMappings", "containerPort 65536"},
	{"hostPort negative", `[{"name":"a","portMappings":[{"containerPort":80},{"containerPort":80,"hostPort":-1}]}]`, 0, podNS + "/a", "portMappings", "entry 1: hostPort -1"},
	{"bad protocol", `[{"name":"a","portMappings":[{"containerPort":80,"protocol":"icmp"}]}]`, 0, podNS + "/a", "portMappings", `protocol "icmp"`},
	{"bad hostIP", `[{"name":"a","portMappings":[{"containerPort":80,"hostIP":"x"}]}]`, 0, podNS + "/a", "portMappings", "hostIP"},
	{"negative bandwidth", `[{"name":"a","bandwidth":{"egressBurst":-1}}]`, 0, podNS + "/a", "bandwidth", "egressBurst -1"},
}

func TestParseErrors(t *testing.T) {
	for _, tt := range parseErrorTests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse(tt.value, podNS)
			if err == nil {
				t.Fatalf("Parse(%q) = %#v, want error", tt.value, got)
			}
			if got != nil {
				t.Errorf("Parse(%q) returned selections with an error: %#v", tt.value, got)
			}
			checkError(t, err, tt.index, tt.network, tt.field, tt.reason)
		})
	}
}

func checkError(t *testing.T, err error, index int, network, field, reason string) {
	t.Helper()
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if pe.Index != index || pe.Network != network || pe.Field != field {
		t.Errorf("got Index %d, Network %q, Field %q; want %d, %q, %q (error: %v)",
			pe.Index, pe.Network, pe.Field, index, network, field, err)
	}
	if !strings.Contains(pe.Reason, reason) {
		t.Errorf("Reason %q does not contain %q", pe.Reason, reason)
	}
	msg := err.Error()
	if field != "" && !strings.Contains(msg, `field "`+field+`"`) {
		t.Errorf("message %q does not name field %q", msg, field)
	}
	if network != "" && !strings.Contains(msg, `"`+network+`"`) {
		t.Errorf("message %q does not name network %q", msg, network)
	}
}

func TestParseMissingPodNamespace(t *testing.T) {
	_, err := Parse("a", "")
	checkError(t, err, 0, "a", "namespace", "required")
	if got, err := Parse("ns/a", ""); err != nil || got[0].Namespace != "ns" {
		t.Errorf(`Parse("ns/a", "") = %v, %v; want namespace ns`, got, err)
	}
}

func TestErrorMessage(t *testing.T) {
	for _, tt := range []struct {
		err  *Error
		want string
	}{
		{&Error{Index: 1, Network: "ns/name", Field: "mac", Reason: `invalid MAC address "zz"`},
			`networks[1] "ns/name": field "mac": invalid MAC address "zz"`},
		{&Error{Index: -1, Reason: "invalid JSON: unexpected end of JSON input"},
			`networks annotation: invalid JSON: unexpected end of JSON input`},
		{&Error{Index: 0, Field: "name", Reason: "network name is required"},
			`networks[0]: field "name": network name is required`},
		{&Error{Index: 2, Reason: "element is a JSON null, want an object"},
			`networks[2]: element is a JSON null, want an object`},
	} {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() = %q, want %q", got, tt.want)
		}
	}
	_, err := Parse(`[{"name":"a"},{"name":"name","namespace":"ns","mac":"zz"}]`, podNS)
	if want := `networks[1] "ns/name": field "mac": invalid MAC address "zz"`; err == nil || err.Error() != want {
		t.Errorf("Parse error = %v, want %s", err, want)
	}
	_, err = Parse(`[{"name":"a"}`, podNS)
	if err == nil || !strings.HasPrefix(err.Error(), "networks annotation: invalid JSON: ") {
		t.Errorf("Parse error = %v, want prefix %q", err, "networks annotation: invalid JSON: ")
	}
}

func TestCheckIfName(t *testing.T) {
	for _, tt := range []struct {
		name string
		ok   bool
	}{
		{"eth0", true},
		{"net1", true},
		{"pod1a2b3c4d5e6", true},
		{"abcdefghijklmno", true},   // 15 bytes
		{"ééééééé", true},           // 14 bytes of UTF-8
		{"a.b-c_d", true},           // punctuation other than '/' and ':'
		{"", false},                 // empty
		{"abcdefghijklmnop", false}, // 16 bytes
		{"éééééééé", false},         // 8 runes but 16 bytes
		{".", false},
		{"..", false},
		{"...", true},
		{"a/b", false},
		{"a:b", false},
		{"a b", false},
		{"a\tb", false},
		{"a\nb", false},
		{"a\u00a0b", false}, // no-break space
		{"a\x00b", false},
		{"a\xffb", false}, // invalid UTF-8
	} {
		err := CheckIfName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("CheckIfName(%q) = %v, want ok=%v", tt.name, err, tt.ok)
		}
	}
}

func TestParseDefault(t *testing.T) {
	for _, tt := range []struct {
		value string
		want  types.NamespacedName
	}{
		{"net", types.NamespacedName{Namespace: podNS, Name: "net"}},
		{"ns/net", types.NamespacedName{Namespace: "ns", Name: "net"}},
		{"  ns / net \n", types.NamespacedName{Namespace: "ns", Name: "net"}},
		{"net@eth9", types.NamespacedName{Namespace: podNS, Name: "net"}}, // interface ignored
		{`{"name":"net","namespace":"ns"}`, types.NamespacedName{Namespace: "ns", Name: "net"}},
		{` {"name":"net"} `, types.NamespacedName{Namespace: podNS, Name: "net"}},
		{`[{"name":"net","namespace":"ns","unknown":1}]`, types.NamespacedName{Namespace: "ns", Name: "net"}},
	} {
		got, err := ParseDefault(tt.value, podNS)
		if err != nil || got != tt.want {
			t.Errorf("ParseDefault(%q) = %v, %v; want %v", tt.value, got, err, tt.want)
		}
	}
}

func TestParseDefaultErrors(t *testing.T) {
	for _, tt := range []struct {
		value  string
		field  string
		reason string
	}{
		{"", "", "exactly one network, got 0"},
		{"a,b", "", "exactly one network, got 2"},
		{`[{"name":"a"},{"name":"b"}]`, "", "exactly one network, got 2"},
		{"[]", "", "exactly one network, got 0"},
		{"Bad_Name", "name", "invalid network name"},
		{"a/b/c", "name", "more than one '/'"},
		{`{"name":5}`, "name", "wrong type"},
		{`{"name":"a"`, "", "invalid JSON"},
		{`{"name":"a"} x`, "", "invalid JSON"},
		{`{"namespace":"ns"}`, "name", "required"},
		{`{"name":"a","mac":"zz"}`, "mac", "invalid MAC"},
		{`["a"]`, "", "want an object"},
	} {
		_, err := ParseDefault(tt.value, podNS)
		if err == nil {
			t.Errorf("ParseDefault(%q) succeeded, want error", tt.value)
			continue
		}
		msg := err.Error()
		if !strings.HasPrefix(msg, "default-network annotation") || !strings.Contains(msg, tt.reason) {
			t.Errorf("ParseDefault(%q) error %q, want prefix %q and %q", tt.value, msg, "default-network annotation", tt.reason)
		}
		var pe *Error
		if !errors.As(err, &pe) || pe.Field != tt.field {
			t.Errorf("ParseDefault(%q) error %v: want *Error with Field %q", tt.value, err, tt.field)
		}
	}
}

func FuzzParse(f *testing.F) {
	for _, tt := range parseTests {
		f.Add(tt.value, podNS)
	}
	for _, tt := range parseErrorTests {
		f.Add(tt.value, podNS)
	}
	f.Add("a", "")
	f.Add("a", "Bad NS")
	f.Fuzz(func(t *testing.T, value, podNamespace string) {
		got, err := Parse(value, podNamespace)
		_, _ = ParseDefault(value, podNamespace)
		if err != nil {
			checkFuzzError(t, err, got)
			return
		}
		for i, s := range got {
			if e := validate(s); e != nil {
				t.Fatalf("Parse(%q) element %d fails validation: %v", value, i, e)
			}
		}
		checkRoundTrip(t, value, got)
	})
}

func checkFuzzError(t *testing.T, err error, got []Selection) {
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	if pe.Index < -1 || pe.Reason == "" || got != nil {
		t.Fatalf("bad error %#v with result %v", pe, got)
	}
}

// checkRoundTrip asserts that what Parse returns, written back as the JSON
// form, parses to the same thing: no information is lost or invented.
func checkRoundTrip(t *testing.T, value string, got []Selection) {
	first, err := json.Marshal(got)
	if err != nil {
		t.Fatalf("Marshal(%#v): %v", got, err)
	}
	again, err := Parse(string(first), "unused")
	if err != nil && len(got) > 0 {
		t.Fatalf("Parse(%q) = %s, which does not parse again: %v", value, first, err)
	}
	second, _ := json.Marshal(again)
	if len(got) > 0 && string(first) != string(second) {
		t.Fatalf("Parse(%q) round trip changed it:\n%s\n%s", value, first, second)
	}
}

const (
	benchShort = "macvlan-conf@net1, sriov-ns/sriov-net-a@net2, ipvlan-conf"
	benchJSON  = `[
  {"name": "macvlan-conf", "interface": "net1", "ips": ["10.1.1.11/24"], "mac": "02:00:00:00:00:01"},
  {"name": "sriov-net-a", "namespace": "sriov-ns", "interface": "net2", "deviceID": "0000:03:00.1",
   "cni-args": {"vlan": 100, "trust": "on"}},
  {"name": "ipvlan-conf", "ips": ["fd00::11/64"], "default-route": ["fd00::1"],
   "portMappings": [{"containerPort": 80, "hostPort": 8080, "protocol": "tcp"}]}
]`
)

func BenchmarkParseShort(b *testing.B) {
	benchmarkParse(b, benchShort)
}

func BenchmarkParseJSON(b *testing.B) {
	benchmarkParse(b, benchJSON)
}

func benchmarkParse(b *testing.B, value string) {
	b.ReportAllocs()
	for b.Loop() {
		got, err := Parse(value, podNS)
		if err != nil || len(got) != 3 {
			b.Fatalf("Parse = %v, %v", got, err)
		}
	}
}
