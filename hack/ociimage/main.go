// Command ociimage builds the project's container images without Docker:
// each binary is compiled statically (CGO_ENABLED=0, GOOS=linux) and put,
// with a minimal /etc/passwd, /etc/group and /tmp, into a single layer on an
// empty base. The result is a docker-archive tarball per image
// (<out>/<name>.tar: manifest.json, the config, one gzipped layer), which
// `docker load -i` and `podman load -i` accept.
//
//	go run ./hack/ociimage -out bin/images -tag v0.1.0
//
// -set lab builds, the same way, the real-node lab's own images instead of
// the shipped ones (conformance/labimages): a pod sandbox and a test
// backend, since the lab has no registry to pull them from.
//
// Builds are reproducible: file times and the image's creation time come
// from $SOURCE_DATE_EPOCH, else the commit time of HEAD, else the Unix
// epoch.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// image is one of the project's images.
type image struct {
	name        string // also the binary's name
	pkg         string // Go package to build, relative to the module root
	description string
}

// sets are the image lists -set selects.
var sets = map[string][]image{"release": images, "lab": labImages}

var images = []image{
	{
		name:        "openelb-cloud-controller-manager",
		pkg:         "./ccm",
		description: "Cloud-controller-manager allocating LoadBalancer addresses from Eip pools (--cloud-provider=openelb)",
	},
	{
		name:        "openelb-speaker",
		pkg:         "./nodeagent",
		description: "openelb node agent: announces LoadBalancer addresses over BGP",
	},
}

var labImages = []image{
	{
		name:        "openelb-lab-pause",
		pkg:         "./conformance/labimages/pause",
		description: "The real-node lab's pod sandbox image",
	},
	{
		name:        "openelb-lab-backend",
		pkg:         "./conformance/labimages/backend",
		description: "The real-node lab's test backend: answers with its pod, its node and the client's address",
	},
}

const (
	// BinDir is where the binary sits in the image; the entrypoint is
	// BinDir/<name>.
	BinDir = "/usr/local/bin"
	// NonRootUID is the image's default user and group (the "nonroot"
	// convention of distroless images).
	NonRootUID = 65532
	source     = "https://github.com/openelb/cloud-provider-openelb"
)

func main() {
	out := flag.String("out", "bin/images", "directory the <name>.tar files are written to")
	tag := flag.String("tag", "dev", "image tag")
	repo := flag.String("repository-prefix", "openelb/", "prefix of the image names (registry and/or organisation)")
	arch := flag.String("arch", envOr("GOARCH", runtime.GOARCH), "target architecture (GOARCH)")
	only := flag.String("only", "", "build only this image (default: all)")
	goBin := flag.String("go", "go", "go command used to compile the binaries")
	set := flag.String("set", "release", "which images: release (the shipped ones) or lab (the real-node lab's)")
	flag.Parse()

	list, ok := sets[*set]
	if !ok {
		fmt.Fprintf(os.Stderr, "ociimage: unknown -set %q (release or lab)\n", *set)
		os.Exit(2)
	}
	if err := run(list, *out, *tag, *repo, *arch, *only, *goBin); err != nil {
		fmt.Fprintln(os.Stderr, "ociimage:", err)
		os.Exit(1)
	}
}

func run(images []image, out, tag, repo, arch, only, goBin string) error {
	root, err := moduleRoot(goBin)
	if err != nil {
		return err
	}
	created := buildTime(root)
	revision := gitOutput(root, "rev-parse", "HEAD")
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "ociimage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	built := 0
	for _, im := range images {
		if only != "" && only != im.name {
			continue
		}
		bin := filepath.Join(work, im.name)
		if err := compile(goBin, root, im.pkg, arch, bin); err != nil {
			return err
		}
		ref, err := name.NewTag(repo + im.name + ":" + tag)
		if err != nil {
			return fmt.Errorf("image name: %w", err)
		}
		labels := map[string]string{
			"org.opencontainers.image.title":       im.name,
			"org.opencontainers.image.description": im.description,
			"org.opencontainers.image.version":     tag,
			"org.opencontainers.image.source":      source,
			"org.opencontainers.image.created":     created.Format(time.RFC3339),
		}
		if revision != "" {
			labels["org.opencontainers.image.revision"] = revision
		}
		img, err := build(im.name, bin, arch, created, labels)
		if err != nil {
			return fmt.Errorf("%s: %w", im.name, err)
		}
		dst := filepath.Join(out, im.name+".tar")
		if err := writeAtomically(dst, ref, img); err != nil {
			return fmt.Errorf("%s: %w", im.name, err)
		}
		digest, _ := img.Digest()
		fmt.Printf("%s  %s  %s\n", dst, ref.String(), digest)
		built++
	}
	if built == 0 {
		return fmt.Errorf("no image named %q", only)
	}
	return nil
}

