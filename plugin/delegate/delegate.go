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
	"path/filepath"
	"strings"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/invoke"
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

// Del runs DEL for one attachment. An attachment whose ADD never completed
// may name a plugin the node lacks (the reason its ADD failed): the plugins
// of its chain from that one on never ran and hold nothing, so only those
// before it get their DEL. That is how a failed ADD whose plugin is missing
// is undone without keeping its record, and a DEL for it never blocks on a
// binary that cannot be had. An added attachment gets its whole chain's DEL:
// a plugin removed since its ADD is an error, as it would be for the
// runtime.
func Del(ctx context.Context, cni libcni.CNI, containerID, netns string, a *record.Attachment) error {
	list, err := ConfList(a)
	if err != nil {
		return err
	}
	if !a.Added() {
		if k := firstMissing(cni, list); k >= 0 {
			if k == 0 {
				removeDeviceInfoFile(cni, a)
				return nil
			}
			part := *list
			part.Plugins = list.Plugins[:k]
			list = &part
		}
	}
	if err := cni.DelNetworkList(ctx, list, RuntimeConf(containerID, netns, a)); err != nil {
		return &Error{Op: "DEL", Network: a.Network, Plugins: PluginTypes(list), IfName: a.IfName, Err: err}
	}
	removeDeviceInfoFile(cni, a)
	return nil
}

// DeviceInfoDir is the NPWG directory of the device-info files CNI plugins
// write (runtimeConfig "CNIDeviceInfoFile"), on the node.
const DeviceInfoDir = "/var/run/k8s.cni.cncf.io/devinfo/cni"

// NodeRooted is a libcni.CNI whose plugins run in the node's root
// filesystem mounted at NodeRoot (nodeexec's), not in the caller's.
type NodeRooted interface {
	NodeRoot() string
}

// NodeRoot is where cni's plugins see "/": "" for the caller's own root.
func NodeRoot(cni libcni.CNI) string {
	if r, ok := cni.(NodeRooted); ok {
		return r.NodeRoot()
	}
	return ""
}

// removeDeviceInfoFile removes what the attachment's delegate wrote at its
// CNIDeviceInfoFile path, once its DEL succeeded. Best effort: the file
// holds nothing but a description. Only a file in DeviceInfoDir is
// removed, whatever a record says.
func removeDeviceInfoFile(cni libcni.CNI, a *record.Attachment) {
	path, _ := a.CapabilityArgs["CNIDeviceInfoFile"].(string)
	if path == "" || filepath.Dir(filepath.Clean(path)) != DeviceInfoDir {
		return
	}
	if host, err := HostPath(NodeRoot(cni), path); err == nil {
		_ = os.Remove(host)
	}
}

// HostPath is where a caller whose view of the node's root filesystem is
// at root ("" or "/": its own root) finds the file the node names path.
// Symbolic links on the way are followed as the node follows them, an
// absolute target starting again at root (a node's /var/run -> /run is
// the node's /run, not the caller's), and never out of root. Parts that
// do not exist yet are kept as they are.
func HostPath(root, path string) (string, error) {
	if root == "" || root == "/" {
		return filepath.Clean(path), nil
	}
	rest := strings.Split(path, "/")
	cur := "/"
	for links := 0; len(rest) > 0; {
		part := rest[0]
		rest = rest[1:]
		switch part {
		case "", ".":
			continue
		case "..":
			cur = filepath.Dir(cur)
			continue
		}
		next := filepath.Join(cur, part)
		target, err := os.Readlink(filepath.Join(root, next))
		if err != nil { // not a link, or not there yet
			cur = next
			continue
		}
		if links++; links > 40 {
			return "", fmt.Errorf("%s: too many levels of symbolic links under %s", path, root)
		}
		if filepath.IsAbs(target) {
			cur = "/"
		}
		rest = append(strings.Split(target, "/"), rest...)
	}
	return filepath.Join(root, cur), nil
}

// PluginFinder is a libcni.CNI that can tell whether a plugin is
// installed, the way it looks plugins up (nodeexec.CNI does).
type PluginFinder interface {
	Has(plugin string) bool
}

