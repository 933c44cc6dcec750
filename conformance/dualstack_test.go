package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// The IPv6 pool of the dual-stack lab, and the address its first Service
// gets.
const (
	seedPool6   = "fd00:172:22::2-fd00:172:22::10"
	seedVIP6    = "fd00:172:22::2"
	seedPrefix6 = seedVIP6 + "/128"
)

// waitPeerPaths waits until r holds, for prefix, paths from exactly the
// peers in want (by address), each with the next hops listed for it.
func (b *bgpLab) waitPeerPaths(what string, r *netlab.FRR, prefix string, want map[string][]string) {
	b.t.Helper()
	var got map[string][]string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		paths, err := r.Paths(ctx, prefix)
		if err != nil {
			return false, nil
		}
		got = map[string][]string{}
		for _, p := range paths {
			if a, err := netip.ParseAddr(p.Peer); err == nil && (netlab.SpeakerRange.Contains(a) || netlab.SpeakerRange6.Contains(a)) {
				got[p.Peer] = append(got[p.Peer], p.NextHop)
			}
		}
		for k := range got {
			slices.Sort(got[k])
		}
		for k := range want {
			slices.Sort(want[k])
		}
		if len(got) != len(want) {
			return false, nil
		}
		for k, v := range want {
			if !slices.Equal(got[k], v) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		out, _ := r.Vtysh(context.Background(), "show bgp ipv6 unicast summary", "show bgp ipv6 unicast")
		b.t.Logf("%s:\n%s", r.Name, out)
		b.t.Fatalf("%s: %s holds %v for %s, want %v", what, r.Name, got, prefix, want)
	}
	b.t.Logf("%s: %s holds %v", what, r.Name, got)
}

// waitKernelCount waits until the router's kernel route to prefix has n
// next hops (the spine's IPv6 next hops are the leaves' link-local
// addresses, which the test does not know).
func (b *bgpLab) waitKernelCount(what string, r *netlab.FRR, prefix string, n int) []string {
	b.t.Helper()
	var got []string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		got, err = b.net.KernelNextHops(ctx, r.NS, prefix)
		return err == nil && len(got) == n, nil
	})
	if err != nil {
		b.t.Fatalf("%s: %s kernel route to %s has next hops %v, want %d", what, r.Name, prefix, got, n)
	}
	return got
}

// reachAll opens connections from the client to addr until every node
// answered (at most 200).
func (b *bgpLab) reachAll(what, addr string) {
	b.t.Helper()
	seen := map[string]int{}
	for range 200 {
		node, err := b.s.Request(addr)
		if err != nil {
			b.t.Fatalf("%s: %v", what, err)
		}
		seen[node]++
		if len(seen) == len(b.topo.Nodes) {
			break
		}
	}
	if len(seen) != len(b.topo.Nodes) {
		b.t.Fatalf("%s: connections to %s reached only %v", what, addr, seen)
	}
	b.t.Logf("%s: %v", what, seen)
}

func familiesOnly(afi string) []*v1alpha2.AfiSafi {
	return []*v1alpha2.AfiSafi{{Config: &v1alpha2.AfiSafiConfig{Family: &v1alpha2.Family{Afi: afi, Safi: "unicast"}, Enabled: true}}}
}

