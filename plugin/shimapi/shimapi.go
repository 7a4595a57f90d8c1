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
