package conformance

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// seedNode is a node of OpenELB's multi-router guide (seed 000).
type seedNode struct {
	name, ip, rack string
	speaker        bool
}

var seedNodes = []seedNode{
	{"master1", "192.168.0.3", "leaf1", true},
	{"worker-p001", "192.168.0.4", "leaf1", false},
	{"worker-p002", "192.168.1.2", "leaf2", true},
}

// TestRacks checks the CCM's half of rack-scoped BGP against the real
// control plane: one LoadBalancerRack per rack lists its speakers, the
// peers they match and its eligible next hops, and follows node, label and
// peer changes live; a Service's plan holds only what is its own
// (addresses, traffic policy, endpoint nodes), so a node event writes the
// rack objects it concerns and no plan. The node lifecycle controller is
// off so the Ready conditions the test writes (there is no kubelet) stay.
func TestRacks(t *testing.T) {
	l := newNodeLab(t)
	ctx := context.Background()
	l.ccm("ccm")
	l.createSeedNodes()
	for _, p := range []struct{ name, addr, rack string }{{"leaf1", "192.168.0.2", "leaf1"}, {"leaf2", "192.168.1.1", "leaf2"}} {
		bp := &v1alpha2.BgpPeer{
			ObjectMeta: metav1.ObjectMeta{Name: p.name},
			Spec: v1alpha2.BgpPeerSpec{
				Conf:         &v1alpha2.PeerConf{PeerAs: 50001, NeighborAddress: p.addr},
				NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: p.rack}},
			},
		}
		if err := l.crd.Create(ctx, bp); err != nil {
			t.Fatal(err)
		}
	}
	l.eip("eip-sample-pool", "172.22.0.2-172.22.0.254", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	l.create(newService("default", "nginx"))
	if ips := l.waitIPs("default", "nginx", 1, ipTimeout); ips[0].String() != "172.22.0.2" {
		t.Errorf("got %v, want 172.22.0.2 (seed 000)", ips)
	}
	l.waitPlan("default", "nginx", func(p *v1alpha2.LoadBalancerPlan) bool {
		return len(p.Spec.Addresses) == 1 && p.Spec.Addresses[0].Protocol == v1alpha2.ProtocolBGP && p.Spec.EndpointNodes == nil
	})

	hop := func(node, ip string) v1alpha2.RackNextHop {
		return v1alpha2.RackNextHop{Node: node, Addresses: []string{ip}}
	}
	leaf1 := v1alpha2.LoadBalancerRackSpec{Rack: "leaf1", Speakers: []string{"master1"},
		Peers:    []v1alpha2.PlanPeer{{Name: "leaf1", Address: "192.168.0.2", AS: 50001}},
		NextHops: []v1alpha2.RackNextHop{hop("master1", "192.168.0.3"), hop("worker-p001", "192.168.0.4")}}
	leaf2 := v1alpha2.LoadBalancerRackSpec{Rack: "leaf2", Speakers: []string{"worker-p002"},
		Peers:    []v1alpha2.PlanPeer{{Name: "leaf2", Address: "192.168.1.1", AS: 50001}},
		NextHops: []v1alpha2.RackNextHop{hop("worker-p002", "192.168.1.2")}}
	l.waitRacks("seed topology", leaf1, leaf2)
	l.waitRackCondition("leaf1", "Announced", metav1.ConditionTrue, "")

	t.Run("NodeNotReadyCostsOneRackWrite", func(t *testing.T) {
		l := l.in(t)
		// Enough Services that a per-Service cost would show.
		const services = 20
		for i := range services {
			l.create(newService("default", fmt.Sprintf("svc-%02d", i)))
		}
		for i := range services {
			name := fmt.Sprintf("svc-%02d", i)
			l.waitIPs("default", name, 1, ipTimeout)
			l.waitPlan("default", name, func(*v1alpha2.LoadBalancerPlan) bool { return true })
		}
		flip := func(ready bool, want ...v1alpha2.LoadBalancerRackSpec) map[string]float64 {
			l.settle()
			before, err := harness.APIWrites(ctx, l.cs)
			if err != nil {
				t.Fatal(err)
			}
			l.setReady("worker-p001", ready)
			l.waitRacks(fmt.Sprintf("worker-p001 Ready=%v", ready), want...)
			l.settle()
			after, err := harness.APIWrites(ctx, l.cs)
			if err != nil {
				t.Fatal(err)
			}
			return harness.WritesDelta(before, after, "loadbalancerplans", "loadbalancerracks", "services", "ipclaims")
		}
		notReady := leaf1
		notReady.NextHops = leaf1.NextHops[:1]
		for _, step := range []struct {
			ready bool
			want  v1alpha2.LoadBalancerRackSpec
		}{{false, notReady}, {true, leaf1}} {
			got := flip(step.ready, step.want, leaf2)
			want := map[string]float64{"PUT loadbalancerracks": 1}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("writes caused by worker-p001 Ready=%v with %d Services (-want +got):\n%s", step.ready, services+1, diff)
			}
		}
	})

	t.Run("LocalTrafficPolicyFollowsEndpoints", func(t *testing.T) {
		l := l.in(t)
		svc := l.create(newService("default", "local", func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		}))
		l.waitIPs("default", "local", 1, ipTimeout)
		l.waitPlanCondition("default", "local", cloud.ReasonNoLocalEndpoints, "")
		_, err := l.cs.DiscoveryV1().EndpointSlices("default").Create(ctx, &discoveryv1.EndpointSlice{
			ObjectMeta:  metav1.ObjectMeta{Name: "local-1", Labels: map[string]string{discoveryv1.LabelServiceName: svc.Name}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{
				Addresses: []string{"10.244.2.5"}, NodeName: ptr.To("worker-p002"),
				Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
			}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		// The speakers of leaf1 find no endpoint node among their next hops
		// and withdraw; the racks do not change.
		l.waitPlan("default", "local", func(p *v1alpha2.LoadBalancerPlan) bool {
			return cmp.Equal(p.Spec.EndpointNodes, []string{"worker-p002"}) && p.Spec.ExternalTrafficPolicy == "Local"
		})
		l.waitPlanCondition("default", "local", "Planned", "")
		l.waitRacks("Local Service", leaf1, leaf2)
	})

	t.Run("PeerSelectorChangeTakesEffectLive", func(t *testing.T) {
		l := l.in(t)
		setSelector := func(rack string) {
			var bp v1alpha2.BgpPeer
			if err := l.crd.Get(ctx, client.ObjectKey{Name: "leaf2"}, &bp); err != nil {
				t.Fatal(err)
			}
			bp.Spec.NodeSelector = &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: rack}}
			if err := l.crd.Update(ctx, &bp); err != nil {
				t.Fatal(err)
			}
		}
		setSelector("leaf3") // matches no node
		unannounced := leaf2
		unannounced.Peers = nil
		l.waitRacks("peer leaf2 selects nobody", leaf1, unannounced)
		l.waitRackCondition("leaf2", "RackNotAnnounced", metav1.ConditionTrue, "worker-p002")
		l.waitRackCondition("leaf2", "Announced", metav1.ConditionFalse, "")
		setSelector("leaf2")
		l.waitRacks("peer leaf2 restored", leaf1, leaf2)
		l.waitRackCondition("leaf2", "Announced", metav1.ConditionTrue, "")
	})

	t.Run("RelabelMovesRackLive", func(t *testing.T) {
		l := l.in(t)
		l.label("master1", v1alpha2.LabelRack, "leaf2")
		l.waitRacks("master1 moved to leaf2",
			v1alpha2.LoadBalancerRackSpec{Rack: "leaf1", NextHops: []v1alpha2.RackNextHop{hop("worker-p001", "192.168.0.4")}},
			v1alpha2.LoadBalancerRackSpec{Rack: "leaf2", Speakers: []string{"master1", "worker-p002"}, Peers: leaf2.Peers,
				NextHops: []v1alpha2.RackNextHop{hop("master1", "192.168.0.3"), hop("worker-p002", "192.168.1.2")}},
		)
		l.waitRackCondition("leaf1", "RackWithoutSpeaker", metav1.ConditionTrue, "worker-p001")
		l.label("master1", v1alpha2.LabelRack, "leaf1")
		l.waitRacks("master1 back in leaf1", leaf1, leaf2)
		l.waitRackCondition("leaf1", "Announced", metav1.ConditionTrue, "")
	})

	t.Run("UnlabelledAndOddRackNames", func(t *testing.T) {
		l := l.in(t)
		// A value that is no valid object name gets a derived name;
		// spec.rack keeps the value.
		l.label("worker-p001", v1alpha2.LabelRack, "Leaf_1")
		odd := v1alpha2.LoadBalancerRackSpec{Rack: "Leaf_1", NextHops: []v1alpha2.RackNextHop{hop("worker-p001", "192.168.0.4")}}
		l.waitRacks("worker-p001 in rack Leaf_1", odd, v1alpha2.LoadBalancerRackSpec{Rack: "leaf1", Speakers: leaf1.Speakers, Peers: leaf1.Peers,
			NextHops: leaf1.NextHops[:1]}, leaf2)
		var r v1alpha2.LoadBalancerRack
		if err := l.crd.Get(ctx, client.ObjectKey{Name: v1alpha2.RackObjectName("Leaf_1")}, &r); err != nil || r.Spec.Rack != "Leaf_1" {
			t.Errorf("rack object %s: %v, spec.rack %q", v1alpha2.RackObjectName("Leaf_1"), err, r.Spec.Rack)
		}
		l.label("worker-p001", v1alpha2.LabelRack, "leaf1")
		l.waitRacks("worker-p001 back in leaf1", leaf1, leaf2)
	})
}

