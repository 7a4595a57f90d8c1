package plugin

import (
	"fmt"
	"net"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/plugins/pkg/ns"
	"github.com/vishvananda/netlink"

	"github.com/plexus-cni/plexus/plugin/record"
)

// moveDefaultRoute gives the pod exactly one default route per IP family
// when a selection asked for "default-route": every other default route of
// that family is removed from the pod and from the results, and one through
// the selected interface is added, via the selection's gateway or, when it
// gave none, the gateway of that network's result.
func moveDefaultRoute(rec *record.Record, results []*current.Result) (moved bool, err error) {
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if a.DefaultRoute == nil {
			continue
		}
		gws, err := gateways(a, results[i])
		if err != nil {
			return false, err
		}
		if err := setDefaultRoute(rec.NetNS, a.IfName, gws); err != nil {
			return false, fmt.Errorf("network %s: default-route: %w", a.Network, err)
		}
		moved = true
		for j, r := range results {
			r.Routes = withoutDefaultRoutes(r.Routes, gws)
			if j == i {
				for _, gw := range gws {
					r.Routes = append(r.Routes, &types.Route{Dst: defaultDst(gw), GW: gw})
				}
			}
		}
	}
	return moved, nil
}

func gateways(a *record.Attachment, res *current.Result) ([]net.IP, error) {
	var gws []net.IP
	for _, s := range a.DefaultRoute {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("network %s: field \"default-route\": %q is not an IP", a.Network, s)
		}
		gws = append(gws, ip)
	}
	if len(gws) == 0 {
		for _, ipc := range res.IPs {
			if ipc.Gateway != nil {
				gws = append(gws, ipc.Gateway)
			}
		}
	}
	if len(gws) == 0 {
		return nil, fmt.Errorf("network %s: field \"default-route\": no gateway given and the delegate's result has none", a.Network)
	}
	return gws, nil
}

func family(ip net.IP) int {
	if ip.To4() != nil {
		return netlink.FAMILY_V4
	}
	return netlink.FAMILY_V6
}

func defaultDst(gw net.IP) net.IPNet {
	if family(gw) == netlink.FAMILY_V4 {
		return net.IPNet{IP: net.IPv4zero, Mask: net.CIDRMask(0, 32)}
	}
	return net.IPNet{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)}
}

func isDefault(dst *net.IPNet) bool {
	if dst == nil {
		return true
	}
	ones, _ := dst.Mask.Size()
	return ones == 0
}

// withoutDefaultRoutes drops default routes of the gateways' families.
func withoutDefaultRoutes(routes []*types.Route, gws []net.IP) []*types.Route {
	fams := map[int]bool{}
	for _, gw := range gws {
		fams[family(gw)] = true
	}
	out := routes[:0:0]
	for _, r := range routes {
		if isDefault(&r.Dst) && fams[family(r.Dst.IP)] {
			continue
		}
		out = append(out, r)
	}
	return out
}

func setDefaultRoute(netns, ifname string, gws []net.IP) error {
	return ns.WithNetNSPath(netns, func(ns.NetNS) error {
		link, err := netlink.LinkByName(ifname)
		if err != nil {
			return fmt.Errorf("interface %s: %w", ifname, err)
		}
		for _, gw := range gws {
			routes, err := netlink.RouteList(nil, family(gw))
			if err != nil {
				return err
			}
			for _, r := range routes {
				if isDefault(r.Dst) {
					if err := netlink.RouteDel(&r); err != nil {
						return fmt.Errorf("removing default route %s: %w", r, err)
					}
				}
			}
			dst := defaultDst(gw)
			if err := netlink.RouteAdd(&netlink.Route{LinkIndex: link.Attrs().Index, Dst: &dst, Gw: gw}); err != nil {
				return fmt.Errorf("adding default route via %s dev %s: %w", gw, ifname, err)
			}
		}
		return nil
	})
}
