package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"

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

// plan resolves everything an ADD will call, in order, before anything is
// created: the default network first, then each selected network.
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

	def, err := e.defaultAttachment(ctx, pod, conf, req.IfName)
	if err != nil {
		return nil, err
	}
	def.Args = args
	def.CapabilityArgs = conf.RuntimeConfig
	rec.Attachments = append(rec.Attachments, *def)

	if pod == nil {
		return rec, nil
	}
	sels, err := selection.Parse(pod.Annotations[selection.NetworksAnnotation], pod.Namespace)
	if err != nil {
		return nil, planError(pod, "%v", err)
	}
	if err := checkNames(pod, req.IfName, sels); err != nil {
		return nil, err
	}
	routeOwners := 0
	devices := &devicePool{source: e.Devices, pod: pod}
	for i := range sels {
		att, err := e.extraAttachment(ctx, pod, &sels[i], i, args, devices)
		if err != nil {
			return nil, err
		}
		if sels[i].DefaultRoute != nil {
			routeOwners++
		}
		rec.Attachments = append(rec.Attachments, *att)
	}
	if routeOwners > 1 {
		return nil, planError(pod, `field "default-route": set on %d networks; the pod has one default route`, routeOwners)
	}
	return rec, nil
}

// ifName is the interface name of the i-th (0-based) selected network.
func ifName(sel *selection.Selection, i int) string {
	if sel.Interface != "" {
		return sel.Interface
	}
	return "net" + strconv.Itoa(i+1)
}

// checkNames refuses duplicate interface names before anything exists.
func checkNames(pod *Pod, defaultIf string, sels []selection.Selection) error {
	seen := map[string]string{defaultIf: "the default network"}
	for i := range sels {
		name := ifName(&sels[i], i)
		if err := selection.CheckIfName(name); err != nil {
			return planError(pod, "network %s: field \"interface\": %v", sels[i].Key(), err)
		}
		if owner, dup := seen[name]; dup {
			return planError(pod, "network %s: field \"interface\": %q is already used by %s", sels[i].Key(), name, owner)
		}
		seen[name] = "network " + sels[i].Key().String()
	}
	return nil
}

// defaultAttachment resolves the pod's default network: a definition named
// by the default-network annotation, or the node's default config.
func (e *Engine) defaultAttachment(ctx context.Context, pod *Pod, conf *NetConf, ifname string) (*record.Attachment, error) {
	if pod != nil {
		if v := pod.Annotations[selection.DefaultNetworkAnnotation]; v != "" {
			key, err := selection.ParseDefault(v, pod.Namespace)
			if err != nil {
				return nil, planError(pod, "annotation %s: %v", selection.DefaultNetworkAnnotation, err)
			}
			n, _, err := e.resolve(ctx, pod, key)
			if err != nil {
				return nil, err
			}
			return &record.Attachment{Network: key.String(), Default: true, IfName: ifname, Config: n.List.Bytes}, nil
		}
	}
	name := conf.DefaultNetwork
	if name == "" {
		name = e.DefaultNetwork
	}
	n := e.foundDefault(name)
	if n == nil {
		var err error
		if n, _, err = netconf.FindDefault(e.ConfDir, name, IsOwnConfig); err != nil {
			return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("default network: %v", err), "")
		}
	}
	return &record.Attachment{Network: n.List.Name, Default: true, IfName: ifname, Config: n.List.Bytes}, nil
}

// foundDefault is the DefaultFound network when it is the one asked for
// (name, or any when name is empty): the network a scan of ConfDir would
// find, without reading ConfDir. nil means scan.
func (e *Engine) foundDefault(name string) *netconf.Network {
	if e.DefaultFound == nil {
		return nil
	}
	n := e.DefaultFound()
	if n == nil || (name != "" && n.List.Name != name) || IsOwnConfig("", n) {
		return nil
	}
	return n
}

// IsOwnConfig tells plexus's own conflist from the networks it delegates
// to, so that it never picks itself as the default network.
func IsOwnConfig(_ string, n *netconf.Network) bool {
	return slices.ContainsFunc(n.List.Plugins, func(p *libcni.PluginConfig) bool { return p.Network.Type == PluginType })
}

