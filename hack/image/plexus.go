package image

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

// PathEnv is the PATH of the images' processes.
const PathEnv = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Program is a command of this module the plexus image ships.
type Program struct {
	// Name is the binary's name in /usr/local/bin.
	Name string
	// Package is the module-relative package it is built from, e.g. ./cmd.
	Package string
}

// Programs are what the plexus image holds in /usr/local/bin. The first is
// the entrypoint.
var Programs = []Program{
	{Name: "plexus-daemon", Package: "./cmd"},
	{Name: "plexus", Package: "./cmd/plexus"},
	{Name: "plexus-webhook", Package: "./cmd/webhook"},
}

// Plexus builds Programs from the module at repoDir into binDir (static:
// GoBuild) and returns the release image named ref: the programs in
// /usr/local/bin, entrypoint plexus-daemon, a root user and /tmp. Nothing
// else: the daemon reaches the node's root filesystem by path, so the image
// carries no tools. Progress lines go to progress.
func Plexus(ctx context.Context, repoDir, binDir, ref string, progress io.Writer) (Image, error) {
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return Image{}, err
	}
	files := BaseFiles()
	for _, p := range Programs {
		start := time.Now()
		out := filepath.Join(binDir, p.Name)
		if err := GoBuild(ctx, repoDir, p.Package, out); err != nil {
			return Image{}, err
		}
		data, err := os.ReadFile(out)
		if err != nil {
			return Image{}, err
		}
		files = append(files, File{Path: "/usr/local/bin/" + p.Name, Mode: 0o755, Data: data})
		fmt.Fprintf(progress, "  built %s (static) in %s\n", p.Name, time.Since(start).Round(100*time.Millisecond))
	}
	return Image{
		Ref:        ref,
		Entrypoint: []string{"/usr/local/bin/" + Programs[0].Name},
		Env:        []string{PathEnv},
		Files:      files,
	}, nil
}

// BaseFiles is the little every image but pause needs: a root user, a
// nobody, and a writable /tmp.
func BaseFiles() []File {
	return []File{
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")},
		{Path: "/etc/group", Mode: 0o644, Data: []byte("root:x:0:\nnogroup:x:65534:\n")},
		{Path: "/root", Dir: true, Mode: 0o700},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
}

// GoBuild builds the package pkg (module-relative, e.g. ./cmd/plexus) of
// the module at repoDir into the file out, statically (CGO_ENABLED=0) for
// Platform, stripped and with -trimpath so that the same sources give the
// same bytes. Static because it runs in images with no C library, or from
// the node's CNI bin dir inside the daemon's.
func GoBuild(ctx context.Context, repoDir, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", out, pkg)
	cmd.Dir = repoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+Platform.OS, "GOARCH="+Platform.Architecture)
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build %s: %v\n%s", pkg, err, b)
	}
	return CheckStatic(out)
}

// CheckStatic returns an error unless the ELF executable file is
// statically linked, i.e. has no PT_INTERP program header naming a dynamic
// loader: a dynamic one fails to start in an image with no C library, and
// pays the loader on every exec. The error names the file and the loader
// and says how to rebuild a Go program.
func CheckStatic(file string) error {
	f, err := elf.Open(file)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		loader, _ := io.ReadAll(p.Open())
		return fmt.Errorf("%s is dynamically linked (loader %s): it needs a static build (a Go program: CGO_ENABLED=0 go build)",
			file, strings.TrimRight(string(loader), "\x00"))
	}
	return nil
}

// ArchiveName is the file an image's archive is written to, from its
// reference: plexus.local/plexus:0.1.0 -> plexus-0.1.0.tar.
func ArchiveName(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	if !strings.Contains(name, ":") {
		name += ":latest"
	}
	return strings.ReplaceAll(name, ":", "-") + ".tar"
}
