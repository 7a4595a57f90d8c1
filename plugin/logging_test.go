package plugin_test

import (
	"errors"
	"fmt"
	"reflect"
	"testing"

	"k8s.io/klog/v2"

	"github.com/plexus-cni/plexus/plugin"
	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/selection"
)

// A failed call's log line names the network that failed, however deep
// in the error chain its delegate's or its selection's error sits, and
// in the form every other line uses.
func TestErrorLogValuesNameTheNetworkThatFailed(t *testing.T) {
	blue := klog.KRef("team", "blue")
	for _, tc := range []struct {
		name string
		err  error
		want []any
	}{
		{"a delegate's ADD, rolled back", fmt.Errorf("%w; rolling back failed: boom",
			&delegate.Error{Op: "ADD", Network: "team/blue", Plugins: "macvlan", IfName: "net1", Err: errors.New("no master")}),
			[]any{"network", blue}},
		{"a selection's field", fmt.Errorf("pod team/web: %w", &selection.Error{Network: "team/blue", Field: "ips", Reason: "bad"}),
			[]any{"network", blue}},
		{"a conf-dir network", &delegate.Error{Op: "DEL", Network: "cbr0", Err: errors.New("gone")},
			[]any{"network", klog.KRef("", "cbr0")}},
		{"no network", errors.New("record store: disk full"), nil},
	} {
		if got := plugin.ErrorLogValues(tc.err); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// A CNI call's lines name its sandbox, interface and pod, and leave out
// what the call does not name (GC and STATUS have no sandbox).
func TestRequestLogValues(t *testing.T) {
	add := &plugin.Request{Command: "ADD", ContainerID: "c1", IfName: "eth0",
		Args: "IgnoreUnknown=1;K8S_POD_NAMESPACE=team;K8S_POD_NAME=web;K8S_POD_UID=u1"}
	want := []any{"containerID", "c1", "interface", "eth0", "pod", klog.KRef("team", "web")}
	if got := plugin.RequestLogValues(add); !reflect.DeepEqual(got, want) {
		t.Errorf("ADD: %v, want %v", got, want)
	}
	if got := plugin.RequestLogValues(&plugin.Request{Command: "GC"}); len(got) != 0 {
		t.Errorf("GC: %v, want nothing", got)
	}
}
