package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// planError is a bad request: the pod asked for something that cannot be
// attached. Nothing has been created when it is returned.
func planError(pod *Pod, format string, args ...interface{}) error {
	msg := fmt.Sprintf(format, args...)
	if pod != nil {
		msg = fmt.Sprintf("pod %s/%s: %s", pod.Namespace, pod.Name, msg)
	}
	return types.NewError(types.ErrInvalidNetworkConfig, msg, "")
}

// networkError is an error about one network: its message is err's, and
// ErrorLogValues takes the network from it for the log.
type networkError struct {
	network string // "namespace/name"
	err     error
}

func (e *networkError) Error() string { return e.err.Error() }
func (e *networkError) Unwrap() error { return e.err }

// plan resolves everything an ADD will call, in order, before anything is
// created: the pod's annotations checked first (CheckPodNetworks, no
// lookups), then the default network, the default networks and each
// selected network.
func (e *Engine) plan(ctx context.Context, req *Request, conf *NetConf) (*record.Record, error) {
	args, podArgs := parseArgs(req.Args)
	rec := &record.Record{
		ContainerID: req.ContainerID,
		NetNS:       req.NetNS,
		CNIVersion:  conf.CNIVersion,
		Created:     e.now().UTC(),
	}
	var pod *Pod
	if podArgs.Name != "" && podArgs.Namespace != "" && e.Pods != nil {
		var err error
		pod, err = e.Pods.Pod(ctx, podArgs.Namespace, podArgs.Name, podArgs.UID)
		if err != nil {
			return nil, types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: %v", podArgs.Namespace, podArgs.Name, err), "")
		}
		rec.Pod = record.PodRef{Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID}
	}

	var want *PodNetworks
	if pod != nil {
		var err error
		if want, err = e.CheckPodNetworks(pod, req.IfName); err != nil {
			return nil, err
		}
	}
	def, err := e.defaultAttachment(ctx, pod, want, conf, req.IfName)
	if err != nil {
		return nil, err
	}
	def.Args = args
	def.CapabilityArgs = conf.RuntimeConfig
	rec.Attachments = append(rec.Attachments, *def)

	if pod == nil {
		return rec, nil
	}
	devices := &devicePool{source: e.Devices, pod: pod, containerID: req.ContainerID}
	defaults, err := e.defaultNetworkAttachments(ctx, pod, want.DefaultNetworks, args, devices)
	if err != nil {
		return nil, err
	}
	rec.Attachments = append(rec.Attachments, defaults...)
	for i := range want.Selections {
		sel := &want.Selections[i]
		att, err := e.extraAttachment(ctx, pod, sel, len(defaults)+i, args, devices)
		if err != nil {
			return nil, err
		}
		att.Origin, att.InterfaceRequested = record.OriginSelection, sel.Interface != ""
		rec.Attachments = append(rec.Attachments, *att)
	}
	return rec, nil
}

// ifName is the interface name of the i-th (0-based) extra attachment:
// the default networks of --default-networks first, then the pod's
// selections. Unnamed ones are net1, net2, ... by that position, as
// Multus numbers them by their place in its delegate list.
func ifName(sel *selection.Selection, i int) string {
	if sel.Interface != "" {
		return sel.Interface
	}
	return netIfName(i)
}

// defaultAttachment resolves the pod's default network: a definition named
// by the default-network annotation, or the node's default config. A bare
// name in the annotation is looked up in DefaultNetworkNamespace, never
// the pod's, and namespace isolation does not apply to it there (the
// administrator's namespace, as Multus's multusNamespace); "ns/name" is
// resolved as any selected network.
func (e *Engine) defaultAttachment(ctx context.Context, pod *Pod, want *PodNetworks, conf *NetConf, ifname string) (*record.Attachment, error) {
	if want != nil && want.DefaultNetwork != nil {
		key := *want.DefaultNetwork
		var n *netconf.Network
		var err error
		if want.DefaultNetworkBare {
			n, _, err = e.lookup(ctx, pod, key)
		} else {
			n, _, err = e.resolve(ctx, pod, key)
		}
		if err != nil {
			return nil, err
		}
		return &record.Attachment{Network: key.String(), Default: true, IfName: ifname, Config: n.List.Bytes}, nil
	}
	name := conf.DefaultNetwork
	if name == "" {
		name = e.DefaultNetwork
	}
	n := e.foundDefault(name)
	if n == nil {
		var err error
		if n, _, err = netconf.FindDefault(e.ConfDir, name, IsMetaConfig); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("default network: %v", err), "")
		}
	}
	return &record.Attachment{Network: n.List.Name, Default: true, IfName: ifname, Config: n.List.Bytes}, nil
}

