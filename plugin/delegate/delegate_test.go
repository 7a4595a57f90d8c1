package delegate_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/containernetworking/cni/libcni"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/plexus-cni/plexus/plugin/delegate"
	"github.com/plexus-cni/plexus/plugin/record"
)

func TestCNIError(t *testing.T) {
	delegateErr := types.NewError(types.ErrTryAgainLater, "address pool busy", "host-local lock")
	wrapped := &delegate.Error{Op: "ADD", Network: "ns1/net-a", Plugins: "macvlan+tuning", IfName: "net1",
		Err: fmt.Errorf("plugin type=%q failed (add): %w", "macvlan", delegateErr)}

	tests := []struct {
		name        string
		err         error
		wantCode    uint
		wantDetails string
		wantMsg     []string
	}{
		{
			name:        "bare CNI error",
			err:         delegateErr,
			wantCode:    types.ErrTryAgainLater,
			wantDetails: "host-local lock",
			wantMsg:     []string{"address pool busy"},
		},
		{
			name:        "inside *Error and %w",
			err:         wrapped,
			wantCode:    types.ErrTryAgainLater,
			wantDetails: "host-local lock",
			wantMsg:     []string{"ADD network ns1/net-a", "macvlan+tuning", "net1", `type="macvlan"`, "address pool busy"},
		},
		{
			name:        "inside errors.Join and more %w",
			err:         fmt.Errorf("rollback after failure: %w", errors.Join(errors.New("first"), fmt.Errorf("second: %w", wrapped))),
			wantCode:    types.ErrTryAgainLater,
			wantDetails: "host-local lock",
			wantMsg:     []string{"rollback after failure", "first", "second", "ns1/net-a", "address pool busy"},
		},
		{
			name:     "plain error",
			err:      errors.New("no such file"),
			wantCode: types.ErrInternal,
			wantMsg:  []string{"no such file"},
		},
		{
			name:     "plain error inside *Error",
			err:      &delegate.Error{Op: "DEL", Network: "n", Plugins: "bridge", IfName: "eth0", Err: errors.New(`failed to find plugin "bridge"`)},
			wantCode: types.ErrInternal,
			wantMsg:  []string{"DEL network n", "bridge", "eth0", "failed to find plugin"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := delegate.CNIError(tt.err)
			if got.Code != tt.wantCode {
				t.Errorf("code = %d, want %d", got.Code, tt.wantCode)
			}
			if got.Details != tt.wantDetails {
				t.Errorf("details = %q, want %q", got.Details, tt.wantDetails)
			}
			for _, w := range tt.wantMsg {
				if !strings.Contains(got.Msg, w) {
					t.Errorf("msg %q does not contain %q", got.Msg, w)
				}
			}
		})
	}
	if types.ErrInternal != 999 {
		t.Errorf("types.ErrInternal = %d, the runtime expects 999", types.ErrInternal)
	}
	if delegate.CNIError(nil) != nil {
		t.Error("CNIError(nil) is not nil")
	}
}

func TestErrorMessage(t *testing.T) {
	cause := errors.New("boom")
	e := &delegate.Error{Op: "CHECK", Network: "ns1/net-b", Plugins: "ipvlan+tuning", IfName: "net2", Err: cause}
	msg := e.Error()
	for _, w := range []string{"CHECK", "ns1/net-b", "ipvlan+tuning", "net2", "boom"} {
		if !strings.Contains(msg, w) {
			t.Errorf("%q does not name %q", msg, w)
		}
	}
	if !errors.Is(e, cause) {
		t.Error("*Error does not unwrap to its cause")
	}
}

func TestPluginTypes(t *testing.T) {
	tests := []struct {
		conf string
		want string
	}{
		{`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"macvlan"},{"type":"tuning"}]}`, "macvlan+tuning"},
		{`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"}]}`, "bridge"},
		{`{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"a"},{"type":"b"},{"type":"c"}]}`, "a+b+c"},
	}
	for _, tt := range tests {
		list, err := libcni.NetworkConfFromBytes([]byte(tt.conf))
		if err != nil {
			t.Fatal(err)
		}
		if got := delegate.PluginTypes(list); got != tt.want {
			t.Errorf("PluginTypes = %q, want %q", got, tt.want)
		}
	}
}

func TestBadStoredConfig(t *testing.T) {
	a := &record.Attachment{Network: "ns1/broken", IfName: "net1", Config: []byte(`{"plugins":`)}
	cni := libcni.NewCNIConfigWithCacheDir(nil, t.TempDir(), nil)
	ctx := context.Background()
	if _, err := delegate.Add(ctx, cni, "c1", "/proc/self/ns/net", a); err == nil || !strings.Contains(err.Error(), "ns1/broken") {
		t.Errorf("Add: %v, want an error naming the network", err)
	}
	if err := delegate.Check(ctx, cni, "c1", "/proc/self/ns/net", a); err == nil || !strings.Contains(err.Error(), "ns1/broken") {
		t.Errorf("Check: %v, want an error naming the network", err)
	}
	if err := delegate.Del(ctx, cni, "c1", "/proc/self/ns/net", a); err == nil || !strings.Contains(err.Error(), "ns1/broken") {
		t.Errorf("Del: %v, want an error naming the network", err)
	}
}

func TestRuntimeConf(t *testing.T) {
	a := &record.Attachment{
		IfName:         "net3",
		Args:           [][2]string{{"K8S_POD_NAME", "p"}},
		CapabilityArgs: map[string]interface{}{"mac": "c2:00:00:00:00:01"},
	}
	rt := delegate.RuntimeConf("cid", "/run/netns/x", a)
	if rt.ContainerID != "cid" || rt.NetNS != "/run/netns/x" || rt.IfName != "net3" ||
		len(rt.Args) != 1 || rt.Args[0] != [2]string{"K8S_POD_NAME", "p"} || rt.CapabilityArgs["mac"] != "c2:00:00:00:00:01" {
		t.Errorf("RuntimeConf = %+v", rt)
	}
}
