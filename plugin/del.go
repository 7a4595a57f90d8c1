package plugin

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
)

// rollbackTimeout bounds the cleanup of a failed ADD, which runs even when
// the ADD's own deadline has passed.
const rollbackTimeout = 30 * time.Second

// Del undoes a sandbox's attachments from its record alone: no API server,
// no network definition and no netns are needed. Every delegate gets its
// DEL even when another fails; the record stays, marked Failed, until all
// succeeded, so the runtime's retry or the sweep finishes the job.
//
// A sandbox with no record was attached by the runtime before plexus was
// its plugin (a pod older than the install, or started while the node
// conflist was absent): it gets the DEL of the default network, as the
// runtime would have called it, so its address is released; one that
// Multus attached (its cache file is in MultusCacheDir) gets the DEL of
// every network Multus attached, as Multus's own DEL would have run them.
// Only a call from the runtime (with its config and interface name) does
// that; the sweep's and GC's own DELs of a record that has gone meanwhile
// do not.
func (e *Engine) Del(ctx context.Context, req *Request) error {
	var unrecorded func(context.Context) error
	if len(req.Config) > 0 && req.IfName != "" {
		unrecorded = func(ctx context.Context) error { return e.delUnrecorded(ctx, req) }
	}
	if err := delegate.DelSandbox(ctx, e.CNI, e.Store, req.ContainerID, req.NetNS, unrecorded); err != nil {
		return err
	}
	if e.Status != nil {
		e.Status.Retract(req.ContainerID)
	}
	return nil
}

// delUnrecorded runs the default network's DEL for a sandbox plexus holds
// no record of: the default network the runtime's conflist carries, else
// the node's current one. It runs with the runtime's result cache
// (RuntimeCNI), where the runtime's own ADD left its result.
//
// A sandbox Multus attached (before plexus replaced it) left Multus's
// cache file in MultusCacheDir: plexus then runs Multus's DEL instead,
// every network the file names in reverse, the default network Multus
// attached last (with the config Multus ran, which is also right for a pod
// whose default network an annotation replaced), all with Multus's result
// cache, where Multus's ADDs left their results. The file goes once every
// DEL succeeded; a failed DEL keeps it for the runtime's retry, and the
// other networks are still attempted.
func (e *Engine) delUnrecorded(ctx context.Context, req *Request) error {
	conf, err := parseNetConf(req.Config)
	if err != nil {
		return err
	}
	if multus := e.readMultusCache(ctx, req, conf); multus != nil {
		return e.delMultus(ctx, req, multus)
	}
	def, err := e.unrecordedDefault(ctx, req, conf)
	if err != nil {
		return fmt.Errorf("DEL of a sandbox plexus has no record of (attached before plexus was the node's plugin): %w", err)
	}
	cni := e.RuntimeCNI
	if cni == nil {
		cni = e.CNI
	}
	if err := delegate.Del(ctx, cni, req.ContainerID, req.NetNS, def); err != nil {
		return err
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("No record of this sandbox (one plexus never attached, or a failed ADD already rolled back): ran the default network's DEL, as the runtime would have",
		"network", NetworkRef(def.Network))
	return nil
}

// unrecordedDefault is the default network's attachment, as the runtime
// attached it, for a sandbox plexus holds no record of.
func (e *Engine) unrecordedDefault(ctx context.Context, req *Request, conf *NetConf) (*record.Attachment, error) {
	if len(conf.DefaultNetworkConfig) > 0 {
		return delegate.Unrecorded(conf.DefaultNetworkConfig, conf.RuntimeConfig, req.IfName, req.Args)
	}
	def, err := e.defaultAttachment(ctx, nil, nil, conf, req.IfName)
	if err != nil {
		return nil, err
	}
	def.Args, def.CapabilityArgs = delegate.SplitArgs(req.Args), conf.RuntimeConfig
	return def, nil
}

// Check runs CHECK on every recorded attachment.
func (e *Engine) Check(ctx context.Context, req *Request) error {
	unlock, err := e.Store.Lock(ctx, req.ContainerID)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()
	rec, err := e.Store.Load(req.ContainerID)
	if errors.Is(err, os.ErrNotExist) {
		return types.NewError(types.ErrUnknownContainer, fmt.Sprintf("no attachment record for container %s", req.ContainerID), "")
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	for i := range rec.Attachments {
		if err := delegate.Check(ctx, e.CNI, rec.ContainerID, req.NetNS, &rec.Attachments[i]); err != nil {
			return err
		}
	}
	return nil
}

// CNIStatus answers the runtime's STATUS with the default network's:
// plexus is ready to add pods when the network every pod gets is.
func (e *Engine) CNIStatus(ctx context.Context, req *Request) error {
	conf, err := parseNetConf(req.Config)
	if err != nil {
		return err
	}
	def, err := e.defaultAttachment(ctx, nil, nil, conf, "")
	if err != nil {
		return err
	}
	list, err := delegate.ConfList(def)
	if err != nil {
		return err
	}
	if err := e.CNI.GetStatusNetworkList(ctx, list); err != nil {
		return fmt.Errorf("default network %s: %w", def.Network, err)
	}
	return nil
}

// GC tears down every recorded sandbox the runtime no longer lists, then
// lets every network plexus knows of collect what is not in the live list,
// so that leaked addresses are found even without a record.
func (e *Engine) GC(ctx context.Context, req *Request) error {
	conf, err := parseNetConf(req.Config)
	if err != nil {
		return err
	}
	live := map[string]bool{}
	for _, a := range conf.ValidAttachments {
		live[a.ContainerID] = true
	}
	ids, err := e.Store.IDs()
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	var errs []error
	networks := map[string]*libcni.NetworkConfigList{}
	valid := map[string][]types.GCAttachment{}
	for _, id := range ids {
		if !live[id] {
			if err := e.Del(ctx, &Request{Command: "DEL", ContainerID: id}); err != nil {
				errs = append(errs, fmt.Errorf("container %s: %w", id, err))
			}
			continue
		}
		rec, err := e.Store.Load(id)
		if err != nil {
			continue // deleted meanwhile
		}
		for i := range rec.Attachments {
			a := &rec.Attachments[i]
			list, err := delegate.ConfList(a)
			if err != nil {
				continue
			}
			networks[list.Name] = list
			valid[list.Name] = append(valid[list.Name], types.GCAttachment{ContainerID: id, IfName: a.IfName})
		}
	}
	// The runtime's own list names the default network's live attachments
	// exactly, records or not.
	if def, err := e.defaultAttachment(ctx, nil, nil, conf, ""); err == nil {
		if list, err := delegate.ConfList(def); err == nil {
			networks[list.Name] = list
			valid[list.Name] = append(valid[list.Name], conf.ValidAttachments...)
		}
	}
	for name, list := range networks {
		if err := e.CNI.GCNetworkList(ctx, list, &libcni.GCArgs{ValidAttachments: valid[name]}); err != nil {
			errs = append(errs, fmt.Errorf("GC network %s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}
