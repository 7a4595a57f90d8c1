// Package delegate runs one attachment's delegate plugins through libcni and
// undoes a sandbox's attachments. Like package record it stays within the
// standard library and the CNI library, so the shim can tear down without
// the daemon.
package delegate

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/plexus-cni/plexus/plugin/record"
)

// Error says which network, which delegate plugins and which interface
// failed, and keeps the delegate's error (and so its CNI code) for errors.As.
type Error struct {
	Op      string // ADD, DEL, CHECK
	Network string
	Plugins string
	IfName  string
	Err     error
}

func (e *Error) Error() string {
	return fmt.Sprintf("%s network %s (delegate %s, interface %s): %v", e.Op, e.Network, e.Plugins, e.IfName, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// CNIError turns any error into the CNI error the runtime gets: the code of
// the innermost CNI error it wraps (a delegate's), the message of the whole
// chain, so the runtime sees both what failed and where.
func CNIError(err error) *types.Error {
	if err == nil {
		return nil
	}
	code, details := types.ErrInternal, ""
	var cniErr *types.Error
	if errors.As(err, &cniErr) {
		code, details = cniErr.Code, cniErr.Details
	}
	return &types.Error{Code: code, Msg: err.Error(), Details: details}
}

// ConfList parses an attachment's stored configuration list.
func ConfList(a *record.Attachment) (*libcni.NetworkConfigList, error) {
	list, err := libcni.NetworkConfFromBytes(a.Config)
	if err != nil {
		return nil, fmt.Errorf("network %s: stored config: %w", a.Network, err)
	}
	return list, nil
}

// PluginTypes names a list's plugins for messages: "macvlan+tuning".
func PluginTypes(list *libcni.NetworkConfigList) string {
	names := make([]string, 0, len(list.Plugins))
	for _, p := range list.Plugins {
		names = append(names, p.Network.Type)
	}
	return strings.Join(names, "+")
}

// RuntimeConf is what every call for an attachment gets: the same container,
// interface, arguments and capability arguments at ADD, CHECK and DEL.
func RuntimeConf(containerID, netns string, a *record.Attachment) *libcni.RuntimeConf {
	return &libcni.RuntimeConf{
		ContainerID:    containerID,
		NetNS:          netns,
		IfName:         a.IfName,
		Args:           a.Args,
		CapabilityArgs: a.CapabilityArgs,
	}
}

// Add runs ADD for one attachment and returns its result in the current
// CNI version, the one form plexus keeps results in.
func Add(ctx context.Context, cni libcni.CNI, containerID, netns string, a *record.Attachment) (*current.Result, error) {
	list, err := ConfList(a)
	if err != nil {
		return nil, err
	}
	fail := func(err error) error {
		return &Error{Op: "ADD", Network: a.Network, Plugins: PluginTypes(list), IfName: a.IfName, Err: err}
	}
	res, err := cni.AddNetworkList(ctx, list, RuntimeConf(containerID, netns, a))
	if err != nil {
		return nil, fail(err)
	}
	cur, err := current.NewResultFromResult(res)
	if err != nil {
		return nil, fail(fmt.Errorf("converting result: %w", err))
	}
	return cur, nil
}

// Check runs CHECK for one attachment, with its stored result as prevResult.
func Check(ctx context.Context, cni libcni.CNI, containerID, netns string, a *record.Attachment) error {
	list, err := ConfList(a)
	if err != nil {
		return err
	}
	// CHECK exists from CNI 0.4.0 on; an older delegate has nothing to run.
	if ok, err := version.GreaterThanOrEqualTo(list.CNIVersion, "0.4.0"); err != nil || !ok || list.DisableCheck {
		return nil
	}
	if err := cni.CheckNetworkList(ctx, list, RuntimeConf(containerID, netns, a)); err != nil {
		return &Error{Op: "CHECK", Network: a.Network, Plugins: PluginTypes(list), IfName: a.IfName, Err: err}
	}
	return nil
}

// Del runs DEL for one attachment.
func Del(ctx context.Context, cni libcni.CNI, containerID, netns string, a *record.Attachment) error {
	list, err := ConfList(a)
	if err != nil {
		return err
	}
	if err := cni.DelNetworkList(ctx, list, RuntimeConf(containerID, netns, a)); err != nil {
		return &Error{Op: "DEL", Network: a.Network, Plugins: PluginTypes(list), IfName: a.IfName, Err: err}
	}
	return nil
}

// Teardown runs DEL for attachments in reverse order. Every one is tried
// even when an earlier one fails, so one broken delegate cannot leak the
// others' addresses; the errors come back joined.
func Teardown(ctx context.Context, cni libcni.CNI, containerID, netns string, atts []record.Attachment) error {
	var errs []error
	for i := len(atts) - 1; i >= 0; i-- {
		if err := Del(ctx, cni, containerID, netns, &atts[i]); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// DelSandbox undoes a sandbox from its record and removes the record and
// its lock file; no record is nothing to do. It takes the sandbox's lock.
func DelSandbox(ctx context.Context, cni libcni.CNI, store *record.Store, containerID, netns string) error {
	unlock, err := store.Lock(ctx, containerID)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()
	if err := TeardownRecord(ctx, cni, store, containerID, netns); err != nil {
		return err
	}
	store.ForgetLock(containerID)
	return nil
}

// TeardownRecord undoes a sandbox's recorded attachments and removes the
// record; the caller holds the sandbox's lock. The record stays when a
// delegate's DEL failed, so that a retried DEL finishes the job.
func TeardownRecord(ctx context.Context, cni libcni.CNI, store *record.Store, containerID, netns string) error {
	rec, err := store.Load(containerID)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if errors.Is(err, record.ErrPartial) {
		// Cut short before any delegate ran: nothing to undo.
		return store.Remove(containerID)
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	if err := Teardown(ctx, cni, containerID, netns, rec.Attachments); err != nil {
		return err
	}
	return store.Remove(containerID)
}
