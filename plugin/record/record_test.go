package record_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plexus-cni/plexus/plugin/record"
)

func newStore(t *testing.T) *record.Store {
	t.Helper()
	s, err := record.NewStore(filepath.Join(t.TempDir(), "state"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

const hexID = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

func fullRecord(id string) *record.Record {
	return &record.Record{
		ContainerID: id,
		NetNS:       "/var/run/netns/cni-1234",
		Pod:         record.PodRef{Namespace: "ns1", Name: "pod-a", UID: "0b7c2d4e-uid"},
		CNIVersion:  "0.4.0",
		Created:     time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.UTC),
		Attachments: []record.Attachment{
			{
				Network: "cluster",
				Default: true,
				IfName:  "eth0",
				Config:  json.RawMessage(`{"cniVersion":"1.0.0","name":"cluster","plugins":[{"type":"bridge"}]}`),
				Args:    [][2]string{{"K8S_POD_NAMESPACE", "ns1"}, {"K8S_POD_NAME", "pod-a"}},
				Result:  json.RawMessage(`{"cniVersion":"1.0.0","ips":[{"address":"10.0.0.5/24"}]}`),
			},
			{
				Network: "ns1/macvlan-net",
				IfName:  "net1",
				Config:  json.RawMessage(`{"cniVersion":"0.3.1","name":"macvlan-net","plugins":[{"type":"macvlan","master":"eth1"}]}`),
				Args:    [][2]string{{"IgnoreUnknown", "true"}, {"K8S_POD_INFRA_CONTAINER_ID", id}},
				CapabilityArgs: map[string]interface{}{
					"ips":          []interface{}{"192.168.1.5/24"},
					"mac":          "c2:11:22:33:44:55",
					"portMappings": []interface{}{map[string]interface{}{"hostPort": float64(8080), "containerPort": float64(80), "protocol": "tcp"}},
				},
				DefaultRoute: []string{"192.168.1.1"},
				Result:       json.RawMessage(`{"cniVersion":"1.0.0","interfaces":[{"name":"net1","mac":"c2:11:22:33:44:55","sandbox":"/var/run/netns/cni-1234"}],"ips":[{"interface":0,"address":"192.168.1.5/24","gateway":"192.168.1.1"}]}`),
				DeviceInfo:   json.RawMessage(`{"type":"pci","version":"1.1.0","pci":{"pci-address":"0000:03:00.1"}}`),
			},
			{
				// Planned but not yet added.
				Network: "ns1/other",
				IfName:  "net2",
				Config:  json.RawMessage(`{"cniVersion":"1.1.0","name":"other","plugins":[{"type":"ipvlan"}]}`),
			},
		},
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		rec  *record.Record
	}{
		{"every field", fullRecord(hexID)},
		{"no attachments", &record.Record{ContainerID: "short-id", NetNS: "/proc/1/ns/net", CNIVersion: "1.0.0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Save(tt.rec); err != nil {
				t.Fatalf("Save: %v", err)
			}
			if tt.rec.Version != record.FormatVersion {
				t.Errorf("saved version = %d, want %d", tt.rec.Version, record.FormatVersion)
			}
			got, err := s.Load(tt.rec.ContainerID)
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !got.Created.Equal(tt.rec.Created) {
				t.Errorf("created = %v, want %v", got.Created, tt.rec.Created)
			}
			want := *tt.rec
			want.Created = got.Created // compared above; locations may differ
			if !reflect.DeepEqual(got, &want) {
				gotJSON, _ := json.MarshalIndent(got, "", " ")
				wantJSON, _ := json.MarshalIndent(&want, "", " ")
				t.Errorf("round trip differs:\ngot  %s\nwant %s", gotJSON, wantJSON)
			}
			for i, a := range got.Attachments {
				if a.Added() != (len(tt.rec.Attachments[i].Result) > 0) {
					t.Errorf("attachment %d: Added() = %v", i, a.Added())
				}
			}
		})
	}
}

func TestLoadMissing(t *testing.T) {
	s := newStore(t)
	_, err := s.Load("nothing-here")
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load of a missing id: %v, want one wrapping os.ErrNotExist", err)
	}
}

func TestCheckContainerID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"", false},
		{"../x", false},
		{"..", false},
		{".", false},
		{"a/b", false},
		{"/abs", false},
		{".hidden", false},
		{"-dash", false},
		{"has space", false},
		{"new\nline", false},
		{strings.Repeat("a", 256), false},
		{strings.Repeat("a", 255), true},
		{hexID, true},
		{"a", true},
		{"pod_1.sandbox-2", true},
	}
	for _, tt := range tests {
		err := record.CheckContainerID(tt.id)
		if (err == nil) != tt.ok {
			t.Errorf("CheckContainerID(%.20q...) = %v, want ok=%v", tt.id, err, tt.ok)
		}
	}
}

