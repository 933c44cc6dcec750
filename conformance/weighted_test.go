package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	v1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// spreadConnections is how many client connections a spread is measured
// over: 400 per node of seed 000 for an equal share.
const spreadConnections = 1200

// spread opens n connections from the client to addr and counts them per
// answering node.
func (b *bgpLab) spread(addr string, n int) map[string]int {
	b.t.Helper()
	seen := map[string]int{}
	for range n {
		node, err := b.s.Request(addr)
		if err != nil {
			b.t.Fatal(err)
		}
		seen[node]++
	}
	return seen
}

// waitSpineWeights waits until the spine's kernel route to prefix is
// weighted 2:1 for leaf1 (two nodes) over leaf2 (one node).
func (b *bgpLab) waitSpineWeights(prefix, leaf1, leaf2 string) []netlab.WeightedHop {
	b.t.Helper()
	var got []netlab.WeightedHop
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		if got, err = b.net.KernelWeights(ctx, b.topo.Spine.NS, prefix); err != nil || len(got) != 2 {
			return false, nil
		}
		w := map[string]int{}
		for _, h := range got {
			w[h.Gateway] = h.Weight
		}
		// FRR scales weights; the ratio is what counts (±10 %).
		r := float64(w[leaf1]) / float64(max(w[leaf2], 1))
		return w[leaf2] > 0 && r > 1.8 && r < 2.2, nil
	})
	if err != nil {
		b.t.Fatalf("spine's route to %s is not weighted 2:1 for leaf1: %+v", prefix, got)
	}
	return got
}

