package controllertest

import "testing"

func TestResource(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/namespaces/team/pods/web/status":                                 "pods/status",
		"/api/v1/namespaces/team/pods/web":                                        "pods",
		"/api/v1/pods":                                                            "pods",
		"/api/v1/namespaces/team":                                                 "namespaces",
		"/api/v1/namespaces/team/events":                                          "events",
		"/apis/plexus.cni.dev/v1alpha1/nodenetworkstatuses/node-a/status":         "nodenetworkstatuses/status",
		"/apis/k8s.cni.cncf.io/v1/namespaces/team/network-attachment-definitions": "network-attachment-definitions",
	} {
		if got := Resource(path); got != want {
			t.Errorf("Resource(%q) = %q, want %q", path, got, want)
		}
	}
	for key, want := range map[string]bool{
		"PUT nodenetworkstatuses/status": true, "GET nodenetworkstatuses": true, "POST events": true,
		"PATCH pods/status": false, "GET pods": false, "GET nodes": false, "POST " + PodEvents: false,
	} {
		if got := Bookkeeping(key); got != want {
			t.Errorf("Bookkeeping(%q) = %v, want %v", key, got, want)
		}
	}
}

// ForPods keeps what an ADD or a DEL cost: the pod Events writer's
// requests apart, the node's bookkeeping gone.
func TestForPods(t *testing.T) {
	pods, events := ForPods(map[string]int{
		"PATCH pods/status": 1, "POST " + PodEvents: 3, "PUT nodenetworkstatuses/status": 2, "POST events": 1, "GET pods": 1,
	})
	if len(pods) != 2 || pods["PATCH pods/status"] != 1 || pods["GET pods"] != 1 {
		t.Errorf("pods = %v, want the PATCH and the GET of pods", pods)
	}
	if len(events) != 1 || events["POST "+PodEvents] != 3 {
		t.Errorf("events = %v, want the three pod Events", events)
	}
}
