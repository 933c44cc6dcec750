package conformance

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// waitRouterPaths waits until every path r holds for prefix from peer
// satisfies ok (and there is one).
func (b *bgpLab) waitRouterPaths(what string, r *netlab.FRR, prefix, peer string, ok func(netlab.BGPPath) bool) {
	b.t.Helper()
	var got []netlab.BGPPath
	var lastErr error
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		paths, err := r.Paths(ctx, prefix)
		if err != nil {
			lastErr = err
			return false, nil
		}
		got = got[:0]
		for _, p := range paths {
			if p.Peer == peer {
				got = append(got, p)
			}
		}
		if len(got) == 0 {
			return false, nil
		}
		for _, p := range got {
			if !ok(p) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		b.t.Fatalf("%s: %s holds %v for %s from %s (last error: %v)", what, r.Name, got, prefix, peer, lastErr)
	}
	b.t.Logf("%s: %s holds %v", what, r.Name, got)
}

// TestBGPAttributes: a pool's communities, large communities, LOCAL_PREF
// and AS-path prepend reach real FRR leaves as network engineers expect
// (LOCAL_PREF on the iBGP session only, the prepend on the eBGP one only,
// no-export honoured: the spine never learns the route), a Service's
// annotations override them, the plan shows what is announced, and a bad
// annotation is a plan condition while the address stays announced with
// the pool's values.
func TestBGPAttributes(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	// Rack leaf2 speaks iBGP to its leaf: the speakers of rack leaf2 take
	// leaf2's AS, and leaf2 takes worker-p002 as an internal neighbor.
	patch := fmt.Sprintf(`{"spec":{"asPerRack":{"leaf2":%d}}}`, netlab.Leaf2AS)
	if err := b.crd.Patch(ctx, &v1alpha2.BgpConf{ObjectMeta: v1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		t.Fatal(err)
	}
	if err := b.topo.Leaf2.Configure(ctx, fmt.Sprintf("router bgp %d", netlab.Leaf2AS), "no neighbor 192.168.1.2",
		"neighbor 192.168.1.2 remote-as internal", "neighbor 192.168.1.2 timers 3 9", "neighbor 192.168.1.2 timers connect 1"); err != nil {
		t.Fatal(err)
	}
	pool := `{"spec":{"bgp":{"communities":["65000:100","no-export"],"largeCommunities":["65000:1:2"],"localPref":250,"asPathPrepend":2}}}`
	if err := b.crd.Patch(ctx, &v1alpha2.Eip{ObjectMeta: v1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, []byte(pool))); err != nil {
		t.Fatal(err)
	}
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.waitSession("eBGP speaker up", b.topo.Leaf1, "192.168.0.3", true)
	b.waitSession("iBGP speaker up", b.topo.Leaf2, "192.168.1.2", true)
	b.createNginx()

	ebgpAS := "65001 65001 65001" // the speaker's AS, then prepended twice
	b.waitRouterPaths("pool attributes, eBGP", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:100 no-export" && p.Large == "65000:1:2" && p.ASPath == ebgpAS && p.LocalPref == nil
	})
	b.waitRouterPaths("pool attributes, iBGP", b.topo.Leaf2, seedPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:100 no-export" && p.Large == "65000:1:2" && p.ASPath == "" && p.LocalPref != nil && *p.LocalPref == 250
	})
	// no-export: neither leaf passes the route to the spine (another AS).
	for range 10 {
		paths, err := b.topo.Spine.Paths(ctx, seedPrefix)
		if err != nil {
			t.Fatal(err)
		}
		if len(paths) > 0 {
			t.Fatalf("no-export: the spine learned %s: %v", seedPrefix, paths)
		}
		time.Sleep(100 * time.Millisecond)
	}
	b.waitPlanBGP("pool attributes", "nginx", func(a *v1alpha2.BGPAttributes) bool {
		return a != nil && strings.Join(a.Communities, ",") == "65000:100,no-export" && a.ASPathPrepend == 2 && a.LocalPref != nil && *a.LocalPref == 250
	})

	// The Service's annotations replace each attribute.
	b.annotateService("nginx", map[string]any{
		v1alpha2.AnnotationBGPCommunities: "65000:300", v1alpha2.AnnotationBGPLargeCommunities: "",
		v1alpha2.AnnotationBGPLocalPref: "300", v1alpha2.AnnotationBGPASPathPrepend: "0,leaf1=1",
	})
	b.waitRouterPaths("Service annotations, eBGP (leaf1's own prepend count)", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:300" && p.Large == "" && p.ASPath == "65001 65001"
	})
	b.waitRouterPaths("Service annotations, iBGP", b.topo.Leaf2, seedPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:300" && p.LocalPref != nil && *p.LocalPref == 300
	})
	// Without no-export the spine learns it again, and the prepend steers
	// it: leaf1's path (65101 65001 65001) is longer than leaf2's (65102,
	// its iBGP speaker's route carries no AS), so the spine routes through
	// leaf2 only.
	b.waitKernel("spine once exported: leaf2 only, leaf1's path is prepended", b.topo.Spine, seedPrefix, "10.0.2.2")
	b.waitRouterPaths("spine: leaf1's path carries the prepend", b.topo.Spine, seedPrefix, "10.0.1.2", func(p netlab.BGPPath) bool {
		return p.ASPath == "65101 65001 65001"
	})

	// A bad annotation: a plan condition naming it; the pool's value of
	// that attribute is announced instead.
	b.annotateService("nginx", map[string]any{v1alpha2.AnnotationBGPCommunities: "65000:300,bogus"})
	b.waitPlanCondition("nginx", cloud.ReasonInvalidBGPAttributes, v1alpha2.AnnotationBGPCommunities)
	b.waitRouterPaths("bad annotation: the pool's communities", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:100 no-export" && p.ASPath == "65001 65001"
	})
	b.annotateService("nginx", map[string]any{v1alpha2.AnnotationBGPCommunities: nil})
	b.waitPlanCondition("nginx", cloud.ReasonInvalidBGPAttributes, "")

	// Aggregation: the pool's /24 instead of each address; the /32 goes.
	agg := `{"spec":{"bgp":{"aggregationLength":24}}}`
	if err := b.crd.Patch(ctx, &v1alpha2.Eip{ObjectMeta: v1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, []byte(agg))); err != nil {
		t.Fatal(err)
	}
	b.waitPaths("aggregate announced", b.topo.Leaf1, "172.22.0.0/24", "192.168.0.3")
	b.waitPaths("host route withdrawn", b.topo.Leaf1, seedPrefix)
	b.waitRouterPaths("the aggregate carries the Service's attributes", b.topo.Leaf1, "172.22.0.0/24", "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:100 no-export" && p.ASPath == "65001 65001"
	})
	var plan v1alpha2.LoadBalancerPlan
	if err := b.crd.Get(ctx, client.ObjectKey{Namespace: "default", Name: "nginx"}, &plan); err != nil {
		t.Fatal(err)
	}
	if p := plan.Spec.Addresses[0].Prefix; p != "172.22.0.0/24" {
		t.Errorf("plan shows prefix %q, want 172.22.0.0/24", p)
	}
	// The last Service of the aggregate gone, the aggregate goes.
	if err := b.cs.CoreV1().Services("default").Delete(ctx, "nginx", v1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	b.waitPaths("aggregate withdrawn with its last Service", b.topo.Leaf1, "172.22.0.0/24")
}

