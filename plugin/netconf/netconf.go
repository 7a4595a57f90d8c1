// Package netconf turns network definitions (a NetworkAttachmentDefinition's
// spec.config, or a file in the node's CNI conf dir) into the one form
// plexus runs: a configuration list with a name and a cniVersion.
package netconf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/version"
)

// DefaultCNIVersion is assumed when a definition has no cniVersion, as other
// NPWG implementations do; the caller is told, so it can warn.
const DefaultCNIVersion = "1.0.0"

// Network is a normalised delegate configuration.
type Network struct {
	List *libcni.NetworkConfigList
	// Warnings are problems that did not stop loading (e.g. a missing
	// cniVersion that was defaulted).
	Warnings []string
}

// Capabilities is the union of the capabilities the list's plugins declare:
// the runtimeConfig keys libcni will pass on.
func (n *Network) Capabilities() map[string]bool {
	caps := map[string]bool{}
	for _, p := range n.List.Plugins {
		for k, v := range p.Network.Capabilities {
			if v {
				caps[k] = true
			}
		}
	}
	return caps
}

// Load parses a conf (one plugin, with "type") or a conflist (with
// "plugins"), fills a missing name with fallbackName and a missing
// cniVersion with DefaultCNIVersion, and returns it as a conflist: a .conf
// becomes a one-plugin list so there is a single code path after this.
func Load(data []byte, fallbackName string) (*Network, error) {
	raw := map[string]interface{}{}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("config is not a JSON object: %w", err)
	}
	n := &Network{}
	if _, ok := raw["plugins"]; !ok {
		if t, _ := raw["type"].(string); t == "" {
			return nil, errors.New(`config has neither "plugins" (a conflist) nor "type" (a conf)`)
		}
		raw = map[string]interface{}{
			"name":       raw["name"],
			"cniVersion": raw["cniVersion"],
			"plugins":    []interface{}{raw},
		}
		if raw["name"] == nil {
			delete(raw, "name")
		}
		if raw["cniVersion"] == nil {
			delete(raw, "cniVersion")
		}
	}
	if err := fillName(raw, fallbackName); err != nil {
		return nil, err
	}
	if err := fillVersion(raw, n); err != nil {
		return nil, err
	}
	if err := checkPlugins(raw); err != nil {
		return nil, err
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return nil, err
	}
	list, err := libcni.NetworkConfFromBytes(out)
	if err != nil {
		return nil, err
	}
	n.List = list
	return n, nil
}

func fillName(raw map[string]interface{}, fallback string) error {
	switch name := raw["name"].(type) {
	case nil:
		if fallback == "" {
			return errors.New(`config has no "name"`)
		}
		raw["name"] = fallback
	case string:
		if name == "" {
			// An empty name is as missing as no name: delegates such as
			// host-local key their state on it.
			if fallback == "" {
				return errors.New(`config has no "name"`)
			}
			raw["name"] = fallback
		}
	default:
		return fmt.Errorf(`field "name": want a string, got %T`, name)
	}
	return nil
}

func fillVersion(raw map[string]interface{}, n *Network) error {
	v, present := raw["cniVersion"]
	s, isString := v.(string)
	switch {
	case !present || (isString && s == ""):
		raw["cniVersion"] = DefaultCNIVersion
		n.Warnings = append(n.Warnings, fmt.Sprintf("no cniVersion, assuming %s", DefaultCNIVersion))
		return nil
	case !isString:
		return fmt.Errorf(`field "cniVersion": want a string, got %T`, v)
	}
	for _, supported := range version.All.SupportedVersions() {
		if s == supported {
			return nil
		}
	}
	return fmt.Errorf(`field "cniVersion": %q is not a supported CNI version (%s)`, s, strings.Join(version.All.SupportedVersions(), ", "))
}

func checkPlugins(raw map[string]interface{}) error {
	plugins, ok := raw["plugins"].([]interface{})
	if !ok || len(plugins) == 0 {
		return errors.New(`field "plugins": want a non-empty list`)
	}
	for i, p := range plugins {
		obj, ok := p.(map[string]interface{})
		if !ok {
			return fmt.Errorf(`field "plugins[%d]": want an object`, i)
		}
		if t, _ := obj["type"].(string); t == "" {
			return fmt.Errorf(`field "plugins[%d].type": missing`, i)
		}
	}
	return nil
}

