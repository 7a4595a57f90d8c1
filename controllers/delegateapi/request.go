package delegateapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/plexus-cni/plexus/plugin/record"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// Request is the body of POST /delegate, as the dynamic networks
// controller sends it (Multus's delegate API): the CNI environment of one
// interface of a running pod, the network's CNI configuration, and what
// the pod's selection element asks of the interface.
type Request struct {
	// Env holds CNI_COMMAND ("ADD" or "DEL"), CNI_CONTAINERID (the pod's
	// sandbox), CNI_NETNS, CNI_IFNAME and CNI_ARGS
	// ("K8S_POD_NAMESPACE=..;K8S_POD_NAME=..;K8S_POD_UID=..").
	Env map[string]string `json:"env"`
	// Config is the NetworkAttachmentDefinition's CNI configuration (a
	// .conf or a .conflist, its name filled in); bytes, so base64 in JSON.
	Config []byte `json:"config"`
	// InterfaceAttributes is absent when the selection asks for none.
	InterfaceAttributes *InterfaceAttributes `json:"interfaceAttributes,omitempty"`
}

// InterfaceAttributes are the selection element's requests for the
// interface, delivered to the delegate as an ADD from the annotation
// would deliver them (NPWG: ips and mac capabilities, cni-args).
type InterfaceAttributes struct {
	// IPs are addresses with their prefix length ("10.1.1.5/24").
	IPs []string `json:"ips,omitempty"`
	MAC string   `json:"mac,omitempty"`
	// CNIArgs may be null: the controller always sends the key.
	CNIArgs map[string]interface{} `json:"cni-args,omitempty"`
}

// Response is the answer to an ADD: the delegate's result in CNI 1.0.0.
// The field is capitalised, as the controller's client decodes it.
type Response struct {
	Result json.RawMessage `json:"Result"`
}

// CNI commands the API serves.
const (
	CmdAdd = "ADD"
	CmdDel = "DEL"
)

// call is a request read and checked: everything but its sandbox.
type call struct {
	command     string
	containerID string
	netns       string
	ifName      string
	args        string
	pod         record.PodRef
	config      []byte
	configName  string
	attributes  *selection.Selection
}

// httpError is an answer other than 200: a status and a text that names
// the field or the pod, and says how to fix it.
type httpError struct {
	status int
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, a ...interface{}) *httpError {
	return &httpError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, a...)}
}

// parse reads and checks a request body. Every error is a 400 naming the
// field at fault.
func parse(body []byte) (*call, *httpError) {
	req := &Request{}
	if err := json.Unmarshal(body, req); err != nil {
		return nil, badRequest("body: not a delegate request (JSON {\"env\": {...}, \"config\": <base64>, \"interfaceAttributes\": {...}}): %v", err)
	}
	c := &call{command: strings.ToUpper(strings.TrimSpace(req.Env["CNI_COMMAND"])),
		containerID: req.Env["CNI_CONTAINERID"], netns: req.Env["CNI_NETNS"],
		ifName: req.Env["CNI_IFNAME"], args: req.Env["CNI_ARGS"]}
	switch c.command {
	case CmdAdd, CmdDel:
	case "":
		return nil, badRequest("env.CNI_COMMAND is missing: want ADD or DEL")
	default:
		return nil, badRequest("env.CNI_COMMAND %q is not served: want ADD or DEL", req.Env["CNI_COMMAND"])
	}
	if c.containerID == "" {
		return nil, badRequest("env.CNI_CONTAINERID is missing: want the pod's sandbox id, as the container runtime reports it")
	}
	if err := record.CheckContainerID(c.containerID); err != nil {
		return nil, badRequest("env.CNI_CONTAINERID: %v", err)
	}
	if c.ifName == "" {
		// Multus takes eth0 then; here that is the pod's default network.
		return nil, badRequest("env.CNI_IFNAME is missing: want the interface the pod's selection element names (an element without \"interface\" cannot be hot-plugged)")
	}
	if err := selection.CheckIfName(c.ifName); err != nil {
		return nil, badRequest("env.CNI_IFNAME %q: %v", c.ifName, err)
	}
	pod, err := podOf(c.args)
	if err != nil {
		return nil, err
	}
	c.pod = pod
	c.args = delegateArgs(c.args, c.containerID)
	if err := c.readConfig(req.Config); err != nil {
		return nil, err
	}
	if c.command == CmdAdd && req.InterfaceAttributes != nil {
		attrs, err := attributes(req.InterfaceAttributes, c)
		if err != nil {
			return nil, err
		}
		c.attributes = attrs
	}
	return c, nil
}