// annotateService merge-patches annotations of default/name (nil removes).
func (b *bgpLab) annotateService(name string, ann map[string]any) {
	b.t.Helper()
	patch := map[string]any{"metadata": map[string]any{"annotations": ann}}
	raw, err := json.Marshal(patch)
	if err != nil {
		b.t.Fatal(err)
	}
	if _, err := b.cs.CoreV1().Services("default").Patch(context.Background(), name, types.MergePatchType, raw, v1.PatchOptions{}); err != nil {
		b.t.Fatal(err)
	}
}

// waitPlanBGP waits until the first address of default/name's plan has
// attributes ok accepts.
func (b *bgpLab) waitPlanBGP(what, name string, ok func(*v1alpha2.BGPAttributes) bool) {
	b.t.Helper()
	var got *v1alpha2.BGPAttributes
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var plan v1alpha2.LoadBalancerPlan
		if err := b.crd.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &plan); err != nil || len(plan.Spec.Addresses) == 0 {
			return false, nil
		}
		got = plan.Spec.Addresses[0].BGP
		return ok(got), nil
	})
	if err != nil {
		b.t.Fatalf("%s: plan default/%s shows %+v", what, name, got)
	}
}

// waitPlanCondition waits until default/name's plan has condition typ
// True with a message containing want, or (want "") no such condition.
func (b *bgpLab) waitPlanCondition(name, typ, want string) {
	b.t.Helper()
	var conds []v1.Condition
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var plan v1alpha2.LoadBalancerPlan
		if err := b.crd.Get(ctx, client.ObjectKey{Namespace: "default", Name: name}, &plan); err != nil {
			return false, nil
		}
		conds = plan.Status.Conditions
		for _, c := range conds {
			if c.Type == typ {
				return want != "" && c.Status == v1.ConditionTrue && strings.Contains(c.Message, want), nil
			}
		}
		return want == "", nil
	})
	if err != nil {
		b.t.Fatalf("plan default/%s: conditions %+v, want %s containing %q", name, conds, typ, want)
	}
}