// newNodeLab is a lab whose Node objects keep the status the test writes:
// the node lifecycle controller is off, as there is no kubelet.
func newNodeLab(t *testing.T) *lab {
	t.Helper()
	return newLabWith(t, harness.Options{
		ControllerManager:           true,
		ExtraControllerManagerFlags: []string{"--controllers=*,-node-lifecycle-controller"},
	})
}

// createSeedNodes creates seed 000's nodes, Ready, labelled as the guide
// says (kubectl label for the speaker and rack labels).
func (l *lab) createSeedNodes() {
	l.t.Helper()
	for _, n := range seedNodes {
		if _, err := l.cs.CoreV1().Nodes().Create(context.Background(), &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.name}}, metav1.CreateOptions{}); err != nil {
			l.t.Fatal(err)
		}
		l.setNodeStatus(n.name, true, n.ip)
		l.label(n.name, v1alpha2.LabelRack, n.rack)
		if n.speaker {
			l.label(n.name, v1alpha2.LabelSpeaker, v1alpha2.LabelSpeakerValue)
		}
	}
}

func (l *lab) setReady(name string, ready bool) { l.setNodeStatus(name, ready, "") }

// setNodeStatus writes the Ready condition (and InternalIP, if given) a
// kubelet would, retrying on conflicts with the CCM's node controller.
func (l *lab) setNodeStatus(name string, ready bool, ip string) {
	l.t.Helper()
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := l.cs.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: st, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		if ip != "" {
			n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
		}
		_, err = l.cs.CoreV1().Nodes().UpdateStatus(context.Background(), n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		l.t.Fatalf("node %s status: %v", name, err)
	}
}

