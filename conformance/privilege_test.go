package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/nodeagent/agent"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// The shipped speaker's per-node limits (deploy/rbac/speaker-admission.yaml)
// and where its password Secrets live (deploy/namespace.yaml).
const (
	bgpSecretsNamespace = agent.DefaultSecretsNamespace
	leasePolicy         = "openelb-speaker-leases"
	statusPolicy        = "openelb-speaker-node-status"
	// ccmLease is the CCM's leader Lease (chart value
	// manager.leaderElection.leaseName), in the speakers' namespace.
	ccmLease = "openelb-cloud-controller-manager"
)

// speakerAs is what one node's speaker can do with a pod-bound token of
// the shipped ServiceAccount: the API server sees the ServiceAccount with
// the node-name extra, as it does a DaemonSet pod's.
type speakerAs struct {
	node string
	cs   kubernetes.Interface
	crd  client.Client
}

func newSpeakerAs(t *testing.T, cp *harness.ControlPlane, node string) *speakerAs {
	t.Helper()
	tok, err := cp.NodeBoundToken(context.Background(), deployNamespace, speakerSA, node)
	if err != nil {
		t.Fatal(err)
	}
	return speakerWithToken(t, cp, node, tok)
}

func speakerWithToken(t *testing.T, cp *harness.ControlPlane, node, tok string) *speakerAs {
	t.Helper()
	cfg := cp.TokenConfig(tok)
	c, err := client.New(cfg, client.Options{Scheme: apischeme.New()})
	if err != nil {
		t.Fatal(err)
	}
	return &speakerAs{node: node, cs: kubernetes.NewForConfigOrDie(cfg), crd: c}
}

