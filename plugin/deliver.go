package plugin

import (
	"fmt"
	"net"
	"strings"

	"github.com/plexus-cni/plexus/plugin/selection"
)

// request is one selection field a delegate gets as runtimeConfig (the
// capability), and, for ips and mac only, its CNI_ARGS form.
type request struct {
	field      string      // the selection's JSON field
	capability string      // the runtimeConfig key
	value      interface{} // what runtimeConfig carries
	envKey     string      // the CNI_ARGS key, "" when CNI_ARGS cannot carry it
	envValue   string
}

// requests lists what a selection asks of its delegate, in the order of the
// standard's field list. Several ips join with ",", as Multus joins them
// (static IPAM reads that list; host-local reads one address).
func requests(sel *selection.Selection) []request {
	var out []request
	if len(sel.IPs) > 0 {
		out = append(out, request{"ips", "ips", sel.IPs, "IP", strings.Join(sel.IPs, ",")})
	}
	if sel.MAC != "" {
		out = append(out, request{"mac", "mac", sel.MAC, "MAC", sel.MAC})
	}
	if sel.InfinibandGUID != "" {
		out = append(out, request{"infiniband-guid", "infinibandGUID", sel.InfinibandGUID, "", ""})
	}
	if len(sel.PortMappings) > 0 {
		out = append(out, request{"portMappings", "portMappings", sel.PortMappings, "", ""})
	}
	if sel.Bandwidth != nil {
		out = append(out, request{"bandwidth", "bandwidth", sel.Bandwidth, "", ""})
	}
	return out
}

// carriers says what would carry a field that has no CNI_ARGS form, for
// the refusal's message.
var carriers = map[string]string{
	"infinibandGUID": `an InfiniBand delegate that declares "capabilities": {"infinibandGUID": true} (ib-sriov does)`,
	"portMappings":   `a {"type": "portmap", "capabilities": {"portMappings": true}} plugin after the delegate`,
	"bandwidth":      `a {"type": "bandwidth", "capabilities": {"bandwidth": true}} plugin after the delegate`,
}

// delivery is how a selection's requests reach its delegate.
type delivery struct {
	capArgs map[string]interface{} // runtimeConfig, for declared capabilities
	env     [][2]string            // IP= and MAC= for CNI_ARGS
}

// deliver sends each request as runtimeConfig where a plugin of the
// delegate's list declares the capability, and otherwise ips and mac as
// IP=/MAC= in CNI_ARGS, which bridge, macvlan, tap, tuning and static IPAM
// read (KubeVirt's bridge definitions declare no capability; Multus
// passes both forms). A request neither form can carry is refused rather
// than dropped, as Multus drops it: a pod asking for port mappings must
// not come up silently without them.
func deliver(sel *selection.Selection, caps map[string]bool, plugins string) (delivery, error) {
	d := delivery{capArgs: map[string]interface{}{}}
	for _, r := range requests(sel) {
		switch {
		case caps[r.capability]:
			d.capArgs[r.capability] = r.value
		case r.envKey != "":
			d.env = append(d.env, [2]string{r.envKey, r.envValue})
		default:
			return delivery{}, fmt.Errorf("field %q: delegate %s does not declare the %q capability, and CNI_ARGS cannot carry it; to have it honoured the definition needs %s; otherwise remove the field from the pod",
				r.field, plugins, r.capability, carriers[r.capability])
		}
	}
	return d, nil
}

// withEnvArgs is args (the runtime's CNI_ARGS) plus env, with
// IgnoreUnknown=true so that a plugin that knows neither IP nor MAC still
// runs, as it would under Multus. An IP or MAC the runtime passed is
// replaced: the pod's request is for this attachment. args is not changed.
func withEnvArgs(args, env [][2]string) [][2]string {
	if len(env) == 0 {
		return args
	}
	out := make([][2]string, 0, len(args)+len(env)+1)
	out = append(out, [2]string{"IgnoreUnknown", "true"})
	for _, kv := range args {
		switch kv[0] {
		case "IgnoreUnknown", "IP", "MAC":
			continue
		}
		out = append(out, kv)
	}
	return append(out, env...)
}

// ipamClaimArg is the args.cni key ipam-claim-reference reaches a delegate
// under: the selection field's own name, as args.cni carries cni-args.
const ipamClaimArg = "ipam-claim-reference"

// cniArgs is what the delegate gets in args.cni: the selection's cni-args
// and its ipam-claim-reference. No runtimeConfig capability carries the
// claim: Multus forwards it nowhere, and no capability name for it exists.
func cniArgs(sel *selection.Selection) (map[string]interface{}, error) {
	if sel.IPAMClaimReference == "" {
		return sel.CNIArgs, nil
	}
	if v, ok := sel.CNIArgs[ipamClaimArg]; ok && v != sel.IPAMClaimReference {
		return nil, fmt.Errorf(`field "ipam-claim-reference" is %q but "cni-args" sets %q to %v; keep one`, sel.IPAMClaimReference, ipamClaimArg, v)
	}
	out := make(map[string]interface{}, len(sel.CNIArgs)+1)
	for k, v := range sel.CNIArgs {
		out[k] = v
	}
	out[ipamClaimArg] = sel.IPAMClaimReference
	return out, nil
}

// checkRouteOwners allows one network to own each address family's default
// route, so that an IPv4 and an IPv6 default-route may sit on different
// networks (as with Multus) but two claims on one family are refused
// before anything runs, naming both. An empty default-route takes its
// gateways from the delegate's result, of families not known yet, so it
// claims both. first is the position of sels[0] among the extra
// attachments (after the default networks), for the interface names.
func checkRouteOwners(pod *Pod, sels []selection.Selection, first int) error {
	owners := map[string]string{}
	for i := range sels {
		sel := &sels[i]
		if sel.DefaultRoute == nil {
			continue
		}
		who := fmt.Sprintf("%s (%s)", sel.Key(), ifName(sel, first+i))
		if len(sel.DefaultRoute) == 0 {
			who += ", whose empty default-route takes every family its delegate returns a gateway for,"
		}
		for _, fam := range routeFamilies(sel.DefaultRoute) {
			if prev, taken := owners[fam]; taken {
				return planError(pod, `field "default-route": networks %s and %s both ask for the %s default route; a pod has one per address family: keep one, or give each a gateway of its own family`,
					prev, who, fam)
			}
			owners[fam] = who
		}
	}
	return nil
}

// routeFamilies names the families a default-route list claims; an empty
// list claims both.
func routeFamilies(gws []string) []string {
	if len(gws) == 0 {
		return []string{"IPv4", "IPv6"}
	}
	var fams []string
	for _, gw := range gws {
		fam := "IPv6"
		if ip := net.ParseIP(gw); ip != nil && ip.To4() != nil {
			fam = "IPv4"
		}
		fams = append(fams, fam)
	}
	return fams
}