// Every method taking an id refuses a bad one before touching the disk.
func TestBadIDRefused(t *testing.T) {
	s := newStore(t)
	outside := filepath.Join(filepath.Dir(s.Dir), "x.json")
	if err := os.WriteFile(outside, []byte(`{}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := s.Save(&record.Record{ContainerID: "../x"}); err == nil {
		t.Error("Save of ../x succeeded")
	}
	if _, err := s.Load("../x"); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of ../x: %v, want an invalid-id error", err)
	}
	if err := s.Remove("../x"); err == nil {
		t.Error("Remove of ../x succeeded")
	}
	if _, err := os.Stat(outside); err != nil {
		t.Errorf("file outside the store: %v", err)
	}
}

func TestSaveLeavesNoTempFiles(t *testing.T) {
	s := newStore(t)
	for i := 0; i < 5; i++ {
		r := fullRecord(hexID)
		r.NetNS = strings.Repeat("n", i)
		if err := s.Save(r); err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	want := []string{hexID + ".json", "locks", "pods"}
	if !reflect.DeepEqual(names, want) {
		t.Errorf("store holds %q, want %q", names, want)
	}
	if links, _ := os.ReadDir(filepath.Join(s.Dir, "pods")); len(links) != 1 {
		t.Errorf("pod index holds %v, want one link", links)
	}
	fi, err := os.Stat(filepath.Join(s.Dir, hexID+".json"))
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("record mode %v, want 0600", perm)
	}
}

func TestLoadBadFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		wantErr string // "" for success
	}{
		{"cut short", `{"version":1,"containerID":`, "partly written"},
		{"empty", ``, "partly written"},
		{"wrong type", `{"version":"one"}`, "corrupt"},
		{"newer format", `{"version":2,"containerID":"c1","attachments":[]}`, "newer"},
		{"current format", `{"version":1,"containerID":"c1","attachments":[]}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newStore(t)
			if err := os.WriteFile(filepath.Join(s.Dir, "c1.json"), []byte(tt.content), 0o600); err != nil {
				t.Fatal(err)
			}
			r, err := s.Load("c1")
			if tt.wantErr == "" {
				if err != nil || r.ContainerID != "c1" {
					t.Fatalf("Load = %+v, %v", r, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load succeeded with %+v, want an error containing %q", r, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "c1") {
				t.Errorf("error %q does not contain %q and the id", err, tt.wantErr)
			}
			if errors.Is(err, os.ErrNotExist) {
				t.Errorf("error %q claims the record does not exist", err)
			}
		})
	}
}

func TestIDs(t *testing.T) {
	s := newStore(t)
	for _, id := range []string{"c3", hexID, "a1", "b.2"} {
		if err := s.Save(&record.Record{ContainerID: id}); err != nil {
			t.Fatal(err)
		}
	}
	junk := []string{
		".c9.json.tmp12345", // a temp file of an interrupted Save
		".c9.json",          // starts with a dot: not an id
		"notes.txt",
		"c4.json.bak",
		"c5",
	}
	for _, name := range junk {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte(`{}`), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "d1.json"), 0o700); err != nil {
		t.Fatal(err)
	}
	// A lock of a sandbox without a record.
	unlock, err := s.Lock(t.Context(), "locked-only")
	if err != nil {
		t.Fatal(err)
	}
	defer unlock()

	ids, err := s.IDs()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{hexID, "a1", "b.2", "c3"}
	if !reflect.DeepEqual(ids, want) {
		t.Errorf("IDs = %q, want %q", ids, want)
	}

	if err := s.Remove("b.2"); err != nil {
		t.Fatal(err)
	}
	if ids, _ := s.IDs(); !reflect.DeepEqual(ids, []string{hexID, "a1", "c3"}) {
		t.Errorf("IDs after Remove = %q", ids)
	}
}

func TestIDsEmpty(t *testing.T) {
	ids, err := newStore(t).IDs()
	if err != nil || len(ids) != 0 {
		t.Errorf("IDs of an empty store = %q, %v", ids, err)
	}
}

func TestRemove(t *testing.T) {
	s := newStore(t)
	if err := s.Remove("never-saved"); err != nil {
		t.Errorf("Remove of a missing id: %v", err)
	}
	if err := s.Save(&record.Record{ContainerID: "c1"}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.Remove("c1"); err != nil {
			t.Errorf("Remove #%d: %v", i+1, err)
		}
	}
	if _, err := s.Load("c1"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load after Remove: %v, want not-exist", err)
	}
}

// A reader racing a writer sees one whole record or the other, never a mix
// or a part.
func TestSaveIsAtomic(t *testing.T) {
	s := newStore(t)
	const id = "racy"
	big := func(fill byte, n int) *record.Record {
		r := &record.Record{ContainerID: id, NetNS: string([]byte{fill}), CNIVersion: "1.0.0"}
		for i := 0; i < n; i++ {
			cfg := `{"name":"` + string(bytes.Repeat([]byte{fill}, 8<<10)) + `"}`
			r.Attachments = append(r.Attachments, record.Attachment{
				Network: "net", IfName: "net1", Config: json.RawMessage(cfg),
			})
		}
		return r
	}
	// Different sizes, so a torn read cannot look whole.
	a, b := big('A', 8), big('B', 5)
	wantA, wantB := *big('A', 8), *big('B', 5)
	wantA.Version, wantB.Version = record.FormatVersion, record.FormatVersion

	done := make(chan struct{})
	saved := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := 0; i < 200; i++ {
			r := a
			if i%2 == 1 {
				r = b
			}
			if err := s.Save(r); err != nil {
				t.Errorf("Save %d: %v", i, err)
				return
			}
			if i == 0 {
				close(saved)
			}
		}
	}()

	loads, sawA, sawB := 0, 0, 0
	everSaved := false
	for finished := false; !finished; {
		select {
		case <-done:
			finished = true
		case <-saved:
			everSaved = true
			saved = nil
		default:
		}
		r, err := s.Load(id)
		if err != nil {
			// Until the first Save returns, the new file may be missing
			// or still being written.
			if (errors.Is(err, os.ErrNotExist) || errors.Is(err, record.ErrPartial)) && !everSaved {
				continue
			}
			t.Fatalf("Load after %d loads: %v", loads, err)
		}
		loads++
		switch {
		case reflect.DeepEqual(*r, wantA):
			sawA++
		case reflect.DeepEqual(*r, wantB):
			sawB++
		default:
			t.Fatalf("load %d is neither A nor B: netns %q, %d attachments", loads, r.NetNS, len(r.Attachments))
		}
	}
	wg.Wait()
	t.Logf("%d loads: %d A, %d B", loads, sawA, sawB)
	if loads == 0 {
		t.Error("no load overlapped the saves")
	}
}

