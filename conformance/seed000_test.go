package conformance

import (
	"context"
	"fmt"
	"os"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

const (
	seedVIP       = "172.22.0.2"
	seedPrefix    = seedVIP + "/32"
	leaf2Password = "leaf2-md5-s3cret"
)

// bgpLab is seed 000 for real: FRR spine and leaves in namespaces, the
// nodes' namespaces running the real openelb-speaker, the real CCM, and a
// control plane the nodes reach over the management network.
type bgpLab struct {
	*lab
	s    *seedlab.Lab
	net  *netlab.Lab
	topo *netlab.Seed000
}

// configureSeed registers seed 000's nodes, runs the guide's commands
// verbatim and creates the pool 172.22.0.2-172.22.0.10.
func (b *bgpLab) configureSeed() {
	b.t.Helper()
	ctx := context.Background()
	if err := b.s.RegisterNodes(ctx); err != nil {
		b.t.Fatal(err)
	}
	for _, line := range seedlab.GuideCommands {
		b.kubectl(line)
	}
	if err := b.s.Configure(ctx, "172.22.0.2-172.22.0.10"); err != nil {
		b.t.Fatal(err)
	}
}

func newBGPLab(t *testing.T, opts seedlab.Options) *bgpLab {
	t.Helper()
	l := newNodeLab(t)
	l.ccm("ccm")
	s, err := seedlab.New(context.Background(), l.cp, opts)
	if err != nil {
		t.Fatal(err)
	}
	b := &bgpLab{lab: l, s: s, net: s.Net, topo: s.Topo}
	t.Cleanup(func() {
		if t.Failed() {
			for name, p := range s.Speakers {
				t.Logf("--- speaker %s log tail ---\n%s", name, p.LogTail(40))
			}
			for _, r := range []*netlab.FRR{s.Topo.Leaf1, s.Topo.Leaf2, s.Topo.Spine} {
				if out, err := r.Vtysh(context.Background(), "show bgp summary"); err == nil {
					t.Logf("--- %s ---\n%s", r.Name, out)
				}
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("network lab cleanup: %v", err)
		}
	})
	return b
}

// createNginx creates Service default/nginx and waits until it holds the
// pool's first address, seedVIP.
func (b *bgpLab) createNginx() {
	b.t.Helper()
	if _, err := b.cs.CoreV1().Services("default").Create(context.Background(), newService("default", "nginx"), metav1.CreateOptions{}); err != nil {
		b.t.Fatal(err)
	}
	if got := b.waitAddress("default", "nginx"); got != seedVIP {
		b.t.Fatalf("Service got %s, want %s", got, seedVIP)
	}
}

// kubectl runs a command line verbatim (as a user would type it).
func (b *bgpLab) kubectl(line string) {
	b.t.Helper()
	if err := b.s.Kubectl(context.Background(), line); err != nil {
		b.t.Fatal(err)
	}
}

// startSpeaker runs openelb-speaker inside the node's namespace.
func (b *bgpLab) startSpeaker(node string) *netlab.Proc {
	b.t.Helper()
	p, err := b.s.StartSpeaker(node, "--v=2")
	if err != nil {
		b.t.Fatal(err)
	}
	return p
}

// waitPaths waits until router holds exactly these next hops for prefix
// from speakers in its BGP table (none: no speaker path). Paths the router
// learned from the rest of the fabric (another rack's route through the
// spine) are not counted.
func (b *bgpLab) waitPaths(what string, r *netlab.FRR, prefix string, want ...string) {
	b.t.Helper()
	b.waitHops(what, r.Name+" BGP table (speaker paths)", func(ctx context.Context) ([]string, error) {
		return r.NextHopsFrom(ctx, prefix, netlab.SpeakerRange)
	}, want)
}

// waitKernel waits until the router's kernel route to prefix has exactly
// these next hops (ECMP when several).
func (b *bgpLab) waitKernel(what string, r *netlab.FRR, prefix string, want ...string) {
	b.t.Helper()
	b.waitHops(what, r.Name+" kernel FIB", func(ctx context.Context) ([]string, error) { return b.net.KernelNextHops(ctx, r.NS, prefix) }, want)
}

func (b *bgpLab) waitHops(what, where string, get func(context.Context) ([]string, error), want []string) {
	b.t.Helper()
	slices.Sort(want)
	var got []string
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		hops, err := get(ctx)
		if err != nil {
			lastErr = err
			return false, nil
		}
		slices.Sort(hops)
		got = hops
		return slices.Equal(got, want), nil
	})
	if err != nil {
		b.t.Fatalf("%s: %s next hops %v, want %v (last error: %v)", what, where, got, want, lastErr)
	}
}

