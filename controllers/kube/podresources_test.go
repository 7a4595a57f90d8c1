package kube_test

import (
	"context"
	"net"
	"path/filepath"
	"reflect"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"

	"github.com/plexus-cni/plexus/controllers/kube"
)

// kubelet serves the pod-resources API as kubelet does, over gRPC on a
// unix socket; there is no kubelet with device plugins on this machine.
type kubelet struct {
	podresourcesv1.UnimplementedPodResourcesListerServer
	pods    []*podresourcesv1.PodResources
	withGet bool
	gets    int
	lists   int
}

func (k *kubelet) List(context.Context, *podresourcesv1.ListPodResourcesRequest) (*podresourcesv1.ListPodResourcesResponse, error) {
	k.lists++
	return &podresourcesv1.ListPodResourcesResponse{PodResources: k.pods}, nil
}

func (k *kubelet) Get(_ context.Context, r *podresourcesv1.GetPodResourcesRequest) (*podresourcesv1.GetPodResourcesResponse, error) {
	k.gets++
	if !k.withGet {
		return nil, status.Error(codes.Unknown, "PodResources API Get method disabled")
	}
	for _, p := range k.pods {
		if p.Namespace == r.PodNamespace && p.Name == r.PodName {
			return &podresourcesv1.GetPodResourcesResponse{PodResources: p}, nil
		}
	}
	return nil, status.Error(codes.NotFound, "no such pod")
}

func serve(t *testing.T, k *kubelet) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "kubelet.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	podresourcesv1.RegisterPodResourcesListerServer(srv, k)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	return sock
}

func pods() []*podresourcesv1.PodResources {
	dev := func(res string, ids ...string) *podresourcesv1.ContainerDevices {
		return &podresourcesv1.ContainerDevices{ResourceName: res, DeviceIds: ids}
	}
	return []*podresourcesv1.PodResources{
		{Namespace: "team", Name: "other", Containers: []*podresourcesv1.ContainerResources{
			{Name: "c", Devices: []*podresourcesv1.ContainerDevices{dev("example.com/vf", "0000:01:00.7")}}}},
		{Namespace: "team", Name: "web", Containers: []*podresourcesv1.ContainerResources{
			{Name: "a", Devices: []*podresourcesv1.ContainerDevices{dev("example.com/vf", "0000:01:00.2"), dev("example.com/ib", "ib0")}},
			{Name: "b", Devices: []*podresourcesv1.ContainerDevices{dev("example.com/vf", "0000:01:00.3")}}}},
	}
}

func TestPodDevices(t *testing.T) {
	want := map[string][]string{"example.com/vf": {"0000:01:00.2", "0000:01:00.3"}, "example.com/ib": {"ib0"}}
	for _, withGet := range []bool{true, false} {
		k := &kubelet{pods: pods(), withGet: withGet}
		p := &kube.PodResources{Socket: serve(t, k)}
		got, err := p.PodDevices(context.Background(), "team", "web")
		if err != nil {
			t.Fatalf("withGet=%v: %v", withGet, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("withGet=%v: devices %v, want %v", withGet, got, want)
		}
		if wantLists := map[bool]int{true: 0, false: 1}[withGet]; k.lists != wantLists || k.gets != 1 {
			t.Errorf("withGet=%v: %d Get and %d List calls, want 1 and %d", withGet, k.gets, k.lists, wantLists)
		}
		none, err := p.PodDevices(context.Background(), "team", "absent")
		if withGet {
			if status.Code(err) != codes.NotFound {
				t.Errorf("absent pod with Get: %v, want NotFound", err)
			}
		} else if err != nil || len(none) != 0 {
			t.Errorf("absent pod with List: %v %v, want no devices", none, err)
		}
	}
}
