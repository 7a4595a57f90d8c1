package plugin

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	k8stypes "k8s.io/apimachinery/pkg/types"
)

// ResourceNameAnnotation on a NetworkAttachmentDefinition names the device
// plugin resource (e.g. an SR-IOV VF pool) each attachment takes one device
// of.
const ResourceNameAnnotation = "k8s.v1.cni.cncf.io/resourceName"

// Devices tells which device plugin devices kubelet allocated to a pod:
// device IDs by resource name, in allocation order.
type Devices interface {
	PodDevices(ctx context.Context, namespace, name string) (map[string][]string, error)
}

// devicePool hands the pod's devices out to its attachments, one each, in
// selection order. It asks kubelet once per ADD, and only when a selected
// network has a resource.
type devicePool struct {
	source Devices
	pod    *Pod
	free   map[string][]string
}

// assign picks the device of one attachment: the selection's own deviceID
// when it names one (it must be among the pod's devices when the network
// has a resource), else the next free device of the network's resource.
func (p *devicePool) assign(ctx context.Context, key k8stypes.NamespacedName, resource, requested string) (string, error) {
	if resource == "" {
		return requested, nil
	}
	if err := p.load(ctx, key, resource); err != nil {
		return "", err
	}
	free := p.free[resource]
	if requested != "" {
		i := slices.Index(free, requested)
		if i < 0 {
			return "", planError(p.pod, "network %s: field \"deviceID\": %q is not a free device of resource %s allocated to the pod (%v)",
				key, requested, resource, free)
		}
		p.free[resource] = slices.Delete(free, i, i+1)
		return requested, nil
	}
	if len(free) == 0 {
		return "", planError(p.pod, "network %s: resource %s: no device left for this network; request one %s per network using it in the pod's resources",
			key, resource, resource)
	}
	p.free[resource] = free[1:]
	return free[0], nil
}

func (p *devicePool) load(ctx context.Context, key k8stypes.NamespacedName, resource string) error {
	if p.free != nil {
		return nil
	}
	if p.source == nil {
		return planError(p.pod, "network %s: resource %s: device plugin resources are not available (no kubelet pod-resources socket configured)", key, resource)
	}
	all, err := p.source.PodDevices(ctx, p.pod.Namespace, p.pod.Name)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: network %s: asking kubelet for the pod's %s devices: %v",
			p.pod.Namespace, p.pod.Name, key, resource, err), "")
	}
	p.free = map[string][]string{}
	for r, ids := range all {
		p.free[r] = slices.Clone(ids)
	}
	return nil
}

// withDeviceID sets "deviceID" in every plugin of a conflist: where SR-IOV
// and other device plugins' delegates read the device they must move into
// the pod.
func withDeviceID(config []byte, deviceID string) ([]byte, error) {
	return editPlugins(config, func(plugin map[string]interface{}) { plugin["deviceID"] = deviceID })
}

// devicePluginInfo is the device-info the device plugin of resource wrote
// for the device (the NPWG device-info file under
// /var/run/k8s.cni.cncf.io/devinfo/dp), for the pod's network-status; nil
// when the attachment has no device or the plugin wrote none. A file that
// cannot be read as device-info is left out rather than failing the pod:
// it describes the device, it does not configure it.
func devicePluginInfo(resource, deviceID string) json.RawMessage {
	if resource == "" || deviceID == "" {
		return nil
	}
	info, err := nadutils.LoadDeviceInfoFromDP(resource, deviceID)
	if err != nil || info == nil {
		return nil
	}
	data, err := json.Marshal(info)
	if err != nil {
		return nil
	}
	return data
}