// ConfFiles lists the CNI configuration files of a directory in the order a
// runtime considers them: lexical, of the extensions runtimes read.
func ConfFiles(dir string) ([]string, error) {
	files, err := libcni.ConfFiles(dir, []string{".conflist", ".conf", ".json"})
	if err != nil {
		return nil, err
	}
	sort.Strings(files)
	return files, nil
}

// LoadFile loads one conf or conflist file; a file without a name takes its
// base name.
func LoadFile(path string) (*Network, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	base := strings.TrimSuffix(filepath.Base(path), filepath.Ext(path))
	n, err := Load(data, base)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return n, nil
}

// FindFile returns the network of the first file in dir (lexical order)
// whose network name is name and that isExcluded (if set) does not reject.
// Files that fail to parse are skipped, so one broken file on the node does
// not hide every other network; they are named in the error when nothing
// matches.
func FindFile(dir, name string, isExcluded func(path string, n *Network) bool) (*Network, string, error) {
	files, err := ConfFiles(dir)
	if err != nil {
		return nil, "", fmt.Errorf("reading CNI conf dir %s: %w", dir, err)
	}
	var broken []string
	for _, f := range files {
		n, err := LoadFile(f)
		if err != nil {
			broken = append(broken, err.Error())
			continue
		}
		if n.List.Name == name && (isExcluded == nil || !isExcluded(f, n)) {
			return n, f, nil
		}
	}
	msg := fmt.Sprintf("no CNI config named %q in %s", name, dir)
	if len(broken) > 0 {
		msg += " (unreadable: " + strings.Join(broken, "; ") + ")"
	}
	return nil, "", errors.New(msg)
}

// FindDefault picks the node's default network: the file named name if name
// is set, else the lexically first loadable config; either way one that
// isExcluded does not reject (plexus's own file, which carries the default
// network's name and sorts first). Each file is read once.
func FindDefault(dir, name string, isExcluded func(path string, n *Network) bool) (*Network, string, error) {
	if name != "" {
		return FindFile(dir, name, isExcluded)
	}
	files, err := ConfFiles(dir)
	if err != nil {
		return nil, "", fmt.Errorf("reading CNI conf dir %s: %w", dir, err)
	}
	for _, f := range files {
		n, err := LoadFile(f)
		if err == nil && (isExcluded == nil || !isExcluded(f, n)) {
			return n, f, nil
		}
	}
	return nil, "", fmt.Errorf("no default network: no loadable CNI config in %s", dir)
}

// Cache remembers what Load made of a definition, by its bytes, so that a
// definition an ADD resolves again (the node store's rendered conflists,
// the same few for most pods) is parsed once. Networks it returns are
// shared: callers must not change them. Its zero value holds up to
// DefaultCacheSize networks.
type Cache struct {
	// Size bounds the networks held; 0 means DefaultCacheSize.
	Size int

	mu sync.Mutex
	m  map[string]cached
}

// DefaultCacheSize is more definitions than a node's pods typically use,
// and a few hundred KiB at most.
const DefaultCacheSize = 256

type cached struct {
	fallbackName string
	n            *Network
}

// Load is Load(data, fallbackName), from the cache when it has loaded the
// same bytes with the same fallback name before. Errors are not kept.
func (c *Cache) Load(data []byte, fallbackName string) (*Network, error) {
	c.mu.Lock()
	hit, ok := c.m[string(data)]
	c.mu.Unlock()
	if ok && hit.fallbackName == fallbackName {
		return hit.n, nil
	}
	n, err := Load(data, fallbackName)
	if err != nil {
		return nil, err
	}
	size := c.Size
	if size <= 0 {
		size = DefaultCacheSize
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]cached{}
	}
	if _, replacing := c.m[string(data)]; !replacing && len(c.m) >= size {
		for k := range c.m { // any one: a miss costs one Load
			delete(c.m, k)
			break
		}
	}
	c.m[string(data)] = cached{fallbackName: fallbackName, n: n}
	return n, nil
}

// Len is the number of networks held.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.m)
}
