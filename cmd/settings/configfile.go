package settings

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"slices"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// DaemonNames are the names of plexus-daemon's settings: its flags,
// zap's logging flags included (cmd's TestDaemonSettingsAreTheDaemonsFlags
// keeps the list equal to them). plexus-webhook reads the same settings
// file and ignores these, but for PodPolicyNames.
var DaemonNames = []string{
	"added-interface-events", "cni-bin-dir", "cni-conf-dir", "config", "default-network", "default-network-namespace",
	"default-networks", "delegate-api-socket", "global-namespaces", "health-probe-bind-address", "host-prefix", "hotplug",
	"kubeconfig", "metrics-bind-address", "multus-cache-dir", "namespace-isolation", "node-name", "node-path",
	"operation-timeout", "pod-resources-socket", "readiness-indicator-file", "resync", "runtime-cache-dir",
	"set-aside-leftovers", "shim-source", "socket", "state-dir", "system-namespaces",
	"zap-devel", "zap-encoder", "zap-log-level", "zap-stacktrace-level", "zap-time-encoding",
}

// PodPolicyNames are the daemon's settings that decide what a pod may
// ask for (plugin.PodPolicy): plexus-webhook applies them from the shared
// settings file too, so that it refuses what the nodes would.
var PodPolicyNames = []string{
	"default-network-namespace", "default-networks", "global-namespaces", "namespace-isolation", "system-namespaces",
}

// WebhookNames are the names of plexus-webhook's own settings, which
// the daemon ignores in the shared settings file (cmd/webhook's tests keep
// the list equal to its flags that the daemon lacks).
var WebhookNames = []string{
	"cert-dir", "cert-secret", "certificates", "port", "service-name", "webhook-configuration",
}

// ApplyConfigFile sets flags from a YAML file of settings named like the
// flags (`namespace-isolation: false`, `global-namespaces: [default,
// infra]`, `zap-log-level: debug`): how the chart's ConfigMap configures
// the daemon and the webhook. A flag given on the command line wins over
// the file. A list becomes the comma-separated value the flag takes. A
// setting named in ignored (the other binary's) is skipped, even when fs
// has a flag of that name. Any other setting fs has no flag for, a nested
// map or a value the flag refuses is an error naming the file and the
// setting, so a typo in a ConfigMap stops the binary instead of being
// ignored.
func ApplyConfigFile(fs *flag.FlagSet, path string, ignored []string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("config file: %w", err)
	}
	settings, err := ParseConfig(data)
	if err != nil {
		return fmt.Errorf("config file %s: %w", path, err)
	}
	onCommandLine := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	names := make([]string, 0, len(settings))
	for name := range settings {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if name == "config" {
			return fmt.Errorf("config file %s: setting %q: a settings file cannot name another", path, name)
		}
		if slices.Contains(ignored, name) {
			continue
		}
		if fs.Lookup(name) == nil {
			return fmt.Errorf("config file %s: unknown setting %q (settings are named like the flags of plexus-daemon and plexus-webhook; their --help lists them)", path, name)
		}
		if onCommandLine[name] {
			continue
		}
		if err := fs.Set(name, settings[name]); err != nil {
			return fmt.Errorf("config file %s: setting %q: %w", path, name, err)
		}
	}
	return nil
}

// ParseConfig reads a settings file into flag name -> flag text.
func ParseConfig(data []byte) (map[string]string, error) {
	js, err := yaml.YAMLToJSON(data)
	if err != nil {
		return nil, err
	}
	raw := map[string]json.RawMessage{}
	if t := bytes.TrimSpace(js); len(t) > 0 && string(t) != "null" {
		if err := json.Unmarshal(js, &raw); err != nil {
			return nil, fmt.Errorf("want a map of settings named like the daemon's flags: %w", err)
		}
	}
	settings := make(map[string]string, len(raw))
	for name, v := range raw {
		value, err := flagValue(v)
		if err != nil {
			return nil, fmt.Errorf("setting %q: %w", name, err)
		}
		settings[name] = value
	}
	return settings, nil
}

// flagValue renders a setting as the flag's text: scalars as themselves,
// a list of scalars comma-separated.
func flagValue(raw json.RawMessage) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return "", err
	}
	if list, ok := v.([]any); ok {
		parts := make([]string, 0, len(list))
		for i, item := range list {
			s, err := scalar(item)
			if err != nil {
				return "", fmt.Errorf("item %d: %w", i, err)
			}
			if strings.Contains(s, ",") {
				return "", fmt.Errorf("item %d (%q) holds a comma, which separates items", i, s)
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, ","), nil
	}
	return scalar(v)
}

func scalar(v any) (string, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return fmt.Sprint(v), nil
	case json.Number:
		return v.String(), nil
	case nil:
		return "", nil
	case map[string]any:
		return "", fmt.Errorf("want a string, number, boolean or a list of those, not a map")
	default:
		return "", fmt.Errorf("want a string, number, boolean or a list of those, not %T", v)
	}
}