// TestWeightedECMP: with linkBandwidthMbps on the pool, every path carries
// the link-bandwidth community with its node's bandwidth, each leaf
// advertises the sum over its next hops to the spine (two nodes under
// leaf1, one under leaf2; a second speaker of leaf1's rack does not count
// its nodes twice), the spine installs a 2:1 weighted ECMP route, and 1,200 client connections
// land within ±20 % of an equal share on each of the three nodes (plain
// ECMP gives worker-p002 half of them). A Service annotation turns it off
// again; the plan shows the value.
func TestWeightedECMP(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	b.createNginx()
	b.waitKernel("leaf1 ECMP", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	b.waitKernel("spine plain ECMP", b.topo.Spine, seedPrefix, "10.0.1.2", "10.0.2.2")
	if err := b.s.ServeNodes(seedVIP, 8080); err != nil {
		t.Fatal(err)
	}
	plain := b.spread(seedVIP+":8080", spreadConnections)
	t.Logf("plain ECMP, %d connections: %v", spreadConnections, plain)

	pool := `{"spec":{"bgp":{"linkBandwidthMbps":1000}}}`
	if err := b.crd.Patch(ctx, &v1alpha2.Eip{ObjectMeta: v1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, []byte(pool))); err != nil {
		t.Fatal(err)
	}
	b.waitPlanBGP("link bandwidth in the plan", "nginx", func(a *v1alpha2.BGPAttributes) bool { return a != nil && a.LinkBandwidthMbps == 1000 })
	// Each path carries its node's 1000 Mbit/s; each leaf advertises to
	// the spine the sum over its multipaths (FRR's default), so leaf1's
	// rack of two nodes weighs twice leaf2's.
	b.waitRouterPaths("leaf1: a node's bandwidth on each path", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return strings.HasPrefix(p.Extended, "LB:23456:125000000 ")
	})
	b.waitRouterPaths("spine: leaf1's paths summed", b.topo.Spine, seedPrefix, "10.0.1.2", func(p netlab.BGPPath) bool {
		return strings.HasPrefix(p.Extended, "LB:65101:250000000 ")
	})
	b.waitRouterPaths("spine: leaf2's one path", b.topo.Spine, seedPrefix, "10.0.2.2", func(p netlab.BGPPath) bool {
		// One path: passed on as received (no multipath to sum).
		return strings.HasPrefix(p.Extended, "LB:23456:125000000 ")
	})
	t.Logf("spine route: %+v", b.waitSpineWeights(seedPrefix, "10.0.1.2", "10.0.2.2"))

	// A second speaker in rack leaf1 announces the same two next hops:
	// leaf1 counts each next hop once, the weight does not change.
	b.kubectl("kubectl label --overwrite nodes worker-p001 lb.kubesphere.io/v1alpha1=openelb")
	b.startSpeaker("worker-p001")
	b.waitSession("second leaf1 speaker up", b.topo.Leaf1, "192.168.0.4", true)
	b.waitRouterPaths("worker-p001's speaker announces too", b.topo.Leaf1, seedPrefix, "192.168.0.4", func(p netlab.BGPPath) bool {
		return strings.HasPrefix(p.Extended, "LB:23456:125000000 ")
	})
	time.Sleep(2 * time.Second)
	b.waitRouterPaths("spine: leaf1's next hops counted once", b.topo.Spine, seedPrefix, "10.0.1.2", func(p netlab.BGPPath) bool {
		return strings.HasPrefix(p.Extended, "LB:65101:250000000 ")
	})
	t.Logf("spine route with two leaf1 speakers: %+v", b.waitSpineWeights(seedPrefix, "10.0.1.2", "10.0.2.2"))

	weighted := b.spread(seedVIP+":8080", spreadConnections)
	t.Logf("weighted ECMP, %d connections: %v", spreadConnections, weighted)
	share := spreadConnections / len(b.topo.Nodes)
	for _, n := range b.topo.Nodes {
		if got := weighted[n.Name]; got < share*8/10 || got > share*12/10 {
			t.Errorf("%s got %d of %d connections, want %d ±20 %%", n.Name, got, spreadConnections, share)
		}
	}

	// externalTrafficPolicy Local: the next hops are the endpoints' nodes,
	// so with endpoints on master1 and worker-p002 only, each rack weighs
	// one node and the spine splits 1:1.
	eps := &discoveryv1.EndpointSlice{
		ObjectMeta:  v1.ObjectMeta{Name: "nginx-eps", Labels: map[string]string{discoveryv1.LabelServiceName: "nginx"}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, node := range []string{"master1", "worker-p002"} {
		eps.Endpoints = append(eps.Endpoints, discoveryv1.Endpoint{Addresses: []string{fmt.Sprintf("10.244.%d.5", i)}, NodeName: ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}})
	}
	if _, err := b.cs.DiscoveryV1().EndpointSlices("default").Create(ctx, eps, v1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.setTrafficPolicy("nginx", corev1.ServiceExternalTrafficPolicyLocal)
	b.waitKernel("Local: master1 alone under leaf1", b.topo.Leaf1, seedPrefix, "192.168.0.3")
	b.waitRouterPaths("spine: leaf1 weighs one endpoint node", b.topo.Spine, seedPrefix, "10.0.1.2", func(p netlab.BGPPath) bool {
		return strings.HasPrefix(p.Extended, "LB:23456:125000000 ")
	})
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		h, err := b.net.KernelWeights(ctx, b.topo.Spine.NS, seedPrefix)
		return err == nil && len(h) == 2 && h[0].Weight == h[1].Weight, nil
	})
	if err != nil {
		h, _ := b.net.KernelWeights(ctx, b.topo.Spine.NS, seedPrefix)
		t.Fatalf("Local with one endpoint node per rack: spine route %+v, want equal weights", h)
	}
	b.setTrafficPolicy("nginx", corev1.ServiceExternalTrafficPolicyCluster)
	b.waitSpineWeights(seedPrefix, "10.0.1.2", "10.0.2.2")

	// A Service turns it off by annotation: no community, plain ECMP.
	b.annotateService("nginx", map[string]any{v1alpha2.AnnotationBGPLinkBandwidth: "0"})
	b.waitRouterPaths("annotation 0: no link bandwidth", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Extended == ""
	})
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		h, err := b.net.KernelWeights(ctx, b.topo.Spine.NS, seedPrefix)
		return err == nil && len(h) == 2 && h[0].Weight == h[1].Weight, nil
	})
	if err != nil {
		h, _ := b.net.KernelWeights(ctx, b.topo.Spine.NS, seedPrefix)
		t.Fatalf("spine still weighted without the community: %+v", h)
	}
}
