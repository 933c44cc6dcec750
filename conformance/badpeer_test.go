package conformance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// rackPeer is a BgpPeer for the speakers of rack leaf1.
func rackPeer(name, addr string, as uint32) *v1alpha2.BgpPeer {
	return &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.BgpPeerSpec{
		Conf:         &v1alpha2.PeerConf{PeerAs: as, NeighborAddress: addr},
		Timers:       &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}},
		NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: "leaf1"}},
	}}
}

// waitSpeakerProblem waits until node's LoadBalancerSpeaker lists (or no
// longer lists) a problem of object with reason, and returns it.
func (b *bgpLab) waitSpeakerProblem(node, object, reason string, present bool) v1alpha2.SpeakerProblem {
	b.t.Helper()
	var got v1alpha2.LoadBalancerSpeakerStatus
	var found v1alpha2.SpeakerProblem
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
		var sp v1alpha2.LoadBalancerSpeaker
		if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
			return false, nil
		}
		got = sp.Status
		i := slices.IndexFunc(got.Problems, func(p v1alpha2.SpeakerProblem) bool { return p.Object == object && p.Reason == reason })
		if i >= 0 {
			found = got.Problems[i]
		}
		return (i >= 0) == present, nil
	})
	if err != nil {
		b.t.Fatalf("LoadBalancerSpeaker %s problems %+v: want a %s problem of %s: %v", node, got.Problems, reason, object, present)
	}
	return found
}

// TestBadBgpPeerDoesNotFreeze: BgpPeers the speaker cannot use (one with
// the address of the rack's working BgpPeer, one whose password Secret does
// not exist) sit next to the good one from the start. The speaker reports
// each, in its entry of the BgpPeer's status and in its
// LoadBalancerSpeaker, and keeps doing everything else: Services created
// and deleted afterwards are announced and withdrawn at the real FRR leaf.
// Fixed, the duplicate is configured and its problem clears. (Before, the
// duplicate made GoBGP refuse the whole configuration: nothing was
// announced, nothing said why.)
func TestBadBgpPeerDoesNotFreeze(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	// "leaf1" sorts before "leaf1-copy": leaf1 keeps the session.
	dup := rackPeer("leaf1-copy", netlab.Leaf1Addr, netlab.Leaf1AS)
	noSecret := rackPeer("leaf1-nosecret", "192.168.0.99", 65199)
	noSecret.Spec.Conf.AuthPasswordSecretRef = &v1alpha2.SecretKeyRef{Name: "no-such-secret"}
	for _, p := range []*v1alpha2.BgpPeer{dup, noSecret} {
		if err := b.crd.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	b.startSpeaker("master1")
	b.waitSession("the good BgpPeer's session", b.topo.Leaf1, "192.168.0.3", true)

	b.createNginx()
	b.waitPaths("announced next to bad BgpPeers", b.topo.Leaf1, seedPrefix, "192.168.0.3")

	// Each bad BgpPeer says why, under master1's key, and in master1's report.
	st := b.waitPeerStatus("leaf1-copy", "master1", func(s v1alpha2.PeerState) bool { return s.SessionState == "unconfigured" })
	if !strings.Contains(st.Message, "spec.conf.neighborAddress "+netlab.Leaf1Addr+" is also that of BgpPeer leaf1") {
		t.Errorf("leaf1-copy status message %q, want it to name the field and the BgpPeer used", st.Message)
	}
	st = b.waitPeerStatus("leaf1-nosecret", "master1", func(s v1alpha2.PeerState) bool { return s.SessionState == "unconfigured" })
	if !strings.Contains(st.Message, "spec.conf.authPasswordSecretRef (Secret no-such-secret, key password)") {
		t.Errorf("leaf1-nosecret status message %q, want it to name the field and the Secret", st.Message)
	}
	b.waitSpeakerProblem("master1", "BgpPeer/leaf1-copy", "BgpPeerDuplicate", true)
	b.waitSpeakerProblem("master1", "BgpPeer/leaf1-nosecret", "BgpPeerInvalid", true)
	b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool { return s.SessionState == "established" && s.Message == "" })

	// Not frozen: later changes reach the router.
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, newService("default", "second"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	second := b.waitAddress("default", "second")
	b.waitPaths("a Service created after the bad BgpPeers", b.topo.Leaf1, second+"/32", "192.168.0.3")
	if err := b.cs.CoreV1().Services("default").Delete(ctx, "nginx", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b.waitPaths("a Service deleted after the bad BgpPeers", b.topo.Leaf1, seedPrefix)

	// Fixed (leaf2's address, multihop through the spine, as leaf2
	// accepts from rack leaf1's subnet): configured, the problem gone.
	var fixed v1alpha2.BgpPeer
	if err := b.crd.Get(ctx, client.ObjectKey{Name: "leaf1-copy"}, &fixed); err != nil {
		t.Fatal(err)
	}
	fixed.Spec.Conf.NeighborAddress, fixed.Spec.Conf.PeerAs = netlab.Leaf2Addr, netlab.Leaf2AS
	fixed.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true, MultihopTtl: 4}
	if err := b.crd.Update(ctx, &fixed); err != nil {
		t.Fatal(err)
	}
	b.waitSession("the fixed BgpPeer's session", b.topo.Leaf2, "192.168.0.3", true)
	b.waitPaths("announced to the fixed BgpPeer", b.topo.Leaf2, second+"/32", "192.168.0.3")
	b.waitPeerStatus("leaf1-copy", "master1", func(s v1alpha2.PeerState) bool { return s.SessionState == "established" && s.Message == "" })
	b.waitSpeakerProblem("master1", "BgpPeer/leaf1-copy", "BgpPeerDuplicate", false)
	b.waitSpeakerProblem("master1", "BgpPeer/leaf1-nosecret", "BgpPeerInvalid", true)
	if log := b.s.Speakers["master1"].Log(); !strings.Contains(log, "BgpPeer/leaf1-copy") || !strings.Contains(log, "BgpPeer/leaf1-nosecret") {
		t.Errorf("the speaker's log does not name the bad BgpPeers")
	}
}
