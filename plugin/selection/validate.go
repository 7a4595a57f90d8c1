package selection

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"unicode"
	"unicode/utf8"

	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	"k8s.io/apimachinery/pkg/util/validation"
)

// maxIfNameLen is IFNAMSIZ minus the kernel's trailing NUL.
const maxIfNameLen = 15

// fieldCheck validates one field. Checks run in the order of the standard's
// field list, so the first error reported is the first one a reader meets.
type fieldCheck struct {
	field string
	check func(Selection) error
}

var fieldChecks = []fieldCheck{
	{"name", func(s Selection) error { return checkName(s.Name) }},
	{"namespace", func(s Selection) error { return checkNamespace(s.Namespace) }},
	{"interface", func(s Selection) error { return checkOptionalIfName(s.Interface) }},
	{"ips", func(s Selection) error { return checkEach(s.IPs, checkAddress) }},
	{"mac", func(s Selection) error { return checkMAC(s.MAC) }},
	{"infiniband-guid", func(s Selection) error { return checkGUID(s.InfinibandGUID) }},
	{"portMappings", func(s Selection) error { return checkPortMappings(s.PortMappings) }},
	{"bandwidth", func(s Selection) error { return checkBandwidth(s.Bandwidth) }},
	{"default-route", func(s Selection) error { return checkGateways(s.DefaultRoute) }},
	{"ipam-claim-reference", func(s Selection) error { return checkClaimName(s.IPAMClaimReference) }},
}

// validate checks every field of a completed selection. It catches here what
// would otherwise fail deep inside a delegate, with a message that names
// neither the pod's network nor the field.
func validate(s Selection) *Error {
	for _, fc := range fieldChecks {
		if err := fc.check(s); err != nil {
			return &Error{Network: networkName(s), Field: fc.field, Reason: err.Error()}
		}
	}
	return nil
}

// networkName is "ns/name" for error messages, or "" while the name is
// unknown, in which case the index alone has to locate the element.
func networkName(s Selection) string {
	if s.Name == "" {
		return ""
	}
	if s.Namespace == "" {
		return s.Name
	}
	return s.Namespace + "/" + s.Name
}

// checkName requires a DNS-1123 subdomain because that is what a
// NetworkAttachmentDefinition's metadata.name can be; anything else can
// never be found.
func checkName(name string) error {
	if name == "" {
		return errors.New("network name is required")
	}
	if msgs := validation.IsDNS1123Subdomain(name); len(msgs) > 0 {
		return fmt.Errorf("invalid network name %q: %s", name, strings.Join(msgs, "; "))
	}
	return nil
}

// checkNamespace requires a DNS-1123 label, the rule for namespace names.
func checkNamespace(ns string) error {
	if ns == "" {
		return errors.New("namespace is required (none given and the pod's namespace is unknown)")
	}
	if msgs := validation.IsDNS1123Label(ns); len(msgs) > 0 {
		return fmt.Errorf("invalid namespace %q: %s", ns, strings.Join(msgs, "; "))
	}
	return nil
}

func checkOptionalIfName(name string) error {
	if name == "" {
		return nil
	}
	return CheckIfName(name)
}

// CheckIfName checks a Linux interface name: 1–15 bytes, not "." or "..",
// no '/', ':', whitespace or NUL. These are the kernel's own rules
// (dev_valid_name); checking them up front turns an obscure netlink EINVAL
// halfway through an ADD into a clear error before anything was created.
// Unicode whitespace is rejected as libcni does, so a name accepted here is
// never refused by a delegate, and so is invalid UTF-8, which the JSON
// network-status annotation could not carry.
func CheckIfName(name string) error {
	switch {
	case name == "":
		return errors.New("interface name is empty")
	case len(name) > maxIfNameLen:
		return fmt.Errorf("invalid interface name %q: %d bytes, at most %d allowed", name, len(name), maxIfNameLen)
	case name == "." || name == "..":
		return fmt.Errorf("invalid interface name %q", name)
	case !utf8.ValidString(name):
		// The kernel would take it, but the network-status annotation is
		// JSON and could not report the name faithfully.
		return fmt.Errorf("invalid interface name %q: not valid UTF-8", name)
	}
	for _, r := range name {
		if r == '/' || r == ':' || r == 0 || unicode.IsSpace(r) {
			return fmt.Errorf("invalid interface name %q: contains %q", name, r)
		}
	}
	return nil
}