// TestSpeakerPrivilege installs deploy/ (RBAC and admission policies) and
// checks what one node's speaker may do with a pod-bound token: renew and
// release its own layer-2 Leases but never write another node's holder,
// the CCM's leader Lease or any other Lease; read Secrets in the BgpPeer
// password namespace only; write its own BgpPeer status entries and
// LoadBalancerSpeaker, no other node's. Without the node-name extra (a
// token not bound to a pod) it writes none of these. Then the real
// speaker runs with such a token and the shipped capabilities: it reads
// its password Secret, reports the one it cannot find, writes its status,
// takes a layer-2 Lease and answers ARP, and listens on BGP's port 179.
func TestSpeakerPrivilege(t *testing.T) {
	cp := harness.StartForTest(t, harness.Options{})
	ctx := context.Background()
	deployDir := filepath.Join(repoRoot(t), "deploy")
	kubectl := func(args ...string) {
		t.Helper()
		if out, err := cp.Kubectl(ctx, args...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}
	kubectl("apply", "-f", filepath.Join(deployDir, "namespace.yaml"))
	kubectl("apply", "-k", deployDir)
	kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/bgppeers.network.kubesphere.io",
		"crd/loadbalancerspeakers.network.kubesphere.io", "crd/eips.network.kubesphere.io")
	admin, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := cp.Client().CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	a := newSpeakerAs(t, cp, "node-a")
	unbound, err := cp.ServiceAccountToken(ctx, deployNamespace, speakerSA)
	if err != nil {
		t.Fatal(err)
	}
	noNode := speakerWithToken(t, cp, "node-a", unbound)
	waitPolicies(t, a)

	t.Run("Leases", func(t *testing.T) {
		leases := a.cs.CoordinationV1().Leases(deployNamespace)
		own, err := leases.Create(ctx, lease(election.NodeLeaseName("node-a"), "node-a"), metav1.CreateOptions{})
		wantAllowed(t, "create its own layer-2 Lease", err)
		if err != nil {
			t.FailNow()
		}
		own.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		own.Annotations = map[string]string{election.AnnotationPools: `{"pool-a":{"view":"1"}}`}
		own, err = leases.Update(ctx, own, metav1.UpdateOptions{})
		wantAllowed(t, "renew its own layer-2 Lease", err)
		if err != nil {
			t.FailNow()
		}
		stolen := own.DeepCopy()
		stolen.Spec.HolderIdentity = ptr.To("node-b")
		_, err = leases.Update(ctx, stolen, metav1.UpdateOptions{})
		wantRefused(t, "hand its Lease to node-b", err, leasePolicy)
		cleared := own.DeepCopy()
		cleared.Spec.HolderIdentity = nil
		_, err = leases.Update(ctx, cleared, metav1.UpdateOptions{})
		wantRefused(t, "clear the holder of its Lease", err, leasePolicy)
		_, err = leases.Create(ctx, lease(election.NodeLeaseName("node-b"), "node-b"), metav1.CreateOptions{})
		wantRefused(t, "create node-b's layer-2 Lease", err, leasePolicy)
		_, err = leases.Create(ctx, lease(election.NodeLeaseName("node-b"), "node-a"), metav1.CreateOptions{})
		wantRefused(t, "create node-b's layer-2 Lease in its own name", err, leasePolicy)

		// node-b's Lease: not renewed, emptied or taken over by node-a,
		// whatever holder it writes (a node could otherwise list node-b
		// as a candidate of every pool and silence its addresses).
		theirs, err := cp.Client().CoordinationV1().Leases(deployNamespace).Create(ctx, lease(election.NodeLeaseName("node-b"), "node-b"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		renewed := theirs.DeepCopy()
		renewed.Spec.RenewTime = &metav1.MicroTime{Time: time.Now()}
		_, err = leases.Update(ctx, renewed, metav1.UpdateOptions{})
		wantRefused(t, "renew node-b's Lease", err, leasePolicy)
		taken := theirs.DeepCopy()
		taken.Spec.HolderIdentity = ptr.To("node-a")
		_, err = leases.Update(ctx, taken, metav1.UpdateOptions{})
		wantRefused(t, "take node-b's Lease in its own name", err, leasePolicy)
		_, err = leases.Create(ctx, lease(election.LeasePrefix+"pool-a", "node-a"), metav1.CreateOptions{})
		wantRefused(t, "create a layer-2 Lease that is not its node's", err, leasePolicy)
		err = leases.Delete(ctx, own.Name, metav1.DeleteOptions{})
		wantForbidden(t, "delete its own Lease (RBAC: never)", err)

		// The CCM's leader Lease and any other Lease.
		ccm, err := cp.Client().CoordinationV1().Leases(deployNamespace).Create(ctx, lease(ccmLease, "ccm-leader_1234"), metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		grab := ccm.DeepCopy()
		grab.Spec.HolderIdentity = ptr.To("node-a")
		_, err = leases.Update(ctx, grab, metav1.UpdateOptions{})
		wantRefused(t, "take the CCM's leader Lease", err, leasePolicy)
		_, err = leases.Patch(ctx, ccmLease, types.MergePatchType, []byte(`{"spec":{"holderIdentity":null}}`), metav1.PatchOptions{})
		wantForbidden(t, "patch the CCM's leader Lease", err)
		err = leases.Delete(ctx, ccmLease, metav1.DeleteOptions{})
		wantForbidden(t, "delete the CCM's leader Lease", err)
		_, err = leases.Create(ctx, lease("openelb-other", "node-a"), metav1.CreateOptions{})
		wantRefused(t, "create a Lease outside openelb-layer2-*", err, leasePolicy)
		if got, err := cp.Client().CoordinationV1().Leases(deployNamespace).Get(ctx, ccmLease, metav1.GetOptions{}); err != nil || ptr.Deref(got.Spec.HolderIdentity, "") != "ccm-leader_1234" {
			t.Errorf("the CCM's Lease after the attempts: %v, %v", got, err)
		}

		// Fail closed: the same ServiceAccount without a node.
		_, err = noNode.cs.CoordinationV1().Leases(deployNamespace).Create(ctx, lease(election.NodeLeaseName("node-c"), "node-c"), metav1.CreateOptions{})
		wantRefused(t, "create a layer-2 Lease with a token naming no node", err, leasePolicy)
	})

	t.Run("Secrets", func(t *testing.T) {
		for _, s := range []*v1.Secret{
			{ObjectMeta: metav1.ObjectMeta{Namespace: bgpSecretsNamespace, Name: "bgp-leaf1"}, StringData: map[string]string{"password": "p1"}},
			{ObjectMeta: metav1.ObjectMeta{Namespace: deployNamespace, Name: "sh.helm.release.v1.openelb.v1"}, StringData: map[string]string{"release": "x"}},
		} {
			if _, err := cp.Client().CoreV1().Secrets(s.Namespace).Create(ctx, s, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		_, err := a.cs.CoreV1().Secrets(deployNamespace).List(ctx, metav1.ListOptions{})
		wantForbidden(t, "list Secrets in "+deployNamespace, err)
		_, err = a.cs.CoreV1().Secrets(deployNamespace).Get(ctx, "sh.helm.release.v1.openelb.v1", metav1.GetOptions{})
		wantForbidden(t, "get the Helm release Secret", err)
		_, err = a.cs.CoreV1().Secrets(deployNamespace).Watch(ctx, metav1.ListOptions{})
		wantForbidden(t, "watch Secrets in "+deployNamespace, err)
		l, err := a.cs.CoreV1().Secrets(bgpSecretsNamespace).List(ctx, metav1.ListOptions{})
		wantAllowed(t, "list Secrets in "+bgpSecretsNamespace, err)
		if err == nil && len(l.Items) != 1 {
			t.Errorf("Secrets of %s: %d, want 1", bgpSecretsNamespace, len(l.Items))
		}
		s, err := a.cs.CoreV1().Secrets(bgpSecretsNamespace).Get(ctx, "bgp-leaf1", metav1.GetOptions{})
		wantAllowed(t, "get a BgpPeer password Secret", err)
		if err == nil && string(s.Data["password"]) != "p1" {
			t.Errorf("bgp-leaf1 password %q", s.Data["password"])
		}
		_, err = a.cs.CoreV1().Secrets(bgpSecretsNamespace).Create(ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "x"}}, metav1.CreateOptions{})
		wantForbidden(t, "create a Secret in "+bgpSecretsNamespace, err)
	})

	t.Run("BgpPeerStatus", func(t *testing.T) {
		if err := admin.Create(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf9"},
			Spec: v1alpha2.BgpPeerSpec{Conf: &v1alpha2.PeerConf{PeerAs: 65009, NeighborAddress: "192.0.2.9"}}}); err != nil {
			t.Fatal(err)
		}
		// node-b's entry, as its speaker writes it.
		if err := peerStatus(ctx, admin, "leaf9", "node-b", "ESTABLISHED"); err != nil {
			t.Fatal(err)
		}
		wantAllowed(t, "apply its own entry", peerStatus(ctx, a.crd, "leaf9", "node-a", "ACTIVE"))
		wantAllowed(t, "apply its own entry again", peerStatus(ctx, a.crd, "leaf9", "node-a", "IDLE"))
		wantRefused(t, "apply node-b's entry", peerStatus(ctx, a.crd, "leaf9", "node-b", "IDLE"), statusPolicy)
		wantRefused(t, "add node-c's entry", peerStatus(ctx, a.crd, "leaf9", "node-c", "IDLE"), statusPolicy)
		err := a.crd.Status().Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf9"}},
			client.RawPatch(types.MergePatchType, []byte(`{"status":{"nodesPeerStatus":{"node-b":null}}}`)))
		wantRefused(t, "remove node-b's entry", err, statusPolicy)
		wantRefused(t, "apply its own entry with a token naming no node", peerStatus(ctx, noNode.crd, "leaf9", "node-a", "ACTIVE"), statusPolicy)
		var bp v1alpha2.BgpPeer
		if err := admin.Get(ctx, client.ObjectKey{Name: "leaf9"}, &bp); err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for n, s := range bp.Status.NodesPeerStatus {
			got[n] = s.PeerState.SessionState
		}
		if want := map[string]string{"node-a": "IDLE", "node-b": "ESTABLISHED"}; !maps.Equal(got, want) {
			t.Errorf("leaf9 session states %v, want %v", got, want)
		}
	})

	t.Run("LoadBalancerSpeakers", func(t *testing.T) {
		wantAllowed(t, "create its own LoadBalancerSpeaker", applySpeakerStatus(ctx, a.crd, "node-a", 1))
		wantAllowed(t, "update its own LoadBalancerSpeaker", applySpeakerStatus(ctx, a.crd, "node-a", 2))
		wantRefused(t, "create node-b's LoadBalancerSpeaker", applySpeakerStatus(ctx, a.crd, "node-b", 1), statusPolicy)
		if err := applySpeakerStatus(ctx, admin, "node-b", 5); err != nil {
			t.Fatal(err)
		}
		wantRefused(t, "update node-b's LoadBalancerSpeaker", applySpeakerStatus(ctx, a.crd, "node-b", 0), statusPolicy)
		wantRefused(t, "write its own LoadBalancerSpeaker with a token naming no node", applySpeakerStatus(ctx, noNode.crd, "node-a", 3), statusPolicy)
		var sp v1alpha2.LoadBalancerSpeaker
		if err := admin.Get(ctx, client.ObjectKey{Name: "node-b"}, &sp); err != nil || sp.Status.Paths != 5 {
			t.Errorf("node-b's LoadBalancerSpeaker after the attempts: paths %d, %v", sp.Status.Paths, err)
		}
	})

	t.Run("SpeakerEndToEnd", func(t *testing.T) {
		speakerEndToEnd(t, cp, admin)
	})
}

// speakerEndToEnd runs the real openelb-speaker as node-a, on a layer-2
// segment, with a pod-bound token and the shipped capabilities.
func speakerEndToEnd(t *testing.T, cp *harness.ControlPlane, admin client.Client) {
	ctx := context.Background()
	l := &lab{t: t, cp: cp, cs: cp.Client(), crd: admin}
	n, err := netlab.New("priv")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("network lab cleanup: %v", err)
		}
	})
	u, err := url.Parse(cp.APIServerURL)
	if err != nil {
		t.Fatal(err)
	}
	seg, err := netlab.BuildL2(ctx, n, netlab.L2Options{Nodes: []string{"node-a"}, APIServer: u.Host})
	if err != nil {
		t.Fatalf("building the layer-2 segment: %v", err)
	}
	node := seg.Node("node-a")
	l.setNodeStatus("node-a", true, node.IP4.String())
	l.label("node-a", v1alpha2.LabelSpeaker, v1alpha2.LabelSpeakerValue)
	l.ccm("ccm")

	// BGP: BGP's own port (NET_BIND_SERVICE), a peer whose password is in
	// the BgpPeer Secrets namespace, and one whose Secret is where
	// Secrets lived before (not read any more). Neither router exists
	// (and the client, which dials port 179, is neither: TCP MD5 would
	// drop its SYN).
	if err := admin.Create(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"},
		Spec: v1alpha2.BgpConfSpec{As: 65001, ListenPort: 179}}); err != nil {
		t.Fatal(err)
	}
	if _, err := cp.Client().CoreV1().Secrets(deployNamespace).Create(ctx, &v1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "bgp-leaf2"},
		StringData: map[string]string{"password": "left-behind"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	timers := &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}}
	for _, p := range []*v1alpha2.BgpPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}, Spec: v1alpha2.BgpPeerSpec{Timers: timers,
			Conf: &v1alpha2.PeerConf{PeerAs: 65002, NeighborAddress: "192.168.50.4", AuthPasswordSecretRef: &v1alpha2.SecretKeyRef{Name: "bgp-leaf1", Key: "password"}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "leaf2"}, Spec: v1alpha2.BgpPeerSpec{Timers: timers,
			Conf: &v1alpha2.PeerConf{PeerAs: 65003, NeighborAddress: "192.168.50.5", AuthPasswordSecretRef: &v1alpha2.SecretKeyRef{Name: "bgp-leaf2", Key: "password"}}}},
	} {
		if err := admin.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Layer 2: a pool on the segment and a Service of it.
	l.eip("l2pool", "192.168.50.100-192.168.50.110", func(e *v1alpha2.Eip) {
		e.Spec.Protocol, e.Spec.Interface = v1alpha2.ProtocolLayer2, netlab.L2Interface
	})
	l.create(newService("default", "web", annotate(v1alpha2.AnnotationEip, "l2pool")))
	ip := l.waitIPs("default", "web", 1, ipTimeout)[0]

	kc, err := cp.NodeBoundKubeconfig(ctx, deployNamespace, speakerSA, "node-a")
	if err != nil {
		t.Fatal(err)
	}
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		t.Fatal(err)
	}
	setpriv, args, err := harness.SpeakerCommand(bin, "--kubeconfig="+kc, "--node-name=node-a", "--namespace="+deployNamespace,
		"--health-address="+speakerHealth, "--v=2")
	if err != nil {
		t.Fatal(err)
	}
	sp, err := n.Start(node.NS, "speaker-node-a", setpriv, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- speaker log tail ---\n%s", sp.LogTail(60))
		}
	})

	caps, err := harness.SpeakerCapabilities(filepath.Join(repoRoot(t), "deploy"))
	if err != nil {
		t.Fatal(err)
	}
	want, err := harness.CapabilityMask(caps)
	if err != nil {
		t.Fatal(err)
	}
	var eff, bnd uint64
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		// ip netns exec, then setpriv, exec the speaker in turn: same PID.
		eff, bnd, err = harness.ProcessCapabilities(sp.Pid())
		return err == nil && eff == want && bnd == want, nil
	})
	if err != nil {
		t.Errorf("speaker capabilities: effective %#x, bounding %#x, want %#x (%v)", eff, bnd, want, caps)
	}

	// Its status entry with the password read, and the missing Secret
	// reported where it was looked for.
	waitPeerEntry(t, admin, "leaf1", "node-a", func(ps v1alpha2.PeerState) bool {
		return ps.SessionState != "" && ps.SessionState != "unconfigured" && ps.Message == ""
	})
	waitPeerEntry(t, admin, "leaf2", "node-a", func(ps v1alpha2.PeerState) bool {
		return strings.Contains(ps.Message, `no Secret "bgp-leaf2" in namespace `+bgpSecretsNamespace)
	})
	// Its layer-2 Lease, in its name, listing the pool, and ARP answered
	// with its MAC.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var le coordinationv1.Lease
		err := admin.Get(ctx, client.ObjectKey{Namespace: deployNamespace, Name: election.NodeLeaseName("node-a")}, &le)
		return err == nil && ptr.Deref(le.Spec.HolderIdentity, "") == "node-a" && strings.Contains(le.Annotations[election.AnnotationPools], `"l2pool"`), nil
	})
	if err != nil {
		t.Fatalf("Lease %s: not held by node-a, or not listing l2pool", election.NodeLeaseName("node-a"))
	}
	var macs []string
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		got, _, err := seg.Arping(ctx, ip, 2)
		if err != nil {
			return false, err
		}
		macs = macs[:0]
		for _, m := range got {
			macs = append(macs, m.String())
		}
		return len(macs) > 0, nil
	})
	if err != nil || slices.ContainsFunc(macs, func(m string) bool { return m != node.MAC.String() }) {
		t.Errorf("arping %s: MACs %v (%v), want node-a's %s", ip, macs, err, node.MAC)
	}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var s v1alpha2.LoadBalancerSpeaker
		if err := admin.Get(ctx, client.ObjectKey{Name: "node-a"}, &s); err != nil {
			return false, nil
		}
		return slices.ContainsFunc(s.Status.Layer2, func(e v1alpha2.SpeakerLayer2) bool { return e.Pool == "l2pool" && e.Answering }), nil
	})
	if err != nil {
		t.Errorf("LoadBalancerSpeaker node-a does not report answering for l2pool")
	}
	// Listening on 179 inside its namespace.
	c, err := netlab.DialTCP(seg.Client, netip.AddrPortFrom(node.IP4, 179).String(), 2*time.Second)
	if err != nil {
		t.Errorf("BGP port 179 of node-a: %v", err)
	} else {
		_ = c.Close()
	}
	// SIGTERM: it releases its pools (writes its Lease listing none) so
	// the other nodes would take its addresses at once.
	if err := sp.Stop(10 * time.Second); err != nil {
		t.Errorf("stopping the speaker: %v", err)
	}
	var le coordinationv1.Lease
	if err := admin.Get(ctx, client.ObjectKey{Namespace: deployNamespace, Name: election.NodeLeaseName("node-a")}, &le); err != nil || le.Annotations[election.AnnotationPools] != "{}" {
		t.Errorf("Lease %s after SIGTERM: pools %q (%v), want none", election.NodeLeaseName("node-a"), le.Annotations[election.AnnotationPools], err)
	}
	for _, s := range []string{"forbidden", "denied request"} {
		if strings.Contains(strings.ToLower(sp.Log()), s) {
			t.Errorf("the speaker was refused something (%q):\n%s", s, grepLog(sp.LogPath, s))
		}
	}
}

