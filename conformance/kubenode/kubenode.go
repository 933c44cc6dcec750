// Package kubenode runs a real Kubernetes node inside one of the lab's
// network namespaces: containerd (with its runc shim and the CNI plugins),
// a kubelet started with --cloud-provider=external, and kube-proxy, all
// on one host next to the other nodes and the test itself.
//
// Several nodes share one kernel, so what a node would own alone is given
// to it explicitly, and nothing it does reaches the host:
//
//   - A mount namespace per node, kept open by a bind mount of its nsfs
//     file (Dir/ns/mnt) and entered with nsenter by containerd, the kubelet
//     and kube-proxy alike. The kubelet mounts pod volumes (the
//     ServiceAccount tokens among them) where containerd and runc see them,
//     and every mount a node makes (rootfs overlays, volumes, pod network
//     namespace pins) disappears with the namespace. `ip netns exec` would
//     give each process a mount namespace of its own, so it is not used.
//   - Inside it, the fixed paths every containerd or kubelet uses
//     (/run/containerd, /var/lib/cni, /var/log/containers, /run/nri) are
//     replaced by directories of the node, and so are the three kernel
//     settings the kubelet would otherwise write host-wide
//     (vm.overcommit_memory, kernel.panic, kernel.panic_on_oops): files
//     holding the values it wants are bound over them, so it reads what it
//     expects and never writes the host's.
//   - Its own cgroup root in each cgroup v1 hierarchy (the kubelet's
//     cgroupRoot, with failCgroupV1: false), and a runtime cgroup below it
//     for containerd and its shims, so that Close finds every process the
//     node started by PID (shims and containers outlive containerd) and
//     removes the cgroups after them.
//   - Its own containerd sockets, state, runc root and CNI configuration;
//     kube-proxy in nftables mode with no conntrack tuning (those sysctls
//     are host-wide).
//   - No OOM score below the test's own: the machines this runs on (CI
//     included) withhold CAP_SYS_RESOURCE even from root, so the kubelet
//     and kube-proxy keep oomScoreAdj 0 and containerd clamps what the
//     CRI asks for its containers (restrict_oom_score_adj; the sandbox
//     would get -998, Guaranteed pods -997) to its own.
//
// Images come from docker-archive tarballs imported into the node's
// containerd (there is no registry); the sandbox image is the lab's own.
package kubenode

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// Config describes one node.
type Config struct {
	Name   string // the Kubernetes node name
	NetNS  string // its network namespace
	NodeIP string // --node-ip
	// PodCIDR is the node's pod subnet (the bridge CNI's range);
	// ClusterCIDR covers every node's (kube-proxy's local traffic
	// detection).
	PodCIDR, ClusterCIDR string
	// BinDir holds containerd, containerd-shim-runc-v2, ctr, runc, kubelet,
	// kube-proxy and cni/{bridge,host-local,loopback,portmap}.
	BinDir string
	// Dir is the node's scratch directory (created; removed by Close).
	Dir string
	// CgroupParent is the cgroup (one path for every hierarchy, e.g.
	// "openelb-lab-1234") the node's root is created under.
	CgroupParent string
	// Images are docker-archive tarballs imported into the node's
	// containerd; SandboxImage names the one pods' sandboxes use.
	Images       []string
	SandboxImage string
	// KubeletKubeconfig and ProxyKubeconfig are the kubelet's
	// (system:node:<name>) and kube-proxy's credentials.
	KubeletKubeconfig, ProxyKubeconfig string
	// NodeLabels are passed with --node-labels.
	NodeLabels map[string]string
}

// Node is a running node.
type Node struct {
	cfg        Config
	lab        *netlab.Lab
	mnt        string // the mount namespace's nsfs bind mount
	cgroupRoot string // relative to each hierarchy's mount point
	sock       string

	Containerd, Kubelet, KubeProxy *netlab.Proc
}

// hierarchies are the cgroup v1 controllers the kubelet needs its root in
// (cpu, cpuacct, cpuset, memory, pids, systemd) and the others containers
// are placed in.
var hierarchies = []string{"cpu", "cpuacct", "cpuset", "memory", "pids", "systemd", "devices", "freezer", "blkio"}

const cgroupMount = "/sys/fs/cgroup"

// hiddenPaths are the fixed host paths a node's processes get their own
// copy of inside its mount namespace.
var hiddenPaths = []string{"/run/containerd", "/var/lib/cni", "/var/log/containers", "/run/nri"}

// kernelSettings are what the kubelet's container manager sets (host-wide
// on this kernel) and the values it wants.
var kernelSettings = map[string]string{
	"/proc/sys/vm/overcommit_memory": "1",
	"/proc/sys/kernel/panic":         "10",
	"/proc/sys/kernel/panic_on_oops": "1",
}

