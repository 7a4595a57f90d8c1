package daemon_test

import (
	"reflect"
	"testing"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// A failed ADD is logged once, where it ends (the daemon's answer to the
// shim), at error level, and the line names the sandbox, the pod and the
// network that failed with the keys and forms every other line uses: a
// search for the pod or the network finds it.
func TestAFailedAddIsLoggedOnceWithItsPodAndNetwork(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	lost := f.pod("lost", "blue, nope")
	f.waitCached(lost)
	if _, err := f.cni("ADD", "c1", plugintest.NewNS(t), lost); err == nil {
		t.Fatal("ADD of a pod naming a missing network succeeded")
	}

	failed := logSink.logged(func(l map[string]any) bool { return l["containerID"] == "c1" && l["level"] == "error" })
	if len(failed) != 1 {
		t.Fatalf("%d error lines of the failed ADD, want 1: %v", len(failed), failed)
	}
	line := failed[0]
	want := map[string]any{
		"msg":       "CNI call failed",
		"command":   "ADD",
		"interface": "eth0",
		"pod":       map[string]any{"namespace": "team", "name": "lost"},
		"network":   map[string]any{"namespace": "team", "name": "nope"},
	}
	for key, value := range want {
		if !reflect.DeepEqual(line[key], value) {
			t.Errorf("%q of the failed ADD's line is %v, want %v (line %v)", key, line[key], value, line)
		}
	}
	if line["error"] == nil || line["code"] == nil {
		t.Errorf("the failed ADD's line has no error or no CNI code: %v", line)
	}
}
