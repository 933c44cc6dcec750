// Package seedlab sets up OpenELB's multi-router guide (seed 000) against a
// running control plane: the FRR leaf/spine network of package netlab, the
// guide's Node objects and labels, the BgpConf, BgpPeers (one per rack,
// selected by nodeSelector) and address pool, and the real openelb-speaker
// in the nodes' namespaces. The conformance suite, `make demo` and
// `make bench` share it.
package seedlab

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// Namespace of the speakers (their layer-2 Leases live there).
const Namespace = harness.CCMNamespace

// SecretsNamespace holds the BgpPeer password Secrets (deploy/namespace.yaml,
// the speakers' default --bgp-secrets-namespace).
const SecretsNamespace = "openelb-bgp-secrets"

// SpeakerHealthAddr is where speakers serve /healthz and /metrics, on each
// node namespace's own loopback.
const SpeakerHealthAddr = "127.0.0.1:10290"

// GuideCommands are the guide's labelling commands, verbatim (the guide
// prints the two rack commands on one line).
var GuideCommands = []string{
	"kubectl label --overwrite nodes master1 worker-p002 lb.kubesphere.io/v1alpha1=openelb",
	"kubectl label --overwrite nodes master1 openelb.kubesphere.io/rack=leaf1",
	"kubectl label --overwrite nodes worker-p002 openelb.kubesphere.io/rack=leaf2",
}

// Options tune the lab.
type Options struct {
	// Leaf2Password puts TCP MD5 on leaf2's speaker sessions; the leaf2
	// BgpPeer then reads it from a Secret.
	Leaf2Password string
	// BFD on leaf1's speaker sessions (router and BgpPeer).
	BFD bool
	// BFDIntervalMs is the BgpPeer's BFD transmit and receive interval
	// (detection: three missed); default 100.
	BFDIntervalMs uint32
	// DualStack gives every node, router and segment an IPv6 address too
	// (netlab.Seed000Options.DualStack); nodes then report both
	// InternalIPs.
	DualStack bool
	// BIRDLeaves run these leaves on BIRD 2 (netlab.Seed000Options).
	BIRDLeaves []string
	// SpeakerKubeconfig is the kubeconfig the speakers use (its server is
	// rewritten to the management network); default: a token of the
	// shipped openelb-speaker ServiceAccount bound by deploy/rbac.
	SpeakerKubeconfig string
}

// Lab is the running seed-000 lab.
type Lab struct {
	CP   *harness.ControlPlane
	CS   kubernetes.Interface
	CRD  client.Client
	Net  *netlab.Lab
	Topo *netlab.Seed000
	// NodeKubeconfig is what speakers in node namespaces use.
	NodeKubeconfig string
	Speakers       map[string]*netlab.Proc

	opts Options
	runs map[string]int
}

// New builds the network and the nodes' kubeconfig. Close removes it.
func New(ctx context.Context, cp *harness.ControlPlane, opts Options) (*Lab, error) {
	crd, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return nil, err
	}
	n, err := netlab.New("oe")
	if err != nil {
		return nil, err
	}
	l := &Lab{CP: cp, CS: cp.Client(), CRD: crd, Net: n, Speakers: map[string]*netlab.Proc{}, opts: opts, runs: map[string]int{}}
	u, err := url.Parse(cp.APIServerURL)
	if err != nil {
		_ = n.Close()
		return nil, err
	}
	l.Topo, err = netlab.BuildSeed000(ctx, n, netlab.Seed000Options{APIServer: u.Host, Leaf2Password: opts.Leaf2Password, BFD: opts.BFD, DualStack: opts.DualStack, BIRDLeaves: opts.BIRDLeaves})
	if err != nil {
		_ = n.Close()
		return nil, fmt.Errorf("building the seed-000 network: %w", err)
	}
	src := opts.SpeakerKubeconfig
	if src == "" {
		// The shipped ServiceAccount and RBAC: a permission the speaker
		// lacks (or should not have) shows up in every lab run.
		if src, err = SpeakerKubeconfig(ctx, cp); err != nil {
			_ = n.Close()
			return nil, err
		}
	}
	l.NodeKubeconfig, err = rewriteKubeconfig(src, "https://"+l.Topo.APIServer, filepath.Join(n.Dir(), "node.kubeconfig"))
	if err != nil {
		_ = n.Close()
		return nil, err
	}
	return l, nil
}