// compile builds a static Linux binary of pkg.
func compile(goBin, root, pkg, arch, dst string) error {
	cmd := exec.Command(goBin, "build", "-ldflags=-s -w", "-o", dst, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+arch)
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build %s (GOOS=linux GOARCH=%s CGO_ENABLED=0): %w", pkg, arch, err)
	}
	return nil
}

// build layers the binary onto an empty base.
func build(binName, binPath, arch string, created time.Time, labels map[string]string) (v1.Image, error) {
	layerTar, err := rootfs(binName, binPath, created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	})
	if err != nil {
		return nil, err
	}
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer: layer,
		History: v1.History{
			Created:   v1.Time{Time: created},
			CreatedBy: "hack/ociimage: " + path.Join(BinDir, binName) + ", /etc/passwd, /etc/group, /tmp",
			Comment:   "static binary (CGO_ENABLED=0) on an empty base",
		},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture = arch
	cf.OS = "linux"
	cf.Created = v1.Time{Time: created}
	cf.Config.Entrypoint = []string{path.Join(BinDir, binName)}
	cf.Config.Cmd = nil
	cf.Config.User = fmt.Sprintf("%d:%d", NonRootUID, NonRootUID)
	cf.Config.WorkingDir = "/"
	cf.Config.Env = []string{"PATH=" + BinDir + ":/usr/bin:/bin"}
	cf.Config.Labels = labels
	return mutate.ConfigFile(img, cf)
}

// rootfs is the uncompressed tar of the image's only layer.
func rootfs(binName, binPath string, mtime time.Time) ([]byte, error) {
	bin, err := os.ReadFile(binPath)
	if err != nil {
		return nil, err
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin\n", NonRootUID, NonRootUID)
	group := fmt.Sprintf("root:x:0:\nnonroot:x:%d:\n", NonRootUID)
	type entry struct {
		name string
		mode int64
		dir  bool
		uid  int
		data []byte
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		{name: "home/", mode: 0o755, dir: true},
		{name: "home/nonroot/", mode: 0o700, dir: true, uid: NonRootUID},
		{name: "tmp/", mode: 0o1777, dir: true},
		{name: "usr/", mode: 0o755, dir: true},
		{name: "usr/local/", mode: 0o755, dir: true},
		{name: strings.TrimPrefix(BinDir, "/") + "/", mode: 0o755, dir: true},
		// Owned by root, executable by everyone: the non-root user runs
		// it and cannot replace it.
		{name: strings.TrimPrefix(path.Join(BinDir, binName), "/"), mode: 0o755, data: bin},
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name:    e.name,
			Mode:    e.mode,
			Uid:     e.uid,
			Gid:     e.uid,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !e.dir {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// writeAtomically writes the docker-archive next to dst and renames it, so
// an interrupted build never leaves a truncated tarball behind.
func writeAtomically(dst string, ref name.Tag, img v1.Image) error {
	tmp := dst + ".partial"
	if err := tarball.WriteToFile(tmp, ref, img); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func moduleRoot(goBin string) (string, error) {
	out, err := exec.Command(goBin, "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("not inside the module: run from the repository")
	}
	return filepath.Dir(gomod), nil
}

// buildTime is $SOURCE_DATE_EPOCH, else HEAD's commit time, else the epoch.
func buildTime(root string) time.Time {
	for _, s := range []string{os.Getenv("SOURCE_DATE_EPOCH"), gitOutput(root, "log", "-1", "--format=%ct")} {
		if sec, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64); err == nil && sec >= 0 {
			return time.Unix(sec, 0).UTC()
		}
	}
	return time.Unix(0, 0).UTC()
}

func gitOutput(dir string, args ...string) string {
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
