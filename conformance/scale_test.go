package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// Scale of TestScaleWrites: what a cluster of this size pays for routine
// events, counted at the API server. Counts, not timings: they hold on a
// loaded CI machine.
const (
	scaleRacks        = 10
	scaleNodesPerRack = 20
	scaleServices     = 2000
	// scaleNextHops nodes of each rack are eligible next hops (the others
	// are excluded from load balancers, as dedicated ingress nodes would
	// be), the first scaleSpeakers of them run the speaker.
	scaleNextHops = 4
	scaleSpeakers = 2
)

// scaleWriteResources are the kinds the provider and the speakers write.
var scaleWriteResources = []string{"services", "events", "ipclaims", "eips", "loadbalancerplans", "loadbalancerracks", "loadbalancerspeakers", "bgppeers"}

func scaleNodeName(rack, i int) string { return fmt.Sprintf("n-%02d-%02d", rack, i) }

// TestScaleWrites checks the cost of routine events with 200 nodes in 10
// racks and 2,000 Services, with real speakers for the speaker nodes of two
// racks (their routers unreachable): a node turning NotReady or Ready again
// is one LoadBalancerRack write (plus the reports of that rack's speakers),
// never a write per Service; a new Service is a handful of writes; a
// speaker start costs a few writes of its own, not one per Service; a
// speaker at rest writes nothing.
func TestScaleWrites(t *testing.T) {
	l := newNodeLab(t)
	ctx := context.Background()
	l.ccm("ccm")

	var nodes []harness.SimNode
	for r := range scaleRacks {
		for i := range scaleNodesPerRack {
			labels := map[string]string{v1alpha2.LabelRack: fmt.Sprintf("rack-%02d", r)}
			if i >= scaleNextHops {
				labels[cloud.LabelExcludeFromLB] = "true"
			}
			if i < scaleSpeakers {
				labels[v1alpha2.LabelSpeaker] = v1alpha2.LabelSpeakerValue
			}
			nodes = append(nodes, harness.SimNode{Name: scaleNodeName(r, i), Labels: labels,
				Address: fmt.Sprintf("10.200.%d.%d", r, i+1), Ready: true})
		}
	}
	if err := harness.CreateNodes(ctx, l.cs, nodes, 16); err != nil {
		t.Fatal(err)
	}
	closed, err := harness.FreePort() // nothing listens: the routers are unreachable
	if err != nil {
		t.Fatal(err)
	}
	if err := l.crd.Create(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha2.BgpConfSpec{As: 65001}}); err != nil {
		t.Fatal(err)
	}
	for r := range scaleRacks {
		rack := fmt.Sprintf("rack-%02d", r)
		if err := l.crd.Create(ctx, &v1alpha2.BgpPeer{
			ObjectMeta: metav1.ObjectMeta{Name: rack},
			Spec: v1alpha2.BgpPeerSpec{
				Conf:         &v1alpha2.PeerConf{PeerAs: 65100, NeighborAddress: "127.0.0.1"},
				Transport:    &v1alpha2.Transport{RemotePort: uint32(closed)},
				Timers:       &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "5"}},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: rack}},
			},
		}); err != nil {
			t.Fatal(err)
		}
	}
	l.eip("scale-pool", "172.30.0.0/20", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	l.burst("default", scaleServices)
	l.waitAllPlanned("default", scaleServices)
	l.waitRackCount(scaleRacks)

	// Speakers for the speaker nodes of rack-00 and rack-01.
	var speakers []string
	for r := range 2 {
		for i := range scaleSpeakers {
			speakers = append(speakers, scaleNodeName(r, i))
		}
	}
	l.settle()
	before := l.writes()
	for _, n := range speakers {
		l.startSpeaker(n)
	}
	for _, n := range speakers {
		l.waitSpeakerPaths(n, scaleServices, scaleServices*scaleNextHops)
	}
	l.settle()
	started := harness.WritesDelta(before, l.writes(), scaleWriteResources...)
	t.Logf("writes caused by starting %d speakers with %d Services: %v", len(speakers), scaleServices, started)
	// Each speaker writes its LoadBalancerSpeaker (created, then its
	// paths; sessions trying to connect) and its entry of its BgpPeer's
	// status: a few writes each, whatever the number of Services.
	if n := harness.TotalWrites(started); n > float64(8*len(speakers)) {
		t.Errorf("starting %d speakers cost %v writes, want at most %d (a few per speaker): %v", len(speakers), n, 8*len(speakers), started)
	}
	for _, res := range []string{"loadbalancerplans", "loadbalancerracks", "services", "ipclaims"} {
		if n := sumResource(started, res); n > 0 {
			t.Errorf("starting speakers wrote %v %s", n, res)
		}
	}

	t.Run("SpeakersAtRestWriteNothing", func(t *testing.T) {
		l := l.in(t)
		from := l.writes()
		time.Sleep(15 * time.Second)
		if got := harness.WritesDelta(from, l.writes(), scaleWriteResources...); len(got) > 0 {
			t.Errorf("writes in 15 s at rest: %v", got)
		}
	})

	t.Run("NodeFlipIsOneRackWrite", func(t *testing.T) {
		l := l.in(t)
		flipped := scaleNodeName(0, scaleSpeakers) // an eligible node of rack-00 without a speaker
		for _, ready := range []bool{false, true} {
			l.settle()
			from := l.writes()
			if err := harness.SetNodeReady(ctx, l.cs, flipped, ready); err != nil {
				t.Fatal(err)
			}
			hops := scaleNextHops
			if !ready {
				hops--
			}
			// The speakers of rack-00 follow the rack object.
			for _, n := range speakers[:scaleSpeakers] {
				l.waitSpeakerPaths(n, scaleServices, scaleServices*hops)
			}
			l.settle()
			got := harness.WritesDelta(from, l.writes(), scaleWriteResources...)
			t.Logf("writes caused by %s Ready=%v: %v", flipped, ready, got)
			want := map[string]float64{
				"PUT loadbalancerracks":      1,
				"APPLY loadbalancerspeakers": scaleSpeakers,
			}
			if diff := cmp.Diff(want, withoutBgpPeers(got)); diff != "" {
				t.Errorf("writes caused by %s Ready=%v with %d Services (-want +got):\n%s", flipped, ready, scaleServices, diff)
			}
			if n := harness.TotalWrites(got); n > 10 {
				t.Errorf("a node flip cost %v writes, want at most 10", n)
			}
		}
	})

	t.Run("NewServiceIsAHandfulOfWrites", func(t *testing.T) {
		l := l.in(t)
		l.settle()
		from := l.writes()
		l.create(newService("default", "one-more"))
		l.waitIPs("default", "one-more", 1, ipTimeout)
		l.waitPlan("default", "one-more", func(*v1alpha2.LoadBalancerPlan) bool { return true })
		for _, n := range speakers {
			l.waitSpeakerPaths(n, scaleServices+1, (scaleServices+1)*scaleNextHops)
		}
		l.settle()
		got := harness.WritesDelta(from, l.writes(), scaleWriteResources...)
		t.Logf("writes caused by one new Service: %v", got)
		// The test's own create aside: status, plan, claim (create, or
		// bind of a reserved one and the next reservation), event, pool
		// usage.
		provider := -got["POST services"]
		for _, res := range []string{"services", "events", "ipclaims", "eips", "loadbalancerplans", "loadbalancerracks"} {
			provider += sumResource(got, res)
		}
		if provider > 6 {
			t.Errorf("one new Service cost the provider %v writes, want at most 6: %v", provider, got)
		}
		// Each speaker's report counts it, at most once per counts interval.
		if n := sumResource(got, "loadbalancerspeakers") + sumResource(got, "bgppeers"); n > float64(2*len(speakers)) {
			t.Errorf("one new Service cost the speakers %v writes, want at most %d: %v", n, 2*len(speakers), got)
		}
	})
}

