// Package image builds container images as OCI image-layout archives: the
// plexus release image (Plexus) and, for e2e/images, the test images. The
// archive is what `ctr -n k8s.io images import` loads and what
// `skopeo copy oci-archive:FILE docker://REGISTRY/plexus:TAG` pushes. The
// JSON documents are the OCI image-spec's own types; nothing is pulled, every
// file comes from this machine.
package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// AnnotationContainerdName is the index annotation `ctr images import`
// names the imported image by (the full reference; the OCI ref.name
// annotation holds only the tag).
const AnnotationContainerdName = "io.containerd.image.name"

// Platform is the one platform images are built for: the programs are
// cross-compiled for it (GoBuild), and the manifest is tagged with it.
var Platform = ocispec.Platform{OS: "linux", Architecture: "amd64"}

// Epoch stamps every file and the image config, so that the same inputs
// give the same digests and a rebuilt image is recognised as unchanged.
var Epoch = time.Unix(0, 0).UTC()

// File is one entry of an image's single layer: a regular file (Data), a
// symlink (Link) or a directory (Dir). Path is absolute in the image; Mode
// holds the permission bits.
type File struct {
	Path string
	Mode int64
	Data []byte
	Link string
	Dir  bool
}

// Image is a one-layer image and the process config its containers get.
type Image struct {
	// Ref is the full reference the archive names the image by, e.g.
	// plexus.local/plexus:0.1.0; its tag goes in the ref.name annotation.
	Ref        string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Files      []File
}

// WriteArchive writes img as an OCI image-layout tar to w (one gzipped
// layer, one manifest, an index naming it by Ref) and returns the
// manifest's digest, which is what containerd and a registry report as the
// image's digest.
func (img Image) WriteArchive(w io.Writer) (digest.Digest, error) {
	layer, diffID, err := img.layer()
	if err != nil {
		return "", fmt.Errorf("image %s: layer: %w", img.Ref, err)
	}
	layerDesc := describe(ocispec.MediaTypeImageLayerGzip, layer)

	created := Epoch
	cfg, err := json.Marshal(ocispec.Image{
		Created:  &created,
		Platform: Platform,
		Config:   ocispec.ImageConfig{Entrypoint: img.Entrypoint, Cmd: img.Cmd, Env: img.Env, WorkingDir: "/"},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{diffID}},
	})
	if err != nil {
		return "", err
	}
	cfgDesc := describe(ocispec.MediaTypeImageConfig, cfg)

	man, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    cfgDesc,
		Layers:    []ocispec.Descriptor{layerDesc},
	})
	if err != nil {
		return "", err
	}
	manDesc := describe(ocispec.MediaTypeImageManifest, man)
	platform := Platform
	manDesc.Platform = &platform
	manDesc.Annotations = map[string]string{AnnotationContainerdName: img.Ref, ocispec.AnnotationRefName: tagOf(img.Ref)}
	idx, err := json.Marshal(ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{manDesc},
	})
	if err != nil {
		return "", err
	}
	layout, err := json.Marshal(ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	blobs := path.Join(ocispec.ImageBlobsDir, "sha256")
	for _, dir := range []string{ocispec.ImageBlobsDir, blobs} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir + "/", Mode: 0o755, ModTime: Epoch}); err != nil {
			return "", err
		}
	}
	for _, e := range []struct {
		name string
		data []byte
	}{
		{ocispec.ImageLayoutFile, layout},
		{ocispec.ImageIndexFile, idx},
		{path.Join(blobs, manDesc.Digest.Encoded()), man},
		{path.Join(blobs, cfgDesc.Digest.Encoded()), cfg},
		{path.Join(blobs, layerDesc.Digest.Encoded()), layer},
	} {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: Epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return "", err
		}
	}
	return manDesc.Digest, tw.Close()
}

// WriteFile writes the archive to file atomically (a temporary file in the
// same directory, renamed) and returns the manifest's digest.
func (img Image) WriteFile(file string) (digest.Digest, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".image-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	dgst, err := img.WriteArchive(tmp)
	if err == nil {
		err = tmp.Chmod(0o644) // CreateTemp's 0600 would keep a user's other tools out
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return dgst, os.Rename(tmp.Name(), file)
}

// layer is the image's one layer, gzipped, and the digest of its
// uncompressed tar (the config's diff ID). Every parent directory gets an
// entry of its own so that the runtime never has to guess its mode.
func (img Image) layer() ([]byte, digest.Digest, error) {
	files := append([]File(nil), img.Files...)
	seen := map[string]bool{}
	for _, f := range files {
		seen[clean(f.Path)] = true
	}
	for _, f := range img.Files {
		for dir := path.Dir(clean(f.Path)); dir != "." && dir != "/" && !seen[dir]; dir = path.Dir(dir) {
			seen[dir] = true
			files = append(files, File{Path: dir, Dir: true, Mode: 0o755})
		}
	}
	sort.Slice(files, func(i, j int) bool { return clean(files[i].Path) < clean(files[j].Path) })

	var compressed bytes.Buffer
	zw := gzip.NewWriter(&compressed) // no name, no time: the same bytes each run
	diff := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(zw, diff))
	for _, f := range files {
		hdr := &tar.Header{Name: clean(f.Path), Mode: f.Mode, ModTime: Epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, "", fmt.Errorf("%s: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, "", err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, "", err
	}
	if err := zw.Close(); err != nil {
		return nil, "", err
	}
	return compressed.Bytes(), digest.NewDigest(digest.SHA256, diff), nil
}

func describe(mediaType string, data []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(data), Size: int64(len(data))}
}

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

// tagOf is ref's tag: plexus.local/plexus:0.1.0 -> 0.1.0; "latest" if it
// has none.
func tagOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}
