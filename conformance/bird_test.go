package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// waitBIRDSession waits until a BIRD leaf's session with the speaker at
// addr is established.
func (b *bgpLab) waitBIRDSession(leaf, addr string) {
	b.t.Helper()
	r := b.topo.BIRD[leaf]
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		up, err := r.Established(ctx, netlab.BIRDProto(addr))
		lastErr = err
		return up, nil
	})
	if err != nil {
		out, _ := r.Birdc(context.Background(), "show", "protocols", "all", netlab.BIRDProto(addr))
		b.t.Fatalf("BIRD %s: session with %s not established (%v):\n%s", leaf, addr, lastErr, out)
	}
}

// waitKernelIn is waitKernel for any router namespace (BIRD leaves).
func (b *bgpLab) waitKernelIn(what, router, ns, prefix string, want ...string) {
	b.t.Helper()
	b.waitHops(what, router+" kernel FIB", func(ctx context.Context) ([]string, error) { return b.net.KernelNextHops(ctx, ns, prefix) }, want)
}

// birdSeedService runs the guide on a lab with BIRD leaves: speakers on
// master1 and worker-p002, worker-p001 in rack leaf1, one Service served
// by every node; it waits for the sessions with the BIRD leaves.
func (b *bgpLab) birdSeedService() {
	b.t.Helper()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.createNginx()
	if err := b.s.ServeNodes(seedVIP, 8080); err != nil {
		b.t.Fatal(err)
	}
}

// TestBIRDLeaf2: seed 000 with BIRD 2 as leaf2 (TCP MD5 from the BgpPeer's
// Secret, ADD-PATH receive): worker-p002's speaker establishes with it,
// BIRD installs the route via worker-p002 and passes it to the FRR spine,
// which ECMPs over the FRR and BIRD leaves; the client reaches every node.
func TestBIRDLeaf2(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{BIRDLeaves: []string{"leaf2"}, Leaf2Password: leaf2Password})
	b.birdSeedService()
	b.waitBIRDSession("leaf2", "192.168.1.2")
	b.waitPeerStatus("leaf2", "worker-p002", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf && s.AdvertisedPaths == 1
	})
	b.waitKernelIn("BIRD leaf2 route", "leaf2", b.topo.Lab.NS("leaf2"), seedPrefix, "192.168.1.2")
	b.waitKernel("FRR leaf1 ECMP", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	b.waitKernel("spine ECMP over the FRR and the BIRD leaf", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	b.reachAll("client through both leaves", seedVIP+":8080")
	out, err := b.topo.BIRD["leaf2"].Routes(context.Background(), seedPrefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BIRD leaf2:\n%s", out)
}

// TestBIRDBothLeaves: both leaves on BIRD 2. leaf1 receives master1's two
// next hops by ADD-PATH and installs an ECMP route over master1 and
// worker-p001; leaf2's session is TCP MD5; the spine ECMPs over both, the
// client reaches every node; a SIGTERM of master1's speaker withdraws its
// paths from BIRD, which then routes to leaf2 through the spine.
func TestBIRDBothLeaves(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{BIRDLeaves: []string{"leaf1", "leaf2"}, Leaf2Password: leaf2Password})
	b.birdSeedService()
	b.waitBIRDSession("leaf1", "192.168.0.3")
	b.waitBIRDSession("leaf2", "192.168.1.2")
	b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf && s.AdvertisedPaths == 2
	})
	b.waitKernelIn("BIRD leaf1 ECMP by ADD-PATH", "leaf1", b.topo.Lab.NS("leaf1"), seedPrefix, "192.168.0.3", "192.168.0.4")
	b.waitKernelIn("BIRD leaf2 route", "leaf2", b.topo.Lab.NS("leaf2"), seedPrefix, "192.168.1.2")
	b.waitKernel("spine ECMP over the BIRD leaves", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	b.reachAll("client through the BIRD leaves", seedVIP+":8080")
	out, err := b.topo.BIRD["leaf1"].Routes(context.Background(), seedPrefix)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Count(out, "via 192.168.0.") < 2 {
		t.Errorf("BIRD leaf1 holds fewer than two paths for %s:\n%s", seedPrefix, out)
	}
	t.Logf("BIRD leaf1:\n%s", out)

	// Withdrawn on SIGTERM, the rack's next hops go from leaf1's kernel:
	// what is left is leaf2's announcement through the spine (once the
	// spine's best path is leaf2's, it passes it to leaf1; while it was
	// leaf1's own it did not, which made an empty FIB only a passing state).
	if err := b.s.Speakers["master1"].Stop(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	b.waitKernelIn("withdrawn from BIRD leaf1, leaf2's route through the spine", "leaf1", b.topo.Lab.NS("leaf1"), seedPrefix, "10.0.1.1")
	b.waitKernel("spine through leaf2 only", b.topo.Spine, seedPrefix, "10.0.2.2")
}

// TestNextHopSelfFRR: an FRR leaf with ADD-PATH receive turned off
// (`neighbor RACK disable-addpath-rx`) would keep one of the speaker's
// third-party next hops and silently send the rack's traffic to one node;
// the speaker sees no ADD-PATH and sends it one path per address with
// itself as next hop instead, and says so in the BgpPeer status. Turned
// back on, the leaf gets both next hops again.
func TestNextHopSelfFRR(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	if err := b.topo.Leaf1.Configure(ctx, fmt.Sprintf("router bgp %d", netlab.Leaf1AS), "address-family ipv4 unicast",
		"neighbor RACK disable-addpath-rx"); err != nil {
		t.Fatal(err)
	}
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.createNginx()
	b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && !s.AddPathNegotiated && s.NextHopSelf && s.AdvertisedPaths == 1
	})
	b.waitPaths("one path, the speaker as next hop", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitKernel("leaf1 via master1 only", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitPeerStatus("leaf2", "worker-p002", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf
	})
	// Both leaves carry it before the client counts (the spine learns
	// leaf1's route after leaf1 installs it).
	b.waitKernel("spine ECMP over both leaves", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	if err := b.s.ServeNodes(seedVIP, 8080); err != nil {
		t.Fatal(err)
	}
	seen := b.spread(seedVIP+":8080", 60)
	if seen["worker-p001"] != 0 || seen["master1"] == 0 || seen["worker-p002"] == 0 {
		t.Errorf("with next-hop-self leaf1's traffic enters master1 only: %v", seen)
	}
	t.Logf("next-hop-self, 60 connections: %v", seen)

	// ADD-PATH receive back on (FRR resets the session to renegotiate).
	if err := b.topo.Leaf1.Configure(ctx, fmt.Sprintf("router bgp %d", netlab.Leaf1AS), "address-family ipv4 unicast",
		"no neighbor RACK disable-addpath-rx"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.topo.Leaf1.Vtysh(ctx, "clear bgp ipv4 unicast 192.168.0.3"); err != nil {
		t.Fatal(err)
	}
	b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf && s.AdvertisedPaths == 2
	})
	b.waitPaths("both next hops by ADD-PATH again", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	b.waitKernel("leaf1 ECMP again", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
}
