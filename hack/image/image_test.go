package image

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestPlexusImage builds the release image twice from the module, into two
// directories, and reads the archive back as a runtime would: the index
// names the image by its reference, every blob is stored under its own
// digest, the config's entrypoint is the daemon, and the layer holds every
// program, executable and static. The two builds must give one digest.
func TestPlexusImage(t *testing.T) {
	const ref = "plexus.local/plexus:1.2.3"
	var digests []digest.Digest
	var archive []byte
	for i := range 2 {
		img, err := Plexus(context.Background(), "../..", t.TempDir(), ref, io.Discard)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		dgst, err := img.WriteArchive(&buf)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("build %d: %s, %d bytes", i+1, dgst, buf.Len())
		digests, archive = append(digests, dgst), buf.Bytes()
	}
	if digests[0] != digests[1] {
		t.Errorf("two builds of the same sources gave two digests %s and %s: something in the image is not pinned (a time, an order, a path)", digests[0], digests[1])
	}

	entries := untar(t, bytes.NewReader(archive))
	var layout ocispec.ImageLayout
	decode(t, entries, ocispec.ImageLayoutFile, &layout)
	if layout.Version != ocispec.ImageLayoutVersion {
		t.Errorf("oci-layout version %q, want %q", layout.Version, ocispec.ImageLayoutVersion)
	}
	var index ocispec.Index
	decode(t, entries, ocispec.ImageIndexFile, &index)
	if len(index.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1", len(index.Manifests))
	}
	desc := index.Manifests[0]
	if desc.Digest != digests[0] || desc.MediaType != ocispec.MediaTypeImageManifest {
		t.Errorf("index names manifest %s (%s), want %s (%s)", desc.Digest, desc.MediaType, digests[0], ocispec.MediaTypeImageManifest)
	}
	if got := desc.Annotations[AnnotationContainerdName]; got != ref {
		t.Errorf("annotation %s = %q, want %q: ctr images import would store the image under another name", AnnotationContainerdName, got, ref)
	}
	if got := desc.Annotations[ocispec.AnnotationRefName]; got != "1.2.3" {
		t.Errorf("annotation %s = %q, want the tag 1.2.3", ocispec.AnnotationRefName, got)
	}
	if desc.Platform == nil || desc.Platform.OS != "linux" || desc.Platform.Architecture != "amd64" {
		t.Errorf("manifest platform %+v, want linux/amd64", desc.Platform)
	}

	var manifest ocispec.Manifest
	blob(t, entries, desc, &manifest)
	if len(manifest.Layers) != 1 || manifest.Layers[0].MediaType != ocispec.MediaTypeImageLayerGzip {
		t.Fatalf("manifest layers %+v, want one %s", manifest.Layers, ocispec.MediaTypeImageLayerGzip)
	}
	var config ocispec.Image
	blob(t, entries, manifest.Config, &config)
	if want := []string{"/usr/local/bin/plexus-daemon"}; !slices.Equal(config.Config.Entrypoint, want) {
		t.Errorf("entrypoint %q, want %q", config.Config.Entrypoint, want)
	}
	if config.Created == nil || !config.Created.Equal(Epoch) {
		t.Errorf("config created %v, want the fixed %v", config.Created, Epoch)
	}

	layer := blob(t, entries, manifest.Layers[0], nil)
	zr, err := gzip.NewReader(bytes.NewReader(layer))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	if got := digest.FromBytes(raw); len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != got {
		t.Errorf("config diff IDs %v, want the uncompressed layer's %s", config.RootFS.DiffIDs, got)
	}
	files := untar(t, bytes.NewReader(raw))
	dir := t.TempDir()
	for _, name := range []string{"plexus-daemon", "plexus", "plexus-webhook"} {
		f, ok := files["usr/local/bin/"+name]
		if !ok {
			t.Errorf("no /usr/local/bin/%s in the layer", name)
			continue
		}
		if f.hdr.Typeflag != tar.TypeReg || f.hdr.Mode&0o111 != 0o111 {
			t.Errorf("/usr/local/bin/%s: type %c mode %o, want an executable regular file", name, f.hdr.Typeflag, f.hdr.Mode)
		}
		out := filepath.Join(dir, name)
		if err := os.WriteFile(out, f.data, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := CheckStatic(out); err != nil {
			t.Error(err)
		}
	}
	for _, p := range []string{"usr/", "usr/local/", "usr/local/bin/", "tmp/", "etc/passwd"} {
		if _, ok := files[p]; !ok {
			t.Errorf("no %s in the layer", p)
		}
	}
}

// TestCheckStatic: a program linked against the C library is refused, the
// same program built with CGO_ENABLED=0 is accepted. Without a C compiler
// the dynamic one is /bin/ls.
func TestCheckStatic(t *testing.T) {
	dir := t.TempDir()
	src := map[string]string{
		"go.mod":  "module lookup\n\ngo 1.21\n",
		"main.go": "package main\n\nimport \"os/user\"\n\nfunc main() { _, _ = user.Current() }\n",
	}
	for name, text := range src {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func(cgo string) (string, []byte, error) {
		out := filepath.Join(dir, "lookup-cgo"+cgo)
		cmd := exec.Command("go", "build", "-o", out, ".")
		cmd.Dir, cmd.Env = dir, append(os.Environ(), "CGO_ENABLED="+cgo)
		b, err := cmd.CombinedOutput()
		return out, b, err
	}
	static, out, err := build("0")
	if err != nil {
		t.Fatalf("go build with CGO_ENABLED=0: %v\n%s", err, out)
	}
	if err := CheckStatic(static); err != nil {
		t.Errorf("a CGO_ENABLED=0 build refused: %v", err)
	}
	dynamic, out, err := build("1")
	if err != nil {
		t.Logf("no cgo build (%v: %s); /bin/ls stands for a dynamic program", err, bytes.TrimSpace(out))
		dynamic = "/bin/ls"
	}
	err = CheckStatic(dynamic)
	if err == nil {
		t.Fatalf("CheckStatic(%s) accepted a dynamically linked program", dynamic)
	}
	if !strings.Contains(err.Error(), dynamic) || !strings.Contains(err.Error(), "(loader /") {
		t.Errorf("error %q names neither the file nor its loader", err)
	}
}

type entry struct {
	hdr  *tar.Header
	data []byte
}

func untar(t *testing.T, r io.Reader) map[string]entry {
	t.Helper()
	out := map[string]entry{}
	tr := tar.NewReader(r)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		out[hdr.Name] = entry{hdr, data}
	}
}

func decode(t *testing.T, entries map[string]entry, name string, v any) {
	t.Helper()
	e, ok := entries[name]
	if !ok {
		t.Fatalf("no %s in the archive", name)
	}
	if err := json.Unmarshal(e.data, v); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
}

// blob reads the blob desc points to, checks its size and digest, and
// decodes it into v unless v is nil.
func blob(t *testing.T, entries map[string]entry, desc ocispec.Descriptor, v any) []byte {
	t.Helper()
	name := path.Join(ocispec.ImageBlobsDir, desc.Digest.Algorithm().String(), desc.Digest.Encoded())
	e, ok := entries[name]
	if !ok {
		t.Fatalf("no blob %s for %s", name, desc.MediaType)
	}
	if got := digest.FromBytes(e.data); got != desc.Digest || int64(len(e.data)) != desc.Size {
		t.Fatalf("blob %s: digest %s size %d, want %s size %d", name, got, len(e.data), desc.Digest, desc.Size)
	}
	if v != nil {
		if err := json.Unmarshal(e.data, v); err != nil {
			t.Fatalf("%s: %v", desc.MediaType, err)
		}
	}
	return e.data
}