// Close stops the speakers and routers and removes the namespaces.
func (l *Lab) Close() error { return l.Net.Close() }

// SpeakerKubeconfig applies the shipped speaker ServiceAccount and RBAC
// (deploy/namespace.yaml, deploy/rbac/speaker.yaml) and returns a
// kubeconfig with a token of that ServiceAccount.
func SpeakerKubeconfig(ctx context.Context, cp *harness.ControlPlane) (string, error) {
	root, err := harness.RepoRoot()
	if err != nil {
		return "", err
	}
	if out, err := cp.Kubectl(ctx, "apply", "-f", filepath.Join(root, "deploy", "namespace.yaml"), "-f", filepath.Join(root, "deploy", "rbac", "speaker.yaml")); err != nil {
		return "", fmt.Errorf("applying the speaker's RBAC: %w\n%s", err, out)
	}
	return cp.ServiceAccountKubeconfig(ctx, Namespace, "openelb-speaker")
}

// rewriteKubeconfig points a kubeconfig at the management network address
// of the API server; the serving certificate is issued for 127.0.0.1,
// hence tls-server-name.
func rewriteKubeconfig(src, server, dst string) (string, error) {
	cfg, err := clientcmd.LoadFromFile(src)
	if err != nil {
		return "", err
	}
	for _, c := range cfg.Clusters {
		c.Server = server
		c.TLSServerName = "127.0.0.1"
	}
	if err := clientcmd.WriteToFile(*cfg, dst); err != nil {
		return "", err
	}
	return dst, nil
}

// RegisterNodes creates the Node objects as kubelets would: Ready, with
// their InternalIP, no OpenELB labels.
func (l *Lab) RegisterNodes(ctx context.Context) error {
	for _, n := range l.Topo.Nodes {
		if _, err := l.CS.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if err := l.SetNodeReady(ctx, n.Name, true); err != nil {
			return err
		}
	}
	return nil
}

// SetNodeReady writes the Ready condition and InternalIP a kubelet would.
func (l *Lab) SetNodeReady(ctx context.Context, name string, ready bool) error {
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	node := l.Topo.Node(name)
	addrs := []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: node.IP}}
	if node.IP6 != "" {
		addrs = append(addrs, v1.NodeAddress{Type: v1.NodeInternalIP, Address: node.IP6})
	}
	addrs = append(addrs, v1.NodeAddress{Type: v1.NodeHostName, Address: name})
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := l.CS.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		n.Status.Addresses = addrs
		_, err = l.CS.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// Kubectl runs a command line verbatim, as a user would type it.
func (l *Lab) Kubectl(ctx context.Context, line string) error {
	args := strings.Fields(strings.TrimPrefix(line, "kubectl "))
	out, err := l.CP.Kubectl(ctx, args...)
	if err != nil {
		return fmt.Errorf("%s: %w\n%s", line, err, out)
	}
	return nil
}

// Configure creates the BgpConf (AS per rack), the BgpPeers (one per rack,
// by nodeSelector; leaf2's password from a Secret when set; BFD on leaf1
// when set) and the default pool of the guide (172.22.0.2 first).
func (l *Lab) Configure(ctx context.Context, pool string) error {
	if err := l.CRD.Create(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha2.BgpConfSpec{As: 65000, AsPerRack: map[string]v1alpha2.ASN{"leaf1": 65001, "leaf2": 65002}}}); err != nil {
		return err
	}
	peer := func(name, addr string, as uint32) *v1alpha2.BgpPeer {
		return &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.BgpPeerSpec{
			Conf:         &v1alpha2.PeerConf{PeerAs: as, NeighborAddress: addr},
			Timers:       &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: name}},
		}}
	}
	leaf1 := peer("leaf1", netlab.Leaf1Addr, netlab.Leaf1AS)
	if l.opts.BFD {
		iv := l.opts.BFDIntervalMs
		if iv == 0 {
			iv = 100
		}
		leaf1.Spec.Bfd = &v1alpha2.Bfd{Enabled: true, DetectMultiplier: 3, DesiredMinTxIntervalMs: iv, RequiredMinRxIntervalMs: iv}
	}
	leaf2 := peer("leaf2", netlab.Leaf2Addr, netlab.Leaf2AS)
	// A speaker relabelled into rack leaf2 from leaf1's segment reaches
	// leaf2 through leaf1 and the spine.
	leaf2.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true, MultihopTtl: 4}
	if l.opts.Leaf2Password != "" {
		if _, err := l.CS.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: SecretsNamespace}},
			metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		if _, err := l.CS.CoreV1().Secrets(SecretsNamespace).Create(ctx, &v1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: "leaf2-bgp"},
			StringData: map[string]string{"password": l.opts.Leaf2Password},
		}, metav1.CreateOptions{}); err != nil {
			return err
		}
		leaf2.Spec.Conf.AuthPasswordSecretRef = &v1alpha2.SecretKeyRef{Name: "leaf2-bgp", Key: "password"}
	}
	for _, p := range []*v1alpha2.BgpPeer{leaf1, leaf2} {
		if err := l.CRD.Create(ctx, p); err != nil {
			return err
		}
	}
	return l.CRD.Create(ctx, &v1alpha2.Eip{
		ObjectMeta: metav1.ObjectMeta{Name: "eip-sample-pool", Annotations: map[string]string{v1alpha2.AnnotationDefaultEip: "true"}},
		Spec:       v1alpha2.EipSpec{Address: v1alpha2.AddressRange(pool)},
	})
}

