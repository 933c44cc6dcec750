package agent

import (
	"net"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

func l2Eip(name, iface string) *v1alpha2.Eip {
	return &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID("uid-" + name)},
		Spec: v1alpha2.EipSpec{Address: "192.168.50.100-192.168.50.110", Protocol: v1alpha2.ProtocolLayer2, Interface: iface}}
}

func l2PlanObj(name, etp string, addrs ...v1alpha2.PlanAddress) *v1alpha2.LoadBalancerPlan {
	return &v1alpha2.LoadBalancerPlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec:       v1alpha2.LoadBalancerPlanSpec{Addresses: addrs, ExternalTrafficPolicy: etp},
	}
}

func l2Address(ip, pool string) v1alpha2.PlanAddress {
	return v1alpha2.PlanAddress{IP: ip, Pool: pool, Protocol: v1alpha2.ProtocolLayer2, Interface: "plan-iface"}
}

func speakerNode(labels map[string]string) *v1.Node {
	l := map[string]string{v1alpha2.LabelSpeaker: v1alpha2.LabelSpeakerValue}
	for k, v := range labels {
		l[k] = v
	}
	return &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1", Labels: l}}
}

// summary flattens layer2Desired's output for comparison.
type poolSummary struct {
	Interface string
	EipUID    string
	Addrs     []string // ip@plan
}

type planSummary struct {
	Local         bool
	Pools         []string
	EndpointNodes []string
	MACs          map[string]string
}

func summarize(pools map[string]*l2Pool, plans []*l2Plan) (map[string]poolSummary, map[string]planSummary) {
	ps := map[string]poolSummary{}
	for n, p := range pools {
		s := poolSummary{Interface: p.Interface, EipUID: string(p.EipUID)}
		for _, a := range p.Addrs {
			s.Addrs = append(s.Addrs, a.IP.String()+"@"+a.Plan.Key)
		}
		ps[n] = s
	}
	pl := map[string]planSummary{}
	for _, p := range plans {
		s := planSummary{Local: p.Local, Pools: p.Pools, EndpointNodes: p.EndpointNodes}
		for n, m := range p.MACs {
			if s.MACs == nil {
				s.MACs = map[string]string{}
			}
			s.MACs[n] = m.String()
		}
		pl[p.Key] = s
	}
	return ps, pl
}

func TestLayer2Desired(t *testing.T) {
	eips := []*v1alpha2.Eip{l2Eip("l2", "eth0"), l2Eip("l2v6", "can_reach:2001:db8:50::2"), {ObjectMeta: metav1.ObjectMeta{Name: "bgp"}}}
	web := l2PlanObj("web", "Cluster", l2Address("192.168.50.101", "l2"), l2Address("2001:db8:50::100", "l2v6"))
	local := l2PlanObj("local", "Local", l2Address("192.168.50.100", "l2"))
	local.Status.Nodes = map[string]v1alpha2.NodeAnnouncement{
		"node2": {MAC: "02:00:00:00:50:12"}, "node3": {MAC: "not a mac"}, "node4": {},
	}
	bgpOnly := l2PlanObj("routed", "Cluster", v1alpha2.PlanAddress{IP: "172.22.0.2", Pool: "bgp", Protocol: v1alpha2.ProtocolBGP})
	orphan := l2PlanObj("orphan", "Cluster", l2Address("192.168.60.5", "deleted-pool"))
	noPool := l2PlanObj("adopted", "Cluster", v1alpha2.PlanAddress{IP: "192.168.50.200"})
	endpoints := func(ns, svc string) []string {
		if ns == "default" && svc == "local" {
			return []string{"node2", "node3"}
		}
		t.Errorf("endpoints asked for %s/%s, only Local Services need them", ns, svc)
		return nil
	}
	plans := []*v1alpha2.LoadBalancerPlan{web, local, bgpOnly, orphan, noPool}

	wantPools := map[string]poolSummary{
		"l2":           {Interface: "eth0", EipUID: "uid-l2", Addrs: []string{"192.168.50.100@default/local", "192.168.50.101@default/web"}},
		"l2v6":         {Interface: "can_reach:2001:db8:50::2", EipUID: "uid-l2v6", Addrs: []string{"2001:db8:50::100@default/web"}},
		"deleted-pool": {Interface: "plan-iface", Addrs: []string{"192.168.60.5@default/orphan"}},
	}
	wantPlans := map[string]planSummary{
		"default/web":    {Pools: []string{"l2", "l2v6"}},
		"default/local":  {Local: true, Pools: []string{"l2"}, EndpointNodes: []string{"node2", "node3"}, MACs: map[string]string{"node2": "02:00:00:00:50:12"}},
		"default/orphan": {Pools: []string{"deleted-pool"}},
	}

	for _, tc := range []struct {
		name      string
		node      *v1.Node
		wantPools map[string]poolSummary
		wantPlans map[string]planSummary
	}{
		{"speaker node", speakerNode(nil), wantPools, wantPlans},
		{"no speaker label", &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: "node1"}}, map[string]poolSummary{}, map[string]planSummary{}},
		{"excluded from load balancers", speakerNode(map[string]string{v1.LabelNodeExcludeBalancers: ""}), map[string]poolSummary{}, map[string]planSummary{}},
		{"node unknown", nil, map[string]poolSummary{}, map[string]planSummary{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gotPools, gotPlans := summarize(layer2Desired(tc.node, eips, plans, endpoints))
			if diff := cmp.Diff(tc.wantPools, gotPools); diff != "" {
				t.Errorf("pools (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantPlans, gotPlans); diff != "" {
				t.Errorf("plans (-want +got):\n%s", diff)
			}
		})
	}
}