// planned is fullRecord as ADD saves it: no delegate has run yet.
func planned(id string) *record.Record {
	r := fullRecord(id)
	for i := range r.Attachments {
		r.Attachments[i].Result, r.Attachments[i].DeviceInfo = nil, nil
	}
	return r
}

// Update leaves the record Save made durable as it is, byte for byte, and
// puts the results beside it; Load joins them; Remove removes both.
func TestUpdateWritesResultsBesideTheRecord(t *testing.T) {
	s := newStore(t)
	r := planned(hexID)
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	recordFile := filepath.Join(s.Dir, hexID+".json")
	before, err := os.ReadFile(recordFile)
	if err != nil {
		t.Fatal(err)
	}
	full := fullRecord(hexID)
	if err := s.Update(full); err != nil {
		t.Fatal(err)
	}
	after, err := os.ReadFile(recordFile)
	if err != nil || !bytes.Equal(before, after) {
		t.Errorf("Update rewrote the record (%v):\n%s\n%s", err, before, after)
	}
	got, err := s.Load(hexID)
	if err != nil {
		t.Fatal(err)
	}
	for i := range full.Attachments {
		if string(got.Attachments[i].Result) != string(full.Attachments[i].Result) ||
			string(got.Attachments[i].DeviceInfo) != string(full.Attachments[i].DeviceInfo) {
			t.Errorf("attachment %d: result %s, device-info %s; want %s, %s", i,
				got.Attachments[i].Result, got.Attachments[i].DeviceInfo, full.Attachments[i].Result, full.Attachments[i].DeviceInfo)
		}
	}
	if ids, _ := s.IDs(); !reflect.DeepEqual(ids, []string{hexID}) {
		t.Errorf("IDs = %q: the results file counts as a record", ids)
	}
	if err := s.Remove(hexID); err != nil {
		t.Fatal(err)
	}
	entries, _ := os.ReadDir(s.Dir)
	for _, e := range entries {
		if e.Name() != "locks" && e.Name() != "pods" && e.Name() != hexID+".gone" {
			t.Errorf("%s left after Remove", e.Name())
		}
	}
	if links, _ := os.ReadDir(filepath.Join(s.Dir, "pods")); len(links) != 0 {
		t.Errorf("pod index links left after Remove: %v", links)
	}
}

