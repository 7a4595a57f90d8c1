// Package netstore is the node's store of rendered network definitions:
// every NetworkAttachmentDefinition this node validated, as the exact
// conflist an ADD will run, one file each under the state dir. ADD
// resolves from it first, so a definition's resolution needs neither the
// API server nor a cache, and a definition the node rejected is never run.
package netstore

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/plexus-cni/plexus/plugin/record"
)

// Entry is one rendered definition.
type Entry struct {
	UID             string `json:"uid"`
	ResourceVersion string `json:"resourceVersion"`
	// ResourceName is the device plugin resource the definition names.
	ResourceName string `json:"resourceName,omitempty"`
	// Config is the normalised conflist.
	Config json.RawMessage `json:"config"`
}

// Store keeps entries as <namespace>_<name>.json in Dir: neither part can
// hold "_" or "/", so names never collide or escape.
type Store struct {
	Dir string
}

// New makes the store's directory.
func New(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("network store: %w", err)
	}
	return &Store{Dir: dir}, nil
}

// CheckKey refuses names that are not Kubernetes names before they touch a
// path.
func CheckKey(key k8stypes.NamespacedName) error {
	if errs := validation.IsDNS1123Label(key.Namespace); len(errs) > 0 {
		return fmt.Errorf("namespace %q: %s", key.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(key.Name); len(errs) > 0 {
		return fmt.Errorf("name %q: %s", key.Name, strings.Join(errs, "; "))
	}
	return nil
}

func (s *Store) path(key k8stypes.NamespacedName) string {
	return filepath.Join(s.Dir, key.Namespace+"_"+key.Name+".json")
}

// Put writes an entry, only when it differs from the stored one (a resync
// costs reads, not writes). It reports whether it wrote.
func (s *Store) Put(key k8stypes.NamespacedName, e *Entry) (bool, error) {
	if err := CheckKey(key); err != nil {
		return false, err
	}
	data, err := json.Marshal(e)
	if err != nil {
		return false, err
	}
	// The store is rebuilt from the API server at every start, so an entry
	// need not survive a crash: no directory sync.
	wrote, err := record.WriteFileIfChanged(s.path(key), data, 0o600, false)
	if err != nil {
		return false, fmt.Errorf("network store %s: %w", key, err)
	}
	return wrote, nil
}

// Get reads an entry; the error wraps os.ErrNotExist when there is none.
func (s *Store) Get(key k8stypes.NamespacedName) (*Entry, error) {
	if err := CheckKey(key); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.path(key))
	if err != nil {
		return nil, fmt.Errorf("network store %s: %w", key, err)
	}
	e := &Entry{}
	if err := json.Unmarshal(data, e); err != nil {
		return nil, fmt.Errorf("network store %s: corrupt entry: %w", key, err)
	}
	return e, nil
}

// Delete removes an entry; a missing one is not an error. It reports
// whether there was one.
func (s *Store) Delete(key k8stypes.NamespacedName) (bool, error) {
	if err := CheckKey(key); err != nil {
		return false, err
	}
	err := os.Remove(s.path(key))
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	return err == nil, err
}

// Keys lists the stored definitions.
func (s *Store) Keys() ([]k8stypes.NamespacedName, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, err
	}
	var keys []k8stypes.NamespacedName
	for _, e := range entries {
		base, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || !e.Type().IsRegular() {
			continue
		}
		ns, name, ok := strings.Cut(base, "_")
		key := k8stypes.NamespacedName{Namespace: ns, Name: name}
		if ok && CheckKey(key) == nil {
			keys = append(keys, key)
		}
	}
	return keys, nil
}