func TestReadyEndpointNodes(t *testing.T) {
	ep := func(node *string, ready *bool) discoveryv1.Endpoint {
		return discoveryv1.Endpoint{Addresses: []string{"10.244.0.5"}, NodeName: node, Conditions: discoveryv1.EndpointConditions{Ready: ready}}
	}
	slices := []discoveryv1.EndpointSlice{
		{Endpoints: []discoveryv1.Endpoint{ep(ptr.To("node3"), ptr.To(true)), ep(ptr.To("node1"), ptr.To(false)), ep(nil, ptr.To(true))}},
		{Endpoints: []discoveryv1.Endpoint{ep(ptr.To("node2"), nil), ep(ptr.To("node3"), ptr.To(true))}},
	}
	if diff := cmp.Diff([]string{"node2", "node3"}, readyEndpointNodes(slices)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAnswerMAC(t *testing.T) {
	self := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x11}
	mac2 := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x12}
	mac3 := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x13}
	ip := netip.MustParseAddr("192.168.50.100")
	for _, tc := range []struct {
		name     string
		plan     *l2Plan
		wantNode string
		oneOf    []string
	}{
		{"cluster: own MAC", &l2Plan{EndpointNodes: []string{"node2"}, MACs: map[string]net.HardwareAddr{"node2": mac2}}, "node1", nil},
		{"local with an endpoint here: own MAC", &l2Plan{Local: true, EndpointNodes: []string{"node1", "node2"}, MACs: map[string]net.HardwareAddr{"node2": mac2}}, "node1", nil},
		{"local elsewhere: that node", &l2Plan{Local: true, EndpointNodes: []string{"node2"}, MACs: map[string]net.HardwareAddr{"node2": mac2}}, "node2", nil},
		{"local: only nodes that published a MAC", &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}, MACs: map[string]net.HardwareAddr{"node3": mac3}}, "node3", nil},
		{"local: one of several", &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}, MACs: map[string]net.HardwareAddr{"node2": mac2, "node3": mac3}}, "", []string{"node2", "node3"}},
		{"local without endpoints: nobody", &l2Plan{Local: true, MACs: map[string]net.HardwareAddr{"node2": mac2}}, "", nil},
		{"local, endpoint node without MAC: nobody", &l2Plan{Local: true, EndpointNodes: []string{"node4"}}, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mac, node := answerMAC(ip, tc.plan, "node1", self)
			switch {
			case tc.oneOf != nil:
				if node != tc.oneOf[0] && node != tc.oneOf[1] {
					t.Fatalf("node %q, want one of %v", node, tc.oneOf)
				}
			case node != tc.wantNode:
				t.Fatalf("node %q, want %q", node, tc.wantNode)
			}
			if node != "" && mac.String() != map[string]string{"node1": self.String(), "node2": mac2.String(), "node3": mac3.String()}[node] {
				t.Errorf("MAC %v does not belong to %s", mac, node)
			}
			if node == "" && mac != nil {
				t.Errorf("MAC %v without a node", mac)
			}
			again, node2 := answerMAC(ip, tc.plan, "node1", self)
			if node2 != node || again.String() != mac.String() {
				t.Errorf("not deterministic: %s then %s", node, node2)
			}
		})
	}
	// Spread: different IPs pick both endpoint nodes.
	plan := &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}, MACs: map[string]net.HardwareAddr{"node2": mac2, "node3": mac3}}
	seen := map[string]int{}
	for i := range 64 {
		_, n := answerMAC(netip.AddrFrom4([4]byte{192, 168, 50, byte(i)}), plan, "node1", self)
		seen[n]++
	}
	if seen["node2"] == 0 || seen["node3"] == 0 {
		t.Errorf("64 IPs all went to one node: %v", seen)
	}
}

