package plugin

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
)

// readMultusCache is what Multus recorded of a sandbox it attached, or nil
// when there is nothing to read: no MultusCacheDir, no file for the
// container, or a file that cannot be read or parsed. The last is logged
// and never fails the DEL: the default network is still torn down, as for
// any sandbox plexus never attached.
func (e *Engine) readMultusCache(ctx context.Context, req *Request, conf *NetConf) *multusCache {
	if e.MultusCacheDir == "" {
		return nil
	}
	path := filepath.Join(e.MultusCacheDir, req.ContainerID)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("pod", podOf(req), "multusCache", path)
	if err == nil {
		var sandbox *delegate.MultusSandbox
		if sandbox, err = delegate.ParseMultusCache(data, req.ContainerID, req.IfName, req.Args, conf.CNIVersion, conf.RuntimeConfig); err == nil {
			return &multusCache{MultusSandbox: sandbox, path: path}
		}
	}
	log.Error(err, "Multus's cache of this sandbox cannot be read: tearing down its default network only; "+
		"addresses its other networks hold may stay allocated (release them by hand, then remove the file)")
	return nil
}

// multusCache is a sandbox's Multus cache file and what it holds.
type multusCache struct {
	*delegate.MultusSandbox
	path string
}

// delMultus runs the DEL Multus would have run for a sandbox it attached:
// every network in reverse, the default network last, each attempted even
// when another fails. On success Multus's cache file goes and the networks
// torn down are logged; on failure the file stays, so that the runtime's
// retry runs every DEL again.
func (e *Engine) delMultus(ctx context.Context, req *Request, m *multusCache) error {
	cni := e.MultusCNI
	if cni == nil {
		cni = e.CNI
	}
	atts := append([]record.Attachment{m.Default}, m.Extra...)
	if err := delegate.Teardown(ctx, cni, req.ContainerID, req.NetNS, atts); err != nil {
		return fmt.Errorf("DEL of a sandbox Multus attached (pod %s; networks %s; default network %s; %s kept for the retry): %w",
			podOf(req), m.Networks(), m.Default.Network, m.path, err)
	}
	log := logr.FromContextOrDiscard(ctx).WithValues("pod", podOf(req), "networks", m.Networks(),
		"defaultNetwork", m.Default.Network, "multusCache", m.path)
	if err := os.Remove(m.path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Error(err, "removing Multus's cache of a sandbox torn down")
	}
	log.Info("tore down the networks Multus attached to this sandbox, as Multus's DEL would have, and removed its cache file")
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
