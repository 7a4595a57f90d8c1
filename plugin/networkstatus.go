package plugin

import (
	"encoding/json"
	"fmt"
	"net"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"

	"github.com/plexus-cni/plexus/plugin/record"
)

// NetworkStatus builds the network-status annotation's entries from a
// record: one per pod interface, in attach order, the default network
// first and marked default. An attachment whose delegate reported no
// interface in the pod (a result of `{"cniVersion":"1.0.0"}`, or host-side
// interfaces only) still gets one entry, with its network name, the
// interface name plexus asked for and whatever IPs and DNS it returned:
// consumers read an entry per attachment.
func NetworkStatus(rec *record.Record) ([]nadv1.NetworkStatus, error) {
	var out []nadv1.NetworkStatus
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if !a.Added() {
			continue
		}
		res := &current.Result{}
		if err := json.Unmarshal(a.Result, res); err != nil {
			return nil, fmt.Errorf("network %s: stored result: %w", a.Network, err)
		}
		var dev *nadv1.DeviceInfo
		if len(a.DeviceInfo) > 0 {
			dev = &nadv1.DeviceInfo{}
			if err := json.Unmarshal(a.DeviceInfo, dev); err != nil {
				return nil, fmt.Errorf("network %s: stored device-info: %w", a.Network, err)
			}
		}
		entries, err := nadutils.CreateNetworkStatuses(res, a.Network, a.Default, dev)
		if err != nil {
			return nil, fmt.Errorf("network %s: %w", a.Network, err)
		}
		if len(entries) == 0 {
			entries = []*nadv1.NetworkStatus{bareStatus(a, res, dev)}
		}
		for _, s := range entries {
			s.Gateway = statusGateways(s.Gateway, res)
			out = append(out, *s)
		}
	}
	return out, nil
}

// bareStatus is the entry of an attachment whose result names no interface
// in the pod: the result's addresses, routes and DNS are the attachment's.
func bareStatus(a *record.Attachment, res *current.Result, dev *nadv1.DeviceInfo) *nadv1.NetworkStatus {
	s := &nadv1.NetworkStatus{Name: a.Network, Interface: a.IfName, Default: a.Default, IPs: []string{}, DeviceInfo: dev,
		DNS: nadv1.DNS{Nameservers: res.DNS.Nameservers, Domain: res.DNS.Domain, Search: res.DNS.Search, Options: res.DNS.Options}}
	for _, ipc := range res.IPs {
		s.IPs = append(s.IPs, ipc.Address.IP.String())
	}
	for _, r := range res.Routes {
		if ones, _ := r.Dst.Mask.Size(); ones == 0 && r.GW != nil {
			s.Gateway = append(s.Gateway, r.GW.String())
		}
	}
	return s
}

// statusGateways repairs an entry's gateway list: a default route without a
// "gw" (the route goes via the address's own gateway, as host-local writes
// it) would show as "<nil>"; the gateway of the result's addresses is the
// one the route really uses.
func statusGateways(listed []string, res *current.Result) []string {
	var out []string
	missing := false
	for _, gw := range listed {
		if net.ParseIP(gw) == nil {
			missing = true
			continue
		}
		out = append(out, gw)
	}
	if missing && len(out) == 0 {
		for _, ipc := range res.IPs {
			if ipc.Gateway != nil {
				out = append(out, ipc.Gateway.String())
			}
		}
	}
	return out
}
