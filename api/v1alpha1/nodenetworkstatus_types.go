package v1alpha1

import (
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Condition types of a NodeNetworkStatus.
const (
	// ConditionReady: the node's daemon serves CNI calls, its conflist and
	// shim are in place and its caches have synced.
	ConditionReady = "Ready"
	// ConditionDefaultNetworkFound: a default network config exists in the
	// node's CNI conf dir.
	ConditionDefaultNetworkFound = "DefaultNetworkFound"
	// ConditionConfigWritten: the node conflist that makes the runtime call
	// plexus is written and current.
	ConditionConfigWritten = "ConfigWritten"
	// ConditionShimInstalled: the plexus binary is in the CNI bin dir.
	ConditionShimInstalled = "ShimInstalled"
	// ConditionConfigFirst: no other config in the node's CNI conf dir
	// sorts before plexus's conflist, so the runtime, which reads the
	// first, calls plexus. False names the files that do and what to do.
	ConditionConfigFirst = "ConfigFirst"
)

// MaxListed bounds the networks a status lists one by one, so that a
// cluster with thousands of definitions keeps a small object; the counts
// are always exact.
const MaxListed = 50

// DefaultNetwork is the network every pod of the node gets first.
type DefaultNetwork struct {
	// Name is the network name in its config.
	Name string `json:"name"`
	// File is the config file in the node's CNI conf dir.
	File string `json:"file"`
	// Type is the plugin types of the config, "+"-joined for a chain.
	Type string `json:"type"`
	// CNIVersion is the config's cniVersion.
	CNIVersion string `json:"cniVersion,omitempty"`
}

// NetworkProblem is a NetworkAttachmentDefinition this node rejected or
// renders with a warning.
type NetworkProblem struct {
	// Namespace of the definition.
	Namespace string `json:"namespace"`
	// Name of the definition.
	Name string `json:"name"`
	// Reason is a CamelCase cause: InvalidConfig, PluginMissing,
	// InvalidName, DefaultedCNIVersion.
	Reason string `json:"reason"`
	// Message says what is wrong, naming the field.
	Message string `json:"message"`
}

// BypassedPod is a pod of the node that asks for networks but whose
// sandbox plexus never attached: it started while plexus was not installed
// or the node conflist was absent, so the runtime gave it the node's
// default network alone.
type BypassedPod struct {
	// Namespace of the pod.
	Namespace string `json:"namespace"`
	// Name of the pod.
	Name string `json:"name"`
	// Networks are the networks it asks for in its
	// k8s.v1.cni.cncf.io/networks annotation and lacks, "namespace/name"
	// each, in the annotation's order. When the annotation does not
	// parse, its one entry is the annotation's raw value (at most 200
	// characters).
	// +optional
	// +listType=atomic
	Networks []string `json:"networks,omitempty"`
	// DefaultNetwork is the network it asks for in place of the node's
	// default network (v1.multus-cni.io/default-network) and lacks,
	// "namespace/name", or the raw value when it does not parse.
	// +optional
	DefaultNetwork string `json:"defaultNetwork,omitempty"`
}

// HotplugStatus is the node's hot-plug activity since its daemon started:
// attachments added to and removed from running pods because their
// k8s.v1.cni.cncf.io/networks annotation changed.
type HotplugStatus struct {
	// Mode is the daemon's hot-plug mode (--hotplug): builtin, the
	// daemon's own controller; delegate-api, the dynamic networks
	// controller through plexus's delegate API; off.
	Mode string `json:"mode"`
	// Added counts the attachments hot-plugged.
	Added int64 `json:"added"`
	// Removed counts the attachments hot-unplugged.
	Removed int64 `json:"removed"`
	// Failures counts the attaches and detaches that failed (each retry
	// that fails counts again). Each also gets a Warning Event on its pod,
	// reason HotplugFailed.
	Failures int64 `json:"failures"`
	// LastFailure is the latest failure.
	// +optional
	LastFailure *HotplugFailure `json:"lastFailure,omitempty"`
}

// HotplugFailure is one failed attach or detach of a running pod.
type HotplugFailure struct {
	// Pod is "namespace/name".
	Pod string `json:"pod"`
	// Network is the network's "namespace/name".
	Network string `json:"network"`
	// Interface is the interface name in the pod.
	Interface string `json:"interface"`
	// Message says what failed and why (at most 1024 characters).
	Message string `json:"message"`
	// Time is when it failed.
	Time metav1.Time `json:"time"`
}

// NodeNetworkStatusStatus is what the node's daemon sees.
type NodeNetworkStatusStatus struct {
	// DefaultNetwork is the node's default network, if one was found.
	// +optional
	DefaultNetwork *DefaultNetwork `json:"defaultNetwork,omitempty"`

	// ConfigFile is the conflist the runtime reads to call plexus.
	// +optional
	ConfigFile string `json:"configFile,omitempty"`

	// ConfigWritten is when ConfigFile's content last changed.
	// +optional
	ConfigWritten *metav1.Time `json:"configWritten,omitempty"`

	// NetworksRendered counts the definitions valid on this node and
	// rendered into its store.
	NetworksRendered int32 `json:"networksRendered"`

	// NetworksRejected counts the definitions this node cannot attach.
	NetworksRejected int32 `json:"networksRejected"`

	// Rejected lists rejected definitions with the reason (at most
	// MaxListed).
	// +optional
	// +listType=atomic
	Rejected []NetworkProblem `json:"rejected,omitempty"`

	// Warnings lists definitions rendered with a warning (at most
	// MaxListed).
	// +optional
	// +listType=atomic
	Warnings []NetworkProblem `json:"warnings,omitempty"`

	// Attachments counts the pod sandboxes plexus holds on the node.
	Attachments int32 `json:"attachments"`

	// TeardownsPending counts the sandboxes whose teardown failed and is
	// still owed (an ADD whose rollback a delegate refused, a DEL that did
	// not finish); their delegates may still hold addresses. The runtime's
	// DEL, a later ADD of the sandbox or the daemon's sweep retries them.
	TeardownsPending int32 `json:"teardownsPending"`

	// BypassedPods counts the running pods of the node that ask for
	// networks but that plexus never attached (see Bypassed). Each gets a
	// Warning Event, reason NetworksNotAttached; deleting such a pod
	// recreates it through plexus. Checked when the daemon starts and
	// then periodically (every 30 seconds by default).
	BypassedPods int32 `json:"bypassedPods"`

	// Bypassed lists the pods BypassedPods counts, sorted by namespace
	// and name (at most MaxListed).
	// +optional
	// +listType=atomic
	Bypassed []BypassedPod `json:"bypassed,omitempty"`

	// Hotplug is the node's hot-plug activity since its daemon started.
	// +optional
	Hotplug *HotplugStatus `json:"hotplug,omitempty"`

	// MissingPlugins lists plugin types that definitions name but the
	// node's CNI bin dir lacks.
	// +optional
	// +listType=set
	MissingPlugins []string `json:"missingPlugins,omitempty"`

	// Plugins lists the plugin binaries in the node's CNI bin dir (file
	// names, sorted; hidden files and directories left out), as the
	// daemon last read it: when it starts and then at each status refresh
	// (every 30 seconds by default). The admission webhook reads it to
	// warn, when a NetworkAttachmentDefinition is applied, about nodes
	// lacking a plugin type it names. Empty until the daemon first reads
	// the dir, and on daemons older than the field.
	// +optional
	// +listType=set
	Plugins []string `json:"plugins,omitempty"`

	// LastHeartbeatTime is when the node's daemon last confirmed this
	// status: at each change, and at least every HeartbeatPeriod (one
	// minute) while it runs. A heartbeat older than two periods means no
	// daemon serves the node (killed, crash-looping, or uninstalled after
	// its RBAC went): the rest of the status is the last it wrote, Ready
	// included. Empty on daemons older than the field.
	// +optional
	LastHeartbeatTime *metav1.Time `json:"lastHeartbeatTime,omitempty"`

	// Conditions: Ready, DefaultNetworkFound, ConfigWritten, ShimInstalled,
	// ConfigFirst (False names a config the runtime reads instead of
	// plexus's: a meta-plugin still installed, a leftover not set aside,
	// any other file sorting first, and what to do about it).
	// ConfigWritten has reason Restored once the daemon had to put its
	// conflist back after someone else removed or changed it; its
	// lastTransitionTime is then the last restore, and its message says
	// what happened.
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// HeartbeatPeriod is how often, at the least, a running daemon refreshes
// its node's NodeNetworkStatus.status.lastHeartbeatTime.
const HeartbeatPeriod = time.Minute

// NodeNetworkStatus is what one node's plexus daemon sees: its default
// network, the network definitions it can and cannot attach, and the
// attachments it holds. There is one per node, named after it, owned by
// the Node.
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:scope=Cluster,shortName=nns
// +kubebuilder:printcolumn:name="Node",type=string,JSONPath=`.metadata.name`
// +kubebuilder:printcolumn:name="Default Network",type=string,JSONPath=`.status.defaultNetwork.name`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Networks",type=integer,JSONPath=`.status.networksRendered`
// +kubebuilder:printcolumn:name="Rejected",type=integer,JSONPath=`.status.networksRejected`,priority=1
// +kubebuilder:printcolumn:name="Attachments",type=integer,JSONPath=`.status.attachments`
// +kubebuilder:printcolumn:name="Bypassed",type=integer,JSONPath=`.status.bypassedPods`,priority=1
// +kubebuilder:printcolumn:name="Teardowns Pending",type=integer,JSONPath=`.status.teardownsPending`,priority=1
// +kubebuilder:printcolumn:name="Heartbeat",type=date,JSONPath=`.status.lastHeartbeatTime`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type NodeNetworkStatus struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Status NodeNetworkStatusStatus `json:"status,omitempty"`
}

// NodeNetworkStatusList is a list of NodeNetworkStatus.
// +kubebuilder:object:root=true
type NodeNetworkStatusList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []NodeNetworkStatus `json:"items"`
}

func init() {
	SchemeBuilder.Register(&NodeNetworkStatus{}, &NodeNetworkStatusList{})
}
