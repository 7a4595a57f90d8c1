package plugin

import (
	"encoding/json"
	"fmt"

	current "github.com/containernetworking/cni/pkg/types/100"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"

	"github.com/plexus-cni/plexus/plugin/record"
)

// NetworkStatus builds the network-status annotation's entries from a
// record: one per pod interface, in attach order, the default network
// first and marked default.
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
		for _, s := range entries {
			out = append(out, *s)
		}
	}
	return out, nil
}
