package seedlab

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/kubenode"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// The real nodes' pod network: each node a /24 of ClusterCIDR on a bridge,
// routed by static routes (the project ships no CNI): a node reaches its
// rack neighbours' pods directly and the other rack's through its leaf;
// each leaf knows its own nodes' pod subnets and sends the rest to the
// spine, which knows which leaf has which.
const ClusterCIDR = "10.244.0.0/16"

// PodCIDRs are the real nodes' pod subnets.
var PodCIDRs = map[string]string{
	"master1":     "10.244.1.0/24",
	"worker-p001": "10.244.2.0/24",
	"worker-p002": "10.244.3.0/24",
}

// InClusterAPIServerFlags make the API server reachable from pods: Service
// "kubernetes" gets the management address as its endpoint (kube-proxy
// sends 10.96.0.1:443 there) and StartRealNodes forwards that address and
// the API server's port to it.
var InClusterAPIServerFlags = []string{"--advertise-address=" + netlab.MgmtAddr, "--endpoint-reconciler-type=lease"}

// NodeUsers are the static users the control plane must have for the
// real nodes (harness.Options.StaticUsers): a kubelet per node and
// kube-proxy.
func NodeUsers() []harness.StaticUser {
	users := []harness.StaticUser{{Name: "system:kube-proxy"}}
	for _, n := range sortedNodes() {
		users = append(users, harness.StaticUser{Name: "system:node:" + n, Groups: []string{"system:nodes"}})
	}
	return users
}

func sortedNodes() []string { return slices.Sorted(maps.Keys(PodCIDRs)) }

// RealNodesOptions say what the real nodes run.
type RealNodesOptions struct {
	// Images are docker-archive tarballs every node imports;
	// SandboxImage is the pods' sandbox among them.
	Images       []string
	SandboxImage string
	// NodeLabels per node, passed to its kubelet.
	NodeLabels map[string]map[string]string
}

// StartRealNodes runs a kubelet, containerd and kube-proxy in each node's
// namespace (see package kubenode) and routes the pod network. The nodes
// register themselves, tainted uninitialized until the cloud provider
// initializes them. Close stops them.
func (l *Lab) StartRealNodes(ctx context.Context, opts RealNodesOptions) (_ map[string]*kubenode.Node, err error) {
	binDir := filepath.Join(l.CP.BinDir(), "node")
	// Pods reach the API server through Service "kubernetes", whose
	// endpoint is the management address with the API server's own port
	// (InClusterAPIServerFlags).
	u, err := url.Parse(l.CP.APIServerURL)
	if err != nil {
		return nil, err
	}
	if _, err := l.Net.Forward(l.Topo.Mgmt, netlab.MgmtAddr+":"+u.Port(), u.Host); err != nil {
		return nil, fmt.Errorf("in-cluster API forwarder: %w", err)
	}
	if _, err := os.Stat(filepath.Join(binDir, "kubelet")); err != nil {
		return nil, fmt.Errorf("real-node binaries missing (make node-tools): %w", err)
	}
	proxyKubeconfig, err := l.userKubeconfig("system:kube-proxy")
	if err != nil {
		return nil, err
	}
	nodes := map[string]*kubenode.Node{}
	defer func() {
		if err != nil {
			for _, n := range nodes {
				err = errors.Join(err, n.Close())
			}
		}
	}()
	for _, name := range sortedNodes() {
		kubeconfig, err := l.userKubeconfig("system:node:" + name)
		if err != nil {
			return nil, err
		}
		topo := l.Topo.Node(name)
		n, err := kubenode.Start(ctx, l.Net, kubenode.Config{
			Name: name, NetNS: topo.NS, NodeIP: topo.IP,
			PodCIDR: PodCIDRs[name], ClusterCIDR: ClusterCIDR,
			BinDir: binDir, Dir: filepath.Join(l.Net.Dir(), "node-"+name),
			// One parent per lab: labs of concurrent test processes
			// never share cgroups.
			CgroupParent:      "openelb-" + filepath.Base(l.Net.Dir()),
			Images:            opts.Images,
			SandboxImage:      opts.SandboxImage,
			KubeletKubeconfig: kubeconfig, ProxyKubeconfig: proxyKubeconfig,
			NodeLabels: opts.NodeLabels[name],
		})
		if err != nil {
			return nil, err
		}
		nodes[name] = n
	}
	l.Net.OnClose(func() error {
		var errs []error
		for _, n := range nodes {
			errs = append(errs, n.Close())
		}
		return errors.Join(errs...)
	})
	return nodes, l.routePods()
}

// routePods installs the pod network's static routes.
func (l *Lab) routePods() error {
	for _, n := range l.Topo.Nodes {
		for _, o := range l.Topo.Nodes {
			if o.Name == n.Name || o.Leaf != n.Leaf {
				continue // the other rack's pods: default route, via the leaf
			}
			if err := l.Net.IP(n.NS, "route", "add", PodCIDRs[o.Name], "via", o.IP); err != nil {
				return err
			}
		}
	}
	leafUplink := map[string]string{"leaf1": "10.0.1.1", "leaf2": "10.0.2.1"}
	spineDownlink := map[string]string{"leaf1": "10.0.1.2", "leaf2": "10.0.2.2"}
	for _, n := range l.Topo.Nodes {
		leaf := l.Topo.Router(n.Leaf)
		if err := l.Net.IP(leaf.NS, "route", "add", PodCIDRs[n.Name], "via", n.IP); err != nil {
			return err
		}
		if err := l.Net.IP(l.Topo.Spine.NS, "route", "add", PodCIDRs[n.Name], "via", spineDownlink[n.Leaf]); err != nil {
			return err
		}
		for other := range leafUplink {
			if other != n.Leaf {
				if err := l.Net.IP(l.Topo.Router(other).NS, "route", "add", PodCIDRs[n.Name], "via", leafUplink[other]); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// userKubeconfig is a static user's kubeconfig pointed at the management
// network, as processes in node namespaces reach the API server.
func (l *Lab) userKubeconfig(user string) (string, error) {
	src, err := l.CP.UserKubeconfig(user)
	if err != nil {
		return "", err
	}
	return rewriteKubeconfig(src, "https://"+l.Topo.APIServer, filepath.Join(l.Net.Dir(), filepath.Base(src)))
}
