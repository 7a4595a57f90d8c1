package delegate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/containernetworking/cni/libcni"

	"github.com/plexus-cni/plexus/plugin/record"
)

// DefaultMultusCacheDir is Multus's cniDir: where Multus (thin and thick)
// keeps, per sandbox, a file named after the container ID listing the
// delegates it attached, and where its libcni result cache (results/)
// lives, on the node.
const DefaultMultusCacheDir = "/var/lib/cni/multus"

// multusDelegate is what plexus reads of one delegate in Multus's cache
// file: a JSON list of Multus's DelegateNetConf, in the order Multus
// attached them, the default network ("master plugin") first. Multus
// writes Go field names for the untagged fields ("Name", "Bytes", the
// latter base64, as encoding/json writes []byte) and saves neither its
// port-mapping nor its bandwidth requests.
type multusDelegate struct {
	Name                  string   `json:"Name"`
	IfnameRequest         string   `json:"ifnameRequest"`
	MacRequest            string   `json:"macRequest"`
	InfinibandGUIDRequest string   `json:"infinibandGUIDRequest"`
	IPRequest             []string `json:"ipRequest"`
	DeviceID              string   `json:"deviceID"`
	// Bytes is the delegate's config as Multus ran it (a conf or a
	// conflist, with the selection's cni-args and device already in it).
	Bytes []byte `json:"Bytes"`
}

// MultusSandbox is what Multus's DEL would have torn down for a sandbox,
// read from its cache file: Default is the network Multus attached with
// the runtime's interface name (its "master plugin"), Extra the others,
// in the order Multus attached them.
type MultusSandbox struct {
	Default record.Attachment
	Extra   []record.Attachment
	// Path is the cache file it was read from ("" when parsed from bytes).
	Path string
}

// ReadMultusCache reads Multus's cache file of a sandbox in dir (Multus's
// cniDir, as the caller sees it) and parses it as ParseMultusCache does.
// No file is (nil, nil); a file that cannot be read or parsed is an error
// saying which.
func ReadMultusCache(dir, containerID, ifname, rawArgs, cniVersion string, runtimeConfig map[string]interface{}) (*MultusSandbox, error) {
	path := filepath.Join(dir, containerID)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := ParseMultusCache(data, containerID, ifname, rawArgs, cniVersion, runtimeConfig)
	if err != nil {
		return nil, fmt.Errorf("Multus's cache %s: %w", path, err)
	}
	m.Path = path
	return m, nil
}

// Del runs the DEL Multus's own DEL would have run: every network in
// reverse, the default network last, each attempted even when another
// fails (cni carries Multus's result cache, where Multus's ADDs left their
// results). Once all succeeded the cache file goes; otherwise it stays for
// the retry and the errors come back joined.
func (m *MultusSandbox) Del(ctx context.Context, cni libcni.CNI, containerID, netns string) error {
	atts := append([]record.Attachment{m.Default}, m.Extra...)
	if err := Teardown(ctx, cni, containerID, netns, atts); err != nil {
		return fmt.Errorf("networks Multus attached (%s; default network %s; %s kept for the retry): %w",
			m.Networks(), m.Default.Network, m.Path, err)
	}
	if m.Path != "" {
		if err := os.Remove(m.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("removing Multus's cache %s of a sandbox torn down: %w", m.Path, err)
		}
	}
	return nil
}

// Networks names the extra networks for messages: "team/storage net1,
// team/blue net2".
func (m *MultusSandbox) Networks() string {
	names := make([]string, 0, len(m.Extra))
	for _, a := range m.Extra {
		names = append(names, a.Network+" "+a.IfName)
	}
	return strings.Join(names, ", ")
}

// ParseMultusCache reads Multus's cache file of one sandbox (data) into
// the attachments Multus's own DEL would have called, with the same
// arguments Multus would have given them:
//   - interface names: the one the selection asked for, else the
//     runtime's ifname for the first delegate, "net<i>" for the i-th;
//   - CNI_ARGS: the runtime's (rawArgs), with IgnoreUnknown=true, which
//     Multus always sets;
//   - runtimeConfig: the runtime's (runtimeConfig, kubelet's port mappings
//     and bandwidth), and for the extra networks the requests Multus saved
//     (ips, mac, infinibandGUID, deviceID, and CNIDeviceInfoFile where a
//     device was given, at the NPWG path Multus derives);
//   - config: the delegate's own, a conf made a one-plugin conflist, a
//     missing cniVersion taken from cniVersion (the runtime's), as Multus
//     takes its own.
//
// A file that is not such a list, is empty, or holds a delegate without a
// usable config is an error naming the delegate; the caller falls back to
// tearing down the default network alone.
func ParseMultusCache(data []byte, containerID, ifname, rawArgs, cniVersion string, runtimeConfig map[string]interface{}) (*MultusSandbox, error) {
	var delegates []multusDelegate
	if err := json.Unmarshal(data, &delegates); err != nil {
		return nil, fmt.Errorf("not a list of Multus delegates: %w", err)
	}
	if len(delegates) == 0 {
		return nil, errors.New("the list of Multus delegates is empty")
	}
	args := multusArgs(rawArgs)
	out := &MultusSandbox{}
	for i := range delegates {
		a, err := multusAttachment(&delegates[i], i, containerID, ifname, cniVersion, runtimeConfig)
		if err != nil {
			return nil, fmt.Errorf("delegate %d (%s): %w", i, delegates[i].Name, err)
		}
		a.Args = args
		if i == 0 {
			a.Default = true
			out.Default = *a
		} else {
			out.Extra = append(out.Extra, *a)
		}
	}
	return out, nil
}