func (l *lab) label(node, key, value string) {
	l.t.Helper()
	out, err := l.cp.Kubectl(context.Background(), "label", "--overwrite", "nodes", node, key+"="+value)
	if err != nil {
		l.t.Fatalf("kubectl label: %v\n%s", err, out)
	}
}

// waitRacks waits until the LoadBalancerRacks are exactly these (sorted
// by rack), each under its RackObjectName.
func (l *lab) waitRacks(what string, want ...v1alpha2.LoadBalancerRackSpec) {
	l.t.Helper()
	var got []v1alpha2.LoadBalancerRackSpec
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var list v1alpha2.LoadBalancerRackList
		if err := l.crd.List(ctx, &list); err != nil {
			return false, nil
		}
		got = got[:0]
		for _, r := range list.Items {
			if r.Name != v1alpha2.RackObjectName(r.Spec.Rack) {
				return false, fmt.Errorf("rack object %s holds rack %q", r.Name, r.Spec.Rack)
			}
			got = append(got, r.Spec)
		}
		slices.SortFunc(got, func(a, b v1alpha2.LoadBalancerRackSpec) int { return strings.Compare(a.Rack, b.Rack) })
		return cmp.Equal(want, got), nil
	})
	if err != nil {
		l.t.Fatalf("%s: LoadBalancerRacks (-want +got):\n%s", what, cmp.Diff(want, got))
	}
}

