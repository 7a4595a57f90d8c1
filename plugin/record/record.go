// Package record keeps the attachment record of a pod sandbox: everything
// plexus will hand to each delegate, written before the first delegate runs,
// so that DEL can always undo an ADD, even with the API server down, the
// network definition deleted, or the daemon gone.
//
// It imports the standard library and the CNI library only, because the
// shim links it to tear down a sandbox when the daemon cannot be reached.
package record

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"time"
)

// FormatVersion is bumped whenever a change to Record would make an older
// reader misread a newer file. Additions an older reader can ignore keep
// it: attachments keyed by interface name, their origin and the pod index
// came without a bump, and the results file still carries the positional
// list beside the by-name map, so that a daemon or shim rolled back to an
// earlier plexus still tears down every sandbox this one attached,
// hot-plugged interfaces included.
const FormatVersion = 1

// Record is everything plexus did, or is about to do, for one sandbox.
type Record struct {
	Version     int          `json:"version"`
	ContainerID string       `json:"containerID"`
	NetNS       string       `json:"netns"`
	Pod         PodRef       `json:"pod,omitempty"`
	CNIVersion  string       `json:"cniVersion"`
	Created     time.Time    `json:"created"`
	Attachments []Attachment `json:"attachments"`
	// Failed is set when a teardown of this sandbox failed and is still
	// owed: an ADD whose rollback a delegate refused, or a DEL that did not
	// finish. The runtime's DEL, a later ADD of the sandbox or the daemon's
	// sweep finishes it; the record goes only when every delegate's DEL
	// succeeded.
	Failed *Failure `json:"failed,omitempty"`
}

// Failure says which teardown of a sandbox failed, why, and how often it
// has been tried.
type Failure struct {
	// Op is "ADD" for a failed ADD whose rollback did not finish, "DEL"
	// for a DEL that did not.
	Op string `json:"op"`
	// Error is the last teardown's error.
	Error string `json:"error"`
	// First and Last are when a teardown first and last failed.
	First time.Time `json:"first"`
	Last  time.Time `json:"last"`
	// Attempts counts the failed teardowns.
	Attempts int `json:"attempts"`
}

// PodRef names the pod a sandbox belongs to, empty outside Kubernetes.
type PodRef struct {
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
}

// Attachment is one delegate call: the exact configuration list and
// arguments its ADD got, so that its DEL gets the same and frees the same
// IPAM allocation.
type Attachment struct {
	// Network is "namespace/name" for a NetworkAttachmentDefinition, or the
	// network name of a configuration file on the node.
	Network string `json:"network"`
	// Default marks the pod's default (cluster) network.
	Default        bool                   `json:"default,omitempty"`
	IfName         string                 `json:"ifname"`
	Config         json.RawMessage        `json:"config"`
	Args           [][2]string            `json:"args,omitempty"`
	CapabilityArgs map[string]interface{} `json:"capabilityArgs,omitempty"`
	// DefaultRoute lists the gateways the pod's default route must use
	// through this attachment, when the pod asked to move it here: null
	// when it did not, [] for the gateways of the delegate's result (not
	// omitted when empty, so that a live sandbox's attach still sees the
	// claim).
	DefaultRoute []string `json:"defaultRoute"`
	// Result is the delegate's ADD result in the current CNI version;
	// empty until the ADD succeeded.
	Result json.RawMessage `json:"result,omitempty"`
	// DeviceInfo is the device-info a device plugin or delegate gave.
	DeviceInfo json.RawMessage `json:"deviceInfo,omitempty"`
	// Origin says what asked for the attachment: OriginDefaultNetworks,
	// OriginSelection, OriginHotplug or OriginDelegateAPI; empty for the
	// default network and in records written before it existed.
	Origin string `json:"origin,omitempty"`
	// InterfaceRequested is set when the pod's selection named the
	// interface (rather than plexus numbering it netN): only such an
	// attachment can be matched by a later annotation, so only it can be
	// hot-unplugged.
	InterfaceRequested bool `json:"interfaceRequested,omitempty"`
}

// Attachment origins (see Attachment.Origin).
const (
	// OriginDefaultNetworks: one of the networks every pod gets
	// (--default-networks).
	OriginDefaultNetworks = "defaultNetworks"
	// OriginSelection: an element of the pod's networks annotation,
	// attached by the sandbox's ADD.
	OriginSelection = "selection"
	// OriginHotplug: an element of the networks annotation attached to the
	// running sandbox by the daemon's hot-plug controller.
	OriginHotplug = "hotplug"
	// OriginDelegateAPI: attached through the delegate API (the dynamic
	// networks controller's POST /delegate).
	OriginDelegateAPI = "delegateAPI"
)

