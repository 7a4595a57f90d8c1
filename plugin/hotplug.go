package plugin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"

	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

func (e *Engine) sandboxOf(pod record.PodRef) (*record.Record, error) {
	rec, err := e.Store.SandboxOf(pod)
	if errors.Is(err, record.ErrNoRecord) {
		return nil, fmt.Errorf("%w: %v", ErrNoSandbox, err)
	}
	return rec, err
}

// liveRecord loads the record of a sandbox whose lock the caller holds,
// for an operation on one of its attachments: the sandbox must be one
// plexus attached whole, owe no teardown, and belong to pod (when its UID
// is given).
func (e *Engine) liveRecord(containerID string, pod record.PodRef) (*record.Record, error) {
	rec, err := e.Store.Load(containerID)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sandbox %s: %w (no record: it is gone, or plexus never attached it)", containerID, ErrNoSandbox)
	}
	if err != nil {
		return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	switch {
	case rec.Failed != nil:
		return nil, fmt.Errorf("sandbox %s: %w (a teardown of it is owed: %s)", containerID, ErrNoSandbox, rec.Failed.Error)
	case pod.UID != "" && rec.Pod.UID != pod.UID:
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables,
			fmt.Sprintf("sandbox %s belongs to pod %s/%s (uid %s), not to pod %s/%s (uid %s)",
				containerID, rec.Pod.Namespace, rec.Pod.Name, rec.Pod.UID, pod.Namespace, pod.Name, pod.UID), "")
	}
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if !a.Added() && !hotplugged(a) {
			return nil, fmt.Errorf("sandbox %s: %w (its ADD has not completed: network %s on %s has no result)", containerID, ErrNoSandbox, a.Network, a.IfName)
		}
	}
	return rec, nil
}

// hotplugged says whether an attachment was added to a live sandbox, after
// its ADD.
func hotplugged(a *record.Attachment) bool {
	return a.Origin == record.OriginHotplug || a.Origin == record.OriginDelegateAPI
}

func (e *Engine) attachOne(ctx context.Context, req *AttachRequest) (*current.Result, error) {
	ifname := req.IfName
	if req.Selection != nil {
		ifname = req.Selection.Interface
	}
	if (req.Selection == nil) == (len(req.Config) == 0) {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "attach: give either a selection or a config", "")
	}
	if ifname == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("pod %s/%s: attach: field \"interface\" is empty: an attachment added to a running pod must name its interface", req.Pod.Namespace, req.Pod.Name), "")
	}
	if err := selection.CheckIfName(ifname); err != nil {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, fmt.Sprintf("pod %s/%s: field \"interface\": %v", req.Pod.Namespace, req.Pod.Name, err), "")
	}
	id := req.ContainerID
	if id == "" {
		rec, err := e.sandboxOf(req.Pod)
		if err != nil {
			return nil, err
		}
		id = rec.ContainerID
	}
	unlock, err := e.Store.Lock(ctx, id)
	if err != nil {
		return nil, types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()
	rec, err := e.liveRecord(id, req.Pod)
	if err != nil {
		return nil, err
	}
	pod := &Pod{Namespace: rec.Pod.Namespace, Name: rec.Pod.Name, UID: rec.Pod.UID}
	var network string
	if req.Selection != nil {
		network = req.Selection.Key().String()
	} else if req.Network != "" {
		network = req.Network
	} else if n, err := e.definitions.Load(req.Config, ""); err == nil {
		network = n.List.Name
	}
	if i := slices.IndexFunc(rec.Attachments, func(a record.Attachment) bool { return a.IfName == ifname }); i >= 0 {
		old := &rec.Attachments[i]
		switch {
		case old.Added() && old.Network == network:
			res := &current.Result{}
			if err := json.Unmarshal(old.Result, res); err != nil {
				return nil, fmt.Errorf("network %s on %s: stored result: %w", old.Network, ifname, err)
			}
			return res, nil // attached already: nothing runs twice
		case !old.Added() && hotplugged(old):
			// An attach the daemon did not live to finish: undo what it
			// may have made, then attach again.
			if err := delegate.Del(ctx, e.CNI, rec.ContainerID, rec.NetNS, old); err != nil {
				return nil, fmt.Errorf("undoing an unfinished attach of %s on %s: %w", old.Network, ifname, err)
			}
			rec.Attachments = slices.Delete(rec.Attachments, i, i+1)
			if err := e.Store.Rewrite(rec); err != nil {
				return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
			}
		default:
			return nil, planError(pod, "network %s: field \"interface\": %q is already used by network %s", network, ifname, old.Network)
		}
	}
	att, err := e.planOne(ctx, req, rec, pod, ifname)
	if err != nil {
		return nil, err
	}
	if err := checkRouteOwnersLive(pod, rec, att); err != nil {
		return nil, err
	}

	rec.Attachments = append(rec.Attachments, *att)
	n := len(rec.Attachments) - 1
	if err := e.Store.Rewrite(rec); err != nil {
		return nil, types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	res, err := e.runOne(ctx, rec, n)
	if err != nil {
		return nil, err
	}
	if err := e.Store.Update(rec); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "Recording an attach's result (the attachment stays in the record and is torn down with the sandbox)",
			"network", NetworkRef(att.Network), "interface", ifname)
	}
	e.publishLive(rec, req.KeepStatus)
	return res, nil
}

