// Package images builds the container images the e2e cluster runs, as OCI
// image-layout archives that `ctr images import` loads: the test images
// (pause, busybox), written here, and the plexus release image, built by
// hack/image as `make image` builds it. Nothing is pulled: every file comes
// from this machine (binaries built from the repo, Debian's static
// busybox), so the cluster needs no registry and no Docker engine.
package images

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/plexus-cni/plexus/hack/image"
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

// Built is one image archive on disk.
type Built struct {
	Ref    string
	File   string
	Digest string
}

// Build compiles the Go programs the images hold (static) from the module
// at repoDir and writes the pause, busybox and plexus image archives into
// outDir.
func Build(ctx context.Context, repoDir, outDir string, progress io.Writer) ([]Built, error) {
	binDir := filepath.Join(outDir, "bin")
	pause := filepath.Join(binDir, "pause")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return nil, err
	}
	if err := image.GoBuild(ctx, repoDir, "./e2e/images/pause", pause); err != nil {
		return nil, err
	}
	pauseData, err := os.ReadFile(pause)
	if err != nil {
		return nil, err
	}
	busybox, err := busyboxImage(ctx)
	if err != nil {
		return nil, err
	}
	plexus, err := image.Plexus(ctx, repoDir, binDir, Plexus, progress)
	if err != nil {
		return nil, err
	}
	var out []Built
	for _, img := range []image.Image{
		{Ref: Pause, Entrypoint: []string{"/pause"}, Files: []image.File{{Path: "/pause", Mode: 0o755, Data: pauseData}}},
		busybox,
		plexus,
	} {
		start := time.Now()
		file := filepath.Join(outDir, image.ArchiveName(img.Ref))
		dgst, err := img.WriteFile(file)
		if err != nil {
			return nil, fmt.Errorf("image %s: %w", img.Ref, err)
		}
		fmt.Fprintf(progress, "  image %s %.19s -> %s (%s)\n", img.Ref, dgst, file, time.Since(start).Round(100*time.Millisecond))
		out = append(out, Built{Ref: img.Ref, File: file, Digest: dgst.String()})
	}
	return out, nil
}

// busyboxImage holds Debian's static busybox and a /bin link per applet, as
// `busybox --install` would make them, so `sh`, `sleep` and `ip` resolve.
func busyboxImage(ctx context.Context) (image.Image, error) {
	bin, err := os.ReadFile(BusyboxBinary)
	if err != nil {
		return image.Image{}, fmt.Errorf("busybox (apt-get install busybox-static): %w", err)
	}
	if err := image.CheckStatic(BusyboxBinary); err != nil {
		return image.Image{}, fmt.Errorf("%w; the busybox image needs busybox-static's binary", err)
	}
	list, err := exec.CommandContext(ctx, BusyboxBinary, "--list").Output()
	if err != nil {
		return image.Image{}, fmt.Errorf("%s --list: %w", BusyboxBinary, err)
	}
	files := append(image.BaseFiles(), image.File{Path: "/bin/busybox", Mode: 0o755, Data: bin})
	for _, applet := range strings.Fields(string(list)) {
		if applet != "busybox" && !strings.Contains(applet, "/") {
			files = append(files, image.File{Path: "/bin/" + applet, Link: "busybox"})
		}
	}
	return image.Image{Ref: Busybox, Cmd: []string{"sh"}, Env: []string{image.PathEnv}, Files: files}, nil
}