// Added reports whether the delegate's ADD completed.
func (a *Attachment) Added() bool { return len(a.Result) > 0 }

// CheckContainerID refuses ids that would escape the state directory or
// collide with its own files: 1-255 of [A-Za-z0-9_.-], starting
// alphanumeric. (A loop, not a regexp: the shim pays for every package-level
// regexp at each exec.)
func CheckContainerID(id string) error {
	ok := len(id) > 0 && len(id) <= 255
	for i := 0; ok && i < len(id); i++ {
		c := id[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		ok = alnum || i > 0 && (c == '_' || c == '.' || c == '-')
	}
	if !ok {
		return fmt.Errorf("invalid container id %q: want 1-255 of [A-Za-z0-9_.-], starting alphanumeric", id)
	}
	return nil
}

// Store keeps records as one JSON file per container id in Dir.
type Store struct {
	Dir string
}

// NewStore makes the store's directories.
func NewStore(dir string) (*Store, error) {
	for _, d := range []string{dir, filepath.Join(dir, "locks")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("record store: %w", err)
		}
	}
	return &Store{Dir: dir}, nil
}

func (s *Store) path(id string) string { return filepath.Join(s.Dir, id+".json") }

func (s *Store) resultsPath(id string) string { return filepath.Join(s.Dir, id+".results") }

// tombstonePath marks a sandbox whose teardown is done (see TornDown).
func (s *Store) tombstonePath(id string) string { return filepath.Join(s.Dir, id+".gone") }

// ErrPartial marks a record file that is not whole: the daemon or the node
// died while Save was writing it, before any delegate ran (Save returns
// only once the file is on disk, and ADD runs no delegate before that).
// There is nothing to undo for it.
var ErrPartial = errors.New("record only partly written (no delegate ran)")

// Save writes a new record durably, with a single fsync: ADD waits for it
// before the first delegate, so its cost is on every pod's start. A record
// for the id that already exists is replaced atomically (and durably)
// instead. A new record is written in place, not renamed into place, so
// one fsync of the file also makes its directory entry durable (as Linux
// file systems do for a newly created file); a crash before that fsync
// returns leaves a file that Load reports as ErrPartial, and no delegate
// has run.
func (s *Store) Save(r *Record) error {
	if err := CheckContainerID(r.ContainerID); err != nil {
		return err
	}
	data, err := marshal(r)
	if err != nil {
		return err
	}
	_ = os.Remove(s.resultsPath(r.ContainerID)) // results of an earlier record
	_ = os.Remove(s.tombstonePath(r.ContainerID))
	f, err := os.OpenFile(s.path(r.ContainerID), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		err = writeFile(s.path(r.ContainerID), data, 0o600, true)
		if err != nil {
			return fmt.Errorf("record %s: %w", r.ContainerID, err)
		}
		s.index(r)
		return nil
	}
	if err != nil {
		return fmt.Errorf("record %s: %w", r.ContainerID, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		_ = os.Remove(s.path(r.ContainerID))
		return fmt.Errorf("record %s: %w", r.ContainerID, err)
	}
	s.index(r)
	return nil
}

// results is what Update writes beside a record: each attachment's result
// and device-info, by interface name, and by position in Results, which
// is what earlier plexus versions wrote and read (Load reads ByIfName when
// present).
type results struct {
	ContainerID string                   `json:"containerID"`
	ByIfName    map[string]resultOfIndex `json:"byIfName,omitempty"`
	Results     []resultOfIndex          `json:"results,omitempty"`
}

type resultOfIndex struct {
	Result     json.RawMessage `json:"result,omitempty"`
	DeviceInfo json.RawMessage `json:"deviceInfo,omitempty"`
}

// Update records the delegates' results of a saved record. They go to a
// file of their own, replaced atomically but not synced: the record Save
// made durable stays as it is, and is all DEL needs; a crash may lose the
// results (Load then returns the record without them), never the record.
func (s *Store) Update(r *Record) error {
	if err := CheckContainerID(r.ContainerID); err != nil {
		return err
	}
	out := results{ContainerID: r.ContainerID, ByIfName: make(map[string]resultOfIndex, len(r.Attachments)),
		Results: make([]resultOfIndex, len(r.Attachments))}
	for i := range r.Attachments {
		a := &r.Attachments[i]
		out.ByIfName[a.IfName] = resultOfIndex{Result: a.Result, DeviceInfo: a.DeviceInfo}
		out.Results[i] = out.ByIfName[a.IfName]
	}
	data, err := json.Marshal(&out)
	if err != nil {
		return fmt.Errorf("record %s: results: %w", r.ContainerID, err)
	}
	if err := replaceUnsynced(s.resultsPath(r.ContainerID), data, 0o600); err != nil {
		return fmt.Errorf("record %s: results: %w", r.ContainerID, err)
	}
	return nil
}

// MarkFailed notes on a saved record that a teardown of it failed (op
// "ADD" for a rollback, "DEL" for a DEL; a record already marked keeps the
// op of its first failure), so that whoever reads it next
// knows a teardown is owed. The record is rewritten whole and durably, with
// the results Load gave it inline; the delegates' configs and arguments,
// which DEL needs, are unchanged.
func (s *Store) MarkFailed(r *Record, op string, cause error, now time.Time) error {
	if err := CheckContainerID(r.ContainerID); err != nil {
		return err
	}
	f := r.Failed
	if f == nil {
		f = &Failure{Op: op, First: now}
	}
	f.Error, f.Last = cause.Error(), now
	f.Attempts++
	r.Failed = f
	return s.writeWhole(r)
}

// marshal stamps r with the current format version and encodes it.
func marshal(r *Record) ([]byte, error) {
	r.Version = FormatVersion
	data, err := json.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", r.ContainerID, err)
	}
	return data, nil
}

