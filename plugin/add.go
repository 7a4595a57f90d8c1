package plugin

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
)

// Add attaches the default network and then every selected network, in
// order, all or nothing. The record of what it will call is on disk before
// the first delegate runs; on any failure everything added so far is
// deleted in reverse and the record dropped.
func (e *Engine) Add(ctx context.Context, req *Request) (types.Result, error) {
	conf, err := parseNetConf(req.Config)
	if err != nil {
		return nil, err
	}
	unlock, err := e.Store.Lock(ctx, req.ContainerID)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()

	// A record left by an earlier ADD of this sandbox (a runtime retrying
	// after a timeout) is undone first, so that its addresses are not leaked.
	if err := e.teardown(ctx, req.ContainerID, req.NetNS); err != nil {
		return nil, fmt.Errorf("undoing an earlier ADD of this sandbox: %w", err)
	}
	rec, err := e.plan(ctx, req, conf)
	if err != nil {
		// Nothing ran: the runtime's DELs that follow have nothing to undo.
		_ = e.Store.MarkTornDown(req.ContainerID)
		return nil, err
	}
	if err := e.Store.Save(rec); err != nil {
		return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	results, err := e.attach(ctx, rec)
	if err != nil {
		return nil, err
	}
	if err := e.Store.Update(rec); err != nil {
		return nil, e.rollback(ctx, rec, len(rec.Attachments), types.NewError(types.ErrIOFailure, err.Error(), ""))
	}
	if e.Status != nil && rec.Pod.Name != "" {
		status, err := NetworkStatus(rec)
		if err == nil {
			e.Status.Publish(rec.Pod, rec.ContainerID, status)
		}
	}
	e.announceInterfaces(rec, results)
	merged := mergeResults(results)
	out, err := merged.GetAsVersion(conf.CNIVersion)
	if err != nil {
		return nil, types.NewError(types.ErrIncompatibleCNIVersion, fmt.Sprintf("result as version %s: %v", conf.CNIVersion, err), "")
	}
	return out, nil
}

// attach runs every delegate of a planned record, then moves the default
// route if a selection asked for it. Each result is put into the record.
func (e *Engine) attach(ctx context.Context, rec *record.Record) ([]*current.Result, error) {
	results := make([]*current.Result, len(rec.Attachments))
	for i := range rec.Attachments {
		res, err := e.addOne(ctx, rec, &rec.Attachments[i])
		if err != nil {
			return nil, e.rollback(ctx, rec, i+1, err)
		}
		results[i] = res
	}
	if moved, err := moveDefaultRoute(rec, results); err != nil || moved {
		for i := range rec.Attachments {
			if err == nil {
				err = storeResult(&rec.Attachments[i], results[i])
			}
		}
		if err != nil {
			return nil, e.rollback(ctx, rec, len(rec.Attachments), err)
		}
	}
	return results, nil
}

// addOne runs the ADD of rec's attachment a, with its device-info file
// prepared before and read after (see prepareDeviceInfoFile), and puts
// the result into a.
func (e *Engine) addOne(ctx context.Context, rec *record.Record, a *record.Attachment) (*current.Result, error) {
	root := delegate.NodeRoot(e.CNI)
	if err := prepareDeviceInfoFile(root, a); err != nil {
		return nil, err
	}
	res, err := delegate.Add(ctx, e.CNI, rec.ContainerID, rec.NetNS, a)
	if err != nil {
		return nil, err
	}
	readDeviceInfoFile(root, a)
	if err := storeResult(a, res); err != nil {
		return nil, err
	}
	return res, nil
}

func storeResult(a *record.Attachment, res *current.Result) error {
	data, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("network %s: result: %w", a.Network, err)
	}
	a.Result = data
	return nil
}

// rollback deletes the first n attachments in reverse and drops the record,
// returning cause (the first error) with anything the cleanup hit. The
// delegate whose ADD failed gets its DEL too, since a plugin may have made
// part of its interface or allocation before failing. When a DEL fails,
// the record stays, marked Failed, so that the runtime's DEL (which
// follows every failed ADD), a later ADD of the sandbox or the sweep
// finishes the teardown: dropping it would leak whatever the earlier
// delegates hold, once per retry of the sandbox.
func (e *Engine) rollback(ctx context.Context, rec *record.Record, n int, cause error) error {
	// The cleanup must run even when ctx is what failed.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	if err := delegate.Teardown(ctx, e.CNI, rec.ContainerID, rec.NetNS, rec.Attachments[:n]); err != nil {
		err = delegate.MarkFailed(e.Store, rec, "ADD", err)
		return fmt.Errorf("%w; rolling back failed, plexus keeps the sandbox's record and the runtime's DEL or plexus's sweep retries the teardown: %v", cause, err)
	}
	if err := e.Store.Remove(rec.ContainerID); err != nil {
		return fmt.Errorf("%w (and removing the record failed: %v)", cause, err)
	}
	return cause
}

// teardown undoes a sandbox's recorded attachments and removes the record;
// the caller holds the sandbox's lock.
func (e *Engine) teardown(ctx context.Context, containerID, netns string) error {
	if err := delegate.TeardownRecord(ctx, e.CNI, e.Store, containerID, netns); err != nil {
		return err
	}
	if e.Status != nil {
		e.Status.Retract(containerID)
	}
	return nil
}

// mergeResults answers the runtime with the default network's result, its
// interface list extended with every other attachment's interfaces, so the
// runtime sees every interface but takes the pod's IPs from the default
// network alone.
func mergeResults(results []*current.Result) *current.Result {
	merged := *results[0]
	merged.Interfaces = append([]*current.Interface(nil), results[0].Interfaces...)
	for _, r := range results[1:] {
		merged.Interfaces = append(merged.Interfaces, r.Interfaces...)
	}
	return &merged
}