// planOne resolves the attachment an AttachRequest adds, nothing created.
func (e *Engine) planOne(ctx context.Context, req *AttachRequest, rec *record.Record, pod *Pod, ifname string) (*record.Attachment, error) {
	args := slices.Clone(rec.Attachments[0].Args) // the runtime's CNI_ARGS, as the sandbox's ADD got them
	if req.Args != "" {
		args = delegate.SplitArgs(req.Args)
	}
	if req.Selection != nil {
		devices := &devicePool{source: e.Devices, pod: pod, containerID: rec.ContainerID, used: recordedDevices(rec)}
		att, err := e.extraAttachment(ctx, pod, req.Selection, 0, args, devices)
		if err != nil {
			return nil, err
		}
		att.Origin, att.InterfaceRequested = req.Origin, true
		return att, nil
	}
	n, err := e.definitions.Load(req.Config, "")
	if err != nil {
		return nil, planError(pod, "field \"config\": %v", err)
	}
	if IsOwnConfig("", n) {
		return nil, planError(pod, "network %s: field \"config\": delegates to plexus itself", n.List.Name)
	}
	sel := req.Attributes
	if sel == nil {
		sel = &selection.Selection{}
	}
	d, err := deliver(sel, n.Capabilities(), delegate.PluginTypes(n.List))
	if err != nil {
		return nil, planError(pod, "network %s: %v", n.List.Name, err)
	}
	config := n.List.Bytes
	if cni, err := cniArgs(sel); err != nil {
		return nil, planError(pod, "network %s: %v", n.List.Name, err)
	} else if len(cni) > 0 {
		if config, err = withCNIArgs(config, cni); err != nil {
			return nil, planError(pod, "network %s: field \"cni-args\": %v", n.List.Name, err)
		}
	}
	capArgs := d.capArgs
	if capArgs == nil {
		capArgs = map[string]interface{}{}
	}
	network := n.List.Name
	if req.Network != "" {
		network = req.Network
	}
	return &record.Attachment{Network: network, IfName: ifname, Config: config, Args: withEnvArgs(args, d.env),
		CapabilityArgs: capArgs, Origin: req.Origin, InterfaceRequested: true}, nil
}

// runOne runs the ADD of the record's n-th attachment, already on disk,
// and moves the default route when it asks for it. On failure the
// attachment's DEL runs and its entry goes; when that DEL fails too, the
// entry stays (the sandbox's DEL, or the next attach of the interface,
// finishes it) and the error says so.
func (e *Engine) runOne(ctx context.Context, rec *record.Record, n int) (*current.Result, error) {
	a := &rec.Attachments[n]
	res, err := e.addOne(ctx, rec, a)
	if err == nil && a.DefaultRoute != nil {
		err = e.moveDefaultRouteTo(rec, n, res)
	}
	if err == nil {
		return res, nil
	}
	cleanup, cancel := context.WithTimeout(context.WithoutCancel(ctx), rollbackTimeout)
	defer cancel()
	a.Result = nil
	if derr := delegate.Del(cleanup, e.CNI, rec.ContainerID, rec.NetNS, a); derr != nil {
		return nil, fmt.Errorf("%w; rolling back failed (%v): plexus keeps the attachment in the sandbox's record, and the sandbox's DEL or the next attach of %s undoes it", err, derr, a.IfName)
	}
	rec.Attachments = slices.Delete(rec.Attachments, n, n+1)
	if rerr := e.Store.Rewrite(rec); rerr != nil {
		return nil, fmt.Errorf("%w (and dropping it from the record failed: %v)", err, rerr)
	}
	return nil, err
}