// writeWhole replaces r's saved file by r, durably (see writeFile).
func (s *Store) writeWhole(r *Record) error {
	data, err := marshal(r)
	if err != nil {
		return err
	}
	if err := writeFile(s.path(r.ContainerID), data, 0o600, true); err != nil {
		return fmt.Errorf("record %s: %w", r.ContainerID, err)
	}
	return nil
}

// Load reads the record of a container, with the results Update wrote;
// the error wraps os.ErrNotExist when there is none, and ErrPartial when
// Save was cut short.
func (s *Store) Load(id string) (*Record, error) {
	if err := CheckContainerID(id); err != nil {
		return nil, err
	}
	data, err := os.ReadFile(s.path(id))
	if err != nil {
		return nil, fmt.Errorf("record %s: %w", id, err)
	}
	r := &Record{}
	if err := json.Unmarshal(data, r); err != nil {
		if !json.Valid(data) {
			return nil, fmt.Errorf("record %s: %w: %v", id, ErrPartial, err)
		}
		return nil, fmt.Errorf("record %s: corrupt: %w", id, err)
	}
	if r.Version > FormatVersion {
		return nil, fmt.Errorf("record %s: format %d is newer than this plexus (%d)", id, r.Version, FormatVersion)
	}
	s.loadResults(r)
	return r, nil
}

// loadResults fills in the results Update wrote, if they are there, whole
// and for this record, for the attachments the record itself holds none
// of (Rewrite writes them inline); otherwise the record stays as written.
func (s *Store) loadResults(r *Record) {
	data, err := os.ReadFile(s.resultsPath(r.ContainerID))
	if err != nil {
		return
	}
	var res results
	if json.Unmarshal(data, &res) != nil || res.ContainerID != r.ContainerID {
		return
	}
	fill := func(a *Attachment, ri resultOfIndex) {
		if len(ri.Result) > 0 && len(a.Result) == 0 {
			a.Result = ri.Result
		}
		if len(ri.DeviceInfo) > 0 && len(a.DeviceInfo) == 0 {
			a.DeviceInfo = ri.DeviceInfo
		}
	}
	if res.ByIfName != nil {
		for i := range r.Attachments {
			if ri, ok := res.ByIfName[r.Attachments[i].IfName]; ok {
				fill(&r.Attachments[i], ri)
			}
		}
		return
	}
	if len(res.Results) != len(r.Attachments) {
		return
	}
	for i, ri := range res.Results {
		fill(&r.Attachments[i], ri)
	}
}

// Rewrite replaces a saved record whole and durably, with its results
// inline (the results file goes): for a live sandbox whose attachments
// change (hot-plug). The caller holds the sandbox's lock.
func (s *Store) Rewrite(r *Record) error {
	if err := CheckContainerID(r.ContainerID); err != nil {
		return err
	}
	if err := s.writeWhole(r); err != nil {
		return err
	}
	if err := os.Remove(s.resultsPath(r.ContainerID)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: results: %w", r.ContainerID, err)
	}
	return nil
}