// checkEach applies check to every entry; the entry's position is in the
// message because lists of addresses are easy to misread.
func checkEach(entries []string, check func(string) error) error {
	for i, v := range entries {
		if err := check(v); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

// checkAddress accepts an address with or without a prefix length, as
// Multus does: static IPAM wants the prefix and says so itself, host-local
// takes a bare address (it knows its subnet). What is not an address at all
// is refused here, before any delegate runs.
func checkAddress(v string) error {
	if _, _, err := net.ParseCIDR(v); err == nil {
		return nil
	}
	if strings.Contains(v, "/") {
		return fmt.Errorf("invalid CIDR %q", v)
	}
	if net.ParseIP(v) == nil {
		return fmt.Errorf("invalid IP address %q: want an address such as 10.1.1.5 or 10.1.1.5/24", v)
	}
	return nil
}

func checkGateway(v string) error {
	if net.ParseIP(v) == nil {
		return fmt.Errorf("invalid IP address %q", v)
	}
	return nil
}

// checkGateways allows one gateway per IP family: a pod has one default
// route per family, and Multus refuses a second (it does no ECMP) before
// anything runs, rather than keeping one of them silently.
func checkGateways(gws []string) error {
	if err := checkEach(gws, checkGateway); err != nil {
		return err
	}
	seen := map[bool]string{}
	for _, gw := range gws {
		v4 := net.ParseIP(gw).To4() != nil
		if first, dup := seen[v4]; dup {
			return fmt.Errorf("two %s gateways, %s and %s: a pod has one default route per IP family; keep one", familyName(v4), first, gw)
		}
		seen[v4] = gw
	}
	return nil
}

// familyName is the word messages use for an address family.
func familyName(v4 bool) string {
	if v4 {
		return "IPv4"
	}
	return "IPv6"
}

// checkClaimName requires what an IPAMClaim's metadata.name can be: a
// reference to anything else can never be found by the delegate's IPAM.
func checkClaimName(v string) error {
	if v == "" {
		return nil
	}
	if msgs := validation.IsDNS1123Subdomain(v); len(msgs) > 0 {
		return fmt.Errorf("invalid IPAMClaim name %q: %s", v, strings.Join(msgs, "; "))
	}
	return nil
}

// checkMAC wants a 6-byte Ethernet MAC: net.ParseMAC also accepts 8- and
// 20-byte addresses, which no Ethernet delegate can set. InfiniBand
// identifiers have their own field.
func checkMAC(v string) error {
	if v == "" {
		return nil
	}
	hw, err := net.ParseMAC(v)
	if err != nil {
		return fmt.Errorf("invalid MAC address %q", v)
	}
	if len(hw) != 6 {
		return fmt.Errorf("invalid MAC address %q: %d bytes, want a 6-byte Ethernet MAC (InfiniBand GUIDs go in infiniband-guid)", v, len(hw))
	}
	return nil
}

// checkGUID wants an 8-byte EUI-64, the form of an InfiniBand port GUID.
func checkGUID(v string) error {
	if v == "" {
		return nil
	}
	hw, err := net.ParseMAC(v)
	if err != nil || len(hw) != 8 {
		return fmt.Errorf("invalid InfiniBand GUID %q: want 8 colon-separated hex bytes", v)
	}
	return nil
}

// checkPortMappings applies the portmap plugin's own limits, so a bad entry
// fails here rather than after the interface was already set up.
func checkPortMappings(pms []nadv1.PortMapEntry) error {
	for i, pm := range pms {
		if err := checkPortMapping(pm); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
	}
	return nil
}

func checkPortMapping(pm nadv1.PortMapEntry) error {
	switch {
	case pm.ContainerPort < 1 || pm.ContainerPort > 65535:
		return fmt.Errorf("containerPort %d out of range 1-65535", pm.ContainerPort)
	case pm.HostPort < 0 || pm.HostPort > 65535:
		return fmt.Errorf("hostPort %d out of range 0-65535", pm.HostPort)
	case pm.HostIP != "" && net.ParseIP(pm.HostIP) == nil:
		return fmt.Errorf("invalid hostIP %q", pm.HostIP)
	}
	switch strings.ToLower(pm.Protocol) {
	case "", "tcp", "udp", "sctp":
		return nil
	}
	return fmt.Errorf("protocol %q, want tcp, udp or sctp", pm.Protocol)
}

// checkBandwidth rejects negative values, which the bandwidth plugin would
// turn into nonsense tc parameters. Zero means "no limit".
func checkBandwidth(bw *nadv1.BandwidthEntry) error {
	if bw == nil {
		return nil
	}
	for _, v := range []struct {
		name  string
		value int
	}{
		{"ingressRate", bw.IngressRate},
		{"ingressBurst", bw.IngressBurst},
		{"egressRate", bw.EgressRate},
		{"egressBurst", bw.EgressBurst},
	} {
		if v.value < 0 {
			return fmt.Errorf("%s %d is negative", v.name, v.value)
		}
	}
	return nil
}
