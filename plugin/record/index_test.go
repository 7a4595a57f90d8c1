package record_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/plexus-cni/plexus/plugin/record"
)

func podRecord(id, uid string, created time.Time) *record.Record {
	return &record.Record{ContainerID: id, Pod: record.PodRef{Namespace: "ns1", Name: "vm", UID: uid}, Created: created,
		Attachments: []record.Attachment{{Network: "defnet", Default: true, IfName: "eth0", Config: []byte(`{}`)}}}
}

// The pod index finds a pod's newest sandbox, checks what it finds, and
// forgets a sandbox whose record goes.
func TestSandboxOf(t *testing.T) {
	s := newStore(t)
	now := time.Now().UTC()
	for _, r := range []*record.Record{podRecord("old", "uid-1", now), podRecord("new", "uid-1", now.Add(time.Second)), podRecord("other", "uid-2", now)} {
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	pod := record.PodRef{Namespace: "ns1", Name: "vm", UID: "uid-1"}
	if r, err := s.SandboxOf(pod); err != nil || r.ContainerID != "new" {
		t.Fatalf("SandboxOf = %v, %v; want the newest sandbox", r, err)
	}
	if _, err := s.SandboxOf(record.PodRef{Namespace: "ns1", Name: "not-vm", UID: "uid-1"}); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("SandboxOf with another name = %v, want ErrNoRecord", err)
	}
	if _, err := s.SandboxOf(record.PodRef{UID: "uid-3"}); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("SandboxOf of an unknown pod = %v, want ErrNoRecord", err)
	}
	// A sandbox owing a teardown is not live.
	r, _ := s.Load("new")
	if err := s.MarkFailed(r, "DEL", errors.New("bridge: busy"), now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SandboxOf(pod); !errors.Is(err, record.ErrNoRecord) {
		t.Errorf("SandboxOf of a sandbox being torn down = %v, want ErrNoRecord", err)
	}
	if err := s.Remove("new"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(filepath.Join(s.Dir, "pods", "uid-1")); !os.IsNotExist(err) {
		t.Errorf("index link of a removed sandbox: %v", err)
	}
	// Reindex finds the pod's remaining sandbox, and drops dangling links.
	if err := os.Symlink("gone", filepath.Join(s.Dir, "pods", "uid-9")); err != nil {
		t.Fatal(err)
	}
	if n, err := s.Reindex(); err != nil || n != 2 {
		t.Errorf("Reindex = %d, %v; want 2 (uid-1 relinked, uid-9 dropped)", n, err)
	}
	if r, err := s.SandboxOf(pod); err != nil || r.ContainerID != "old" {
		t.Errorf("SandboxOf after Reindex = %v, %v; want old", r, err)
	}
	if n, err := s.Reindex(); err != nil || n != 0 {
		t.Errorf("second Reindex = %d, %v; want nothing to do", n, err)
	}
}

// Rewrite puts results inline and drops the results file, so that a
// detached interface's result never comes back.
func TestRewriteDropsTheResultsFile(t *testing.T) {
	s := newStore(t)
	r := podRecord("c1", "uid-1", time.Now())
	r.Attachments = append(r.Attachments, record.Attachment{Network: "ns1/a", IfName: "pod1", Config: []byte(`{}`)})
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	r.Attachments[0].Result = []byte(`{"cniVersion":"1.0.0"}`)
	r.Attachments[1].Result = []byte(`{"cniVersion":"1.0.0","ips":[]}`)
	if err := s.Update(r); err != nil {
		t.Fatal(err)
	}
	r.Attachments = r.Attachments[:1]
	if err := s.Rewrite(r); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Dir, "c1.results")); !os.IsNotExist(err) {
		t.Errorf("results file after Rewrite: %v", err)
	}
	r.Attachments = append(r.Attachments, record.Attachment{Network: "ns1/b", IfName: "pod1", Config: []byte(`{}`)})
	if err := s.Rewrite(r); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load("c1")
	if err != nil || !got.Attachments[0].Added() || got.Attachments[1].Added() {
		t.Errorf("Load = %+v, %v; want eth0's result inline and the new pod1 without one", got, err)
	}
}

// The results file keeps the positional list an earlier plexus reads, so
// that a rollback still finds every result, hot-plugged ones included.
func TestResultsFileReadableByAnEarlierPlexus(t *testing.T) {
	s := newStore(t)
	r := podRecord("c1", "uid-1", time.Now())
	r.Attachments = append(r.Attachments, record.Attachment{Network: "ns1/a", IfName: "pod1", Config: []byte(`{}`)})
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	r.Attachments[0].Result = []byte(`{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.2/24"}]}`)
	r.Attachments[1].Result = []byte(`{"cniVersion":"1.0.0","ips":[{"address":"10.1.0.2/24"}]}`)
	if err := s.Update(r); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(s.Dir, "c1.results"))
	if err != nil {
		t.Fatal(err)
	}
	var earlier struct {
		ContainerID string `json:"containerID"`
		Results     []struct {
			Result json.RawMessage `json:"result"`
		} `json:"results"`
	}
	if err := json.Unmarshal(data, &earlier); err != nil || earlier.ContainerID != "c1" || len(earlier.Results) != 2 ||
		!strings.Contains(string(earlier.Results[1].Result), "10.1.0.2") {
		t.Errorf("results file as an earlier plexus reads it = %+v (%v), want both results by position", earlier, err)
	}
}
