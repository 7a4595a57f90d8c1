package kube

import (
	"context"
	"fmt"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	podresourcesv1 "k8s.io/kubelet/pkg/apis/podresources/v1"
)

// DefaultPodResourcesSocket is kubelet's pod-resources API.
const DefaultPodResourcesSocket = "/var/lib/kubelet/pod-resources/kubelet.sock"

// PodResources asks kubelet's pod-resources API which device plugin
// devices a pod was given. The connection is made on first use and kept.
type PodResources struct {
	Socket  string
	Timeout time.Duration

	mu   sync.Mutex
	conn *grpc.ClientConn
}

func (p *PodResources) client() (podresourcesv1.PodResourcesListerClient, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.conn == nil {
		conn, err := grpc.NewClient("unix://"+p.Socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("kubelet pod-resources at %s: %w", p.Socket, err)
		}
		p.conn = conn
	}
	return podresourcesv1.NewPodResourcesListerClient(p.conn), nil
}

// PodDevices returns the pod's device IDs by resource name, over all its
// containers in order. It uses Get, and List where kubelet has Get off
// (a feature gate).
func (p *PodResources) PodDevices(ctx context.Context, namespace, name string) (map[string][]string, error) {
	c, err := p.client()
	if err != nil {
		return nil, err
	}
	timeout := p.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	got, err := c.Get(ctx, &podresourcesv1.GetPodResourcesRequest{PodNamespace: namespace, PodName: name})
	if err == nil {
		return devicesOf(got.GetPodResources()), nil
	}
	if code := status.Code(err); code != codes.Unimplemented && code != codes.Unknown {
		return nil, err
	}
	list, err := c.List(ctx, &podresourcesv1.ListPodResourcesRequest{})
	if err != nil {
		return nil, err
	}
	for _, pr := range list.GetPodResources() {
		if pr.GetNamespace() == namespace && pr.GetName() == name {
			return devicesOf(pr), nil
		}
	}
	return map[string][]string{}, nil
}

func devicesOf(pr *podresourcesv1.PodResources) map[string][]string {
	out := map[string][]string{}
	for _, c := range pr.GetContainers() {
		for _, d := range c.GetDevices() {
			out[d.GetResourceName()] = append(out[d.GetResourceName()], d.GetDeviceIds()...)
		}
	}
	return out
}