// podOf reads the pod from CNI_ARGS. The UID is required: it is what finds
// the pod's live sandbox, and what tells a pod from a recreated one of the
// same name.
func podOf(args string) (record.PodRef, *httpError) {
	if args == "" {
		return record.PodRef{}, badRequest("env.CNI_ARGS is missing: want \"K8S_POD_NAMESPACE=<ns>;K8S_POD_NAME=<name>;K8S_POD_UID=<uid>\"")
	}
	kv := map[string]string{}
	for _, part := range strings.Split(args, ";") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return record.PodRef{}, badRequest("env.CNI_ARGS: %q is not KEY=VALUE", part)
		}
		kv[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	pod := record.PodRef{Namespace: kv["K8S_POD_NAMESPACE"], Name: kv["K8S_POD_NAME"], UID: kv["K8S_POD_UID"]}
	for key, v := range map[string]string{"K8S_POD_NAMESPACE": pod.Namespace, "K8S_POD_NAME": pod.Name, "K8S_POD_UID": pod.UID} {
		if v == "" {
			return record.PodRef{}, badRequest("env.CNI_ARGS has no %s: want \"K8S_POD_NAMESPACE=<ns>;K8S_POD_NAME=<name>;K8S_POD_UID=<uid>\"", key)
		}
	}
	return pod, nil
}

// delegateArgs is the CNI_ARGS the delegate gets: the caller's, with
// IgnoreUnknown=1 first and K8S_POD_INFRA_CONTAINER_ID, as a runtime's
// (and Multus's delegate calls) carry them: without IgnoreUnknown the
// reference plugins refuse the K8S_POD_* keys they do not know.
func delegateArgs(args, containerID string) string {
	var out []string
	hasIgnore, hasInfra := false, false
	for _, part := range strings.Split(args, ";") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		k, _, _ := strings.Cut(part, "=")
		switch k {
		case "IgnoreUnknown":
			hasIgnore = true
		case "K8S_POD_INFRA_CONTAINER_ID":
			hasInfra = true
		}
		out = append(out, part)
	}
	if !hasInfra {
		out = append(out, "K8S_POD_INFRA_CONTAINER_ID="+containerID)
	}
	if !hasIgnore {
		out = append([]string{"IgnoreUnknown=1"}, out...)
	}
	return strings.Join(out, ";")
}

// readConfig checks that config is a CNI configuration that runs a plugin:
// a .conf with "type" or a .conflist whose every plugin has one, and a
// name.
func (c *call) readConfig(config []byte) *httpError {
	if len(config) == 0 {
		return badRequest("config is missing: want the network's CNI configuration (the NetworkAttachmentDefinition's spec.config, its name filled in), base64 in JSON")
	}
	var conf struct {
		Name    string `json:"name"`
		Type    string `json:"type"`
		Plugins []struct {
			Type string `json:"type"`
		} `json:"plugins"`
	}
	if err := json.Unmarshal(config, &conf); err != nil {
		return badRequest("config: not a CNI configuration (JSON object): %v", err)
	}
	if conf.Name == "" {
		return badRequest("config: no \"name\": fill in the network's name (the NetworkAttachmentDefinition's), as Multus's delegate API expects")
	}
	if conf.Plugins == nil && conf.Type == "" {
		return badRequest("config of network %q: no \"type\" (nor \"plugins\"): the configuration names no CNI plugin to run", conf.Name)
	}
	if conf.Plugins != nil && len(conf.Plugins) == 0 {
		return badRequest("config of network %q: \"plugins\" is empty: the configuration list names no CNI plugin to run", conf.Name)
	}
	for i, p := range conf.Plugins {
		if p.Type == "" {
			return badRequest("config of network %q: plugins[%d] has no \"type\"", conf.Name, i)
		}
	}
	c.config, c.configName = config, conf.Name
	return nil
}

// attributes turns interfaceAttributes into the selection the core
// delivers them from, checked by the rules of a networks annotation
// element (an address with its prefix, a unicast MAC).
func attributes(a *InterfaceAttributes, c *call) (*selection.Selection, *httpError) {
	if len(a.IPs) == 0 && a.MAC == "" && len(a.CNIArgs) == 0 {
		return nil, nil
	}
	// The element's name only has to pass the annotation's rules; the
	// network is the config's.
	element := selection.Selection{Name: "delegate", Namespace: c.pod.Namespace, Interface: c.ifName,
		IPs: a.IPs, MAC: a.MAC, CNIArgs: a.CNIArgs}
	data, err := json.Marshal([]selection.Selection{element})
	if err != nil {
		return nil, badRequest("interfaceAttributes: %v", err)
	}
	parsed, err := selection.Parse(string(data), c.pod.Namespace)
	var serr *selection.Error
	switch {
	case errors.As(err, &serr) && serr.Field != "":
		return nil, badRequest("interfaceAttributes.%s of network %q: %s", serr.Field, c.configName, serr.Reason)
	case err != nil:
		return nil, badRequest("interfaceAttributes of network %q: %v", c.configName, err)
	}
	s := parsed[0]
	return &selection.Selection{IPs: s.IPs, MAC: s.MAC, CNIArgs: s.CNIArgs, Interface: c.ifName}, nil
}
