package plugin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/containernetworking/cni/pkg/types"
	nadutils "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/utils"
	corev1 "k8s.io/api/core/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
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
	source      Devices
	pod         *Pod
	containerID string
	// used are devices the sandbox's attachments already hold (an attach
	// to a live sandbox): never handed out.
	used []string
	free map[string][]string
}

// assign picks the device of one attachment: the selection's own deviceID
// when it names one (it must be among the pod's devices when the network
// has a resource), else the next free device of the network's resource,
// else none ("", as Multus attaches a network whose pod requested no
// device of its resource; the caller warns).
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
		return "", nil
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
		p.free[r] = slices.DeleteFunc(slices.Clone(ids), func(id string) bool { return slices.Contains(p.used, id) })
	}
	return nil
}

// withDeviceID sets "deviceID" and "pciBusID" in every plugin of a
// conflist: where SR-IOV and other device plugins' delegates read the
// device they must move into the pod (some read one key, some the other;
// Multus sets both to the device plugin's device ID).
func withDeviceID(config []byte, deviceID string) ([]byte, error) {
	return editPlugins(config, func(plugin map[string]interface{}) {
		plugin["deviceID"] = deviceID
		plugin["pciBusID"] = deviceID
	})
}

// deviceParts gives an attachment its device of the network's device
// plugin resource (requested: the selection's deviceID, if any): in every
// plugin's config, as runtimeConfig "deviceID" where the delegate declares
// the capability, and the device plugin's device-info for the status. A
// network with a resource whose pod has no device of it left is attached
// without one, with a Warning Event on the pod. A delegate that declares
// the CNIDeviceInfoFile capability gets the attachment's NPWG device-info
// path in runtimeConfig.
func (e *Engine) deviceParts(ctx context.Context, key k8stypes.NamespacedName, n *netconf.Network, resource, requested string, att *record.Attachment, devices *devicePool) error {
	pod := devices.pod
	deviceID, err := devices.assign(ctx, key, resource, requested)
	if err != nil {
		return err
	}
	caps := n.Capabilities()
	if att.CapabilityArgs == nil {
		att.CapabilityArgs = map[string]interface{}{}
	}
	switch {
	case deviceID != "":
		if att.Config, err = withDeviceID(att.Config, deviceID); err != nil {
			return planError(pod, "network %s: deviceID: %v", key, err)
		}
		if caps["deviceID"] {
			att.CapabilityArgs["deviceID"] = deviceID
		}
		att.DeviceInfo = devicePluginInfo(resource, deviceID)
	case resource != "":
		e.event(record.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}, corev1.EventTypeWarning, ReasonNoDeviceForNetwork,
			"network %s (interface %s) is backed by device plugin resource %s, but the pod has no %s device left for it: attached without a device. Request one %s per network using it in the pod's resources.",
			key, att.IfName, resource, resource, resource)
	}
	if caps[DeviceInfoFileCapability] {
		att.CapabilityArgs[DeviceInfoFileCapability] = deviceInfoFile(att.Network, devices.containerID, att.IfName)
	}
	return nil
}

// DeviceInfoFileCapability is the capability of delegates that read or
// write an NPWG device-info file: runtimeConfig "CNIDeviceInfoFile" is its
// path, on the node.
const DeviceInfoFileCapability = "CNIDeviceInfoFile"

// deviceInfoFile is the NPWG device-info path of one attachment (under
// /var/run/k8s.cni.cncf.io/devinfo/cni), named as Multus names it
// ("<ns>-<name>-<containerID>_<ifname>"), so tools that look for it find
// it; a name too long for a file name is hashed instead.
func deviceInfoFile(network, containerID, ifname string) string {
	name := strings.ReplaceAll(fmt.Sprintf("%s-%s_%s", network, containerID, ifname), "/", "-")
	if len(name) > 200 {
		sum := sha256.Sum256([]byte(name))
		name = hex.EncodeToString(sum[:]) + "_" + ifname
	}
	return nadutils.GetCNIDeviceInfoPath(name)
}

// prepareDeviceInfoFile readies an attachment's CNIDeviceInfoFile before
// its delegate runs: a stale file of an earlier ADD is removed, and the
// device plugin's device-info, if any, is copied there, as Multus does, so
// the delegate may read and extend it. root is where the daemon sees the
// node's root filesystem ("" is its own).
func prepareDeviceInfoFile(root string, a *record.Attachment) error {
	path, _ := a.CapabilityArgs[DeviceInfoFileCapability].(string)
	if path == "" {
		return nil
	}
	host, err := delegate.HostPath(root, path)
	if err != nil {
		return fmt.Errorf("network %s: device-info file %s: %w", a.Network, path, err)
	}
	if err := os.Remove(host); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("network %s: removing a stale device-info file: %w", a.Network, err)
	}
	if len(a.DeviceInfo) == 0 {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(host), 0o755); err != nil {
		return fmt.Errorf("network %s: device-info dir: %w", a.Network, err)
	}
	if err := os.WriteFile(host, a.DeviceInfo, 0o644); err != nil {
		return fmt.Errorf("network %s: device-info file: %w", a.Network, err)
	}
	return nil
}

// readDeviceInfoFile takes into the attachment what its delegate left in
// its CNIDeviceInfoFile, for the pod's network-status. A missing or
// unreadable file leaves the device-info as it was: it describes the
// device, it does not configure it.
func readDeviceInfoFile(root string, a *record.Attachment) {
	path, _ := a.CapabilityArgs[DeviceInfoFileCapability].(string)
	if path == "" {
		return
	}
	host, err := delegate.HostPath(root, path)
	if err != nil {
		return
	}
	info, err := nadutils.LoadDeviceInfoFromCNI(host)
	if err != nil || info == nil {
		return
	}
	if data, err := json.Marshal(info); err == nil {
		a.DeviceInfo = data
	}
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
