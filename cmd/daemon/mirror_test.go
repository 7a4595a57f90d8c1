package daemon_test

import (
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8stypes "k8s.io/apimachinery/pkg/types"

	"github.com/plexus-cni/plexus/plugin/plugintest"
)

// A static pod: the runtime calls with the static pod's own UID, the API
// server holds its mirror pod under another, with the runtime's UID in
// kubernetes.io/config.mirror. That mirror pod is the pod: it gets its
// networks and its network-status. A mirror pod of another static pod
// (its manifest changed since) is still refused.
func TestStaticPodsAreFoundThroughTheirMirrorPod(t *testing.T) {
	f := newFixture(t)
	f.nad("blue", f.macvlanNet("10.241.0.0/24"))
	const staticUID = "0f0e6f3c1b2a4d5e8f9a0b1c2d3e4f50"
	mirror := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "etcd-" + node, Annotations: map[string]string{
			"k8s.v1.cni.cncf.io/networks": "blue",
			"kubernetes.io/config.mirror": staticUID,
			"kubernetes.io/config.source": "file",
			"kubernetes.io/config.hash":   staticUID,
		}},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
	}
	f.create(mirror)
	if mirror.UID == staticUID {
		t.Fatal("the API server kept the static pod's UID")
	}
	f.waitCached(mirror)
	static := mirror.DeepCopy()
	static.UID = k8stypes.UID(staticUID)

	netns := plugintest.NewNS(t)
	if _, err := f.cni("ADD", "c1", netns, static); err != nil {
		t.Fatalf("ADD of a static pod: %v", err)
	}
	if _, ok := plugintest.LinkIn(t, netns, "net1"); !ok {
		t.Error("the static pod did not get its network")
	}
	f.eventually("the mirror pod's network-status", func() bool {
		s := f.networkStatus(mirror)
		return len(s) == 2 && s[1].Name == "team/blue" && s[1].Interface == "net1"
	})

	other := mirror.DeepCopy()
	other.UID = k8stypes.UID("11111111-2222-3333-4444-555555555555")
	_, err := f.cni("ADD", "c2", plugintest.NewNS(t), other)
	if err == nil || !strings.Contains(err.Error(), "mirror pod of a static pod with UID "+staticUID) {
		t.Errorf("ADD for another static pod of that name: %v, want a refusal naming the mirror's UID", err)
	}

	if _, err := f.cni("DEL", "c1", netns, static); err != nil {
		t.Fatalf("DEL: %v", err)
	}
	f.assertClean(netns, "defnet", "blue")
}