// waitSession waits until router has (or has not) an established session
// from addr.
func (b *bgpLab) waitSession(what string, r *netlab.FRR, addr string, up bool) {
	b.t.Helper()
	var state string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		nb, err := r.Neighbors(ctx)
		if err != nil {
			return false, nil
		}
		state = nb[addr].State
		return (state == "Established") == up, nil
	})
	if err != nil {
		b.t.Fatalf("%s: %s session from %s is %q, want established=%v", what, r.Name, addr, state, up)
	}
}

// peerStatus returns node's entry of a BgpPeer's status.
func (b *bgpLab) waitPeerStatus(peer, node string, ok func(v1alpha2.PeerState) bool) v1alpha2.PeerState {
	b.t.Helper()
	var got v1alpha2.PeerState
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var bp v1alpha2.BgpPeer
		if err := b.crd.Get(ctx, client.ObjectKey{Name: peer}, &bp); err != nil {
			return false, nil
		}
		got = bp.Status.NodesPeerStatus[node].PeerState
		return ok(got), nil
	})
	if err != nil {
		b.t.Fatalf("BgpPeer %s status of %s: %+v", peer, node, got)
	}
	return got
}

// TestSeed000BGP is OpenELB's multi-router guide (seed 000) end to end:
// the guide's own commands, real FRR leaf and spine routers, the real
// speaker in master1 and worker-p002, real TCP traffic from a client behind
// the spine.
func TestSeed000BGP(t *testing.T) {
	// BFD at 300 ms × 3: still detects a dead node within a second, and a
	// busy 2-core CI machine does not make it flap (100 ms is what
	// make bench measures).
	b := newBGPLab(t, seedlab.Options{Leaf2Password: leaf2Password, BFD: true, BFDIntervalMs: 300})
	ctx := context.Background()
	b.configureSeed()
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.waitSession("speaker up", b.topo.Leaf1, "192.168.0.3", true)
	b.waitSession("speaker up with the password from the Secret", b.topo.Leaf2, "192.168.1.2", true)

	svc, err := b.cs.CoreV1().Services("default").Create(ctx, newService("default", "nginx"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Phases share the lab; each is named in the log so a failure says
	// which one broke.
	step := func(name string, f func()) {
		t.Logf("=== %s", name)
		start := time.Now()
		f()
		t.Logf("    done in %v", time.Since(start).Round(time.Millisecond))
	}
	got := b.waitAddress("default", "nginx")
	if got != seedVIP {
		t.Fatalf("Service got %s, want %s", got, seedVIP)
	}

	step("worker-p001 without a rack label is reported", func() {
		// The guide labels only the speakers' racks; worker-p001 sits in
		// no rack, so no speaker announces it and the plan says so.
		hop := func(node, ip string) []v1alpha2.RackNextHop {
			return []v1alpha2.RackNextHop{{Node: node, Addresses: []string{ip}}}
		}
		b.waitRacks("guide labels",
			v1alpha2.LoadBalancerRackSpec{Rack: "", NextHops: hop("worker-p001", "192.168.0.4")},
			v1alpha2.LoadBalancerRackSpec{Rack: "leaf1", Speakers: []string{"master1"}, Peers: []v1alpha2.PlanPeer{{Name: "leaf1", Address: netlab.Leaf1Addr, AS: netlab.Leaf1AS}}, NextHops: hop("master1", "192.168.0.3")},
			v1alpha2.LoadBalancerRackSpec{Rack: "leaf2", Speakers: []string{"worker-p002"}, Peers: []v1alpha2.PlanPeer{{Name: "leaf2", Address: netlab.Leaf2Addr, AS: netlab.Leaf2AS}}, NextHops: hop("worker-p002", "192.168.1.2")},
		)
		b.waitRackCondition("", "RackWithoutSpeaker", metav1.ConditionTrue, "worker-p001")
		b.waitPaths("guide labels", b.topo.Leaf1, seedPrefix, "192.168.0.3")
		b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	})

	step("leaves hold rack next hops, spine ECMP over leaves", func() {
		b.waitPaths("two ADD-PATH paths", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
		b.waitKernel("leaf1 ECMP", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
		b.waitPaths("leaf2 path", b.topo.Leaf2, seedPrefix, "192.168.1.2")
		b.waitKernel("leaf2 route", b.topo.Leaf2, seedPrefix, "192.168.1.2")
		b.waitKernel("spine ECMP", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
		// The path count follows within the report's counts interval.
		b.waitPeerStatus("leaf1", "master1", func(s v1alpha2.PeerState) bool {
			return s.SessionState == "established" && s.AddPathNegotiated && !s.NextHopSelf && s.AdvertisedPaths == 2
		})
		b.waitPeerStatus("leaf2", "worker-p002", func(s v1alpha2.PeerState) bool { return s.SessionState == "established" })
		b.waitAnnouncing("master1", 1, 2)
		b.waitAnnouncing("worker-p002", 1, 1)
		// At rest a speaker costs the API server nothing: statuses are
		// written only when they change.
		before, err := b.s.SpeakerRequests(ctx, "master1")
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(7 * time.Second)
		after, err := b.s.SpeakerRequests(ctx, "master1")
		if err != nil {
			t.Fatal(err)
		}
		if after-before > 1 {
			t.Errorf("master1's speaker made %.0f API requests in 7 s with nothing changing", after-before)
		}
	})

	step("TCP from the client reaches all three nodes", func() {
		if err := b.s.ServeNodes(seedVIP, 8080); err != nil {
			t.Fatal(err)
		}
		seen := map[string]int{}
		for range 120 {
			node, err := b.s.Request(seedVIP + ":8080")
			if err != nil {
				t.Fatal(err)
			}
			seen[node]++
		}
		t.Logf("120 connections: %v", seen)
		for _, n := range b.topo.Nodes {
			if seen[n.Name] == 0 {
				t.Errorf("no connection reached %s: %v", n.Name, seen)
			}
		}
	})

	step("NotReady node loses its next hop", func() {
		b.setReady("worker-p001", false)
		b.waitPaths("worker-p001 NotReady", b.topo.Leaf1, seedPrefix, "192.168.0.3")
		b.waitKernel("worker-p001 NotReady", b.topo.Leaf1, seedPrefix, "192.168.0.3")
		b.setReady("worker-p001", true)
		b.waitPaths("worker-p001 Ready again", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	})

	step("externalTrafficPolicy Local follows endpoints", func() {
		// Endpoints only on worker-p002, as an EndpointSlice controller
		// would publish them.
		if _, err := b.cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "nginx-eps", Labels: map[string]string{discoveryv1.LabelServiceName: "nginx"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{"10.244.2.5"}, NodeName: ptr.To("worker-p002"),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		b.setTrafficPolicy(svc.Name, v1.ServiceExternalTrafficPolicyLocal)
		b.waitPaths("Local: no endpoint under leaf1", b.topo.Leaf1, seedPrefix)
		// leaf1 still reaches the Service, through the spine and leaf2,
		// never through its own rack's nodes.
		b.waitKernel("Local: no endpoint under leaf1", b.topo.Leaf1, seedPrefix, "10.0.1.1")
		b.waitPaths("Local: endpoint on worker-p002", b.topo.Leaf2, seedPrefix, "192.168.1.2")
		b.waitKernel("Local: spine only via leaf2", b.topo.Spine, seedPrefix, "10.0.2.2")
		b.setTrafficPolicy(svc.Name, v1.ServiceExternalTrafficPolicyCluster)
		b.waitPaths("Cluster again", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
		b.waitKernel("Cluster again", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	})

	step("API server unreachable keeps routes", func() {
		b.topo.Forwarder.Down()
		deadline := time.Now().Add(12 * time.Second)
		for time.Now().Before(deadline) {
			hops, err := b.topo.Leaf1.NextHopsFrom(ctx, seedPrefix, netlab.SpeakerRange)
			if err != nil || len(hops) != 2 {
				b.topo.Forwarder.Up()
				t.Fatalf("leaf1 lost paths while the API server was unreachable: %v %v", hops, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
		b.topo.Forwarder.Up()
		// And the speaker catches up afterwards.
		b.setReady("worker-p001", false)
		b.waitPaths("change after reconnect", b.topo.Leaf1, seedPrefix, "192.168.0.3")
		b.setReady("worker-p001", true)
		b.waitPaths("change after reconnect", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	})

	step("relabelling a speaker's rack moves its session", func() {
		b.kubectl("kubectl label --overwrite nodes master1 openelb.kubesphere.io/rack=leaf2")
		b.waitSession("master1 in rack leaf2", b.topo.Leaf2, "192.168.0.3", true)
		b.waitSession("master1 left rack leaf1", b.topo.Leaf1, "192.168.0.3", false)
		b.waitRackCondition("leaf1", "RackWithoutSpeaker", metav1.ConditionTrue, "worker-p001")
		b.kubectl("kubectl label --overwrite nodes master1 openelb.kubesphere.io/rack=leaf1")
		b.waitSession("master1 back in rack leaf1", b.topo.Leaf1, "192.168.0.3", true)
		b.waitSession("master1 back: leaf2 session gone", b.topo.Leaf2, "192.168.0.3", false)
		b.waitPaths("master1 back", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	})

	step("BFD detects a dead node in about a second", func() {
		b.waitBFDUp(b.topo.Leaf1, "192.168.0.3")
		n := b.topo.Node("master1")
		start := time.Now()
		if err := b.net.IP(n.NS, "link", "set", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		b.waitPaths("master1 dead", b.topo.Leaf1, seedPrefix)
		took := time.Since(start)
		t.Logf("leaf1 dropped master1's paths %v after its link went down (hold time 9 s)", took.Round(time.Millisecond))
		if took > 5*time.Second {
			t.Errorf("BFD detection took %v; without BFD the 9 s hold time would expire", took)
		}
		if err := b.net.IP(n.NS, "link", "set", "eth0", "up"); err != nil {
			t.Fatal(err)
		}
		if err := b.net.IP(n.NS, "route", "replace", "default", "via", netlab.Leaf1Addr); err != nil {
			t.Fatal(err)
		}
		b.waitPaths("master1 back", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	})

	step("SIGTERM withdraws", func() {
		p := b.s.Speakers["worker-p002"]
		if err := p.Stop(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		b.waitPaths("worker-p002 speaker stopped", b.topo.Leaf2, seedPrefix)
		b.waitKernel("spine only via leaf1", b.topo.Spine, seedPrefix, "10.0.1.2")
		b.startSpeaker("worker-p002")
		b.waitKernel("speaker back", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	})

	step("Service deleted withdraws everywhere", func() {
		if err := b.cs.CoreV1().Services("default").Delete(ctx, "nginx", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		b.waitPaths("deleted", b.topo.Leaf1, seedPrefix)
		b.waitPaths("deleted", b.topo.Leaf2, seedPrefix)
		b.waitKernel("deleted", b.topo.Spine, seedPrefix)
	})

	if os.Getenv("OPENELB_KEEP_LAB") != "" {
		t.Logf("lab dir %s", b.net.Dir())
	}
}

func (b *bgpLab) setTrafficPolicy(name string, p v1.ServiceExternalTrafficPolicy) {
	b.t.Helper()
	patch := fmt.Sprintf(`{"spec":{"externalTrafficPolicy":%q}}`, p)
	if _, err := b.cs.CoreV1().Services("default").Patch(context.Background(), name, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		b.t.Fatal(err)
	}
}

func (b *bgpLab) waitAddress(ns, name string) string {
	b.t.Helper()
	var ip string
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		s, err := b.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	})
	if err != nil {
		b.t.Fatalf("Service %s/%s got no address", ns, name)
	}
	return ip
}

// waitAnnouncing waits until node's LoadBalancerSpeaker reports it
// announcing prefixes addresses as paths paths, with every session
// established.
func (b *bgpLab) waitAnnouncing(node string, prefixes, paths int32) {
	b.t.Helper()
	var got v1alpha2.LoadBalancerSpeakerStatus
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var sp v1alpha2.LoadBalancerSpeaker
		if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
			return false, nil
		}
		got = sp.Status
		return got.Announcing && got.Prefixes == prefixes && got.Paths == paths &&
			len(got.Sessions) > 0 && got.SessionsEstablished == int32(len(got.Sessions)), nil
	})
	if err != nil {
		b.t.Fatalf("LoadBalancerSpeaker %s: %+v, want announcing %d prefixes as %d paths, sessions established", node, got, prefixes, paths)
	}
}

func (b *bgpLab) waitBFDUp(r *netlab.FRR, peer string) {
	b.t.Helper()
	var status string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		status, _ = r.BFDStatus(ctx, peer)
		return status == "up", nil
	})
	if err != nil {
		b.t.Fatalf("%s: no BFD session up with %s (status %q)", r.Name, peer, status)
	}
}