// waitPolicies waits until the API server enforces the admission
// policies (they take effect a moment after they are created): a dry run
// of what they refuse, as node-a.
func waitPolicies(t *testing.T, a *speakerAs) {
	t.Helper()
	dry := metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}}
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := a.cs.CoordinationV1().Leases(deployNamespace).Create(ctx, lease("openelb-policy-probe", a.node), dry)
		if !strings.Contains(fmt.Sprint(err), leasePolicy) {
			return false, nil
		}
		sp := &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: "policy-probe"}}
		err = a.crd.Create(ctx, sp, client.DryRunAll)
		return strings.Contains(fmt.Sprint(err), statusPolicy), nil
	})
	if err != nil {
		t.Fatalf("the speaker admission policies are not enforced after 30s")
	}
}

func lease(name, holder string) *coordinationv1.Lease {
	now := metav1.NewMicroTime(time.Now())
	return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: coordinationv1.LeaseSpec{
		HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](2), AcquireTime: &now, RenewTime: &now,
	}}
}

// peerStatus applies node's entry of BgpPeer name's status as its speaker
// does (server-side apply, one field manager per node).
func peerStatus(ctx context.Context, c client.Client, name, node, state string) error {
	raw, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(), "kind": "BgpPeer",
		"metadata": map[string]any{"name": name},
		"status":   map[string]any{"nodesPeerStatus": map[string]any{node: map[string]any{"peerState": map[string]any{"sessionState": state}}}},
	})
	if err != nil {
		return err
	}
	return c.Status().Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.ApplyPatchType, raw),
		client.FieldOwner("openelb-speaker/"+node), client.ForceOwnership)
}

