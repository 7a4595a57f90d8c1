package delegateapi

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestListenReplacesAStaleSocketOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "multus", "multus.sock")

	// Nothing there: the directory is made, root only.
	ln, err := listen(path)
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700} {
		if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %v", p, fi.Mode(), err, want)
		}
	}
	if m, _ := filepath.Glob(filepath.Join(dir, "multus", "*.tmp")); len(m) != 0 {
		t.Errorf("temporary sockets left: %v", m)
	}

	// Served: a second server must not take its place.
	go func() { _ = http.Serve(ln, http.NotFoundHandler()) }()
	if _, err := listen(path); err == nil || !strings.Contains(err.Error(), "another server answers") {
		t.Errorf("listen on a served socket: %v, want an error naming another server", err)
	}
	ln.Close()

	// Left by a daemon that died: replaced.
	ln, err = listen(path)
	if err != nil {
		t.Fatalf("listen on a stale socket: %v", err)
	}
	ln.Close()

	// Not a socket: left alone.
	file := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("listen on a regular file: %v, want an error", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("the regular file was removed: %v", err)
	}
	if _, err := listen("multus.sock"); err == nil {
		t.Error("a relative path was accepted")
	}
}

// A request as the controller encodes it: config as base64, cni-args null
// when unset.
func TestParseTheControllersRequest(t *testing.T) {
	body := `{"env": {"CNI_COMMAND": "add", "CNI_CONTAINERID": "abc123", "CNI_NETNS": "/var/run/netns/cni-1",
		"CNI_IFNAME": "pod1", "CNI_ARGS": "K8S_POD_NAMESPACE=ns;K8S_POD_NAME=vm;K8S_POD_UID=u-1"},
		"config": "eyJjbmlWZXJzaW9uIjoiMS4wLjAiLCJuYW1lIjoiaG90IiwidHlwZSI6Im1hY3ZsYW4ifQ==",
		"interfaceAttributes": {"ips": ["10.1.1.5/24"], "mac": "02:00:00:00:00:01", "cni-args": null}}`
	c, herr := parse([]byte(body))
	if herr != nil {
		t.Fatal(herr)
	}
	if c.command != CmdAdd || c.containerID != "abc123" || c.ifName != "pod1" || c.configName != "hot" ||
		c.pod.Namespace != "ns" || c.pod.Name != "vm" || c.pod.UID != "u-1" {
		t.Errorf("parsed %+v", c)
	}
	if c.attributes == nil || c.attributes.MAC != "02:00:00:00:00:01" || len(c.attributes.IPs) != 1 || c.attributes.CNIArgs != nil {
		t.Errorf("attributes %+v", c.attributes)
	}
	// Without attributes, or with all empty: none delivered.
	var req map[string]interface{}
	_ = json.Unmarshal([]byte(body), &req)
	req["interfaceAttributes"] = map[string]interface{}{"ips": nil, "mac": "", "cni-args": nil}
	data, _ := json.Marshal(req)
	if c, herr := parse(data); herr != nil || c.attributes != nil {
		t.Errorf("empty attributes: %+v %v", c, herr)
	}
}

func TestHealthz(t *testing.T) {
	s := &Server{Socket: filepath.Join(t.TempDir(), "m.sock"), Timeout: time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- s.Start(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(10 * time.Second)
	for s.Ready(nil) != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	c := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", s.Socket)
	}}}
	resp, err := c.Get("http://dummy/healthz")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /healthz: %v %v", resp, err)
	}
	resp.Body.Close()
	resp, err = c.Get("http://dummy/other")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /other: %v %v, want 404", resp, err)
	}
	resp.Body.Close()
}
