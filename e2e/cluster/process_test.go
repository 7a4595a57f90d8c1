package cluster

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A component must not inherit what the cluster tool inherited, such as
// the lock of a `flock <file> make cluster-up` around it: it would hold
// that lock for as long as it runs.
func TestLaunchedComponentsInheritNoDescriptors(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{"logs", "run"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lock := filepath.Join(dir, "lock")
	// Opened as flock(1) opens its file: without close-on-exec.
	fd, err := syscall.Open(lock, syscall.O_CREAT|syscall.O_RDONLY, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	c := New(Config{StateDir: dir})
	out := filepath.Join(dir, "fds")
	if err := c.launch("probe", "/bin/sh", "-c", "ls -l /proc/$$/fd > "+out+".tmp && mv "+out+".tmp "+out); err != nil {
		t.Fatal(err)
	}
	var got []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if got, err = os.ReadFile(out); err == nil {
			break
		}
	}
	if err != nil {
		t.Fatalf("the probe did not run: %v", err)
	}
	if strings.Contains(string(got), lock) {
		t.Errorf("the launched component inherited the lock's descriptor:\n%s", got)
	}
}