// TestBGPSelectors: a pool's node selector limits the next hops to the
// matching nodes (a rack without one announces nothing for it, and its
// rack object reports no problem), following node labels live through
// the rack objects, which carry only the labels a selector reads; a
// Service's peer selector limits the routers that learn its address.
func TestBGPSelectors(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	b.kubectl("kubectl label nodes master1 edge=true")
	b.kubectl("kubectl label bgppeers leaf2 tier=edge")
	sel := `{"spec":{"bgp":{"nodeSelector":{"matchLabels":{"edge":"true"}}}}}`
	if err := b.crd.Patch(ctx, &v1alpha2.Eip{ObjectMeta: v1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, []byte(sel))); err != nil {
		t.Fatal(err)
	}
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.createNginx()
	// Both nodes are next hops of rack leaf1 (and the speaker has seen
	// it: it announces the rack's other Services' paths from it), master1
	// carrying the selector's key (the rack may first be written before
	// the CCM has seen the Eip's selector: wait for the labelled one)...
	var rack v1alpha2.LoadBalancerRack
	labelled := func() bool {
		return slices.ContainsFunc(rack.Spec.NextHops, func(h v1alpha2.RackNextHop) bool { return h.Node == "master1" && len(h.Labels) > 0 })
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := b.crd.Get(ctx, client.ObjectKey{Name: "leaf1"}, &rack); err != nil {
			return false, nil
		}
		return len(rack.Spec.NextHops) == 2 && labelled(), nil
	})
	if err != nil {
		t.Fatalf("rack leaf1 next hops %+v, want master1 (with label edge) and worker-p001", rack.Spec.NextHops)
	}
	b.waitAnnouncedRack("master1", rack.Generation)
	// ...and only master1 carries the address.
	b.waitPaths("node selector: master1 only in rack leaf1", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitPaths("node selector: no node of rack leaf2", b.topo.Leaf2, seedPrefix)
	b.waitRackCondition("leaf2", cloud.ConditionAnnounced, v1.ConditionTrue, "")
	for _, h := range rack.Spec.NextHops {
		if want := map[string]string{"edge": "true"}; h.Node == "master1" && !maps.Equal(h.Labels, want) {
			t.Errorf("rack leaf1 next hop master1 carries labels %v, want only the selector's key: %v", h.Labels, want)
		} else if h.Node == "worker-p001" && len(h.Labels) != 0 {
			t.Errorf("rack leaf1 next hop worker-p001 carries labels %v, want none", h.Labels)
		}
	}

	b.kubectl("kubectl label nodes worker-p002 edge=true")
	b.waitPaths("worker-p002 labelled: rack leaf2 announces it", b.topo.Leaf2, seedPrefix, "192.168.1.2")

	b.annotateService("nginx", map[string]any{v1alpha2.AnnotationBGPPeerSelector: "tier=edge"})
	b.waitPaths("peer selector: leaf1 (no tier=edge) loses it", b.topo.Leaf1, seedPrefix)
	b.waitPaths("peer selector: leaf2 keeps it", b.topo.Leaf2, seedPrefix, "192.168.1.2")
	b.annotateService("nginx", map[string]any{v1alpha2.AnnotationBGPPeerSelector: nil})
	b.waitPaths("annotation removed: leaf1 learns it again", b.topo.Leaf1, seedPrefix, "192.168.0.3")
}

