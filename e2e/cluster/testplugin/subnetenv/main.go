// Command subnetenv is a CNI plugin for the e2e suite, shaped like
// Flannel's: the network's node daemon writes a subnet file once the node
// has its subnet, and the plugin reads it on every ADD and delegates to a
// bridge with host-local addresses from that subnet, keeping the
// delegate's config in a folder of the node so that DEL undoes what ADD
// made even after the file changed. Flannel itself cannot run here (the
// module proxy refuses its plugin's module); what matters for plexus is
// the same: a default network whose plugin reads and writes node files
// that no one mounted for it.
//
// Its config, besides the standard fields:
//
//	"subnetFile": "/path"  KEY=VALUE lines: FLANNEL_NETWORK (the cluster's
//	                       pod network), FLANNEL_SUBNET (the node's, as its
//	                       gateway address/prefix), FLANNEL_MTU (optional).
//	                       Default /run/flannel/subnet.env.
//	"dataDir": "/path"     one file per container: the delegate's config.
//	                       Default /var/lib/cni/subnetenv.
//	"delegate": {...}      the delegate's config; type defaults to bridge,
//	                       isGateway to true; ipam and mtu are filled in.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/containernetworking/cni/pkg/invoke"
	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/containernetworking/cni/pkg/version"
)

type conf struct {
	types.PluginConf
	SubnetFile string         `json:"subnetFile,omitempty"`
	DataDir    string         `json:"dataDir,omitempty"`
	Delegate   map[string]any `json:"delegate,omitempty"`
}

func load(stdin []byte) (*conf, error) {
	c := &conf{SubnetFile: "/run/flannel/subnet.env", DataDir: "/var/lib/cni/subnetenv"}
	if err := json.Unmarshal(stdin, c); err != nil {
		return nil, fmt.Errorf("subnetenv: config: %w", err)
	}
	return c, nil
}

// subnet is what the subnet file says.
type subnet struct {
	network, node *net.IPNet
	mtu           int
}

func readSubnetFile(file string) (*subnet, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("subnetenv: the node's subnet file: %w", err)
	}
	defer f.Close()
	vars := map[string]string{}
	s := bufio.NewScanner(f)
	for s.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(s.Text()), "="); ok {
			vars[k] = v
		}
	}
	if err := s.Err(); err != nil {
		return nil, fmt.Errorf("subnetenv: %s: %w", file, err)
	}
	sn := &subnet{}
	for key, into := range map[string]**net.IPNet{"FLANNEL_NETWORK": &sn.network, "FLANNEL_SUBNET": &sn.node} {
		_, n, err := net.ParseCIDR(vars[key])
		if err != nil {
			return nil, fmt.Errorf("subnetenv: %s: %s: %w", file, key, err)
		}
		*into = n
	}
	if v := vars["FLANNEL_MTU"]; v != "" {
		if sn.mtu, err = strconv.Atoi(v); err != nil {
			return nil, fmt.Errorf("subnetenv: %s: FLANNEL_MTU: %w", file, err)
		}
	}
	return sn, nil
}

// delegateConf is the delegate's config for this node's subnet.
func delegateConf(c *conf, sn *subnet) ([]byte, string, error) {
	d := map[string]any{"type": "bridge", "isGateway": true}
	for k, v := range c.Delegate {
		d[k] = v
	}
	d["cniVersion"], d["name"] = c.CNIVersion, c.Name
	if sn.mtu > 0 {
		d["mtu"] = sn.mtu
	}
	d["ipam"] = map[string]any{
		"type":   "host-local",
		"ranges": [][]map[string]string{{{"subnet": sn.node.String()}}},
		"routes": []map[string]string{{"dst": sn.network.String()}},
	}
	typ, ok := d["type"].(string)
	if !ok || typ == "" {
		return nil, "", errors.New("subnetenv: the delegate has no type")
	}
	b, err := json.Marshal(d)
	return b, typ, err
}

func saved(c *conf, containerID string) string { return filepath.Join(c.DataDir, containerID) }

// save writes the delegate's config atomically before the delegate runs:
// a DEL then finds it whatever happened to the ADD.
func save(file string, data []byte) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
		return err
	}
	tmp := file + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, file)
}

func add(args *skel.CmdArgs) error {
	c, err := load(args.StdinData)
	if err != nil {
		return err
	}
	sn, err := readSubnetFile(c.SubnetFile)
	if err != nil {
		return err
	}
	d, typ, err := delegateConf(c, sn)
	if err != nil {
		return err
	}
	file := saved(c, args.ContainerID)
	if err := save(file, d); err != nil {
		return fmt.Errorf("subnetenv: saving the delegate's config: %w", err)
	}
	ctx := context.Background()
	res, err := invoke.DelegateAdd(ctx, typ, d, nil)
	if err != nil {
		if derr := invoke.DelegateDel(ctx, typ, d, nil); derr == nil {
			_ = os.Remove(file)
		}
		return err
	}
	return types.PrintResult(res, c.CNIVersion)
}

func del(args *skel.CmdArgs) error {
	c, err := load(args.StdinData)
	if err != nil {
		return err
	}
	file := saved(c, args.ContainerID)
	d, err := os.ReadFile(file)
	if errors.Is(err, os.ErrNotExist) {
		return nil // nothing was made, or it was undone already
	}
	if err != nil {
		return err
	}
	var typed struct {
		Type string `json:"type"`
	}
	if err := json.Unmarshal(d, &typed); err != nil {
		return fmt.Errorf("subnetenv: %s: %w", file, err)
	}
	if err := invoke.DelegateDel(context.Background(), typed.Type, d, nil); err != nil {
		return err // the file stays for the runtime's next DEL
	}
	return os.Remove(file)
}

func check(args *skel.CmdArgs) error {
	c, err := load(args.StdinData)
	if err != nil {
		return err
	}
	_, err = os.Stat(saved(c, args.ContainerID))
	return err
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: add, Del: del, Check: check}, version.All, "subnetenv: a Flannel-shaped plugin for plexus's e2e suite")
}
