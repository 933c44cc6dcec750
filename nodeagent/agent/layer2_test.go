package agent

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
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
	return v1alpha2.PlanAddress{IP: ip, Pool: pool, Protocol: v1alpha2.ProtocolLayer2}
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
	Eip       string
	Override  bool
	EipUID    string
	Local     bool
	Addrs     []string // ip@plan
}

type planSummary struct {
	Local         bool
	EndpointNodes []string
}

func summarize(pools map[string]*l2Pool) (map[string]poolSummary, map[string]planSummary) {
	ps := map[string]poolSummary{}
	pl := map[string]planSummary{}
	for n, p := range pools {
		s := poolSummary{Interface: strings.Join(p.Interfaces, ","), Eip: p.Eip, Override: p.Override, EipUID: string(p.EipUID), Local: p.Local}
		for _, a := range p.Addrs {
			s.Addrs = append(s.Addrs, a.IP.String()+"@"+a.Plan.Key)
			pl[a.Plan.Key] = planSummary{Local: a.Plan.Local, EndpointNodes: a.Plan.EndpointNodes}
		}
		ps[n] = s
	}
	return ps, pl
}

func TestLayer2Desired(t *testing.T) {
	eips := []*v1alpha2.Eip{l2Eip("l2", "eth0"), l2Eip("l2v6", "can_reach:2001:db8:50::2"), {ObjectMeta: metav1.ObjectMeta{Name: "bgp"}}}
	web := l2PlanObj("web", "Cluster", l2Address("192.168.50.101", "l2"), l2Address("2001:db8:50::100", "l2v6"))
	// A Cluster plan has no endpoint nodes to follow, whatever it says.
	web.Spec.EndpointNodes = []string{"node9"}
	local := l2PlanObj("local", "Local", l2Address("192.168.50.100", "l2"))
	local.Spec.EndpointNodes = []string{"node2", "node3"}
	bgpOnly := l2PlanObj("routed", "Cluster", v1alpha2.PlanAddress{IP: "172.22.0.2", Pool: "bgp", Protocol: v1alpha2.ProtocolBGP})
	orphanAddr := l2Address("192.168.60.5", "deleted-pool")
	orphanAddr.Interface = "plan-iface"
	orphan := l2PlanObj("orphan", "Cluster", orphanAddr)
	noPool := l2PlanObj("adopted", "Cluster", v1alpha2.PlanAddress{IP: "192.168.50.200"})
	// The CCM writes the Eip's interfaces into the plan, or the Service's
	// own (annotation): those form a group of their own.
	sameAddr, ownAddr := l2Address("192.168.50.102", "l2"), l2Address("192.168.50.103", "l2")
	sameAddr.Interface, ownAddr.Interface = "eth0", "eth1,bond*"
	same, own := l2PlanObj("same", "Cluster", sameAddr), l2PlanObj("own", "Cluster", ownAddr)
	plans := []*v1alpha2.LoadBalancerPlan{web, local, bgpOnly, orphan, noPool, same, own}

	wantPools := map[string]poolSummary{
		"l2": {Interface: "eth0", Eip: "l2", EipUID: "uid-l2", Local: true,
			Addrs: []string{"192.168.50.100@default/local", "192.168.50.101@default/web", "192.168.50.102@default/same"}},
		"l2@eth1,bond*": {Interface: "eth1,bond*", Eip: "l2", Override: true, EipUID: "uid-l2", Addrs: []string{"192.168.50.103@default/own"}},
		"l2v6":          {Interface: "can_reach:2001:db8:50::2", Eip: "l2v6", EipUID: "uid-l2v6", Addrs: []string{"2001:db8:50::100@default/web"}},
		"deleted-pool":  {Interface: "plan-iface", Eip: "deleted-pool", Addrs: []string{"192.168.60.5@default/orphan"}},
	}
	wantPlans := map[string]planSummary{
		"default/web":    {},
		"default/local":  {Local: true, EndpointNodes: []string{"node2", "node3"}},
		"default/orphan": {},
		"default/same":   {},
		"default/own":    {},
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
			gotPools, gotPlans := summarize(layer2Desired(tc.node, eips, plans))
			if diff := cmp.Diff(tc.wantPools, gotPools); diff != "" {
				t.Errorf("pools (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantPlans, gotPlans); diff != "" {
				t.Errorf("plans (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSpeakerMACs(t *testing.T) {
	pools := map[string]*l2Pool{"l2": {Name: "l2", Local: true}, "cluster-only": {Name: "cluster-only"}}
	speaker := func(node string, l2 ...v1alpha2.SpeakerLayer2) *v1alpha2.LoadBalancerSpeaker {
		return &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: node}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: l2}}
	}
	got := speakerMACs([]*v1alpha2.LoadBalancerSpeaker{
		speaker("node2", v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "02:00:00:00:50:12"}, v1alpha2.SpeakerLayer2{Pool: "cluster-only", MAC: "02:00:00:00:50:12"}),
		speaker("node3", v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "not a mac"}),
		speaker("node4", v1alpha2.SpeakerLayer2{Pool: "l2"}),
		speaker("node5", v1alpha2.SpeakerLayer2{Pool: "other", MAC: "02:00:00:00:50:15"}),
		speaker("node6", v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "02:00:00:00:00:00:00:16"}),
	}, pools)
	want := poolMACs{"l2": {"node2": net.HardwareAddr{2, 0, 0, 0, 0x50, 0x12}}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestAnswerMAC(t *testing.T) {
	self := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x11}
	mac2 := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x12}
	mac3 := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x13}
	ip := netip.MustParseAddr("192.168.50.100")
	both := map[string]net.HardwareAddr{"node2": mac2, "node3": mac3}
	for _, tc := range []struct {
		name     string
		plan     *l2Plan
		macs     map[string]net.HardwareAddr
		wantNode string
		oneOf    []string
	}{
		{"cluster: own MAC", &l2Plan{EndpointNodes: []string{"node2"}}, both, "node1", nil},
		{"local with an endpoint here: own MAC", &l2Plan{Local: true, EndpointNodes: []string{"node1", "node2"}}, both, "node1", nil},
		{"local elsewhere: that node", &l2Plan{Local: true, EndpointNodes: []string{"node2"}}, both, "node2", nil},
		{"local: only nodes that published a MAC", &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}}, map[string]net.HardwareAddr{"node3": mac3}, "node3", nil},
		{"local: one of several", &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}}, both, "", []string{"node2", "node3"}},
		{"local without endpoints: nobody", &l2Plan{Local: true}, both, "", nil},
		{"local, endpoint node without MAC: nobody", &l2Plan{Local: true, EndpointNodes: []string{"node4"}}, both, "", nil},
		{"local, no MAC published for the pool: nobody", &l2Plan{Local: true, EndpointNodes: []string{"node2"}}, nil, "", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mac, node := answerMAC(ip, tc.plan, tc.macs, "node1", self)
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
			again, node2 := answerMAC(ip, tc.plan, tc.macs, "node1", self)
			if node2 != node || again.String() != mac.String() {
				t.Errorf("not deterministic: %s then %s", node, node2)
			}
		})
	}
	// Spread: different IPs pick both endpoint nodes.
	plan := &l2Plan{Local: true, EndpointNodes: []string{"node2", "node3"}}
	seen := map[string]int{}
	for i := range 64 {
		_, n := answerMAC(netip.AddrFrom4([4]byte{192, 168, 50, byte(i)}), plan, both, "node1", self)
		seen[n]++
	}
	if seen["node2"] == 0 || seen["node3"] == 0 {
		t.Errorf("64 IPs all went to one node: %v", seen)
	}
}

