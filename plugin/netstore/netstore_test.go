package netstore_test

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/netstore"
)

func newStore(t *testing.T) *netstore.Store {
	t.Helper()
	s, err := netstore.New(filepath.Join(t.TempDir(), "networks"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func entry(version string) *netstore.Entry {
	return &netstore.Entry{
		UID:             "0a1b2c",
		ResourceVersion: version,
		ResourceName:    "intel.com/sriov",
		Config:          json.RawMessage(`{"cniVersion":"1.0.0","name":"net1","plugins":[{"type":"macvlan"}]}`),
	}
}

var net1 = k8stypes.NamespacedName{Namespace: "default", Name: "net1"}

func entryPath(s *netstore.Store, key k8stypes.NamespacedName) string {
	return filepath.Join(s.Dir, key.Namespace+"_"+key.Name+".json")
}

func stat(t *testing.T, path string) os.FileInfo {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestPutGet(t *testing.T) {
	s := newStore(t)
	want := entry("1")
	wrote, err := s.Put(net1, want)
	if err != nil || !wrote {
		t.Fatalf("Put = %v, %v; want a write", wrote, err)
	}
	got, err := s.Get(net1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Get = %+v, want %+v", got, want)
	}
	if perm := stat(t, entryPath(s, net1)).Mode().Perm(); perm != 0o600 {
		t.Errorf("entry mode %v, want 0600", perm)
	}
}

func TestPutWritesOnlyOnChange(t *testing.T) {
	s := newStore(t)
	if _, err := s.Put(net1, entry("1")); err != nil {
		t.Fatal(err)
	}
	before := stat(t, entryPath(s, net1))

	wrote, err := s.Put(net1, entry("1"))
	if err != nil || wrote {
		t.Fatalf("Put of the same entry = %v, %v; want no write", wrote, err)
	}
	after := stat(t, entryPath(s, net1))
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("the same entry was rewritten")
	}

	wrote, err = s.Put(net1, entry("2"))
	if err != nil || !wrote {
		t.Fatalf("Put of a changed entry = %v, %v; want a write", wrote, err)
	}
	if got, err := s.Get(net1); err != nil || got.ResourceVersion != "2" {
		t.Errorf("Get after the change = %+v, %v; want resourceVersion 2", got, err)
	}
}

func TestDelete(t *testing.T) {
	s := newStore(t)
	if _, err := s.Put(net1, entry("1")); err != nil {
		t.Fatal(err)
	}
	if had, err := s.Delete(net1); err != nil || !had {
		t.Fatalf("Delete = %v, %v; want it to have had one", had, err)
	}
	if had, err := s.Delete(net1); err != nil || had {
		t.Fatalf("second Delete = %v, %v; want nothing and no error", had, err)
	}
	if _, err := s.Get(net1); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Get after Delete = %v, want os.ErrNotExist", err)
	}
}

func TestGetMissing(t *testing.T) {
	s := newStore(t)
	_, err := s.Get(net1)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Get of a missing entry = %v, want it to wrap os.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), net1.String()) {
		t.Errorf("error %q does not name %s", err, net1)
	}
}

func TestCheckKey(t *testing.T) {
	tests := []struct {
		key     k8stypes.NamespacedName
		wantErr bool
	}{
		{k8stypes.NamespacedName{Namespace: "default", Name: "net1"}, false},
		{k8stypes.NamespacedName{Namespace: "kube-system", Name: "a.b-c"}, false},
		{k8stypes.NamespacedName{Namespace: "", Name: "net1"}, true},
		{k8stypes.NamespacedName{Namespace: "default", Name: ""}, true},
		{k8stypes.NamespacedName{Namespace: "default", Name: "a_b"}, true},
		{k8stypes.NamespacedName{Namespace: "a_b", Name: "net1"}, true},
		{k8stypes.NamespacedName{Namespace: "default", Name: "../x"}, true},
		{k8stypes.NamespacedName{Namespace: "..", Name: "x"}, true},
		{k8stypes.NamespacedName{Namespace: "default", Name: "a/b"}, true},
		{k8stypes.NamespacedName{Namespace: "default", Name: "Net1"}, true},
		{k8stypes.NamespacedName{Namespace: "Default", Name: "net1"}, true},
		{k8stypes.NamespacedName{Namespace: "a.b", Name: "net1"}, true},
	}
	for _, tt := range tests {
		err := netstore.CheckKey(tt.key)
		if (err != nil) != tt.wantErr {
			t.Errorf("CheckKey(%q) = %v, want error %v", tt.key, err, tt.wantErr)
		}
	}
}

// Every operation refuses a bad key before touching a path.
func TestBadKeyRefused(t *testing.T) {
	s := newStore(t)
	bad := k8stypes.NamespacedName{Namespace: "default", Name: "../escape"}
	if _, err := s.Put(bad, entry("1")); err == nil {
		t.Error("Put accepted a bad key")
	}
	if _, err := s.Get(bad); err == nil || errors.Is(err, os.ErrNotExist) {
		t.Errorf("Get of a bad key = %v, want a refusal", err)
	}
	if _, err := s.Delete(bad); err == nil {
		t.Error("Delete accepted a bad key")
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(s.Dir), "escape.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a file escaped the store: %v", err)
	}
}

func TestKeys(t *testing.T) {
	s := newStore(t)
	if keys, err := s.Keys(); err != nil || len(keys) != 0 {
		t.Fatalf("Keys of an empty store = %v, %v", keys, err)
	}
	want := []k8stypes.NamespacedName{
		{Namespace: "default", Name: "net1"},
		{Namespace: "default", Name: "net2.example"},
		{Namespace: "other", Name: "net1"},
	}
	for _, k := range want {
		if _, err := s.Put(k, entry("1")); err != nil {
			t.Fatal(err)
		}
	}
	junk := []string{
		".default_net3.json.tmp123", // an interrupted atomic write
		"default_net4.json.tmp",
		"x.json",           // no "_"
		"readme.txt",       // not .json
		"Bad_net.json",     // not a valid namespace
		"default_a_b.json", // "_" in the name
	}
	for _, name := range junk {
		if err := os.WriteFile(filepath.Join(s.Dir, name), []byte("{}"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(s.Dir, "default_dir.json"), 0o700); err != nil {
		t.Fatal(err)
	}

	keys, err := s.Keys()
	if err != nil {
		t.Fatal(err)
	}
	sort.Slice(keys, func(i, j int) bool { return keys[i].String() < keys[j].String() })
	if !reflect.DeepEqual(keys, want) {
		t.Errorf("Keys = %v, want %v", keys, want)
	}
}

func TestCorruptEntry(t *testing.T) {
	s := newStore(t)
	if err := os.WriteFile(entryPath(s, net1), []byte(`{"uid":"x",`), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := s.Get(net1)
	if err == nil || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("Get of a corrupt entry = %v, want an error saying corrupt", err)
	}
	// A corrupt entry is replaced by the next Put.
	if wrote, err := s.Put(net1, entry("1")); err != nil || !wrote {
		t.Fatalf("Put over a corrupt entry = %v, %v", wrote, err)
	}
	if _, err := s.Get(net1); err != nil {
		t.Errorf("Get after the repair: %v", err)
	}
}

func TestNewMakesDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if _, err := netstore.New(dir); err != nil {
		t.Fatal(err)
	}
	if st := stat(t, dir); !st.IsDir() || st.Mode().Perm() != 0o700 {
		t.Errorf("store dir mode %v, want a 0700 dir", st.Mode())
	}
}