// defaultNetworkAttachments are the DefaultNetworks, for a pod outside the
// SystemNamespaces: net1, net2, ... in their order, looked up without
// namespace isolation (the administrator listed them).
func (e *Engine) defaultNetworkAttachments(ctx context.Context, pod *Pod, keys []k8stypes.NamespacedName, args [][2]string, devices *devicePool) ([]record.Attachment, error) {
	out := make([]record.Attachment, 0, len(keys))
	for i, key := range keys {
		n, resource, err := e.lookup(ctx, pod, key)
		if err != nil {
			var te *types.Error
			if errors.As(err, &te) {
				te.Msg += " (one of the networks every pod gets: the daemon's --default-networks, chart value defaultNetworks; create it or remove it from there)"
			}
			return nil, err
		}
		att := &record.Attachment{Network: key.String(), IfName: netIfName(i), Config: n.List.Bytes,
			Args: args, CapabilityArgs: map[string]interface{}{}, Origin: record.OriginDefaultNetworks}
		if err := e.deviceParts(ctx, key, n, resource, "", att, devices); err != nil {
			return nil, err
		}
		out = append(out, *att)
	}
	return out, nil
}

// foundDefault is the DefaultFound network when it is the one asked for
// (name, or any when name is empty): the network a scan of ConfDir would
// find, without reading ConfDir. nil means scan.
func (e *Engine) foundDefault(name string) *netconf.Network {
	if e.DefaultFound == nil {
		return nil
	}
	n := e.DefaultFound()
	if n == nil || (name != "" && n.List.Name != name) || IsMetaConfig("", n) {
		return nil
	}
	return n
}

// IsOwnConfig tells plexus's own conflist from the networks it delegates
// to, so that it never picks itself as the default network.
func IsOwnConfig(_ string, n *netconf.Network) bool {
	return slices.ContainsFunc(n.List.Plugins, func(p *libcni.PluginConfig) bool { return p.Network.Type == PluginType })
}

// MetaPluginTypes are the plugin types of multi-network meta-plugins: a
// config holding one (in a .conf, or anywhere in a .conflist's plugins) is
// never a default network, since calling it would call that meta-plugin
// (or plexus itself) for every pod. multus is Multus's thin plugin and
// multus-shim its thick plugin's shim; genie is CNI-Genie's; danm is
// DANM's. Users replacing them often leave their files behind.
var MetaPluginTypes = []string{PluginType, "multus", "multus-shim", "genie", "danm"}

// MetaPluginType is the first meta-plugin type (see MetaPluginTypes) among
// a network's plugins, or "" when it has none.
func MetaPluginType(n *netconf.Network) string {
	for _, p := range n.List.Plugins {
		if slices.Contains(MetaPluginTypes, p.Network.Type) {
			return p.Network.Type
		}
	}
	return ""
}

// IsMetaConfig says whether a config is a meta-plugin's (plexus's own
// included), for netconf.FindDefault: such a config is never the default
// network.
func IsMetaConfig(_ string, n *netconf.Network) bool { return MetaPluginType(n) != "" }

// resolve finds and loads the definition a pod selected, within namespace
// isolation.
func (e *Engine) resolve(ctx context.Context, pod *Pod, key k8stypes.NamespacedName) (*netconf.Network, string, error) {
	if err := e.checkNamespace(pod, key); err != nil {
		return nil, "", &networkError{network: key.String(), err: err}
	}
	return e.lookup(ctx, pod, key)
}