// StartSpeaker runs openelb-speaker inside the node's namespace.
func (l *Lab) StartSpeaker(node string, extra ...string) (*netlab.Proc, error) {
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		return nil, err
	}
	n := l.Topo.Node(node)
	if n == nil {
		return nil, fmt.Errorf("no node %q in the lab", node)
	}
	l.runs[node]++
	// With the shipped DaemonSet's capabilities only.
	cmd, args, err := harness.SpeakerCommand(bin, append([]string{"--kubeconfig=" + l.NodeKubeconfig, "--node-name=" + node, "--namespace=" + Namespace,
		"--health-address=" + SpeakerHealthAddr}, extra...)...)
	if err != nil {
		return nil, err
	}
	p, err := l.Net.Start(n.NS, fmt.Sprintf("speaker-%s-%d", node, l.runs[node]), cmd, args...)
	if err != nil {
		return nil, err
	}
	l.Speakers[node] = p
	return p, nil
}

// ServeNodes makes every node accept vip (on its loopback, as kube-proxy's
// IPVS dummy interface would) and answer TCP on port with its node name,
// as a backend would.
func (l *Lab) ServeNodes(vip string, port int) error {
	addr, listen := []string{"addr", "add", vip + "/32", "dev", "lo"}, fmt.Sprintf("0.0.0.0:%d", port)
	if strings.Contains(vip, ":") {
		// The address itself: an IPv6 wildcard would take IPv4 too.
		// nodad: an IPv6 address is tentative until duplicate address
		// detection ends, and binding it fails meanwhile (a cold CI run
		// hit "cannot assign requested address").
		addr, listen = []string{"addr", "add", vip + "/128", "dev", "lo", "nodad"}, net.JoinHostPort(vip, strconv.Itoa(port))
	}
	for _, n := range l.Topo.Nodes {
		if err := l.Net.IP(n.NS, addr...); err != nil {
			return err
		}
		ln, err := l.Net.ListenTCP(n.NS, listen)
		if err != nil {
			return err
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				_, _ = io.WriteString(c, n.Name)
				_ = c.Close()
			}
		}()
	}
	return nil
}

// Request opens one TCP connection from the client to addr and returns
// the name of the node that answered.
func (l *Lab) Request(addr string) (string, error) {
	c, err := netlab.DialTCP(l.Topo.Client, addr, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("client connect to %s: %w", addr, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	name, err := io.ReadAll(c)
	if err != nil {
		return "", fmt.Errorf("reading from %s: %w", addr, err)
	}
	return string(name), nil
}

// SpeakerRequests reads rest_client_requests_total (all verbs and codes)
// from a speaker's metrics endpoint inside its node's namespace.
func (l *Lab) SpeakerRequests(ctx context.Context, node string) (float64, error) {
	ns := l.Topo.Node(node).NS
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
			return netlab.DialTCP(ns, addr, 2*time.Second)
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+SpeakerHealthAddr+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, fmt.Errorf("speaker metrics of %s: %w", node, err)
	}
	defer resp.Body.Close()
	var total float64
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "rest_client_requests_total{") {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total += v
		}
	}
	return total, sc.Err()
}