func TestWithLayer2(t *testing.T) {
	l2 := l2Status{Answering: true, MAC: "02:00:00:00:50:11", Reason: ReasonAnswering, Message: "answering"}
	got := withLayer2(v1alpha2.NodeAnnouncement{}, false, l2)
	want := v1alpha2.NodeAnnouncement{Answering: true, MAC: "02:00:00:00:50:11", Reason: ReasonAnswering, Message: "answering"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("layer 2 only (-want +got):\n%s", diff)
	}
	got = withLayer2(v1alpha2.NodeAnnouncement{Advertised: true, Reason: "Advertised", Message: "2 path(s)"}, true, l2)
	want = v1alpha2.NodeAnnouncement{Advertised: true, Answering: true, MAC: "02:00:00:00:50:11", Reason: "Advertised,Answering", Message: "bgp: 2 path(s); layer2: answering"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("both (-want +got):\n%s", diff)
	}
	if !sameEntry(want, got) || sameEntry(want, v1alpha2.NodeAnnouncement{Advertised: true, Answering: true, Reason: want.Reason, Message: want.Message}) {
		t.Errorf("sameEntry must compare the MAC")
	}
}

func TestLayer2Relevant(t *testing.T) {
	routed := l2PlanObj("routed", "Cluster", v1alpha2.PlanAddress{IP: "172.22.0.2", Pool: "bgp", Protocol: v1alpha2.ProtocolBGP})
	cluster := l2PlanObj("web", "Cluster", l2Address("192.168.50.100", "l2"))
	local := l2PlanObj("local", "Local", l2Address("192.168.50.101", "l2"))
	withStatus := func(p *v1alpha2.LoadBalancerPlan, nodes map[string]v1alpha2.NodeAnnouncement) *v1alpha2.LoadBalancerPlan {
		p = p.DeepCopy()
		p.Status.Nodes = nodes
		return p
	}
	moved := cluster.DeepCopy()
	moved.Spec.Addresses[0].IP = "192.168.50.102"
	macA := map[string]v1alpha2.NodeAnnouncement{"node2": {MAC: "02:00:00:00:50:12", Reason: ReasonStandby}}
	macAOtherReason := map[string]v1alpha2.NodeAnnouncement{"node2": {MAC: "02:00:00:00:50:12", Reason: ReasonAnswering}}
	macB := map[string]v1alpha2.NodeAnnouncement{"node2": {MAC: "02:00:00:00:50:22"}}
	for _, tc := range []struct {
		name     string
		old, cur *v1alpha2.LoadBalancerPlan
		want     bool
	}{
		{"BGP plan added", nil, routed, false},
		{"BGP plan status", routed, withStatus(routed, macA), false},
		{"layer-2 plan added", nil, cluster, true},
		{"layer-2 plan deleted", cluster, nil, true},
		{"address changed", cluster, moved, true},
		{"Cluster plan: a node's status", cluster, withStatus(cluster, macA), false},
		{"Local plan: a node published its MAC", local, withStatus(local, macA), true},
		{"Local plan: a MAC changed", withStatus(local, macA), withStatus(local, macB), true},
		{"Local plan: status without MAC change", withStatus(local, macA), withStatus(local, macAOtherReason), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := layer2Relevant(tc.old, tc.cur); got != tc.want {
				t.Errorf("layer2Relevant = %v, want %v", got, tc.want)
			}
		})
	}
}
