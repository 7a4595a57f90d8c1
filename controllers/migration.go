package controllers

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-logr/logr"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/netconf"
	"github.com/plexus-cni/plexus/plugin/record"
)

// SetAsideSuffix is appended to a leftover meta-plugin config's name when
// the daemon moves it aside: runtimes read only .conf, .conflist and .json
// files, so the renamed file is never read again, and renaming it back
// restores it.
const SetAsideSuffix = ".plexus-set-aside"

// maxSetAsideKept bounds the set-asides a NodeState remembers.
const maxSetAsideKept = 20

// ForeignConfig is a config in the conf dir that sorts before plexus's own
// conflist: the runtime reads it instead, so plexus is not in effect.
type ForeignConfig struct {
	// File is the config's path.
	File string
	// Network and Types describe it (empty when it cannot be loaded).
	Network, Types string
	// MetaPlugin is the meta-plugin type it holds (see
	// plugin.MetaPluginTypes), "" if none.
	MetaPlugin string
	// Installed: MetaPlugin's binary is in the bin dir, so the meta-plugin
	// may still be running and plexus leaves its file alone.
	Installed bool
	// Error says why it cannot be loaded, or why it could not be set aside.
	Error string
}

// Reason is the ConfigFirst condition's reason for this file.
func (f ForeignConfig) Reason() string {
	switch {
	case f.MetaPlugin != "" && f.MetaPlugin != plugin.PluginType && f.Installed:
		return ReasonMetaPluginInstalled
	case f.MetaPlugin != "" && f.MetaPlugin != plugin.PluginType:
		return ReasonLeftoverNotSetAside
	}
	return ReasonForeignConfigFirst
}

// Message says what the file does to the node and what to do about it.
func (f ForeignConfig) Message(binDir string) string {
	first := fmt.Sprintf("%s sorts before %s, so the container runtime uses it instead of plexus", f.File, ConfigFileName)
	bin := filepath.Join(binDir, f.MetaPlugin)
	switch f.Reason() {
	case ReasonMetaPluginInstalled:
		return fmt.Sprintf("%s: it is a config of %s, which is still installed (%s); uninstall %s first "+
			"(its DaemonSet and RBAC, not the NetworkAttachmentDefinition CRD), then remove %s if its uninstall left it there, "+
			"and plexus sets %s aside", first, f.MetaPlugin, bin, f.MetaPlugin, bin, filepath.Base(f.File))
	case ReasonLeftoverNotSetAside:
		why := "setting leftovers aside is off (migration.setAsideLeftovers, --set-aside-leftovers)"
		if f.Error != "" {
			why = "setting it aside failed: " + f.Error
		}
		return fmt.Sprintf("%s and every new pod fails: it is a leftover config of %s, whose plugin %s is gone, and %s; remove it or move it out of the conf dir",
			first, f.MetaPlugin, bin, why)
	}
	if f.Error != "" {
		return fmt.Sprintf("%s, and it cannot be loaded (%s); remove it, or fix it and rename it to sort after %s", first, f.Error, ConfigFileName)
	}
	return fmt.Sprintf("%s (network %s, %s) and pods get no extra networks; rename it to sort after %s, or remove it", first, f.Network, f.Types, ConfigFileName)
}

// Condition reasons of ConfigFirst, and of the node's Warning Event.
const (
	ReasonForeignConfigFirst  = "ForeignConfigFirst"
	ReasonMetaPluginInstalled = "MetaPluginInstalled"
	ReasonLeftoverNotSetAside = "LeftoverNotSetAside"
	// ReasonLeftoverSetAside is the Event of a leftover config set aside.
	ReasonLeftoverSetAside = "LeftoverSetAside"
)

// SetAsideFile is a leftover meta-plugin config the daemon moved aside.
type SetAsideFile struct {
	From, To   string
	MetaPlugin string
	At         time.Time
}

// Message says what was done, why, and how to undo it.
func (s SetAsideFile) Message(binDir string) string {
	return fmt.Sprintf("set aside the leftover %s config %s as %s, since its plugin %s is gone and the container runtime would call it for every new pod; "+
		"to restore it: mv %s %s", s.MetaPlugin, s.From, s.To, filepath.Join(binDir, s.MetaPlugin), s.To, s.From)
}