// Start brings the node up: its namespaces and cgroups, containerd with
// the images, the kubelet and kube-proxy. The node registers itself (with
// the uninitialized taint of --cloud-provider=external); Start does not
// wait for that. On error everything started is undone.
func Start(ctx context.Context, lab *netlab.Lab, cfg Config) (n *Node, err error) {
	n = &Node{cfg: cfg, lab: lab, cgroupRoot: filepath.Join(cfg.CgroupParent, cfg.Name)}
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("node %s: %w", cfg.Name, err), n.Close())
			n = nil
		}
	}()
	for _, d := range []string{"ns", "containerd", "cni/net.d", "cni/ipam", "kubelet", "pod-logs", "volume-plugins", "hide", "sys"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return n, err
		}
	}
	if err := n.mountNamespace(); err != nil {
		return n, err
	}
	if err := n.cgroups(); err != nil {
		return n, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return n, err
	}
	if err := n.importImages(ctx); err != nil {
		return n, err
	}
	if err := n.StartKubelet(); err != nil {
		return n, err
	}
	if err := n.StartKubeProxy(); err != nil {
		return n, err
	}
	return n, nil
}

// mountNamespace creates the node's persistent mount namespace and
// replaces the fixed paths and kernel settings in it.
func (n *Node) mountNamespace() error {
	n.mnt = filepath.Join(n.cfg.Dir, "ns", "mnt")
	if err := os.WriteFile(n.mnt, nil, 0o600); err != nil {
		return err
	}
	if err := run("unshare", "--mount="+n.mnt, "--propagation", "private", "true"); err != nil {
		n.mnt = ""
		return err
	}
	var script strings.Builder
	for _, p := range hiddenPaths {
		own := filepath.Join(n.cfg.Dir, "hide", p)
		if err := os.MkdirAll(own, 0o755); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mkdir -p %s && mount --bind %s %s\n", p, own, p)
	}
	for _, p := range sortedKeys(kernelSettings) {
		own := filepath.Join(n.cfg.Dir, "sys", strings.ReplaceAll(strings.TrimPrefix(p, "/proc/sys/"), "/", "."))
		if err := os.WriteFile(own, []byte(kernelSettings[p]+"\n"), 0o644); err != nil {
			return err
		}
		fmt.Fprintf(&script, "mount --bind %s %s\n", own, p)
	}
	return run("nsenter", "--mount="+n.mnt, "sh", "-ec", script.String())
}

// cgroups creates the node's cgroup root in every hierarchy (cpuset needs
// its cpus and mems copied from the parent) and the runtime cgroup.
func (n *Node) cgroups() error {
	for _, h := range hierarchies {
		base := filepath.Join(cgroupMount, h)
		if _, err := os.Stat(base); err != nil {
			return fmt.Errorf("cgroup v1 hierarchy %s: %w", h, err)
		}
		parts := strings.Split(filepath.Join(n.cgroupRoot, "runtime"), "/")
		dir := base
		for _, part := range parts {
			parent := dir
			dir = filepath.Join(dir, part)
			if err := os.Mkdir(dir, 0o755); err != nil && !os.IsExist(err) {
				return err
			}
			if h == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					b, err := os.ReadFile(filepath.Join(parent, f))
					if err != nil {
						return err
					}
					if cur, _ := os.ReadFile(filepath.Join(dir, f)); len(bytes.TrimSpace(cur)) == 0 {
						if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
							return fmt.Errorf("%s: %w", filepath.Join(dir, f), err)
						}
					}
				}
			}
		}
	}
	return nil
}

// enter is the command line that runs argv in the node's network and
// mount namespaces; nsenter execs in place, so the PID is argv's own.
func (n *Node) enter(argv ...string) []string {
	return append([]string{"--mount=" + n.mnt, "--net=/run/netns/" + n.cfg.NetNS, "--"}, argv...)
}

func (n *Node) start(name string, argv ...string) (*netlab.Proc, error) {
	return n.lab.Start("", n.cfg.Name+"-"+name, "nsenter", n.enter(argv...)...)
}

func (n *Node) bin(name string) string { return filepath.Join(n.cfg.BinDir, name) }

