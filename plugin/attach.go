package plugin

import (
	"context"
	"errors"

	current "github.com/containernetworking/cni/pkg/types/100"

	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// ErrNoSandbox is wrapped when a pod or container id has no live sandbox
// plexus attached: the pod is gone, not started yet, its sandbox is being
// torn down, or a failed teardown of it is still owed.
var ErrNoSandbox = errors.New("no live sandbox")

// AttachRequest is one attachment to add to a live sandbox (hot-plug).
type AttachRequest struct {
	// ContainerID is the sandbox. Empty takes the live sandbox of Pod.
	ContainerID string
	// Pod is the pod the sandbox belongs to: with ContainerID empty it
	// finds the sandbox; set with ContainerID, it must match the record's.
	Pod record.PodRef

	// Selection is a network the pod selects (one element of its networks
	// annotation), resolved as ADD resolves it: namespace isolation,
	// ips/mac delivery, cni-args, devices, default-route. Its Interface
	// must be set.
	Selection *selection.Selection

	// Config, when Selection is nil, is the CNI configuration to run as
	// given (a .conf or a .conflist, its name filled in), on IfName, with
	// Args (CNI_ARGS, "K=V;K=V") and the delivery of Attributes' ips, mac
	// and cni-args: the dynamic networks controller's delegate API.
	Config     []byte
	IfName     string
	Args       string
	Attributes *selection.Selection
	// Network, with Config, is the name the attachment is recorded and
	// shown in network-status under: the caller's name for it
	// ("namespace/name" of the definition, as the dynamic networks
	// controller names it in the status it writes), so that a status
	// plexus writes agrees with the caller's. Empty takes the config's
	// name.
	Network string

	// Origin is recorded on the attachment (record.OriginHotplug or
	// record.OriginDelegateAPI).
	Origin string
	// KeepStatus leaves the pod's network-status alone: the delegate API's
	// client writes it itself. (A status of the sandbox that the daemon
	// still has to write is rebuilt from the record when it is written:
	// kube.StatusWriter.Current.)
	KeepStatus bool
}

// Attach adds one attachment to a live sandbox, under the sandbox lock,
// all or nothing: the record holds the new entry (durably) before its
// delegate runs, and a failed ADD is rolled back (DEL) and the entry
// dropped. The interface name, default-route and device rules apply across
// the sandbox's current attachments. Attaching what is already attached
// (same interface, same network, ADD completed) returns its stored result
// and runs nothing; an entry left without a result (the daemon died
// during an earlier attach) is deleted first and attached again. Unless
// KeepStatus, the pod's network-status is published from the record.
//
// Errors: ErrNoSandbox (wrapped) when there is no live sandbox; a
// *types.Error with the pod, network and field for a bad request; the
// delegate's error otherwise.
func (e *Engine) Attach(ctx context.Context, req *AttachRequest) (*current.Result, error) {
	return e.attachOne(ctx, req)
}

// Detach removes the attachment on interface ifname from a live sandbox,
// under the sandbox lock: its DEL runs from the record entry alone (no
// API server, no definition), and the entry goes once the DEL succeeded.
// Detaching an interface the record does not hold, or of a sandbox that
// is gone, is not an error (idempotent). The default network cannot be
// detached. Unless keepStatus, the pod's network-status is published from
// the record.
func (e *Engine) Detach(ctx context.Context, containerID, ifname string, keepStatus bool) error {
	return e.detachOne(ctx, containerID, ifname, keepStatus)
}

// Sandbox returns the record of a pod's live sandbox, found through the
// store's pod index (by UID; namespace and name must match), or an error
// wrapping ErrNoSandbox.
func (e *Engine) Sandbox(pod record.PodRef) (*record.Record, error) {
	return e.sandboxOf(pod)
}