// lookup finds and loads a definition for a pod, whatever its namespace:
// for the networks the administrator chose.
func (e *Engine) lookup(ctx context.Context, pod *Pod, key k8stypes.NamespacedName) (*netconf.Network, string, error) {
	if e.Networks == nil {
		return nil, "", &networkError{network: key.String(), err: planError(pod, "network %s not found: no network definitions source", key)}
	}
	nad, err := e.Networks.Network(ctx, key)
	if errors.Is(err, ErrNetworkNotFound) {
		e.noNetworkFound(pod, key)
		return nil, "", &networkError{network: key.String(), err: planError(pod,
			"network %s not found: create NetworkAttachmentDefinition %s in namespace %q, or correct the pod's network selection; "+
				"kubelet's next retry of the sandbox then attaches it", key, key.Name, key.Namespace)}
	}
	if err != nil {
		return nil, "", &networkError{network: key.String(), err: types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: network %s: %v", pod.Namespace, pod.Name, key, err), "")}
	}
	var n *netconf.Network
	if nad.Spec.Config == "" {
		n, _, err = netconf.FindFile(e.ConfDir, nad.Name, IsOwnConfig)
	} else {
		n, err = e.definitions.Load([]byte(nad.Spec.Config), nad.Name)
	}
	if err != nil {
		return nil, "", &networkError{network: key.String(), err: planError(pod, "network %s: spec.config: %v", key, err)}
	}
	if IsOwnConfig("", n) {
		return nil, "", &networkError{network: key.String(), err: planError(pod, "network %s: spec.config: delegates to plexus itself", key)}
	}
	return n, nad.Annotations[ResourceNameAnnotation], nil
}

func (e *Engine) extraAttachment(ctx context.Context, pod *Pod, sel *selection.Selection, i int, args [][2]string, devices *devicePool) (*record.Attachment, error) {
	key := sel.Key()
	n, resource, err := e.resolve(ctx, pod, key)
	if err != nil {
		return nil, err
	}
	caps := n.Capabilities()
	d, err := deliver(sel, caps, delegate.PluginTypes(n.List))
	if err != nil {
		return nil, planError(pod, "network %s: %v", key, err)
	}
	capArgs := d.capArgs
	config := n.List.Bytes
	cni, err := cniArgs(sel)
	if err != nil {
		return nil, planError(pod, "network %s: %v", key, err)
	}
	if len(cni) > 0 {
		if config, err = withCNIArgs(config, cni); err != nil {
			return nil, planError(pod, "network %s: field \"cni-args\": %v", key, err)
		}
	}
	att := &record.Attachment{
		Network:        key.String(),
		IfName:         ifName(sel, i),
		Config:         config,
		Args:           withEnvArgs(args, d.env),
		CapabilityArgs: capArgs,
		DefaultRoute:   sel.DefaultRoute,
	}
	if err := e.deviceParts(ctx, key, n, resource, sel.DeviceID, att, devices); err != nil {
		return nil, err
	}
	if sel.DefaultRoute != nil && att.DefaultRoute == nil {
		att.DefaultRoute = []string{}
	}
	return att, nil
}

// withCNIArgs sets args.cni of every plugin in a conflist, the pod's keys
// winning over the definition's.
func withCNIArgs(config []byte, cniArgs map[string]interface{}) ([]byte, error) {
	return editPlugins(config, func(plugin map[string]interface{}) {
		args, _ := plugin["args"].(map[string]interface{})
		if args == nil {
			args = map[string]interface{}{}
		}
		cni, _ := args["cni"].(map[string]interface{})
		if cni == nil {
			cni = map[string]interface{}{}
		}
		for k, v := range cniArgs {
			cni[k] = v
		}
		args["cni"] = cni
		plugin["args"] = args
	})
}

// editPlugins applies edit to every plugin object of a conflist.
func editPlugins(config []byte, edit func(plugin map[string]interface{})) ([]byte, error) {
	raw := map[string]interface{}{}
	if err := json.Unmarshal(config, &raw); err != nil {
		return nil, err
	}
	plugins, _ := raw["plugins"].([]interface{})
	for _, p := range plugins {
		if plugin, ok := p.(map[string]interface{}); ok {
			edit(plugin)
		}
	}
	return json.Marshal(raw)
}
