// Package shimapi is the protocol between the plexus shim (the binary the
// runtime executes) and the node daemon: one HTTP POST over a unix socket
// per CNI call. It uses the standard library only, so the shim stays small.
package shimapi

import "encoding/json"

// DefaultSocket is where the daemon listens unless configured otherwise.
const DefaultSocket = "/run/plexus/plexus.sock"

// Path is the HTTP path of the CNI endpoint.
const Path = "/cni"

// Request is one CNI call as the runtime made it: its CNI_* environment and
// its stdin.
type Request struct {
	Command     string          `json:"command"`
	ContainerID string          `json:"containerID"`
	NetNS       string          `json:"netns,omitempty"`
	IfName      string          `json:"ifname,omitempty"`
	Args        string          `json:"args,omitempty"`
	Path        string          `json:"path,omitempty"`
	Config      json.RawMessage `json:"config"`
}

// A successful call answers 200 with the result the shim prints (empty for
// commands without a result). A failed call answers another status with a
// CNI error object ({"code","msg","details"}) as the body, which the shim
// prints as its own error, code unchanged.

// DefaultStateDir holds the records and the delegates' libcni cache.
const DefaultStateDir = "/var/lib/plexus"

// RecordsDir and CacheDir lay out a state dir; the daemon and the shim's
// own teardown must agree on them.
func RecordsDir(stateDir string) string { return stateDir + "/records" }

// CacheDir is libcni's result cache of the delegates.
func CacheDir(stateDir string) string { return stateDir + "/cache" }

// NodeConf is what the shim reads of plexus's own entry in the node's
// conflist, besides the standard fields.
type NodeConf struct {
	SocketPath string `json:"socketPath,omitempty"`
	StateDir   string `json:"stateDir,omitempty"`
	// DefaultNetworkConfig is the default network's conflist, as the
	// daemon last wrapped it: what the shim runs the DEL of for a sandbox
	// it has no record of when the daemon is down.
	DefaultNetworkConfig json.RawMessage `json:"defaultNetworkConfig,omitempty"`
	// RuntimeConfig is what the runtime passed for plexus's capabilities;
	// that DEL gets it, as the default network would have.
	RuntimeConfig map[string]interface{} `json:"runtimeConfig,omitempty"`
	// MultusCacheDir is Multus's cniDir on the node: a sandbox with no
	// record whose file Multus left there gets the DEL of every network
	// Multus attached. Empty: none.
	MultusCacheDir string `json:"multusCacheDir,omitempty"`
	// CNIVersion is the conflist's, given to a Multus delegate that has
	// none, as Multus gave its own.
	CNIVersion string `json:"cniVersion,omitempty"`
}
