package conformance

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// TestImages builds both images with hack/ociimage (what `make image`
// runs, into a temp dir) and inspects each docker-archive tarball: the
// layout docker/podman load (manifest.json naming the config, the tag and
// the layers), the config (entrypoint, a non-root user, labels, platform)
// and the filesystem (the binary present, root-owned, executable, static,
// and running).
func TestImages(t *testing.T) {
	root := repoRoot(t)
	out := t.TempDir()
	const tag = "conformance"
	build := func(dir string, extra ...string) {
		t.Helper()
		cmd := exec.Command("go", append([]string{"run", "./hack/ociimage", "-out", dir, "-tag", tag}, extra...)...)
		cmd.Dir = root
		cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=1700000000")
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go run ./hack/ociimage: %v\n%s", err, b)
		}
	}
	build(out)

	for _, imgName := range []string{"openelb-cloud-controller-manager", "openelb-speaker"} {
		t.Run(imgName, func(t *testing.T) {
			path := filepath.Join(out, imgName+".tar")
			ref := "openelb/" + imgName + ":" + tag
			inspectArchive(t, path, ref)

			tagRef, err := name.NewTag(ref)
			if err != nil {
				t.Fatal(err)
			}
			img, err := tarball.ImageFromPath(path, &tagRef)
			if err != nil {
				t.Fatalf("loading %s: %v", path, err)
			}
			cf, err := img.ConfigFile()
			if err != nil {
				t.Fatal(err)
			}
			entry := "/usr/local/bin/" + imgName
			if len(cf.Config.Entrypoint) != 1 || cf.Config.Entrypoint[0] != entry {
				t.Errorf("entrypoint %q, want [%s]", cf.Config.Entrypoint, entry)
			}
			if uid := userID(cf.Config.User); uid <= 0 {
				t.Errorf("user %q: want a non-root numeric user", cf.Config.User)
			}
			if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
				t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
			}
			for k, want := range map[string]string{
				"org.opencontainers.image.title":   imgName,
				"org.opencontainers.image.version": tag,
				"org.opencontainers.image.source":  "https://github.com/openelb/cloud-provider-openelb",
			} {
				if got := cf.Config.Labels[k]; got != want {
					t.Errorf("label %s = %q, want %q", k, got, want)
				}
			}
			if cf.Created.Unix() != 1700000000 {
				t.Errorf("created %v, want $SOURCE_DATE_EPOCH", cf.Created)
			}
			layers, err := img.Layers()
			if err != nil || len(layers) != 1 {
				t.Fatalf("want one layer on an empty base, have %d (%v)", len(layers), err)
			}

			files := map[string]*tar.Header{}
			var bin []byte
			tr := tar.NewReader(mutate.Extract(img))
			for {
				h, err := tr.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				files[strings.Trim(h.Name, "/")] = h
				if strings.Trim(h.Name, "/") == strings.TrimPrefix(entry, "/") {
					if bin, err = io.ReadAll(tr); err != nil {
						t.Fatal(err)
					}
				}
			}
			h := files[strings.TrimPrefix(entry, "/")]
			if h == nil || h.Typeflag != tar.TypeReg || len(bin) == 0 {
				t.Fatalf("%s is not a regular file in the image (files: %v)", entry, sortedKeys(files))
			}
			if h.Mode&0o111 != 0o111 || h.Uid != 0 || h.Mode&0o022 != 0 {
				t.Errorf("%s: mode %o uid %d, want executable by all, root-owned, not writable by others", entry, h.Mode, h.Uid)
			}
			if tmp := files["tmp"]; tmp == nil || tmp.Mode&0o1777 != 0o1777 {
				t.Errorf("/tmp missing or not 1777")
			}
			if files["etc/passwd"] == nil {
				t.Errorf("/etc/passwd missing")
			}
			ef, err := elf.NewFile(bytes.NewReader(bin))
			if err != nil {
				t.Fatalf("%s is not an ELF binary: %v", entry, err)
			}
			for _, p := range ef.Progs {
				if p.Type == elf.PT_INTERP {
					t.Errorf("%s is dynamically linked (has an interpreter)", entry)
				}
			}
			if libs, _ := ef.ImportedLibraries(); len(libs) > 0 {
				t.Errorf("%s needs shared libraries %v", entry, libs)
			}
			// It runs (this machine is linux/GOARCH too).
			exe := filepath.Join(t.TempDir(), imgName)
			if err := os.WriteFile(exe, bin, 0o755); err != nil {
				t.Fatal(err)
			}
			help, err := exec.Command(exe, "--help").CombinedOutput()
			if err != nil || !strings.Contains(string(help), "Usage") && !strings.Contains(string(help), "usage") {
				t.Errorf("%s --help: %v\n%s", entry, err, help)
			}
		})
	}

	// Reproducible: the same sources and SOURCE_DATE_EPOCH give the same
	// image (two builds back to back; the binary comes from the cache).
	first, again := t.TempDir(), t.TempDir()
	build(first, "-only", "openelb-speaker")
	build(again, "-only", "openelb-speaker")
	d1 := imageDigest(t, filepath.Join(first, "openelb-speaker.tar"), "openelb/openelb-speaker:"+tag)
	d2 := imageDigest(t, filepath.Join(again, "openelb-speaker.tar"), "openelb/openelb-speaker:"+tag)
	if d1 != d2 {
		t.Errorf("two builds of openelb-speaker differ: %s vs %s", d1, d2)
	}
}

// inspectArchive checks the docker-archive layout `docker load` reads:
// manifest.json with one entry naming the config, the tag and the layers,
// all present in the tarball.
func inspectArchive(t *testing.T, path, ref string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	entries := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		var b []byte
		if h.Name == "manifest.json" || strings.HasSuffix(h.Name, ".json") || strings.HasPrefix(h.Name, "sha256:") {
			b, _ = io.ReadAll(tr)
		}
		entries[h.Name] = b
	}
	var manifest []struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	if err := json.Unmarshal(entries["manifest.json"], &manifest); err != nil || len(manifest) != 1 {
		t.Fatalf("%s: manifest.json: %v (%d entries)", path, err, len(manifest))
	}
	m := manifest[0]
	if len(m.RepoTags) != 1 || m.RepoTags[0] != ref {
		t.Errorf("RepoTags %v, want [%s]", m.RepoTags, ref)
	}
	if _, ok := entries[m.Config]; !ok || len(entries[m.Config]) == 0 {
		t.Errorf("config %s not in the archive", m.Config)
	}
	for _, l := range m.Layers {
		if _, ok := entries[l]; !ok {
			t.Errorf("layer %s not in the archive", l)
		}
	}
}

func imageDigest(t *testing.T, path, ref string) string {
	t.Helper()
	tagRef, err := name.NewTag(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := tarball.ImageFromPath(path, &tagRef)
	if err != nil {
		t.Fatal(err)
	}
	d, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return d.String()
}

// userID is the numeric user of an image's "uid[:gid]" (-1 if not numeric).
func userID(user string) int {
	u, _, _ := strings.Cut(user, ":")
	n, err := strconv.Atoi(u)
	if err != nil {
		return -1
	}
	return n
}
