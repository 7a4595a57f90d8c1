// Command image builds the plexus release image as an OCI archive (`make
// image`): the static plexus programs (plexus-daemon, plexus,
// plexus-webhook) in /usr/local/bin, entrypoint plexus-daemon. It prints
// the archive's path and the image's digest. Load the archive on a node
// with `ctr -n k8s.io images import FILE`, or push it with
// `skopeo copy oci-archive:FILE docker://REGISTRY/plexus:TAG`.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"

	"github.com/plexus-cni/plexus/hack/image"
)

func main() {
	repo := flag.String("repo", ".", "the plexus module to build from")
	ref := flag.String("ref", "", "the image's full reference, e.g. plexus.local/plexus:0.1.0 (required)")
	dir := flag.String("out", "bin/images", "directory the archive (NAME-TAG.tar) and the built programs (bin/) are written to")
	flag.Parse()
	if *ref == "" || flag.NArg() > 0 {
		flag.Usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, *repo, *ref, *dir); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, repo, ref, dir string) error {
	img, err := image.Plexus(ctx, repo, filepath.Join(dir, "bin"), ref, os.Stdout)
	if err != nil {
		return err
	}
	file := filepath.Join(dir, image.ArchiveName(ref))
	dgst, err := img.WriteFile(file)
	if err != nil {
		return fmt.Errorf("image %s: %w", ref, err)
	}
	fmt.Printf("image %s %s -> %s\n", ref, dgst, file)
	return nil
}