// resolve finds and loads the definition a pod selected.
func (e *Engine) resolve(ctx context.Context, pod *Pod, key k8stypes.NamespacedName) (*netconf.Network, string, error) {
	if !e.namespaceAllowed(pod, key.Namespace) {
		return nil, "", planError(pod, "network %s: namespace isolation: pods of namespace %q may use networks of their own namespace and of %v only", key, pod.Namespace, e.GlobalNamespaces)
	}
	if e.Networks == nil {
		return nil, "", planError(pod, "network %s not found: no network definitions source", key)
	}
	nad, err := e.Networks.Network(ctx, key)
	if errors.Is(err, ErrNetworkNotFound) {
		e.noNetworkFound(pod, key)
		return nil, "", planError(pod, "network %s not found", key)
	}
	if err != nil {
		return nil, "", types.NewError(types.ErrTryAgainLater, fmt.Sprintf("pod %s/%s: network %s: %v", pod.Namespace, pod.Name, key, err), "")
	}
	var n *netconf.Network
	if nad.Spec.Config == "" {
		n, _, err = netconf.FindFile(e.ConfDir, nad.Name, IsOwnConfig)
	} else {
		n, err = e.definitions.Load([]byte(nad.Spec.Config), nad.Name)
	}
	if err != nil {
		return nil, "", planError(pod, "network %s: spec.config: %v", key, err)
	}
	if IsOwnConfig("", n) {
		return nil, "", planError(pod, "network %s: spec.config: delegates to plexus itself", key)
	}
	return n, nad.Annotations[ResourceNameAnnotation], nil
}

func (e *Engine) namespaceAllowed(pod *Pod, ns string) bool {
	return !e.IsolateNamespaces || ns == pod.Namespace || slices.Contains(e.GlobalNamespaces, ns)
}

// capabilityArgs maps selection fields to runtimeConfig keys. A field the
// pod set for a delegate that cannot honour it is an error: a pod asking
// for a static IP or MAC must not come up silently without it. deviceID is
// not among them: device plugins' delegates read it from their config.
func capabilityArgs(sel *selection.Selection) map[string]interface{} {
	args := map[string]interface{}{}
	if len(sel.IPs) > 0 {
		args["ips"] = sel.IPs
	}
	if sel.MAC != "" {
		args["mac"] = sel.MAC
	}
	if sel.InfinibandGUID != "" {
		args["infinibandGUID"] = sel.InfinibandGUID
	}
	if len(sel.PortMappings) > 0 {
		args["portMappings"] = sel.PortMappings
	}
	if sel.Bandwidth != nil {
		args["bandwidth"] = sel.Bandwidth
	}
	return args
}

// fieldOfCapability names the selection field behind a capability, for
// errors the user can act on.
var fieldOfCapability = map[string]string{
	"ips": "ips", "mac": "mac", "infinibandGUID": "infiniband-guid",
	"portMappings": "portMappings", "bandwidth": "bandwidth",
}

func (e *Engine) extraAttachment(ctx context.Context, pod *Pod, sel *selection.Selection, i int, args [][2]string, devices *devicePool) (*record.Attachment, error) {
	key := sel.Key()
	n, resource, err := e.resolve(ctx, pod, key)
	if err != nil {
		return nil, err
	}
	caps := n.Capabilities()
	capArgs := capabilityArgs(sel)
	for _, k := range sortedKeys(capArgs) {
		if !caps[k] {
			return nil, planError(pod, "network %s: field %q: delegate %s does not declare the %q capability",
				key, fieldOfCapability[k], delegate.PluginTypes(n.List), k)
		}
	}
	config := n.List.Bytes
	if len(sel.CNIArgs) > 0 {
		if config, err = withCNIArgs(config, sel.CNIArgs); err != nil {
			return nil, planError(pod, "network %s: field \"cni-args\": %v", key, err)
		}
	}
	deviceID, err := devices.assign(ctx, key, resource, sel.DeviceID)
	if err != nil {
		return nil, err
	}
	if deviceID != "" {
		if config, err = withDeviceID(config, deviceID); err != nil {
			return nil, planError(pod, "network %s: deviceID: %v", key, err)
		}
		if caps["deviceID"] {
			capArgs["deviceID"] = deviceID
		}
	}
	att := &record.Attachment{
		Network:        key.String(),
		IfName:         ifName(sel, i),
		Config:         config,
		Args:           args,
		CapabilityArgs: capArgs,
		DefaultRoute:   sel.DefaultRoute,
		DeviceInfo:     devicePluginInfo(resource, deviceID),
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

func sortedKeys(m map[string]interface{}) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