// waitPlan waits until the Service's plan exists and satisfies ok.
func (l *lab) waitPlan(ns, name string, ok func(*v1alpha2.LoadBalancerPlan) bool) {
	l.t.Helper()
	var got v1alpha2.LoadBalancerPlan
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := l.crd.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &got); err != nil {
			return false, nil
		}
		return ok(&got), nil
	})
	if err != nil {
		l.t.Fatalf("plan %s/%s not as expected: %+v", ns, name, got.Spec)
	}
}

// settle waits until the CCM and the speakers have written nothing for a
// while, so write counts taken around an event are the event's alone.
func (l *lab) settle() {
	l.t.Helper()
	prev, err := harness.APIWrites(context.Background(), l.cs)
	if err != nil {
		l.t.Fatal(err)
	}
	// Quiet for 2.5 s: longer than a speaker's 2 s report tick.
	quiet := 0
	for range 100 {
		time.Sleep(250 * time.Millisecond)
		cur, err := harness.APIWrites(context.Background(), l.cs)
		if err != nil {
			l.t.Fatal(err)
		}
		if len(harness.WritesDelta(prev, cur, scaleWriteResources...)) > 0 {
			quiet = 0
		} else if quiet++; quiet == 10 {
			return
		}
		prev = cur
	}
	l.t.Fatal("the CCM or the speakers kept writing for 25 s")
}

// waitPlanCondition waits for a True condition of the type on the plan
// whose message mentions mention.
func (l *lab) waitPlanCondition(ns, name, typ, mention string) {
	l.t.Helper()
	l.waitConditions(fmt.Sprintf("plan %s/%s", ns, name), typ, metav1.ConditionTrue, mention, func(ctx context.Context) ([]metav1.Condition, error) {
		var p v1alpha2.LoadBalancerPlan
		err := l.crd.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p)
		return p.Status.Conditions, err
	})
}

// waitRackCondition waits for a condition of the type and status on the
// rack's object whose message mentions mention.
func (l *lab) waitRackCondition(rack, typ string, status metav1.ConditionStatus, mention string) {
	l.t.Helper()
	l.waitConditions("rack "+rack, typ, status, mention, func(ctx context.Context) ([]metav1.Condition, error) {
		var r v1alpha2.LoadBalancerRack
		err := l.crd.Get(ctx, client.ObjectKey{Name: v1alpha2.RackObjectName(rack)}, &r)
		return r.Status.Conditions, err
	})
}

func (l *lab) waitConditions(what, typ string, status metav1.ConditionStatus, mention string, get func(context.Context) ([]metav1.Condition, error)) {
	l.t.Helper()
	var conds []metav1.Condition
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var err error
		if conds, err = get(ctx); err != nil {
			return false, nil
		}
		c := meta.FindStatusCondition(conds, typ)
		return c != nil && c.Status == status && (mention == "" || strings.Contains(c.Message, mention)), nil
	})
	if err != nil {
		l.t.Fatalf("%s: no %s=%s condition mentioning %q; conditions: %s", what, typ, status, mention, fmt.Sprint(conds))
	}
}