func multusAttachment(d *multusDelegate, i int, containerID, ifname, cniVersion string, runtimeConfig map[string]interface{}) (*record.Attachment, error) {
	list, err := multusConfList(d.Bytes, d.Name, cniVersion)
	if err != nil {
		return nil, err
	}
	name := d.Name
	if name == "" {
		name = list.Name
	}
	switch {
	case d.IfnameRequest != "":
		ifname = d.IfnameRequest
	case i > 0:
		ifname = fmt.Sprintf("net%d", i)
	}
	caps := make(map[string]interface{}, len(runtimeConfig)+4)
	for k, v := range runtimeConfig {
		caps[k] = v
	}
	if i > 0 { // Multus gives its requests to the extra networks only.
		multusRequests(caps, d, name, containerID, ifname)
	}
	// No Result: Multus writes its file before its first delegate runs and
	// keeps it when an ADD fails, so a network it names may never have run.
	// Like any attachment whose ADD is not known to have completed, a
	// plugin the node lacks is skipped (see Del).
	return &record.Attachment{Network: name, IfName: ifname, Config: list.Bytes, CapabilityArgs: caps}, nil
}

// multusRequests sets the runtimeConfig keys of what the pod asked of a
// network, as Multus saved them.
func multusRequests(caps map[string]interface{}, d *multusDelegate, name, containerID, ifname string) {
	if len(d.IPRequest) > 0 {
		caps["ips"] = d.IPRequest
	}
	if d.MacRequest != "" {
		caps["mac"] = d.MacRequest
	}
	if d.InfinibandGUIDRequest != "" {
		caps["infinibandGUID"] = d.InfinibandGUIDRequest
	}
	if d.DeviceID != "" {
		caps["deviceID"] = d.DeviceID
		file := strings.ReplaceAll(fmt.Sprintf("%s-%s_%s", name, containerID, ifname), "/", "-")
		caps["CNIDeviceInfoFile"] = DeviceInfoDir + "/" + file
	}
}

// multusConfList parses a delegate's config as Multus ran it into a
// conflist. Its plugins must be plain names: they are looked up in the
// bin dir, never by path.
func multusConfList(config []byte, name, cniVersion string) (*libcni.NetworkConfigList, error) {
	if len(config) == 0 {
		return nil, errors.New(`no config ("Bytes")`)
	}
	raw := map[string]interface{}{}
	if err := json.Unmarshal(config, &raw); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if _, ok := raw["plugins"]; !ok {
		raw = map[string]interface{}{"name": raw["name"], "cniVersion": raw["cniVersion"], "plugins": []interface{}{raw}}
	}
	if v, _ := raw["cniVersion"].(string); v == "" {
		raw["cniVersion"] = cniVersion
	}
	if n, _ := raw["name"].(string); n == "" {
		raw["name"] = name[strings.LastIndex(name, "/")+1:]
	}
	data, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(data)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if len(list.Plugins) == 0 {
		return nil, errors.New("config has no plugins")
	}
	for _, p := range list.Plugins {
		if t := p.Network.Type; t == "" || strings.ContainsAny(t, `/\`) || t == "." || t == ".." {
			return nil, fmt.Errorf("config: plugin type %q is not a plugin name", t)
		}
	}
	return list, nil
}

// multusArgs is the runtime's CNI_ARGS with IgnoreUnknown=true first, as
// Multus passes them to every delegate.
func multusArgs(rawArgs string) [][2]string {
	args := [][2]string{{"IgnoreUnknown", "true"}}
	for _, kv := range SplitArgs(rawArgs) {
		if kv[0] != "IgnoreUnknown" {
			args = append(args, kv)
		}
	}
	return args
}