func TestLayer2Relevant(t *testing.T) {
	routed := l2PlanObj("routed", "Cluster", v1alpha2.PlanAddress{IP: "172.22.0.2", Pool: "bgp", Protocol: v1alpha2.ProtocolBGP})
	cluster := l2PlanObj("web", "Cluster", l2Address("192.168.50.100", "l2"))
	local := l2PlanObj("local", "Local", l2Address("192.168.50.101", "l2"))
	moved := cluster.DeepCopy()
	moved.Spec.Addresses[0].IP = "192.168.50.102"
	endpoint := local.DeepCopy()
	endpoint.Spec.EndpointNodes = []string{"node2"}
	routedMoved := routed.DeepCopy()
	routedMoved.Spec.Addresses[0].IP = "172.22.0.3"
	sameSpec := cluster.DeepCopy()
	sameSpec.ResourceVersion = "2"
	for _, tc := range []struct {
		name     string
		old, cur *v1alpha2.LoadBalancerPlan
		want     bool
	}{
		{"BGP plan added", nil, routed, false},
		{"BGP plan changed", routed, routedMoved, false},
		{"layer-2 plan added", nil, cluster, true},
		{"layer-2 plan deleted", cluster, nil, true},
		{"address changed", cluster, moved, true},
		{"Local plan: an endpoint node came", local, endpoint, true},
		{"same spec (the CCM's conditions changed)", cluster, sameSpec, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := layer2Relevant(tc.old, tc.cur); got != tc.want {
				t.Errorf("layer2Relevant = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestMacsChanged(t *testing.T) {
	speaker := func(l2 ...v1alpha2.SpeakerLayer2) *v1alpha2.LoadBalancerSpeaker {
		return &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: "node2"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: l2}}
	}
	a := speaker(v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "02:00:00:00:50:12", Reason: ReasonStandby})
	aAnswering := speaker(v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "02:00:00:00:50:12", Answering: true, Reason: ReasonAnswering})
	b := speaker(v1alpha2.SpeakerLayer2{Pool: "l2", MAC: "02:00:00:00:50:22"})
	for _, tc := range []struct {
		name     string
		old, cur *v1alpha2.LoadBalancerSpeaker
		want     bool
	}{
		{"added with a MAC", nil, a, true},
		{"added without layer 2", nil, speaker(), false},
		{"deleted", a, nil, true},
		{"MAC changed", a, b, true},
		{"answering changed, same MAC", a, aAnswering, false},
		{"another pool", a, speaker(a.Status.Layer2[0], v1alpha2.SpeakerLayer2{Pool: "l2b", MAC: "02:00:00:00:50:12"}), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := macsChanged(tc.old, tc.cur); got != tc.want {
				t.Errorf("macsChanged = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLayer2Report: one entry per pool, and the problems of its addresses
// with the Services they belong to.
func TestLayer2Report(t *testing.T) {
	selfMAC := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x11}
	mac2 := net.HardwareAddr{2, 0, 0, 0, 0x50, 0x12}
	plan := func(name string) *l2Plan { return &l2Plan{Key: "default/" + name, Namespace: "default", Name: name} }
	ip := netip.MustParseAddr
	web, local, nolocal, bad, outside := plan("web"), plan("local"), plan("nolocal"), plan("bad"), plan("outside")
	spec := &l2Pool{Name: "l2", Eip: "l2", Interfaces: []string{"eth0"}, Addrs: []l2Addr{
		{IP: ip("192.168.50.100"), Plan: web}, {IP: ip("192.168.50.101"), Plan: local}, {IP: ip("192.168.50.102"), Plan: nolocal},
		{IP: ip("192.168.50.103"), Plan: bad}, {IP: ip("10.99.0.10"), Plan: outside},
	}}
	is := &ifaceState{name: "eth0", mac: selfMAC, rejected: map[netip.Addr]error{ip("192.168.50.103"): errors.New("address of the interface itself")}}
	leading := func() *poolState {
		all := map[netip.Addr]bool{ip("192.168.50.100"): true, ip("192.168.50.101"): true, ip("192.168.50.102"): true, ip("192.168.50.103"): true}
		return &poolState{spec: spec, ifname: "eth0", mac: selfMAC.String(), iface: is, mine: all, answering: maps.Clone(all), ready: true,
			view:         election.NewView("l2", []election.Candidate{{Node: "node1"}, {Node: "node2"}, {Node: "node3"}}),
			addrProblems: map[netip.Addr]error{ip("10.99.0.10"): fmt.Errorf("%w [192.168.50.0/24]", layer2.ErrOutsideSubnets)},
			chosen: map[netip.Addr]chosenMAC{
				ip("192.168.50.100"): {mac: selfMAC, node: "node1"}, ip("192.168.50.101"): {mac: mac2, node: "node2"},
				ip("192.168.50.103"): {mac: selfMAC, node: "node1"},
			}}
	}
	for _, tc := range []struct {
		name         string
		st           func() *poolState
		closed       bool
		want         v1alpha2.SpeakerLayer2
		wantProblems []Problem
	}{
		{
			name: "answering",
			st:   leading,
			want: v1alpha2.SpeakerLayer2{Pool: "l2", Interface: "eth0", MAC: selfMAC.String(), Answering: true, Addresses: 2, Reason: ReasonAnswering,
				Message: "answering for 2 of 5 address(es) on eth0, its share with 2 other candidate node(s); 1 with 02:00:00:00:50:11 of this node; " +
					"1 with the MAC of a node with a ready endpoint (externalTrafficPolicy Local): node2"},
			wantProblems: []Problem{
				{Object: "Eip/l2", Reason: ReasonOutsideSubnet, Services: []string{"default/outside"},
					Message: "1 address(es) cannot be answered on eth0: 10.99.0.10: outside every subnet of the interface [192.168.50.0/24]"},
				{Object: "Eip/l2", Reason: ReasonRejected, Services: []string{"default/bad"},
					Message: "1 address(es) cannot be answered on eth0: 192.168.50.103: address of the interface itself"},
				{Object: "Eip/l2", Reason: ReasonNoLocalEndpoint, Services: []string{"default/nolocal"},
					Message: "1 address(es) not answered: no node with a ready endpoint of the Service has published its MAC for pool l2 (externalTrafficPolicy Local): 192.168.50.102"},
			},
		},
		{
			name: "standby: only its own address problems",
			st: func() *poolState {
				st := leading()
				st.mine, st.answering, st.chosen = map[netip.Addr]bool{}, nil, nil
				return st
			},
			want: v1alpha2.SpeakerLayer2{Pool: "l2", Interface: "eth0", MAC: selfMAC.String(), Reason: ReasonStandby,
				Message: "standby on eth0: the 2 other candidate node(s) own the 5 address(es) of pool l2"},
			wantProblems: []Problem{{Object: "Eip/l2", Reason: ReasonOutsideSubnet, Services: []string{"default/outside"},
				Message: "1 address(es) cannot be answered on eth0: 10.99.0.10: outside every subnet of the interface [192.168.50.0/24]"}},
		},
		{
			name: "taking over: waits for the other candidates",
			st: func() *poolState {
				st := leading()
				st.answering, st.chosen, st.ready, st.waiting = nil, nil, false, []string{"node3"}
				return st
			},
			want: v1alpha2.SpeakerLayer2{Pool: "l2", Interface: "eth0", MAC: selfMAC.String(), Reason: ReasonStandby,
				Message: "candidate on eth0: taking over 4 address(es) once node3 acknowledge(s) the new set of candidates"},
			wantProblems: []Problem{{Object: "Eip/l2", Reason: ReasonOutsideSubnet, Services: []string{"default/outside"},
				Message: "1 address(es) cannot be answered on eth0: 10.99.0.10: outside every subnet of the interface [192.168.50.0/24]"}},
		},
		{
			name: "interface missing: one problem naming every Service of the pool",
			st: func() *poolState {
				return &poolState{spec: spec, problem: l2Problem{Reason: ReasonNoInterface, Message: `interface "eth0" of Eip l2: no such interface`}}
			},
			want: v1alpha2.SpeakerLayer2{Pool: "l2", Reason: ReasonNoInterface, Message: `interface "eth0" of Eip l2: no such interface`},
			wantProblems: []Problem{{Object: "Eip/l2", Reason: ReasonNoInterface, Message: `interface "eth0" of Eip l2: no such interface`,
				Services: []string{"default/bad", "default/local", "default/nolocal", "default/outside", "default/web"}}},
		},
		{
			name: "responder being rebuilt",
			st:   func() *poolState { return &poolState{spec: spec, ifname: "eth0", mac: selfMAC.String()} },
			want: v1alpha2.SpeakerLayer2{Pool: "l2", Interface: "eth0", MAC: selfMAC.String(), Reason: ReasonResponderFailed,
				Message: "the responder on eth0 failed; rebuilding it"},
		},
		{
			name:   "stopped: the MAC stays published",
			st:     leading,
			closed: true,
			want:   v1alpha2.SpeakerLayer2{Pool: "l2", Interface: "eth0", MAC: selfMAC.String(), Reason: ReasonStopped, Message: "the speaker stopped"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reports := 0
			m := &layer2Manager{node: "node1", namespace: "openelb-system", closed: tc.closed,
				pools: map[string]*poolState{"l2": tc.st()}, statusChanged: func() { reports++ }}
			m.refreshStatusLocked()
			got, problems, _ := m.report()
			if diff := cmp.Diff([]v1alpha2.SpeakerLayer2{tc.want}, got); diff != "" {
				t.Errorf("entry (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantProblems, problems, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
			m.refreshStatusLocked()
			if reports != 1 {
				t.Errorf("%d report requests for one change, want 1", reports)
			}
		})
	}
}

func TestListed(t *testing.T) {
	if got := listed([]string{"a", "b", "c", "d", "e"}, "; "); got != "a; b; c; and 2 more" {
		t.Errorf("listed: %q", got)
	}
	if got := listed([]string{"a", "b"}, ", "); got != "a, b" {
		t.Errorf("listed: %q", got)
	}
}

// TestLayer2NodeSelector: an Eip's spec.layer2.nodeSelector leaves out the
// nodes whose labels do not match, with the reason; an invalid selector
// leaves out every node.
func TestLayer2NodeSelector(t *testing.T) {
	sel := l2Eip("l2", "eth0")
	sel.Spec.Layer2 = &v1alpha2.EipLayer2{NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"zone": "a"}}}
	bad := l2Eip("bad", "eth0")
	bad.Spec.Layer2 = &v1alpha2.EipLayer2{NodeSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "zone", Operator: "Bogus"}}}}
	plans := []*v1alpha2.LoadBalancerPlan{l2PlanObj("web", "Cluster", l2Address("192.168.50.101", "l2"), l2Address("192.168.50.102", "bad"))}
	for _, tc := range []struct {
		labels          map[string]string
		wantL2, wantBad string // substrings of NotSelected; "" = selected
	}{
		{map[string]string{"zone": "a"}, "", "is invalid"},
		{map[string]string{"zone": "b"}, "do not match spec.layer2.nodeSelector (zone=a) of Eip l2", "is invalid"},
		{nil, "do not match", "is invalid"},
	} {
		pools := layer2Desired(speakerNode(tc.labels), []*v1alpha2.Eip{sel, bad}, plans)
		for name, want := range map[string]string{"l2": tc.wantL2, "bad": tc.wantBad} {
			got := pools[name].NotSelected
			if (want == "") != (got == "") || !strings.Contains(got, want) {
				t.Errorf("labels %v, pool %s: NotSelected %q, want %q", tc.labels, name, got, want)
			}
		}
	}
}