// Results a crash lost or cut short, or that belong to another record,
// leave the record as Save wrote it: DEL needs nothing more.
func TestLostResultsLeaveTheRecord(t *testing.T) {
	for name, results := range map[string]string{
		"cut short":        `{"containerID":"` + hexID + `","results":[{"res`,
		"empty":            ``,
		"another record":   `{"containerID":"other","results":[{},{},{}]}`,
		"another plan":     `{"containerID":"` + hexID + `","results":[{}]}`,
		"no results saved": "-",
	} {
		t.Run(name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Save(planned(hexID)); err != nil {
				t.Fatal(err)
			}
			if results != "-" {
				if err := os.WriteFile(filepath.Join(s.Dir, hexID+".results"), []byte(results), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			got, err := s.Load(hexID)
			if err != nil {
				t.Fatal(err)
			}
			want := planned(hexID)
			want.Version = record.FormatVersion
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load = %+v, want the record as saved %+v", got, want)
			}
		})
	}
}

// A record of the format before results had a file of their own keeps
// its results in the record itself.
func TestResultsInTheRecordStillLoad(t *testing.T) {
	s := newStore(t)
	data, err := json.Marshal(fullRecord(hexID))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, hexID+".json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(hexID)
	if err != nil || !got.Attachments[0].Added() || !got.Attachments[1].Added() || got.Attachments[2].Added() {
		t.Fatalf("Load = %+v, %v", got, err)
	}
}

// A new record cut short by a crash is reported as partial, not as a
// missing one, nor as merely corrupt.
func TestPartialRecord(t *testing.T) {
	s := newStore(t)
	data, err := json.Marshal(planned(hexID))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, hexID+".json"), data[:len(data)/2], 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = s.Load(hexID)
	if !errors.Is(err, record.ErrPartial) || errors.Is(err, os.ErrNotExist) {
		t.Errorf("Load of half a record: %v, want ErrPartial", err)
	}
	// Save over it replaces it whole.
	if err := s.Save(planned(hexID)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(hexID); err != nil {
		t.Errorf("Load after Save over a partial record: %v", err)
	}
}

// MarkFailed keeps everything DEL needs (configs, arguments, the results of
// the delegates that were added), counts the failures and keeps the op of
// the first one; a later Save of the sandbox (a new ADD) starts clean.
func TestMarkFailedKeepsTheRecordWhole(t *testing.T) {
	s := newStore(t)
	r := planned(hexID)
	if err := s.Save(r); err != nil {
		t.Fatal(err)
	}
	partly := fullRecord(hexID)
	partly.Attachments[2].Result = nil // the ADD failed there
	if err := s.Update(partly); err != nil {
		t.Fatal(err)
	}
	loaded, err := s.Load(hexID)
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.MarkFailed(loaded, "ADD", errors.New("DEL network x: refused"), t0); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkFailed(loaded, "DEL", errors.New("DEL network x: refused again"), t0.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	got, err := s.Load(hexID)
	if err != nil {
		t.Fatal(err)
	}
	want := &record.Failure{Op: "ADD", Error: "DEL network x: refused again", First: t0, Last: t0.Add(time.Minute), Attempts: 2}
	if !reflect.DeepEqual(got.Failed, want) {
		t.Errorf("Failed = %+v, want %+v", got.Failed, want)
	}
	got.Failed = nil
	partly.Version = record.FormatVersion
	if !reflect.DeepEqual(got, partly) {
		t.Errorf("the marked record lost something:\n got %+v\nwant %+v", got, partly)
	}
	if err := s.Save(planned(hexID)); err != nil {
		t.Fatal(err)
	}
	if again, err := s.Load(hexID); err != nil || again.Failed != nil {
		t.Errorf("a new record of the sandbox: %+v, %v; want no failure", again, err)
	}
}

// Remove leaves a tombstone that a new record of the sandbox clears, and
// PruneTombstones removes the old ones only; none counts as a record.
func TestTombstones(t *testing.T) {
	s := newStore(t)
	if s.TornDown(hexID) {
		t.Fatal("a tombstone before anything happened")
	}
	if err := s.Save(planned(hexID)); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(hexID); err != nil {
		t.Fatal(err)
	}
	if !s.TornDown(hexID) {
		t.Error("no tombstone after Remove")
	}
	if ids, _ := s.IDs(); len(ids) != 0 {
		t.Errorf("IDs = %q: a tombstone counts as a record", ids)
	}
	if err := s.Save(planned(hexID)); err != nil {
		t.Fatal(err)
	}
	if s.TornDown(hexID) {
		t.Error("a new record kept the tombstone")
	}
	if err := s.MarkTornDown("old"); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkTornDown("new"); err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(filepath.Join(s.Dir, "old.gone"), hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneTombstones(time.Now().Add(-time.Minute)); err != nil || n != 1 {
		t.Errorf("PruneTombstones = %d, %v; want 1", n, err)
	}
	if s.TornDown("old") || !s.TornDown("new") {
		t.Errorf("after pruning: old %t, new %t; want only new", s.TornDown("old"), s.TornDown("new"))
	}
}