// Remove deletes a record once its sandbox is torn down, and leaves a
// tombstone saying so (see TornDown); a missing record is not an error.
// Nothing is synced: a record a crash brings back only gets its DEL again,
// which every delegate takes as a no-op, and a lost tombstone costs the
// default network's DEL of a sandbox that holds nothing.
func (s *Store) Remove(id string) error {
	if err := CheckContainerID(id); err != nil {
		return err
	}
	if err := os.Remove(s.resultsPath(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: results: %w", id, err)
	}
	s.unindex(id)
	if err := os.Remove(s.path(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("record %s: %w", id, err)
	}
	return s.MarkTornDown(id)
}

// MarkTornDown leaves a sandbox's tombstone: plexus has undone everything
// of it (or an ADD of it failed before any delegate ran). A runtime sends
// two or three DELs per sandbox; the tombstone tells the later ones from
// the DEL of a sandbox plexus never attached, which gets the default
// network's DEL. PruneTombstones removes old ones.
func (s *Store) MarkTornDown(id string) error {
	if err := CheckContainerID(id); err != nil {
		return err
	}
	f, err := os.OpenFile(s.tombstonePath(id), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("record %s: tombstone: %w", id, err)
	}
	return f.Close()
}

// TornDown reports whether the sandbox has a tombstone: plexus attached it
// and has since undone everything, so a DEL has nothing to do.
func (s *Store) TornDown(id string) bool {
	if CheckContainerID(id) != nil {
		return false
	}
	_, err := os.Stat(s.tombstonePath(id))
	return err == nil
}

// PruneTombstones removes the tombstones left before the given time and
// returns how many it removed. A runtime's DELs of one sandbox come within
// seconds of each other, so a tombstone is of no use after minutes.
func (s *Store) PruneTombstones(before time.Time) (int, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return 0, fmt.Errorf("record store: %w", err)
	}
	pruned := 0
	for _, e := range entries {
		if !e.Type().IsRegular() || filepath.Ext(e.Name()) != ".gone" {
			continue
		}
		if info, err := e.Info(); err == nil && info.ModTime().Before(before) {
			if os.Remove(filepath.Join(s.Dir, e.Name())) == nil {
				pruned++
			}
		}
	}
	return pruned, nil
}

// IDs lists the container ids that have a record, sorted.
func (s *Store) IDs() ([]string, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("record store: %w", err)
	}
	var ids []string
	for _, e := range entries {
		name := e.Name()
		if e.Type().IsRegular() && filepath.Ext(name) == ".json" {
			id := name[:len(name)-len(".json")]
			if CheckContainerID(id) == nil {
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsyncs it, renames it over path and fsyncs the directory.
func WriteFileAtomic(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, true)
}

// ReplaceFile is WriteFileAtomic without the directory sync: for files that
// can be rebuilt, where a crash may bring back the previous version but
// never a broken one.
func ReplaceFile(path string, data []byte, perm os.FileMode) error {
	return writeFile(path, data, perm, false)
}

// WriteFileIfChanged writes data as WriteFileAtomic (durable) or
// ReplaceFile (not durable) do, unless path already holds exactly data; it
// reports whether it wrote. A resync of unchanged content then costs a
// read, not a write and its syncs.
func WriteFileIfChanged(path string, data []byte, perm os.FileMode, durable bool) (bool, error) {
	if old, err := readIfSize(path, len(data)); err == nil && bytes.Equal(old, data) {
		return false, nil
	}
	if err := writeFile(path, data, perm, durable); err != nil {
		return false, err
	}
	return true, nil
}

// readIfSize reads a file only if it has the given size: content of another
// size needs no read to be told apart.
func readIfSize(path string, size int) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if st, err := f.Stat(); err != nil || st.Size() != int64(size) {
		return nil, errors.New("size differs")
	}
	return io.ReadAll(f)
}

// writeFile is WriteFileAtomic, syncing the directory only when durable.
// The file itself is always synced before the rename, so a crash never
// leaves an empty or partial file under the final name.
func writeFile(path string, data []byte, perm os.FileMode, durable bool) error {
	return writeFrom(path, bytes.NewReader(data), perm, durable)
}

// WriteFileAtomicFrom is WriteFileAtomic for content streamed from r.
func WriteFileAtomicFrom(path string, r io.Reader, perm os.FileMode) error {
	return writeFrom(path, r, perm, true)
}

// replaceUnsynced replaces path through a temporary file and a rename,
// without any fsync: readers see the old content or the new, and a crash
// may leave either, or (on some file systems) an empty file.
func replaceUnsynced(path string, data []byte, perm os.FileMode) error {
	return write(path, bytes.NewReader(data), perm, false, false)
}

func writeFrom(path string, r io.Reader, perm os.FileMode, durable bool) error {
	return write(path, r, perm, true, durable)
}

func write(path string, r io.Reader, perm os.FileMode, syncFile, syncDirectory bool) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // no-op after a successful rename
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(perm); err != nil {
		tmp.Close()
		return err
	}
	if syncFile {
		if err := tmp.Sync(); err != nil {
			tmp.Close()
			return err
		}
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	if !syncDirectory {
		return nil
	}
	return SyncDir(dir)
}

// SyncDir makes dir's entries durable: a rename into it or a removal from
// it survives a crash once SyncDir returns.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
