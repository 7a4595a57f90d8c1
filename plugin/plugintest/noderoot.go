package plugintest

import (
	"os"
	"path/filepath"
	"testing"
)

// NodeRoot makes a node root filesystem in a temporary directory, for
// delegates run chrooted into it as the daemon runs them: a static busybox
// as bin/busybox and the shell bin/sh, empty run, tmp and var directories,
// files (path under the root → content, written executable) and links
// (path under the root → target, as given). It needs root and Debian's
// busybox-static at /bin/busybox, and skips or fails without them (see
// the package doc).
func NodeRoot(t testing.TB, files, links map[string]string) string {
	t.Helper()
	RequireRoot(t)
	busybox, err := os.ReadFile("/bin/busybox")
	if err != nil {
		missing(t, "needs a static busybox at /bin/busybox (Debian's busybox-static): %v", err)
	}
	root := t.TempDir()
	for _, dir := range []string{"bin", "run", "tmp", "var"} {
		if err := os.MkdirAll(filepath.Join(root, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	all := map[string]string{"bin/busybox": string(busybox)}
	for name, content := range files {
		all[name] = content
	}
	for name, content := range all {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	all = map[string]string{"bin/sh": "busybox"}
	for link, target := range links {
		all[link] = target
	}
	for link, target := range all {
		if err := os.Symlink(target, filepath.Join(root, link)); err != nil {
			t.Fatal(err)
		}
	}
	return root
}
