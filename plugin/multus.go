package plugin

import (
	"context"
	"fmt"

	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/plugin/delegate"
)

// readMultusCache is what Multus recorded of a sandbox it attached, or nil
// when there is nothing to read: no MultusCacheDir, or no file for the
// container. A file that cannot be read or parsed is logged and never
// fails the DEL: the default network is still torn down, as for any
// sandbox plexus never attached.
func (e *Engine) readMultusCache(ctx context.Context, req *Request, conf *NetConf) *delegate.MultusSandbox {
	if e.MultusCacheDir == "" {
		return nil
	}
	m, err := delegate.ReadMultusCache(e.MultusCacheDir, req.ContainerID, req.IfName, req.Args, conf.CNIVersion, conf.RuntimeConfig)
	if err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "Multus's cache of this sandbox cannot be read: tearing down its default network only; "+
			"addresses its other networks hold may stay allocated (release them by hand, then remove the file)",
			"multusCacheDir", e.MultusCacheDir)
		return nil
	}
	return m
}

// delMultus runs the DEL Multus would have run for a sandbox it attached
// (see delegate.MultusSandbox.Del), with Multus's result cache, and says
// which pod and networks it tore down; a failure names them too.
func (e *Engine) delMultus(ctx context.Context, req *Request, m *delegate.MultusSandbox) error {
	cni := e.MultusCNI
	if cni == nil {
		cni = e.CNI
	}
	if err := m.Del(ctx, cni, req.ContainerID, req.NetNS); err != nil {
		return fmt.Errorf("DEL of pod %s, which Multus attached: %w", podOf(req), err)
	}
	logr.FromContextOrDiscard(ctx).Info("Tore down the networks Multus attached to this sandbox, as Multus's DEL would have, and removed its cache file",
		"networks", m.Networks(), "defaultNetwork", NetworkRef(m.Default.Network), "path", m.Path)
	return nil
}

// podOf names a request's pod, "namespace/name", for messages.
func podOf(req *Request) string {
	_, pod := parseArgs(req.Args)
	if pod.Name == "" {
		return "(unknown pod, container " + req.ContainerID + ")"
	}
	return pod.Namespace + "/" + pod.Name
}