func (l *lab) writes() map[string]float64 {
	l.t.Helper()
	w, err := harness.APIWrites(context.Background(), l.cs)
	if err != nil {
		l.t.Fatal(err)
	}
	return w
}

// sumResource adds the writes of a resource (all verbs and subresources).
func sumResource(w map[string]float64, res string) float64 {
	var n float64
	for k, v := range w {
		_, r, _ := strings.Cut(k, " ")
		if r, _, _ = strings.Cut(r, "/"); r == res {
			n += v
		}
	}
	return n
}

// withoutBgpPeers drops the BgpPeer status writes: their advertisedPaths
// follow the paths like the reports do, and a session trying to connect to
// an unreachable router may change state at any time.
func withoutBgpPeers(w map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range w {
		if sumResource(map[string]float64{k: v}, "bgppeers") == 0 {
			out[k] = v
		}
	}
	return out
}

// waitAllPlanned waits until n Services of ns have an address and a plan.
func (l *lab) waitAllPlanned(ns string, n int) {
	l.t.Helper()
	var got int
	err := wait.PollUntilContextTimeout(context.Background(), time.Second, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		var plans v1alpha2.LoadBalancerPlanList
		if err := l.crd.List(ctx, &plans, client.InNamespace(ns)); err != nil {
			return false, nil
		}
		got = len(plans.Items)
		return got == n, nil
	})
	if err != nil {
		l.t.Fatalf("%d plans in %s, want %d", got, ns, n)
	}
}

func (l *lab) waitRackCount(n int) {
	l.t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var racks v1alpha2.LoadBalancerRackList
		err := l.crd.List(ctx, &racks)
		return err == nil && len(racks.Items) == n, nil
	})
	if err != nil {
		l.t.Fatalf("want %d LoadBalancerRacks", n)
	}
}

// startSpeaker runs openelb-speaker for a simulated node, as a process of
// this host (it has no router to reach and answers no ARP).
func (l *lab) startSpeaker(node string) *harness.Component {
	l.t.Helper()
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		l.t.Fatal(err)
	}
	port, err := harness.FreePort()
	if err != nil {
		l.t.Fatal(err)
	}
	cmd, args, err := harness.SpeakerCommand(bin, "--kubeconfig="+l.cp.Kubeconfig, "--node-name="+node,
		fmt.Sprintf("--health-address=127.0.0.1:%d", port), "--v=2")
	if err != nil {
		l.t.Fatal(err)
	}
	sp, err := l.cp.StartComponent("speaker-"+node, cmd, args...)
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		if l.t.Failed() {
			l.t.Logf("--- speaker %s log tail ---\n%s", node, sp.LogTail(30))
		}
		_ = sp.Stop()
	})
	return sp
}

// waitSpeakerPaths waits until node's LoadBalancerSpeaker reports it
// announcing prefixes addresses as paths paths.
func (l *lab) waitSpeakerPaths(node string, prefixes, paths int) {
	l.t.Helper()
	var got v1alpha2.LoadBalancerSpeakerStatus
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		var sp v1alpha2.LoadBalancerSpeaker
		if err := l.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
			return false, nil
		}
		got = sp.Status
		return got.Announcing && int(got.Prefixes) == prefixes && int(got.Paths) == paths, nil
	})
	if err != nil {
		l.t.Fatalf("LoadBalancerSpeaker %s: announcing %v, %d prefixes, %d paths; want %d and %d", node, got.Announcing, got.Prefixes, got.Paths, prefixes, paths)
	}
}
