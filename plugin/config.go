package plugin

import (
	"encoding/json"
	"fmt"

	"github.com/containernetworking/cni/pkg/types"

	"github.com/plexus-cni/plexus/plugin/delegate"
)

// PluginType is the "type" of plexus's own entry in the node's conflist.
const PluginType = "plexus"

// NetConf is plexus's own configuration, as the runtime passes it on stdin.
type NetConf struct {
	types.PluginConf
	// RuntimeConfig is what the runtime (kubelet's CRI) passes for the
	// capabilities plexus declared; it goes to the default network only.
	RuntimeConfig map[string]interface{} `json:"runtimeConfig,omitempty"`
	// DefaultNetwork names the default network's config in the conf dir;
	// empty means the daemon's choice.
	DefaultNetwork string `json:"defaultNetwork,omitempty"`
	// DefaultNetworkConfig is the default network's conflist as the daemon
	// wrapped it in the node conflist; DEL of a sandbox plexus holds no
	// record of runs it.
	DefaultNetworkConfig json.RawMessage `json:"defaultNetworkConfig,omitempty"`
}

func parseNetConf(data []byte) (*NetConf, error) {
	conf := &NetConf{}
	if err := json.Unmarshal(data, conf); err != nil {
		return nil, types.NewError(types.ErrDecodingFailure, fmt.Sprintf("plexus config: %v", err), "")
	}
	if conf.CNIVersion == "" {
		return nil, types.NewError(types.ErrInvalidNetworkConfig, "plexus config: missing cniVersion", "")
	}
	return conf, nil
}

// podArgs is the pod identity a Kubernetes runtime puts in CNI_ARGS.
type podArgs struct {
	Namespace, Name, UID string
}

// parseArgs splits CNI_ARGS into pairs, handed to every delegate as they
// came, and picks out the pod identity. Unknown keys are kept, not refused:
// they are for the delegates.
func parseArgs(raw string) ([][2]string, podArgs) {
	pairs := delegate.SplitArgs(raw)
	var pod podArgs
	for _, kv := range pairs {
		switch kv[0] {
		case "K8S_POD_NAMESPACE":
			pod.Namespace = kv[1]
		case "K8S_POD_NAME":
			pod.Name = kv[1]
		case "K8S_POD_UID":
			pod.UID = kv[1]
		}
	}
	return pairs, pod
}