// hasPlugin says whether a plugin type is installed in the bin dir.
func (c *NodeConfig) hasPlugin(t string) bool {
	if c.HasPlugin != nil {
		return c.HasPlugin(t)
	}
	return exists(filepath.Join(c.BinDir, t))
}

// syncForeign looks at every config of the conf dir but plexus's own:
// leftover meta-plugin configs (their binary gone) are set aside when
// allowed, wherever they sort (a later one would be the runtime's choice
// once plexus is uninstalled); what still sorts before plexus's conflist
// is reported in s.Foreign.
func (c *NodeConfig) syncForeign(log logr.Logger, s *NodeState) {
	files, err := netconf.ConfFiles(c.ConfDir)
	if err != nil {
		// syncConfig reports an unreadable conf dir; what was found
		// before stays until it can be read again.
		return
	}
	var foreign []ForeignConfig
	s.MetaConfigs = nil
	for _, path := range files {
		base := filepath.Base(path)
		if base == ConfigFileName {
			continue
		}
		f := ForeignConfig{File: path}
		if n, err := netconf.LoadFile(path); err != nil {
			f.Error = err.Error()
		} else {
			f.Network, f.Types, f.MetaPlugin = n.List.Name, pluginTypes(n), plugin.MetaPluginType(n)
		}
		leftover := f.MetaPlugin != "" && f.MetaPlugin != plugin.PluginType
		if leftover {
			s.MetaConfigs = append(s.MetaConfigs, fmt.Sprintf("%s (%s)", base, f.MetaPlugin))
		}
		if leftover {
			f.Installed = c.hasPlugin(f.MetaPlugin)
		}
		if leftover && !f.Installed && c.SetAsideLeftovers {
			to, err := setAside(path)
			if err == nil {
				c.noteSetAside(log, s, SetAsideFile{From: path, To: to, MetaPlugin: f.MetaPlugin, At: time.Now()})
				continue
			}
			f.Error = err.Error()
		}
		if base < ConfigFileName {
			foreign = append(foreign, f)
		}
	}
	if !sameForeign(s.Foreign, foreign) && len(foreign) > 0 {
		log.Error(errors.New(foreignMessage(foreign, c.BinDir)), "Plexus is not in effect on this node: the runtime reads another config first", "path", filepath.Join(c.ConfDir, ConfigFileName))
	}
	s.Foreign = foreign
}

func (c *NodeConfig) noteSetAside(log logr.Logger, s *NodeState, set SetAsideFile) {
	s.SetAsides++
	s.SetAside = append(s.SetAside, set)
	if len(s.SetAside) > maxSetAsideKept {
		s.SetAside = s.SetAside[len(s.SetAside)-maxSetAsideKept:]
	}
	log.Info("Set aside a leftover meta-plugin config: its plugin is gone, and the runtime would call it",
		"path", set.From, "setAsideAs", set.To, "metaPlugin", set.MetaPlugin, "restore", "mv "+set.To+" "+set.From)
}

// setAside renames a config to <name>.plexus-set-aside (or .2, .3, ... when
// that name holds other content) and returns the new path. When a set-aside
// copy of the same content is already there (its meta-plugin wrote the file
// again), the file is removed instead, so set-asides stay bounded.
func setAside(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for i := 1; i <= 100; i++ {
		to := path + SetAsideSuffix
		if i > 1 {
			to += fmt.Sprintf(".%d", i)
		}
		old, err := os.ReadFile(to)
		switch {
		case errors.Is(err, os.ErrNotExist):
			if err := os.Rename(path, to); err != nil {
				return "", err
			}
			return to, record.SyncDir(filepath.Dir(path))
		case err == nil && bytes.Equal(old, data):
			if err := os.Remove(path); err != nil {
				return "", err
			}
			return to, record.SyncDir(filepath.Dir(path))
		}
	}
	return "", fmt.Errorf("100 set-aside copies of %s are there already", path)
}

func sameForeign(a, b []ForeignConfig) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// foreignMessage is the messages of every foreign config, joined.
func foreignMessage(foreign []ForeignConfig, binDir string) string {
	msgs := make([]string, len(foreign))
	for i, f := range foreign {
		msgs[i] = f.Message(binDir)
	}
	return strings.Join(msgs, "; ")
}
