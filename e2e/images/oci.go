// Package images builds the container images the e2e cluster runs, as OCI
// image-layout archives that `ctr images import` loads. Nothing is pulled:
// every file comes from this machine (binaries built from the repo, Debian's
// static busybox), so the cluster needs no registry and no Docker engine.
package images

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// OCI media types and the annotation containerd names an imported image by.
const (
	mediaManifest   = "application/vnd.oci.image.manifest.v1+json"
	mediaConfig     = "application/vnd.oci.image.config.v1+json"
	mediaLayer      = "application/vnd.oci.image.layer.v1.tar"
	annotationName  = "io.containerd.image.name"
	annotationRef   = "org.opencontainers.image.ref.name"
	layoutFileValue = `{"imageLayoutVersion":"1.0.0"}`
)

// epoch stamps every file and the image config, so the same inputs give the
// same digests and a rebuilt image is recognised as unchanged.
var epoch = time.Unix(0, 0).UTC()

// File is one entry of an image's single layer: a regular file (Data), a
// symlink (Link) or a directory (Dir).
type File struct {
	Path string
	Mode int64
	Data []byte
	Link string
	Dir  bool
}

// Image is a one-layer image and the process config its containers get.
type Image struct {
	// Ref is the full reference containerd stores it under,
	// e.g. plexus.local/pause:e2e.
	Ref        string
	Entrypoint []string
	Cmd        []string
	Env        []string
	Files      []File
}

type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type imageConfig struct {
	Created      time.Time `json:"created"`
	Architecture string    `json:"architecture"`
	OS           string    `json:"os"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint,omitempty"`
		Cmd        []string `json:"Cmd,omitempty"`
		Env        []string `json:"Env,omitempty"`
		WorkingDir string   `json:"WorkingDir"`
	} `json:"config"`
	RootFS struct {
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

type manifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type index struct {
	SchemaVersion int          `json:"schemaVersion"`
	Manifests     []descriptor `json:"manifests"`
}

// WriteArchive writes img as an OCI image-layout tar to w and returns the
// manifest's digest (what containerd reports as the image's digest).
func (img Image) WriteArchive(w io.Writer) (string, error) {
	layer, err := img.layer()
	if err != nil {
		return "", fmt.Errorf("image %s: layer: %w", img.Ref, err)
	}
	layerDesc := describe(mediaLayer, layer)

	var cfg imageConfig
	cfg.Created, cfg.Architecture, cfg.OS = epoch, "amd64", "linux"
	cfg.Config.Entrypoint, cfg.Config.Cmd, cfg.Config.Env, cfg.Config.WorkingDir = img.Entrypoint, img.Cmd, img.Env, "/"
	cfg.RootFS.Type, cfg.RootFS.DiffIDs = "layers", []string{layerDesc.Digest} // uncompressed: diff ID = digest
	cfgJSON, err := json.Marshal(cfg)
	if err != nil {
		return "", err
	}
	cfgDesc := describe(mediaConfig, cfgJSON)

	man, err := json.Marshal(manifest{SchemaVersion: 2, MediaType: mediaManifest, Config: cfgDesc, Layers: []descriptor{layerDesc}})
	if err != nil {
		return "", err
	}
	manDesc := describe(mediaManifest, man)
	manDesc.Platform = &platform{Architecture: "amd64", OS: "linux"}
	manDesc.Annotations = map[string]string{annotationName: img.Ref, annotationRef: tagOf(img.Ref)}
	idx, err := json.Marshal(index{SchemaVersion: 2, Manifests: []descriptor{manDesc}})
	if err != nil {
		return "", err
	}

	tw := tar.NewWriter(w)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", []byte(layoutFileValue)},
		{"index.json", idx},
		{blobPath(manDesc.Digest), man},
		{blobPath(cfgDesc.Digest), cfgJSON},
		{blobPath(layerDesc.Digest), layer},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: epoch}); err != nil {
			return "", err
		}
	}
	for _, e := range entries {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data)), ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return "", err
		}
		if _, err := tw.Write(e.data); err != nil {
			return "", err
		}
	}
	return manDesc.Digest, tw.Close()
}

// WriteFile writes the archive to file atomically and returns the
// manifest's digest.
func (img Image) WriteFile(file string) (string, error) {
	tmp, err := os.CreateTemp(filepath.Dir(file), ".image-*")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	digest, err := img.WriteArchive(tmp)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return "", err
	}
	return digest, os.Rename(tmp.Name(), file)
}

// layer is the image's one uncompressed layer, with a directory entry for
// every parent so the runtime never has to guess their modes.
func (img Image) layer() ([]byte, error) {
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

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		hdr := &tar.Header{Name: clean(f.Path), Mode: f.Mode, ModTime: epoch, Format: tar.FormatPAX}
		switch {
		case f.Dir:
			hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
		case f.Link != "":
			hdr.Typeflag, hdr.Linkname, hdr.Mode = tar.TypeSymlink, f.Link, 0o777
		default:
			hdr.Typeflag, hdr.Size = tar.TypeReg, int64(len(f.Data))
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("%s: %w", f.Path, err)
		}
		if hdr.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func describe(mediaType string, data []byte) descriptor {
	sum := sha256.Sum256(data)
	return descriptor{MediaType: mediaType, Digest: "sha256:" + hex.EncodeToString(sum[:]), Size: int64(len(data))}
}

func blobPath(digest string) string { return "blobs/sha256/" + strings.TrimPrefix(digest, "sha256:") }

func clean(p string) string { return strings.TrimPrefix(path.Clean("/"+p), "/") }

func tagOf(ref string) string {
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		return ref[i+1:]
	}
	return "latest"
}
