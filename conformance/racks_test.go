package conformance

import (
	"context"
	"fmt"
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

// TestPlanRacks checks the CCM's half of rack-scoped BGP against the real
// control plane: the plan of a Service lists, per rack, the speakers, the
// peers they match and the rack's eligible next hops, and follows node,
// label, peer and endpoint changes live. The node lifecycle controller is
// off so the Ready conditions the test writes (there is no kubelet) stay.
func TestPlanRacks(t *testing.T) {
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
	l.eip("eip-sample-pool", "172.22.0.2-172.22.0.10", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	l.create(newService("default", "nginx"))
	if ips := l.waitIPs("default", "nginx", 1, ipTimeout); ips[0].String() != "172.22.0.2" {
		t.Errorf("got %v, want 172.22.0.2 (seed 000)", ips)
	}

	leaf1 := v1alpha2.RackPlan{Name: "leaf1", Speakers: []string{"master1"},
		Peers: []v1alpha2.PlanPeer{{Name: "leaf1", Address: "192.168.0.2", AS: 50001}}, NextHops: []string{"192.168.0.3", "192.168.0.4"}}
	leaf2 := v1alpha2.RackPlan{Name: "leaf2", Speakers: []string{"worker-p002"},
		Peers: []v1alpha2.PlanPeer{{Name: "leaf2", Address: "192.168.1.1", AS: 50001}}, NextHops: []string{"192.168.1.2"}}
	l.waitRacks("seed topology", "default", "nginx", []v1alpha2.RackPlan{leaf1, leaf2})

	t.Run("NodeNotReadyLosesItsNextHop", func(t *testing.T) {
		l := *l
		l.t = t
		l.setReady("worker-p001", false)
		want := leaf1
		want.NextHops = []string{"192.168.0.3"}
		l.waitRacks("worker-p001 NotReady", "default", "nginx", []v1alpha2.RackPlan{want, leaf2})
		l.setReady("worker-p001", true)
		l.waitRacks("worker-p001 Ready again", "default", "nginx", []v1alpha2.RackPlan{leaf1, leaf2})
	})

	t.Run("LocalTrafficPolicyFollowsEndpoints", func(t *testing.T) {
		l := *l
		l.t = t
		svc := l.create(newService("default", "local", func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
		}))
		l.waitIPs("default", "local", 1, ipTimeout)
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
		noHops := leaf1
		noHops.NextHops = nil
		// leaf1's speaker stays in the plan with no next hop: it must withdraw.
		l.waitRacks("Local, endpoint on worker-p002 only", "default", "local", []v1alpha2.RackPlan{noHops, leaf2})
	})

	t.Run("PeerSelectorChangeTakesEffectLive", func(t *testing.T) {
		l := *l
		l.t = t
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
		l.waitRacks("peer leaf2 selects nobody", "default", "nginx", []v1alpha2.RackPlan{leaf1, unannounced})
		l.waitCondition("default", "nginx", "RackNotAnnounced", "leaf2")
		setSelector("leaf2")
		l.waitRacks("peer leaf2 restored", "default", "nginx", []v1alpha2.RackPlan{leaf1, leaf2})
	})

	t.Run("RelabelMovesRackLive", func(t *testing.T) {
		l := *l
		l.t = t
		l.label("master1", v1alpha2.LabelRack, "leaf2")
		l.waitRacks("master1 moved to leaf2", "default", "nginx", []v1alpha2.RackPlan{
			{Name: "leaf1", NextHops: []string{"192.168.0.4"}},
			{Name: "leaf2", Speakers: []string{"master1", "worker-p002"}, Peers: leaf2.Peers, NextHops: []string{"192.168.0.3", "192.168.1.2"}},
		})
		l.waitCondition("default", "nginx", "RackWithoutSpeaker", "leaf1")
		l.label("master1", v1alpha2.LabelRack, "leaf1")
		l.waitRacks("master1 back in leaf1", "default", "nginx", []v1alpha2.RackPlan{leaf1, leaf2})
		l.waitCondition("default", "nginx", "Planned", "")
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

// waitRacks waits until the Service's plan has exactly these racks.
func (l *lab) waitRacks(what, ns, name string, want []v1alpha2.RackPlan) {
	l.t.Helper()
	var got []v1alpha2.RackPlan
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var p v1alpha2.LoadBalancerPlan
		if err := l.crd.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
			return false, nil
		}
		got = p.Spec.Racks
		return cmp.Equal(want, got), nil
	})
	if err != nil {
		l.t.Fatalf("%s: plan %s/%s racks (-want +got):\n%s", what, ns, name, cmp.Diff(want, got))
	}
}

// waitCondition waits for a True condition of the type on the plan whose
// message mentions mention ("Planned" is checked for True without problems).
func (l *lab) waitCondition(ns, name, typ, mention string) {
	l.t.Helper()
	var conds []metav1.Condition
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		var p v1alpha2.LoadBalancerPlan
		if err := l.crd.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &p); err != nil {
			return false, nil
		}
		conds = p.Status.Conditions
		c := meta.FindStatusCondition(conds, typ)
		return c != nil && c.Status == metav1.ConditionTrue && (mention == "" || strings.Contains(c.Message, mention)), nil
	})
	if err != nil {
		l.t.Fatalf("plan %s/%s: no True %s condition mentioning %q; conditions: %s", ns, name, typ, mention, fmt.Sprint(conds))
	}
}