// firstMissing is the index of a list's first plugin whose binary is not
// where cni looks, or -1. A PluginFinder says; a *libcni.CNIConfig with
// libcni's own exec looks in its Path; with any other CNI every plugin
// counts as present.
func firstMissing(cni libcni.CNI, list *libcni.NetworkConfigList) int {
	has := func(string) bool { return true }
	switch c := cni.(type) {
	case PluginFinder:
		has = c.Has
	case *libcni.CNIConfig:
		has = func(plugin string) bool { _, err := invoke.FindInPath(plugin, c.Path); return err == nil }
	}
	for i, p := range list.Plugins {
		if !has(p.Network.Type) {
			return i
		}
	}
	return -1
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
// its lock file. It takes the sandbox's lock. With no record, and no
// tombstone saying plexus already tore it down, it calls unrecorded (when
// not nil) under that lock: a sandbox plexus never attached may still hold
// what the runtime's own ADD made before plexus was its plugin.
func DelSandbox(ctx context.Context, cni libcni.CNI, store *record.Store, containerID, netns string, unrecorded func(context.Context) error) error {
	unlock, err := store.Lock(ctx, containerID)
	if err != nil {
		return types.NewError(types.ErrTryAgainLater, err.Error(), "")
	}
	defer unlock()
	err = teardownRecord(ctx, cni, store, containerID, netns)
	if errors.Is(err, errNoRecord) {
		err = nil
		if unrecorded != nil && !store.TornDown(containerID) {
			if err = unrecorded(ctx); err == nil {
				err = store.MarkTornDown(containerID)
			}
		}
	}
	if err != nil {
		return err
	}
	store.ForgetLock(containerID)
	return nil
}

// errNoRecord: teardownRecord found no record, so undid nothing.
var errNoRecord = errors.New("no record")

// TeardownRecord undoes a sandbox's recorded attachments and removes the
// record; the caller holds the sandbox's lock. When a delegate's DEL fails,
// the record stays, marked Failed, so that a retried DEL (the runtime's, a
// later ADD's or the sweep's) finishes the job. No record is nothing to do.
func TeardownRecord(ctx context.Context, cni libcni.CNI, store *record.Store, containerID, netns string) error {
	if err := teardownRecord(ctx, cni, store, containerID, netns); !errors.Is(err, errNoRecord) {
		return err
	}
	return nil
}

// teardownRecord is TeardownRecord, with no record an error wrapping
// errNoRecord.
func teardownRecord(ctx context.Context, cni libcni.CNI, store *record.Store, containerID, netns string) error {
	rec, err := store.Load(containerID)
	if errors.Is(err, os.ErrNotExist) {
		return errNoRecord
	}
	if errors.Is(err, record.ErrPartial) {
		// Cut short before any delegate ran: nothing to undo.
		return store.Remove(containerID)
	}
	if err != nil {
		return types.NewError(types.ErrIOFailure, err.Error(), "")
	}
	if err := Teardown(ctx, cni, containerID, netns, rec.Attachments); err != nil {
		return MarkFailed(store, rec, "DEL", err)
	}
	return store.Remove(containerID)
}

// MarkFailed notes a failed teardown (cause) on the record and returns
// cause, with the note's own failure if it could not be written.
func MarkFailed(store *record.Store, rec *record.Record, op string, cause error) error {
	if err := store.MarkFailed(rec, op, cause, time.Now().UTC()); err != nil {
		return fmt.Errorf("%w (and noting the failure on the record: %v)", cause, err)
	}
	return cause
}

// Unrecorded is the default network's attachment for a sandbox plexus
// holds no record of, as the runtime's DEL describes it: config is the
// default network's conflist (the node conflist carries it as
// defaultNetworkConfig), with the runtime's interface name, CNI_ARGS and
// runtimeConfig, which is what the runtime itself would have called it
// with. Its ADD counts as not completed, so Del skips a plugin the node
// lacks.
func Unrecorded(config []byte, runtimeConfig map[string]interface{}, ifname, rawArgs string) (*record.Attachment, error) {
	list, err := libcni.NetworkConfFromBytes(config)
	if err != nil {
		return nil, fmt.Errorf("the default network's config in the node conflist: %w", err)
	}
	return &record.Attachment{
		Network:        list.Name,
		Default:        true,
		IfName:         ifname,
		Config:         list.Bytes,
		Args:           SplitArgs(rawArgs),
		CapabilityArgs: runtimeConfig,
	}, nil
}

// SplitArgs splits CNI_ARGS ("K=V;K2=V2") into the pairs every delegate
// gets, in order; an item without "=" is dropped.
func SplitArgs(raw string) [][2]string {
	var pairs [][2]string
	if raw == "" {
		return nil
	}
	for _, item := range strings.Split(raw, ";") {
		if k, v, ok := strings.Cut(item, "="); ok {
			pairs = append(pairs, [2]string{k, v})
		}
	}
	return pairs
}