// waitAnnouncedRack waits until node's speaker reports it follows its
// rack object at generation gen or later.
func (b *bgpLab) waitAnnouncedRack(node string, gen int64) {
	b.t.Helper()
	var got int64
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var sp v1alpha2.LoadBalancerSpeaker
		if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
			return false, nil
		}
		got = sp.Status.ObservedRackGeneration
		return got >= gen, nil
	})
	if err != nil {
		b.t.Fatalf("speaker %s follows rack generation %d, want %d", node, got, gen)
	}
}

// TestGracefulShutdownDrain: with BgpConf spec.gracefulShutdown, cordoning
// master1 first re-announces its next hop with the graceful-shutdown
// community (RFC 8326), so leaf1's kernel route moves to worker-p001 alone
// while master1's path is still held, and withdraws it only after the
// delay; leaf1's route never loses worker-p001 meanwhile (its kernel FIB
// followed through netlink). Uncordoned, master1 is back in the ECMP.
func TestGracefulShutdownDrain(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	gs := `{"spec":{"gracefulShutdown":{"enabled":true,"delaySeconds":6}}}`
	if err := b.crd.Patch(ctx, &v1alpha2.BgpConf{ObjectMeta: v1.ObjectMeta{Name: "default"}}, client.RawPatch(types.MergePatchType, []byte(gs))); err != nil {
		t.Fatal(err)
	}
	// No router configuration: FRR 8.4 honours the community on receipt
	// (LOCAL_PREF 0, so the path leaves the multipath set), as RFC 8326
	// asks of receivers.
	b.startSpeaker("master1")
	b.createNginx()
	b.waitKernel("ECMP before the drain", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	fib := watchFIB(t, b.topo.Leaf1)
	vip := []netip.Addr{netip.MustParseAddr(seedVIP)}
	w1 := netip.MustParseAddr("192.168.0.4")
	fib.wait(t, "ECMP seen by the watch", vip, 10*time.Second, func(h []netip.Addr) bool { return len(h) == 2 }, "two next hops")
	fib.protect(vip, []netip.Addr{w1})

	t0 := time.Now()
	b.kubectl("kubectl cordon master1")
	moved := fib.wait(t, "cordoned: traffic moves to worker-p001", vip, 10*time.Second,
		func(h []netip.Addr) bool { return slices.Equal(h, []netip.Addr{w1}) }, "worker-p001 alone")
	b.waitRouterPaths("master1's path still held, with the community", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.NextHop != "192.168.0.3" || strings.Contains(p.Communities, "graceful-shutdown") && p.LocalPref != nil && *p.LocalPref == 0
	})
	if paths, err := b.topo.Leaf1.NextHopsFrom(ctx, seedPrefix, netlab.SpeakerRange); err != nil || !slices.Contains(paths, "192.168.0.3") {
		t.Fatalf("leaf1 withdrew master1's path %v before the delay (%v)", paths, err)
	}
	b.waitPaths("withdrawn after the delay", b.topo.Leaf1, seedPrefix, "192.168.0.4")
	withdrawn := time.Since(t0)
	if withdrawn < 5*time.Second {
		t.Errorf("master1's path withdrawn %v after the cordon, before the 6 s delay", withdrawn)
	}
	t.Logf("cordon → kernel route on worker-p001 alone: %v; → master1's path withdrawn: %v", moved.Sub(t0).Round(time.Millisecond), withdrawn.Round(time.Millisecond))
	if v := fib.takeViolations(); len(v) > 0 {
		t.Errorf("leaf1 lost worker-p001 during the drain: %v", v)
	}
	fib.unprotect()
	b.kubectl("kubectl uncordon master1")
	b.waitKernel("uncordoned: ECMP again", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
}