func (n *Node) startContainerd(ctx context.Context) error {
	d := filepath.Join(n.cfg.Dir, "containerd")
	n.sock = filepath.Join(d, "containerd.sock")
	conf := filepath.Join(d, "config.toml")
	if err := os.WriteFile(conf, []byte(n.containerdConfig()), 0o644); err != nil {
		return err
	}
	p, err := n.start("containerd", n.bin("containerd"), "--config", conf, "--log-level", "info")
	if err != nil {
		return err
	}
	n.Containerd = p
	// containerd and the shims it starts live in the runtime cgroup, so
	// Close finds the shims (which outlive containerd) by PID.
	if err := n.joinCgroup(p.Pid(), "runtime"); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if p.Exited() {
			return fmt.Errorf("containerd exited:\n%s", p.LogTail(20))
		}
		if _, err := n.ctr(ctx, "version"); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("containerd not serving after 30s:\n%s", p.LogTail(20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (n *Node) joinCgroup(pid int, sub string) error {
	for _, h := range hierarchies {
		f := filepath.Join(cgroupMount, h, n.cgroupRoot, sub, "cgroup.procs")
		if err := os.WriteFile(f, []byte(strconv.Itoa(pid)), 0o644); err != nil {
			return fmt.Errorf("moving %d into %s: %w", pid, f, err)
		}
	}
	return nil
}

// containerdConfig is the node's containerd configuration: every path
// and socket its own, the CRI with the lab's sandbox image, the bridge
// CNI and runc with cgroupfs.
func (n *Node) containerdConfig() string {
	d := filepath.Join(n.cfg.Dir, "containerd")
	return fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q

[plugins.'io.containerd.server.v1.grpc']
  address = %[3]q
[plugins.'io.containerd.server.v1.ttrpc']
  address = %[4]q
[plugins.'io.containerd.internal.v1.opt']
  path = %[5]q
[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %[6]q

[plugins.'io.containerd.cri.v1.runtime']
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  cdi_spec_dirs = [%[7]q]
  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = "runc"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = %[11]q
        Root = %[8]q
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%[9]q]
    conf_dir = %[10]q
    max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  disable_tcp_service = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
`, filepath.Join(d, "root"), filepath.Join(d, "state"), n.sock, n.sock+".ttrpc", filepath.Join(d, "opt"),
		n.cfg.SandboxImage, filepath.Join(d, "cdi"), filepath.Join(d, "runc"),
		filepath.Join(n.cfg.BinDir, "cni"), filepath.Join(n.cfg.Dir, "cni", "net.d"), n.bin("runc"))
}

// ctr runs ctr against the node's containerd in the CRI's namespace.
func (n *Node) ctr(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, n.bin("ctr"), append([]string{"--address", n.sock, "--namespace", "k8s.io"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// importImages imports the tarballs, unpacked for the CRI's snapshotter;
// the sandbox image is pinned so the kubelet's image GC never removes it.
func (n *Node) importImages(ctx context.Context) error {
	for _, tar := range n.cfg.Images {
		if _, err := n.ctr(ctx, "images", "import", "--snapshotter", "overlayfs", "--label", "io.cri-containerd.pinned=pinned", tar); err != nil {
			return err
		}
	}
	return nil
}

// StartKubelet (re)starts the kubelet.
func (n *Node) StartKubelet() error {
	if err := os.WriteFile(filepath.Join(n.cfg.Dir, "cni", "net.d", "10-lab.conflist"), []byte(n.cniConfig()), 0o644); err != nil {
		return err
	}
	conf := filepath.Join(n.cfg.Dir, "kubelet.yaml")
	if err := os.WriteFile(conf, []byte(n.kubeletConfig()), 0o644); err != nil {
		return err
	}
	args := []string{n.bin("kubelet"),
		"--config=" + conf,
		"--kubeconfig=" + n.cfg.KubeletKubeconfig,
		"--root-dir=" + filepath.Join(n.cfg.Dir, "kubelet"),
		"--cert-dir=" + filepath.Join(n.cfg.Dir, "kubelet", "pki"),
		"--hostname-override=" + n.cfg.Name,
		"--node-ip=" + n.cfg.NodeIP,
		"--cloud-provider=external",
		"--v=2",
	}
	if len(n.cfg.NodeLabels) > 0 {
		var labels []string
		for _, k := range sortedKeys(n.cfg.NodeLabels) {
			labels = append(labels, k+"="+n.cfg.NodeLabels[k])
		}
		args = append(args, "--node-labels="+strings.Join(labels, ","))
	}
	p, err := n.start("kubelet", args...)
	if err != nil {
		return err
	}
	n.Kubelet = p
	return nil
}

// StartKubeProxy (re)starts kube-proxy.
func (n *Node) StartKubeProxy() error {
	conf := filepath.Join(n.cfg.Dir, "kube-proxy.yaml")
	if err := os.WriteFile(conf, []byte(n.proxyConfig()), 0o644); err != nil {
		return err
	}
	p, err := n.start("kube-proxy", n.bin("kube-proxy"), "--config="+conf, "--hostname-override="+n.cfg.Name, "--v=2")
	if err != nil {
		return err
	}
	n.KubeProxy = p
	return nil
}

func (n *Node) cniConfig() string {
	return fmt.Sprintf(`{"cniVersion": "1.0.0", "name": "lab", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": %q, "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
  {"type": "portmap", "capabilities": {"portMappings": true}}
]}
`, filepath.Join(n.cfg.Dir, "cni", "ipam"), n.cfg.PodCIDR)
}

func (n *Node) kubeletConfig() string {
	return fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /%[1]s
cgroupsPerQOS: true
enforceNodeAllocatable: ["pods"]
containerRuntimeEndpoint: unix://%[2]s
podLogsDir: %[3]s
volumePluginDir: %[4]s
resolvConf: ""
clusterDomain: cluster.local
protectKernelDefaults: true
failSwapOn: false
oomScoreAdj: 0
makeIPTablesUtilChains: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "50Mi"
  nodefs.available: "1%%"
  nodefs.inodesFree: "1%%"
  imagefs.available: "1%%"
  imagefs.inodesFree: "1%%"
serializeImagePulls: false
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
authorization: {mode: Webhook}
rotateCertificates: false
serverTLSBootstrap: false
`, n.cgroupRoot, n.sock, filepath.Join(n.cfg.Dir, "pod-logs"), filepath.Join(n.cfg.Dir, "volume-plugins"))
}

func (n *Node) proxyConfig() string {
	return fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
hostnameOverride: %[1]s
clusterCIDR: %[2]s
detectLocalMode: ClusterCIDR
bindAddress: 0.0.0.0
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection:
  kubeconfig: %[3]s
oomScoreAdj: 0
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, n.cfg.Name, n.cfg.ClusterCIDR, n.cfg.ProxyKubeconfig)
}