// applySpeakerStatus applies node's LoadBalancerSpeaker as its speaker does.
func applySpeakerStatus(ctx context.Context, c client.Client, node string, paths int32) error {
	raw, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(), "kind": "LoadBalancerSpeaker",
		"metadata": map[string]any{"name": node},
		"status":   map[string]any{"paths": paths},
	})
	if err != nil {
		return err
	}
	return c.Patch(ctx, &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: node}}, client.RawPatch(types.ApplyPatchType, raw),
		client.FieldOwner("openelb-speaker/"+node), client.ForceOwnership)
}

// waitPeerEntry waits until node's entry of BgpPeer name satisfies ok.
func waitPeerEntry(t *testing.T, c client.Client, name, node string, ok func(v1alpha2.PeerState) bool) {
	t.Helper()
	var got v1alpha2.PeerState
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var bp v1alpha2.BgpPeer
		if err := c.Get(ctx, client.ObjectKey{Name: name}, &bp); err != nil {
			return false, nil
		}
		got = bp.Status.NodesPeerStatus[node].PeerState
		return ok(got), nil
	})
	if err != nil {
		t.Errorf("BgpPeer %s, entry of %s: %+v", name, node, got)
	}
}

func wantAllowed(t *testing.T, what string, err error) {
	t.Helper()
	if err != nil {
		t.Errorf("%s: %v, want allowed", what, err)
	}
}

// wantRefused wants err to be policy's refusal.
func wantRefused(t *testing.T, what string, err error, policy string) {
	t.Helper()
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "'"+policy+"'") {
		t.Errorf("%s: %v, want refused by ValidatingAdmissionPolicy %s", what, err, policy)
	}
}

// wantForbidden wants err to be a refusal (RBAC's or a policy's).
func wantForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: %v, want Forbidden", what, err)
	}
}