// moveDefaultRouteTo gives the pod's default route(s) to the record's n-th
// attachment, just added with result res: the other attachments' stored
// results lose their default routes of those families.
func (e *Engine) moveDefaultRouteTo(rec *record.Record, n int, res *current.Result) error {
	results := make([]*current.Result, len(rec.Attachments))
	for i := range rec.Attachments {
		if i == n {
			results[i] = res
			continue
		}
		results[i] = &current.Result{}
		if err := json.Unmarshal(rec.Attachments[i].Result, results[i]); err != nil {
			return fmt.Errorf("network %s: stored result: %w", rec.Attachments[i].Network, err)
		}
	}
	// Only the new attachment moves the route: the others' claims were
	// settled when they were added (checkRouteOwnersLive refuses two).
	claims := make([][]string, len(rec.Attachments))
	for i := range rec.Attachments {
		claims[i], rec.Attachments[i].DefaultRoute = rec.Attachments[i].DefaultRoute, nil
	}
	rec.Attachments[n].DefaultRoute = claims[n]
	_, err := moveDefaultRoute(rec, results)
	for i := range rec.Attachments {
		rec.Attachments[i].DefaultRoute = claims[i]
		if err == nil {
			err = storeResult(&rec.Attachments[i], results[i])
		}
	}
	return err
}

// checkRouteOwnersLive refuses an attachment that asks for a family's
// default route another attachment of the sandbox already owns.
func checkRouteOwnersLive(pod *Pod, rec *record.Record, att *record.Attachment) error {
	if att.DefaultRoute == nil {
		return nil
	}
	for i := range rec.Attachments {
		a := &rec.Attachments[i]
		if a.DefaultRoute == nil || a.IfName == att.IfName {
			continue
		}
		for _, fam := range routeFamilies(att.DefaultRoute) {
			if slices.Contains(routeFamilies(a.DefaultRoute), fam) {
				return planError(pod, `network %s: field "default-route": network %s (%s) already has the pod's %s default route; a pod has one per address family: detach it first, or give this one a gateway of another family`,
					att.Network, a.Network, a.IfName, fam)
			}
		}
	}
	return nil
}

// recordedDevices are the device plugin devices a sandbox's attachments
// hold ("deviceID" in their plugins' configs), so that an attach does not
// hand one out again.
func recordedDevices(rec *record.Record) []string {
	var ids []string
	for i := range rec.Attachments {
		var list struct {
			Plugins []struct {
				DeviceID string `json:"deviceID"`
			} `json:"plugins"`
		}
		if json.Unmarshal(rec.Attachments[i].Config, &list) == nil && len(list.Plugins) > 0 && list.Plugins[0].DeviceID != "" {
			ids = append(ids, list.Plugins[0].DeviceID)
		}
	}
	return ids
}

func (e *Engine) detachOne(ctx context.Context, containerID, ifname string, keepStatus bool) error {
	if err := record.CheckContainerID(containerID); err != nil {
		return types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	unlock, err := e.Store.Lock(ctx, containerID)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()
	rec, err := e.Store.Load(containerID)
	if errors.Is(err, os.ErrNotExist) {
		return nil // the sandbox is gone, and its attachments with it
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	i := slices.IndexFunc(rec.Attachments, func(a record.Attachment) bool { return a.IfName == ifname })
	if i < 0 {
		return nil
	}
	a := &rec.Attachments[i]
	if a.Default {
		return types.NewError(types.ErrInvalidNetworkConfig,
			fmt.Sprintf("pod %s/%s: interface %s is the pod's default network (%s), which lives as long as the sandbox: it cannot be detached", rec.Pod.Namespace, rec.Pod.Name, ifname, a.Network), "")
	}
	if err := delegate.Del(ctx, e.CNI, rec.ContainerID, rec.NetNS, a); err != nil {
		return err
	}
	rec.Attachments = slices.Delete(rec.Attachments, i, i+1)
	if err := e.Store.Rewrite(rec); err != nil {
		// The DEL ran: a record that still lists the attachment only
		// gets its DEL again, which a delegate takes as a no-op.
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	e.publishLive(rec, keepStatus)
	return nil
}

// publishLive hands the status of a live sandbox whose attachments changed
// to the status publisher, unless keep (see AttachRequest.KeepStatus).
func (e *Engine) publishLive(rec *record.Record, keep bool) {
	if e.Status == nil || rec.Pod.Name == "" || keep {
		return
	}
	status, err := NetworkStatus(rec)
	if err != nil {
		return
	}
	e.Status.Publish(rec.Pod, rec.ContainerID, status)
}