// TestDualStackBGP: seed 000 with IPv6 on every segment and a dual-stack
// Service. First the IPv6 address rides the speakers' IPv4 sessions
// (MP-BGP: IPv6 NLRI with the nodes' global IPv6 next hops, RFC 4760 and
// RFC 2545), then IPv6 BgpPeers carry it on IPv6 sessions while the IPv4
// peers are limited to IPv4 by afiSafis. Either way leaf1 holds an ECMP
// /128 over master1's and worker-p001's IPv6 addresses by ADD-PATH, the
// spine ECMPs over both leaves, and the client reaches every node over
// IPv6.
func TestDualStackBGP(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{DualStack: true})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	if err := b.crd.Create(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "eip-v6-pool"}, Spec: v1alpha2.EipSpec{Address: seedPool6}}); err != nil {
		t.Fatal(err)
	}
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.waitSession("IPv4 session", b.topo.Leaf1, "192.168.0.3", true)
	svc := newService("default", "nginx", withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol),
		annotate(v1alpha2.AnnotationEip, "eip-sample-pool,eip-v6-pool"))
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	ips := b.lab.waitIPs("default", "nginx", 2, 30*time.Second)
	if ips[0].String() != seedVIP || ips[1].String() != seedVIP6 {
		t.Fatalf("dual-stack Service got %v, want %s and %s", ips, seedVIP, seedVIP6)
	}
	if err := b.s.ServeNodes(seedVIP6, 8080); err != nil {
		t.Fatal(err)
	}
	if err := b.s.ServeNodes(seedVIP, 8080); err != nil {
		t.Fatal(err)
	}

	// IPv6 NLRI over the IPv4 sessions: both families on one session per
	// speaker (no afiSafis: every unicast family).
	b.waitPeerPaths("IPv6 over the IPv4 session", b.topo.Leaf1, seedPrefix6, map[string][]string{"192.168.0.3": {"fd00:168::3", "fd00:168::4"}})
	b.waitKernel("leaf1 IPv6 ECMP over both nodes", b.topo.Leaf1, seedPrefix6, "fd00:168::3", "fd00:168::4")
	b.waitPeerPaths("leaf2, IPv6 over IPv4", b.topo.Leaf2, seedPrefix6, map[string][]string{"192.168.1.2": {"fd00:168:1::2"}})
	t.Logf("spine IPv6 ECMP over both leaves: %v", b.waitKernelCount("spine IPv6 ECMP", b.topo.Spine, seedPrefix6, 2))
	b.waitKernel("IPv4 alongside", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	b.reachAll("client over IPv6, IPv4 sessions", fmt.Sprintf("[%s]:8080", seedVIP6))
	b.reachAll("client over IPv4", seedVIP+":8080")

	// IPv6 sessions: IPv6 BgpPeers for both racks, the IPv4 ones limited
	// to IPv4. The IPv6 paths move to the IPv6 sessions.
	for _, name := range []string{"leaf1", "leaf2"} {
		patch := `{"spec":{"afiSafis":[{"config":{"family":{"afi":"ipv4","safi":"unicast"},"enabled":true}}]}}`
		if err := b.crd.Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
			t.Fatal(err)
		}
	}
	peer6 := func(name, rack, addr string, as uint32) *v1alpha2.BgpPeer {
		return &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha2.BgpPeerSpec{
			Conf:         &v1alpha2.PeerConf{PeerAs: as, NeighborAddress: addr},
			Timers:       &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}},
			AfiSafis:     familiesOnly("ipv6"),
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: rack}},
		}}
	}
	for _, p := range []*v1alpha2.BgpPeer{
		peer6("leaf1-v6", "leaf1", netlab.Leaf1Addr6, netlab.Leaf1AS),
		peer6("leaf2-v6", "leaf2", netlab.Leaf2Addr6, netlab.Leaf2AS),
	} {
		if err := b.crd.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	b.waitSession("IPv6 session", b.topo.Leaf1, "fd00:168::3", true)
	b.waitSession("IPv6 session", b.topo.Leaf2, "fd00:168:1::2", true)
	b.waitPeerPaths("IPv6 on the IPv6 session only", b.topo.Leaf1, seedPrefix6, map[string][]string{"fd00:168::3": {"fd00:168::3", "fd00:168::4"}})
	b.waitPeerPaths("IPv4 on the IPv4 session only", b.topo.Leaf1, seedPrefix, map[string][]string{"192.168.0.3": {"192.168.0.3", "192.168.0.4"}})
	b.waitPeerPaths("leaf2, IPv6 session", b.topo.Leaf2, seedPrefix6, map[string][]string{"fd00:168:1::2": {"fd00:168:1::2"}})
	b.waitKernel("leaf1 IPv6 ECMP, IPv6 sessions", b.topo.Leaf1, seedPrefix6, "fd00:168::3", "fd00:168::4")
	b.waitKernelCount("spine IPv6 ECMP, IPv6 sessions", b.topo.Spine, seedPrefix6, 2)
	b.waitPeerStatus("leaf1-v6", "master1", func(s v1alpha2.PeerState) bool {
		return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf && s.AdvertisedPaths == 2
	})
	b.reachAll("client over IPv6, IPv6 sessions", fmt.Sprintf("[%s]:8080", seedVIP6))
}
