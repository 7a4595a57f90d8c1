// Package plugin is the CNI core of plexus: it turns a runtime's CNI call
// and a pod's network selections into delegate calls, all or nothing, and
// keeps the attachment record that lets DEL undo them. It needs no
// Kubernetes client: pods and network definitions come through the Pods and
// Networks interfaces.
package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"
	nadv1 "github.com/k8snetworkplumbingwg/network-attachment-definition-client/pkg/apis/k8s.cni.cncf.io/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/shimapi"
)

// Pod is what the core needs to know of a pod.
type Pod struct {
	Namespace   string
	Name        string
	UID         string
	Annotations map[string]string
}

// Pods finds the pod a sandbox belongs to. uid is the runtime's
// K8S_POD_UID; an implementation must not return a pod with another UID.
type Pods interface {
	Pod(ctx context.Context, namespace, name, uid string) (*Pod, error)
}

// ErrNetworkNotFound is wrapped by Networks when a definition does not exist.
var ErrNetworkNotFound = errors.New("not found")

// Networks finds NetworkAttachmentDefinitions.
type Networks interface {
	Network(ctx context.Context, key k8stypes.NamespacedName) (*nadv1.NetworkAttachmentDefinition, error)
}

// StatusPublisher receives a pod's network status after a successful ADD,
// to write it to the API server off the ADD's path, and is told when a
// sandbox is gone so that an unwritten status can be dropped.
type StatusPublisher interface {
	Publish(pod record.PodRef, containerID string, status []nadv1.NetworkStatus)
	Retract(containerID string)
}

// Event reasons plexus reports on pods. They are Multus's, so that tools
// and runbooks that watch for them keep working.
const (
	// ReasonAddedInterface (Normal): one per interface an ADD attached.
	ReasonAddedInterface = "AddedInterface"
	// ReasonNoNetworkFound (Warning): a selected network does not exist.
	ReasonNoNetworkFound = "NoNetworkFound"
	// ReasonNoDeviceForNetwork (Warning): a network backed by a device
	// plugin resource is attached without a device, because the pod
	// requested none of that resource (or too few).
	ReasonNoDeviceForNetwork = "NoDeviceForNetwork"
)

// PodEvents receives the Events plexus reports on a pod, to write them to
// the API server off the CNI call's path: Event must never block and never
// fail the call. eventType is corev1.EventTypeNormal or EventTypeWarning.
type PodEvents interface {
	Event(pod record.PodRef, eventType, reason, message string)
}

// Engine runs CNI operations. Its zero value is not usable: set CNI, Store
// and ConfDir at least.
type Engine struct {
	// CNI executes delegates (a *libcni.CNIConfig with plexus's cache dir).
	CNI libcni.CNI
	// RuntimeCNI runs the default network's DEL for a sandbox plexus holds
	// no record of: the same plugins, but the runtime's result cache
	// (libcni's default, /var/lib/cni), where the runtime's own ADD of the
	// default network left its result. nil uses CNI.
	RuntimeCNI libcni.CNI
	// MultusCacheDir is Multus's cniDir as the daemon sees it (the node's
	// /var/lib/cni/multus): a DEL of a sandbox plexus holds no record of
	// also tears down the networks Multus's cache file there names (see
	// Del). Empty disables that.
	MultusCacheDir string
	// MultusCNI runs those DELs: the same plugins, with Multus's result
	// cache (MultusCacheDir), where Multus's ADDs left their results. nil
	// uses CNI.
	MultusCNI libcni.CNI
	Store     *record.Store
	// ConfDir is the node's CNI conf dir: the default network and
	// definitions with an empty spec.config are read from there.
	ConfDir string
	// DefaultNetwork names the default network's config; empty picks the
	// first config in ConfDir that is not plexus's own.
	DefaultNetwork string
	// DefaultFound, if set, returns the default network as the daemon last
	// found it in ConfDir (its node config watches the dir, and the node
	// conflist the runtime reads is written from the same network), or nil
	// when it has none. ADD takes the default network from it and reads
	// ConfDir only when it has nothing or the call names another network.
	DefaultFound func() *netconf.Network
	Pods         Pods
	Networks     Networks
	Status       StatusPublisher
	// Events, if set, receives the pod Events of ADDs (interfaces added,
	// networks missing).
	Events PodEvents
	// Devices finds the device plugin devices of a pod (kubelet's
	// pod-resources API); nil when the node has none.
	Devices Devices
	// PodPolicy is what pods may ask for: namespace isolation and the
	// default networks (see CheckPodNetworks).
	PodPolicy
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// definitions keeps what the definitions ADD resolves parse to.
	definitions netconf.Cache
}

// event hands an Event on pod to Events, if any, when the pod is known.
func (e *Engine) event(pod record.PodRef, eventType, reason, format string, args ...interface{}) {
	if e.Events == nil || pod.Name == "" {
		return
	}
	e.Events.Event(pod, eventType, reason, fmt.Sprintf(format, args...))
}

func (e *Engine) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Do runs one CNI call and returns what the shim prints: the result of an
// ADD in the runtime's CNI version, nothing for the other commands.
func (e *Engine) Do(ctx context.Context, req *Request) (types.Result, error) {
	if err := record.CheckContainerID(req.ContainerID); err != nil && req.Command != "GC" && req.Command != "STATUS" {
		return nil, types.NewError(types.ErrInvalidEnvironmentVariables, err.Error(), "")
	}
	switch req.Command {
	case "ADD":
		return e.Add(ctx, req)
	case "DEL":
		return nil, e.Del(ctx, req)
	case "CHECK":
		return nil, e.Check(ctx, req)
	case "STATUS":
		return nil, e.StatusCheck(ctx, req)
	case "GC":
		return nil, e.GC(ctx, req)
	}
	return nil, types.NewError(types.ErrInvalidEnvironmentVariables, fmt.Sprintf("unknown CNI_COMMAND %q", req.Command), "")
}

// Request is one CNI call, as the shim relays it.
type Request = shimapi.Request
