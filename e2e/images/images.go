package images

import (
	"context"
	"debug/elf"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"
)

// The images the e2e cluster runs. Pods name them with
// imagePullPolicy: Never; plexus.local is no registry, only a name.
const (
	Pause   = "plexus.local/pause:e2e"
	Busybox = "plexus.local/busybox:e2e"
	Plexus  = "plexus.local/plexus:e2e"
)

// BusyboxBinary is where Debian's busybox-static package puts its binary.
const BusyboxBinary = "/bin/busybox"

const pathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Built is one image archive on disk.
type Built struct {
	Ref    string
	File   string
	Digest string
}

// Build compiles the Go programs the images hold (static, CGO_ENABLED=0)
// from the module at repoDir and writes the pause, busybox and plexus image
// archives into outDir.
func Build(ctx context.Context, repoDir, outDir string, progress io.Writer) ([]Built, error) {
	binDir := filepath.Join(outDir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	programs := map[string]string{"pause": "./e2e/images/pause", "plexus-daemon": "./cmd", "plexus": "./cmd/plexus", "plexus-webhook": "./cmd/webhook"}
	for _, name := range []string{"pause", "plexus-daemon", "plexus", "plexus-webhook"} {
		start := time.Now()
		if err := GoBuild(ctx, repoDir, programs[name], filepath.Join(binDir, name)); err != nil {
			return nil, err
		}
		fmt.Fprintf(progress, "  built %s (static) in %s\n", name, time.Since(start).Round(100*time.Millisecond))
	}
	read := func(name string) ([]byte, error) { return os.ReadFile(filepath.Join(binDir, name)) }

	pause, err := read("pause")
	if err != nil {
		return nil, err
	}
	daemon, err := read("plexus-daemon")
	if err != nil {
		return nil, err
	}
	shim, err := read("plexus")
	if err != nil {
		return nil, err
	}
	webhook, err := read("plexus-webhook")
	if err != nil {
		return nil, err
	}
	busybox, err := busyboxImage(ctx)
	if err != nil {
		return nil, err
	}
	all := []Image{
		{Ref: Pause, Entrypoint: []string{"/pause"}, Files: []File{{Path: "/pause", Mode: 0o755, Data: pause}}},
		busybox,
		{Ref: Plexus, Entrypoint: []string{"/usr/local/bin/plexus-daemon"}, Env: []string{pathEnv},
			Files: append(baseFiles(), File{Path: "/usr/local/bin/plexus-daemon", Mode: 0o755, Data: daemon},
				File{Path: "/usr/local/bin/plexus", Mode: 0o755, Data: shim},
				File{Path: "/usr/local/bin/plexus-webhook", Mode: 0o755, Data: webhook})},
	}
	var out []Built
	for _, img := range all {
		file := filepath.Join(outDir, archiveName(img.Ref))
		digest, err := img.WriteFile(file)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		fmt.Fprintf(progress, "  image %s %s -> %s\n", img.Ref, digest[:19], file)
		out = append(out, Built{Ref: img.Ref, File: file, Digest: digest})
	}
	return out, nil
}

// GoBuild builds the program pkg of the module at repoDir into out,
// statically (CGO_ENABLED=0): it runs in images with no C library, or
// from the node's CNI bin dir inside the daemon's.
func GoBuild(ctx context.Context, repoDir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = repoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return nil
}

// busyboxImage holds Debian's static busybox and a /bin link per applet, as
// `busybox --install` would make them, so `sh`, `sleep` and `ip` resolve.
func busyboxImage(ctx context.Context) (Image, error) {
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		return Image{}, fmt.Errorf("busybox (apt-get install busybox-static): %w", err)
	}
	if err := MustBeStatic(BusyboxBinary); err != nil {
		return Image{}, fmt.Errorf("%w; the busybox image needs busybox-static's binary", err)
	}
	list, err := exec.CommandContext(ctx, BusyboxBinary, "--list").Output()
	if err != nil {
		return Image{}, fmt.Errorf("%s --list: %w", BusyboxBinary, err)
	}
	files := append(baseFiles(), File{Path: "/bin/busybox", Mode: 0o755, Data: bin})
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			files = append(files, File{Path: "/bin/" + applet, Link: "busybox"})
		}
	}
	return Image{Ref: Busybox, Cmd: []string{"sh"}, Env: []string{pathEnv}, Files: files}, nil
}

// baseFiles is the little every image but pause needs: a root user and a
// writable /tmp.
func baseFiles() []File {
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/root", Dir: true, Mode: 0o700},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
}

// MustBeStatic fails unless the ELF binary file is statically linked.
func MustBeStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return fmt.Errorf("%s is dynamically linked", file)
		}
	}
	return nil
}

// archiveName is the file an image's archive is written to:
// plexus.local/busybox:e2e -> busybox-e2e.tar.
func archiveName(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	return strings.ReplaceAll(name, ":", "-") + ".tar"
}