// Close stops the node: kube-proxy, the kubelet and containerd, then
// every process left in its cgroups (shims, containers) by PID, then the
// cgroups, the mount namespace (and with it every mount the node made) and
// its directory.
func (n *Node) Close() error {
	var errs []error
	for _, p := range []*netlab.Proc{n.KubeProxy, n.Kubelet, n.Containerd} {
		if p != nil {
			if err := p.Stop(5 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if n.cgroupRoot != "" {
		errs = append(errs, n.killCgroupTree(), n.removeCgroups())
	}
	if n.mnt != "" {
		if err := run("umount", n.mnt); err != nil {
			errs = append(errs, err)
		}
	}
	if os.Getenv("NETLAB_KEEP") == "" {
		if err := os.RemoveAll(n.cfg.Dir); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// killCgroupTree SIGKILLs every process of the node's cgroup tree until
// none is left (a dying shim may still fork).
func (n *Node) killCgroupTree() error {
	root := filepath.Join(cgroupMount, "pids", n.cgroupRoot)
	deadline := time.Now().Add(15 * time.Second)
	for {
		pids := treePIDs(root)
		if len(pids) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("processes %v of node %s survive SIGKILL", pids, n.cfg.Name)
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func treePIDs(root string) []int {
	var pids []int
	_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, _ := os.ReadFile(path)
		for _, f := range strings.Fields(string(b)) {
			if pid, err := strconv.Atoi(f); err == nil {
				pids = append(pids, pid)
			}
		}
		return nil
	})
	return pids
}

// removeCgroups removes the node's cgroups, deepest first, and the parent
// once no other node uses it.
func (n *Node) removeCgroups() error {
	var errs []error
	for _, h := range hierarchies {
		root := filepath.Join(cgroupMount, h, n.cgroupRoot)
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			if err := os.Remove(d); err != nil && !os.IsNotExist(err) {
				errs = append(errs, err)
			}
		}
		_ = os.Remove(filepath.Dir(root)) // fails while another node's root is there
	}
	return errors.Join(errs...)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// ContainerLog returns what a container of a pod on this node logged (its
// current and earlier runs, in the kubelet's pod log directory): the API
// server cannot reach the lab's kubelets, so `kubectl logs` does not work
// here.
func (n *Node) ContainerLog(namespace, pod, container string) (string, error) {
	files, err := filepath.Glob(filepath.Join(n.cfg.Dir, "pod-logs", namespace+"_"+pod+"_*", container, "*.log"))
	if err != nil {
		return "", err
	}
	if len(files) == 0 {
		return "", fmt.Errorf("no log of %s/%s container %s on node %s", namespace, pod, container, n.cfg.Name)
	}
	slices.Sort(files)
	var b strings.Builder
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		b.Write(data)
	}
	return b.String(), nil
}
