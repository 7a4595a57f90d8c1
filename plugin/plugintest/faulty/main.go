// Command faulty is a CNI plugin for tests that fails on purpose, so that
// a test can make a delegate refuse its ADD, its first DELs, or both, the
// way a chained plugin that cannot do its job does (portmap on a node
// without iptables). It holds nothing of its own; chained after other
// plugins it passes their result on.
//
// Its config, besides the standard fields:
//
//	"failAdd":  "message"  ADD fails with this message; empty passes.
//	"failDels": N          the first N DELs of each container and interface
//	                       fail; the next one succeeds, and the count then
//	                       starts over (a later DEL fails again).
//	"stateDir": "/path"    where it counts the DELs (default
//	                       /var/lib/cni/faulty), one file per container
//	                       and interface, removed by the DEL that succeeds.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"
)

type conf struct {
	types.PluginConf
	FailAdd  string `json:"failAdd,omitempty"`
	FailDels int    `json:"failDels,omitempty"`
	StateDir string `json:"stateDir,omitempty"`
}

func load(args *skel.CmdArgs) (*conf, error) {
	c := &conf{}
	if err := json.Unmarshal(args.StdinData, c); err != nil {
		return nil, fmt.Errorf("faulty: config: %w", err)
	}
	if c.StateDir == "" {
		c.StateDir = "/var/lib/cni/faulty"
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("faulty: prevResult: %w", err)
	}
	return c, nil
}

func add(args *skel.CmdArgs) error {
	c, err := load(args)
	if err != nil {
		return err
	}
	if c.FailAdd != "" {
		return types.NewError(types.ErrInternal, "faulty: "+c.FailAdd, "")
	}
	res := &current.Result{CNIVersion: current.ImplementedSpecVersion}
	if c.PrevResult != nil {
		if res, err = current.NewResultFromResult(c.PrevResult); err != nil {
			return err
		}
	}
	return types.PrintResult(res, c.CNIVersion)
}

func del(args *skel.CmdArgs) error {
	c, err := load(args)
	if err != nil {
		return err
	}
	counter := filepath.Join(c.StateDir, args.ContainerID+"-"+args.IfName)
	data, _ := os.ReadFile(counter)
	n, _ := strconv.Atoi(string(data))
	if n >= c.FailDels {
		if err := os.Remove(counter); err != nil && !os.IsNotExist(err) {
			return err
		}
		return nil
	}
	if err := os.MkdirAll(c.StateDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(counter, []byte(strconv.Itoa(n+1)), 0o644); err != nil {
		return err
	}
	return types.NewError(types.ErrTryAgainLater, fmt.Sprintf("faulty: DEL %d of the %d this plugin refuses", n+1, c.FailDels), "")
}

func main() {
	skel.PluginMainFuncs(skel.CNIFuncs{
		Add:   add,
		Del:   del,
		Check: func(*skel.CmdArgs) error { return nil },
	}, version.All, "faulty: a CNI plugin that fails on purpose, for tests")
}
