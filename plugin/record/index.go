package record

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// The pod index maps a pod's UID to its live sandbox: a symbolic link
// pods/<uid> → <container id>, made by Save, beside the records. It is
// not synced (a lost link is rebuilt by Reindex, which the daemon runs at
// start) and not trusted: SandboxOf checks the record it leads to.

func (s *Store) podsDir() string { return filepath.Join(s.Dir, "pods") }

func (s *Store) indexPath(uid string) string { return filepath.Join(s.podsDir(), uid) }

// index points the pod's link at the record's sandbox: the newest Save of
// a pod wins, as a runtime creates a pod's new sandbox only after giving
// up the old one. Errors are ignored: the index is a cache of the records.
func (s *Store) index(r *Record) {
	if r.Pod.UID == "" || CheckContainerID(r.Pod.UID) != nil {
		return
	}
	link := s.indexPath(r.Pod.UID)
	err := os.Symlink(r.ContainerID, link) // a new pod: one syscall
	if errors.Is(err, os.ErrNotExist) {
		if os.MkdirAll(s.podsDir(), 0o700) != nil {
			return
		}
		err = os.Symlink(r.ContainerID, link)
	}
	if !errors.Is(err, os.ErrExist) {
		return
	}
	if target, err := os.Readlink(link); err == nil && target == r.ContainerID {
		return
	}
	tmp := link + ".tmp." + r.ContainerID
	if os.Symlink(r.ContainerID, tmp) != nil || os.Rename(tmp, link) != nil {
		_ = os.Remove(tmp)
	}
}

// unindex removes the pod index link of a sandbox whose record goes, if
// it points at it.
func (s *Store) unindex(id string) {
	data, err := os.ReadFile(s.path(id))
	if err != nil {
		return
	}
	var r struct {
		Pod PodRef `json:"pod"`
	}
	if json.Unmarshal(data, &r) != nil || CheckContainerID(r.Pod.UID) != nil {
		return
	}
	if target, err := os.Readlink(s.indexPath(r.Pod.UID)); err == nil && target == id {
		_ = os.Remove(s.indexPath(r.Pod.UID))
	}
}

// ErrNoRecord is wrapped by SandboxOf when the pod has no live sandbox
// record.
var ErrNoRecord = errors.New("no record of a live sandbox")

// SandboxOf returns the record of a pod's live sandbox: the one its index
// link names, if that record exists, belongs to the pod (UID, and
// namespace and name when given) and owes no teardown. The error wraps
// ErrNoRecord otherwise; a link to a record that is gone is removed.
func (s *Store) SandboxOf(pod PodRef) (*Record, error) {
	if err := CheckContainerID(pod.UID); err != nil {
		return nil, fmt.Errorf("pod %s/%s: uid: %w", pod.Namespace, pod.Name, err)
	}
	id, err := os.Readlink(s.indexPath(pod.UID))
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s (uid %s): %w", pod.Namespace, pod.Name, pod.UID, ErrNoRecord)
	}
	r, err := s.Load(id)
	if errors.Is(err, os.ErrNotExist) {
		_ = os.Remove(s.indexPath(pod.UID))
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s (uid %s): sandbox %s: %w (%v)", pod.Namespace, pod.Name, pod.UID, id, ErrNoRecord, err)
	}
	switch {
	case r.Pod.UID != pod.UID, pod.Namespace != "" && r.Pod.Namespace != pod.Namespace, pod.Name != "" && r.Pod.Name != pod.Name:
		return nil, fmt.Errorf("pod %s/%s (uid %s): sandbox %s belongs to pod %s/%s (uid %s): %w",
			pod.Namespace, pod.Name, pod.UID, id, r.Pod.Namespace, r.Pod.Name, r.Pod.UID, ErrNoRecord)
	case r.Failed != nil:
		return nil, fmt.Errorf("pod %s/%s: sandbox %s is being torn down (%s failed: %s): %w",
			pod.Namespace, pod.Name, id, r.Failed.Op, r.Failed.Error, ErrNoRecord)
	}
	return r, nil
}

// Reindex rebuilds the pod index from the records (an earlier plexus's
// have no link, and a crash may lose one) and drops links to records that are
// gone. When a pod has several records (a sandbox being replaced), the
// newest wins. It returns how many links it made or removed.
func (s *Store) Reindex() (int, error) {
	ids, err := s.IDs()
	if err != nil {
		return 0, err
	}
	newest := map[string]*Record{}
	for _, id := range ids {
		r, err := s.Load(id)
		if err != nil || r.Pod.UID == "" || r.Failed != nil {
			continue
		}
		if old := newest[r.Pod.UID]; old == nil || r.Created.After(old.Created) {
			newest[r.Pod.UID] = r
		}
	}
	changed := 0
	entries, err := os.ReadDir(s.podsDir())
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("record store: %w", err)
	}
	for _, e := range entries {
		if newest[e.Name()] == nil {
			if os.Remove(filepath.Join(s.podsDir(), e.Name())) == nil {
				changed++
			}
		}
	}
	for uid, r := range newest {
		if target, err := os.Readlink(s.indexPath(uid)); err != nil || target != r.ContainerID {
			s.index(r)
			changed++
		}
	}
	return changed, nil
}
