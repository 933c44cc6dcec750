package plugin

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

var now = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { return ptr.To(metav1.NewTime(now.Add(-d))) }

func lbService(ns, name, uid string, ips ...string) corev1.Service {
	s := corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID(uid)},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyCluster},
	}
	for _, ip := range ips {
		s.Status.LoadBalancer.Ingress = append(s.Status.LoadBalancer.Ingress, corev1.LoadBalancerIngress{IP: ip})
	}
	return s
}

func plan(ns, name, uid string, addrs ...v1alpha2.PlanAddress) v1alpha2.LoadBalancerPlan {
	return v1alpha2.LoadBalancerPlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       v1alpha2.LoadBalancerPlanSpec{ServiceUID: types.UID(uid), Addresses: addrs, ExternalTrafficPolicy: "Cluster"},
	}
}

func hop(node string, ips ...string) v1alpha2.RackNextHop {
	return v1alpha2.RackNextHop{Node: node, Addresses: ips}
}

// seedInput is seed 000 as the guide leaves it (worker-p001 in no rack),
// with a BGP Service, a layer-2 Service whose pool only leaf1's segment
// can answer, and a Service that asked for a pool that does not exist.
func seedInput() StatusInput {
	announced := metav1.Condition{Type: "Announced", Status: metav1.ConditionTrue, Reason: "Announced", Message: "the rack's speakers announce every Service's BGP addresses"}
	return StatusInput{
		Now: now,
		Services: []corev1.Service{
			lbService("default", "web", "u-web", "192.168.0.200"),
			lbService("default", "nginx", "u-nginx", "172.22.0.2"),
			lbService("default", "orphan", "u-orphan"),
		},
		Plans: []v1alpha2.LoadBalancerPlan{
			plan("default", "nginx", "u-nginx", v1alpha2.PlanAddress{IP: "172.22.0.2", Pool: "eip-sample-pool", Protocol: "bgp"}),
			plan("default", "web", "u-web", v1alpha2.PlanAddress{IP: "192.168.0.200", Pool: "l2-rack1", Protocol: "layer2", Interface: "eth0"}),
		},
		Racks: []v1alpha2.LoadBalancerRack{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "leaf2", Generation: 1},
				Spec: v1alpha2.LoadBalancerRackSpec{Rack: "leaf2", Speakers: []string{"worker-p002"},
					Peers:    []v1alpha2.PlanPeer{{Name: "leaf2", Address: "192.168.1.1", AS: 65102}},
					NextHops: []v1alpha2.RackNextHop{hop("worker-p002", "192.168.1.2")}},
				Status: v1alpha2.LoadBalancerRackStatus{Conditions: []metav1.Condition{announced}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "rack-e3b0", Generation: 1},
				Spec:       v1alpha2.LoadBalancerRackSpec{Rack: "", NextHops: []v1alpha2.RackNextHop{hop("worker-p001", "192.168.0.4")}},
				Status: v1alpha2.LoadBalancerRackStatus{Conditions: []metav1.Condition{
					{Type: "Announced", Status: metav1.ConditionFalse, Reason: "RackWithoutSpeaker", Message: "see the other conditions"},
					{Type: "RackWithoutSpeaker", Status: metav1.ConditionTrue, Reason: "RackWithoutSpeaker",
						Message: `rack "" (nodes without label openelb.kubesphere.io/rack) has 1 eligible node (worker-p001) but no ready speaker (label lb.kubesphere.io/v1alpha1=openelb)`},
				}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "leaf1", Generation: 2},
				Spec: v1alpha2.LoadBalancerRackSpec{Rack: "leaf1", Speakers: []string{"master1"},
					Peers:    []v1alpha2.PlanPeer{{Name: "leaf1", Address: "192.168.0.1", AS: 65101}},
					NextHops: []v1alpha2.RackNextHop{hop("master1", "192.168.0.3")}},
				Status: v1alpha2.LoadBalancerRackStatus{Conditions: []metav1.Condition{announced}},
			},
		},
		Speakers: []v1alpha2.LoadBalancerSpeaker{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "worker-p002"},
				Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "leaf2", Announcing: true, AS: 65002, Prefixes: 1, Paths: 1, ObservedRackGeneration: 1,
					Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf2", Address: "192.168.1.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1, LastTransitionTime: ago(3 * time.Minute)}},
					Layer2:   []v1alpha2.SpeakerLayer2{{Pool: "l2-rack1", Interface: "eth0", MAC: "02:00:00:00:01:02", Reason: "OutsideSubnet", Message: "the addresses of Eip l2-rack1 (192.168.0.200) are outside every subnet of interface eth0 [192.168.1.2/24]"}},
					Problems: []v1alpha2.SpeakerProblem{{Object: "Eip/l2-rack1", Reason: "OutsideSubnet", Services: []string{"default/web"}, ServiceCount: 1,
						Message: "the addresses of Eip l2-rack1 (192.168.0.200) are outside every subnet of interface eth0 [192.168.1.2/24]"}},
				},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "master1"},
				Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "leaf1", Announcing: true, AS: 65001, Prefixes: 1, Paths: 1, ObservedRackGeneration: 2,
					Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf1", Address: "192.168.0.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1, BfdState: "up", LastTransitionTime: ago(75 * time.Second)}},
					Layer2: []v1alpha2.SpeakerLayer2{{Pool: "l2-rack1", Interface: "eth0", MAC: "02:00:00:00:00:03", Answering: true, Addresses: 1, Reason: "Answering",
						Message: "answering for 1 of 1 address(es) on eth0, its share with 0 other candidate node(s); 1 with 02:00:00:00:00:03 of this node"}},
				},
			},
		},
		Peers: []v1alpha2.BgpPeer{{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}}, {ObjectMeta: metav1.ObjectMeta{Name: "leaf2"}}},
		// master1 is the only node up on the pool's subnet: the pool's
		// only candidate. worker-p002, outside it, lists no pool.
		Leases: []coordinationv1.Lease{
			l2Lease("master1", 300*time.Millisecond, l2Acks("l2-rack1", "master1", "master1")),
			l2Lease("worker-p002", 200*time.Millisecond, nil),
		},
		LeasesListed:   true,
		LeaseNamespace: "openelb-system",
		Events: []corev1.Event{
			warning("orphan", "u-orphan", "PoolNotFound", `pool not found: requested pool "missing-pool" does not exist`, 10*time.Second),
			warning("orphan", "u-orphan", "PoolNotFound", "an older one", time.Minute),
			warning("orphan", "u-earlier", "NoPool", "from an earlier Service of that name", 0),
			func() corev1.Event {
				e := warning("orphan", "u-orphan", "ClusterIPNotAllocated", "not openelb's business", 0)
				e.Source.Component = "ipallocator-repair-controller"
				return e
			}(),
		},
	}
}

// l2Lease is a node's layer-2 Lease as its speaker writes it, last
// renewed ago before now, for election.DefaultLeaseTimings (2s).
func l2Lease(node string, ago time.Duration, m election.Membership) coordinationv1.Lease {
	return coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "openelb-system", Name: election.NodeLeaseName(node),
			Labels: map[string]string{labelComponent: election.LeaseComponent}, Annotations: map[string]string{election.AnnotationPools: m.Encode()}},
		Spec: coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](2),
			RenewTime: ptr.To(metav1.NewMicroTime(now.Add(-ago)))},
	}
}

// l2Acks is the membership a node writes when it acts on the view of
// pool made of nodes (a name ending in "*" is preferred); self is one of
// nodes, and its preferred flag is read from there.
func l2Acks(pool, self string, nodes ...string) election.Membership {
	v := l2View(pool, nodes...)
	preferred := false
	for _, c := range v.Candidates {
		if c.Node == self {
			preferred = c.Preferred
		}
	}
	return election.Membership{pool: {View: v.Hash, Preferred: preferred}}
}

// l2View is the view of pool made of nodes; a name ending in "*" is
// preferred.
func l2View(pool string, nodes ...string) election.View {
	cands := make([]election.Candidate, len(nodes))
	for i, n := range nodes {
		cands[i] = election.Candidate{Node: strings.TrimSuffix(n, "*"), Preferred: strings.HasSuffix(n, "*")}
	}
	return election.NewView(pool, cands)
}

func warning(svc, uid, reason, msg string, age time.Duration) corev1.Event {
	return corev1.Event{
		InvolvedObject: corev1.ObjectReference{Kind: "Service", Namespace: "default", Name: svc, UID: types.UID(uid)},
		Type:           corev1.EventTypeWarning, Reason: reason, Message: msg, LastTimestamp: metav1.NewTime(now.Add(-age)),
		Source: corev1.EventSource{Component: "openelb-cloud-controller-manager"},
	}
}

func TestRenderStatusSeed(t *testing.T) {
	want := `Service default/nginx (externalTrafficPolicy Cluster)
└── 172.22.0.2 (pool eip-sample-pool, bgp): announced from 2 of 3 racks
    ├── rack "" (nodes without label openelb.kubesphere.io/rack): not announced: no speaker
    │   ├── [RackWithoutSpeaker] rack "" (nodes without label openelb.kubesphere.io/rack) has 1 eligible node (worker-p001) but no ready speaker (label lb.kubesphere.io/v1alpha1=openelb)
    │   └── next hops: worker-p001 (192.168.0.4)
    ├── rack leaf1: announced
    │   ├── speaker master1 (AS 65001): announcing 1 prefix, 1 path in all
    │   │   └── session leaf1 192.168.0.1: established for 75s, ADD-PATH, 1 path, BFD up
    │   ├── peers: leaf1 192.168.0.1 (AS 65101)
    │   └── next hops: master1 (192.168.0.3)
    └── rack leaf2: announced
        ├── speaker worker-p002 (AS 65002): announcing 1 prefix, 1 path in all
        │   └── session leaf2 192.168.1.1: established for 3m, ADD-PATH, 1 path
        ├── peers: leaf2 192.168.1.1 (AS 65102)
        └── next hops: worker-p002 (192.168.1.2)

Service default/orphan (externalTrafficPolicy Cluster)
├── no address yet, and no LoadBalancerPlan
└── events
    └── [PoolNotFound] pool not found: requested pool "missing-pool" does not exist

Service default/web (externalTrafficPolicy Cluster)
├── 192.168.0.200 (pool l2-rack1, layer2 on eth0): answered by master1
│   ├── candidates: master1
│   ├── master1: answering (MAC 02:00:00:00:00:03), owner of this address: answering for 1 of 1 address(es) on eth0, its share with 0 other candidate node(s); 1 with 02:00:00:00:00:03 of this node
│   └── worker-p002: OutsideSubnet (MAC 02:00:00:00:01:02) (see speaker problems)
└── speaker problems
    └── worker-p002: [OutsideSubnet] Eip/l2-rack1: the addresses of Eip l2-rack1 (192.168.0.200) are outside every subnet of interface eth0 [192.168.1.2/24]
`
	if diff := cmp.Diff(want, RenderStatus(seedInput())); diff != "" {
		t.Errorf("RenderStatus (-want +got):\n%s", diff)
	}
}

// TestRenderStatusDeterministic: the input's order does not show.
func TestRenderStatusDeterministic(t *testing.T) {
	in := seedInput()
	want := RenderStatus(in)
	rev := func(n int, swap func(i, j int)) {
		for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
			swap(i, j)
		}
	}
	rev(len(in.Services), func(i, j int) { in.Services[i], in.Services[j] = in.Services[j], in.Services[i] })
	rev(len(in.Racks), func(i, j int) { in.Racks[i], in.Racks[j] = in.Racks[j], in.Racks[i] })
	rev(len(in.Speakers), func(i, j int) { in.Speakers[i], in.Speakers[j] = in.Speakers[j], in.Speakers[i] })
	rev(len(in.Events), func(i, j int) { in.Events[i], in.Events[j] = in.Events[j], in.Events[i] })
	if got := RenderStatus(in); got != want {
		t.Errorf("output depends on the input's order:\n%s", cmp.Diff(want, got))
	}
	in = spreadInput()
	want = RenderStatus(in)
	rev(len(in.Leases), func(i, j int) { in.Leases[i], in.Leases[j] = in.Leases[j], in.Leases[i] })
	rev(len(in.Speakers), func(i, j int) { in.Speakers[i], in.Speakers[j] = in.Speakers[j], in.Speakers[i] })
	if got := RenderStatus(in); got != want {
		t.Errorf("output depends on the order of the Leases:\n%s", cmp.Diff(want, got))
	}
}

// TestRenderStatusWhyNot covers the reasons a rack does not announce an
// address, and what the speakers leave out.
func TestRenderStatusWhyNot(t *testing.T) {
	svc := lbService("shop", "cart", "u1", "10.1.0.5", "fd00::5")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	attrs := &v1alpha2.BGPAttributes{
		Communities:  []string{"65000:100", "no-export"},
		LocalPref:    ptr.To[int64](250),
		PeerSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"tier": "edge"}},
	}
	p := plan("shop", "cart", "u1",
		v1alpha2.PlanAddress{IP: "10.1.0.5", Pool: "p4", Protocol: "bgp", BGP: attrs},
		v1alpha2.PlanAddress{IP: "fd00::5", Pool: "p6", Protocol: "bgp"})
	p.Spec.ExternalTrafficPolicy = "Local"
	p.Spec.EndpointNodes = []string{"a1", "a2"}
	p.Status.Conditions = []metav1.Condition{
		{Type: "Planned", Status: metav1.ConditionFalse, Reason: "InvalidBGPAttributes", Message: "see the other conditions"},
		{Type: "InvalidBGPAttributes", Status: metav1.ConditionTrue, Reason: "InvalidBGPAttributes", Message: `annotation openelb.kubesphere.io/bgp-communities: community "bogus"`},
	}
	in := StatusInput{
		Now:      now,
		Services: []corev1.Service{svc},
		Plans:    []v1alpha2.LoadBalancerPlan{p},
		Racks: []v1alpha2.LoadBalancerRack{
			{ObjectMeta: metav1.ObjectMeta{Name: "a", Generation: 5}, Spec: v1alpha2.LoadBalancerRackSpec{Rack: "a", Speakers: []string{"a1", "a3"},
				Peers: []v1alpha2.PlanPeer{{Name: "edge-a", Address: "10.0.0.1", AS: 65100}, {Name: "core-a", Address: "10.0.0.2", AS: 65100}},
				NextHops: []v1alpha2.RackNextHop{
					{Node: "a1", Addresses: []string{"10.0.0.11", "fd00::11"}},
					{Node: "a2", Addresses: []string{"10.0.0.12"}, GracefulShutdown: true},
					{Node: "a3", Addresses: []string{"10.0.0.13", "fd00::13"}},
				}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1alpha2.LoadBalancerRackSpec{Rack: "b", Speakers: []string{"b1"},
				NextHops: []v1alpha2.RackNextHop{{Node: "b1", Addresses: []string{"10.0.1.11"}}}}},
		},
		Speakers: []v1alpha2.LoadBalancerSpeaker{
			{ObjectMeta: metav1.ObjectMeta{Name: "a1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "a", Announcing: true, AS: 65001, Prefixes: 2, Paths: 3, ObservedRackGeneration: 4,
				Sessions: []v1alpha2.SpeakerSession{
					{Peer: "edge-a", Address: "10.0.0.1", State: "established", NextHopSelf: true, AdvertisedPaths: 2},
					{Peer: "core-a", Address: "10.0.0.2", State: "active", LastTransitionTime: ago(26 * time.Hour)},
				},
				DataPath: &v1alpha2.SpeakerDataPath{Port: 10256, Probed: 3, Unhealthy: []v1alpha2.SpeakerUnhealthyNode{{Node: "a2", Message: "connection refused"}}},
				Problems: []v1alpha2.SpeakerProblem{
					{Object: "BgpPeer/core-a", Reason: "BgpPeerInvalid", Message: "spec.conf.peerAs 0"},
					{Object: "Eip/other", Reason: "OutsideSubnet", Message: "not this Service's pool", Services: []string{"x/y"}},
					{Object: "LoadBalancerPlan/shop/cart", Reason: "BGPAttributesConflict", Message: "shares 10.1.0.5 with shop/other"},
				},
			}},
			// a3 has not written a report; b1 has, but no BgpPeer matches it.
			{ObjectMeta: metav1.ObjectMeta{Name: "b1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "b"}},
		},
		Peers: []v1alpha2.BgpPeer{
			{ObjectMeta: metav1.ObjectMeta{Name: "edge-a", Labels: map[string]string{"tier": "edge"}}},
			{ObjectMeta: metav1.ObjectMeta{Name: "core-a"}},
		},
	}
	want := `Service shop/cart (externalTrafficPolicy Local, endpoints on a1, a2)
├── 10.1.0.5 (pool p4, bgp): announced from 1 of 2 racks
│   ├── attributes: communities 65000:100 no-export; local-pref 250; peerSelector tier=edge
│   ├── rack a: announced
│   │   ├── speaker a1 (AS 65001): announcing 2 prefixes, 3 paths in all (following rack generation 4 of 5)
│   │   │   ├── session core-a 10.0.0.2: active for 26h, not selected by the peerSelector
│   │   │   └── session edge-a 10.0.0.1: established, next-hop-self (no ADD-PATH), 2 paths
│   │   ├── speaker a3: no LoadBalancerSpeaker report (is its speaker running?)
│   │   ├── peers: edge-a 10.0.0.1 (AS 65100), core-a 10.0.0.2 (AS 65100) not selected by the peerSelector
│   │   ├── next hops: a1 (10.0.0.11), a2 (10.0.0.12) draining: graceful-shutdown community
│   │   ├── not next hops of this address: a3 (no ready endpoint: externalTrafficPolicy Local)
│   │   └── left out by a1, kube-proxy health check failing: a2 (connection refused)
│   └── rack b: not announced: its speakers match no BgpPeer
│       ├── speaker b1: not announcing
│       │   └── no BGP session
│       └── not next hops of this address: b1 (no ready endpoint: externalTrafficPolicy Local)
├── fd00::5 (pool p6, bgp): announced from 1 of 2 racks
│   ├── rack a: announced
│   │   ├── speaker a1 (AS 65001): announcing 2 prefixes, 3 paths in all (following rack generation 4 of 5)
│   │   │   ├── session core-a 10.0.0.2: active for 26h
│   │   │   └── session edge-a 10.0.0.1: established, next-hop-self (no ADD-PATH), 2 paths
│   │   ├── speaker a3: no LoadBalancerSpeaker report (is its speaker running?)
│   │   ├── peers: edge-a 10.0.0.1 (AS 65100), core-a 10.0.0.2 (AS 65100)
│   │   ├── next hops: a1 (fd00::11)
│   │   ├── not next hops of this address: a2 (no InternalIP of the address's family), a3 (no ready endpoint: externalTrafficPolicy Local)
│   │   └── left out by a1, kube-proxy health check failing: a2 (connection refused)
│   └── rack b: not announced: its speakers match no BgpPeer
│       ├── speaker b1: not announcing
│       │   └── no BGP session
│       └── not next hops of this address: b1 (no InternalIP of the address's family)
├── [InvalidBGPAttributes] annotation openelb.kubesphere.io/bgp-communities: community "bogus"
└── speaker problems
    ├── a1: [BgpPeerInvalid] BgpPeer/core-a: spec.conf.peerAs 0
    └── a1: [BGPAttributesConflict] LoadBalancerPlan/shop/cart: shares 10.1.0.5 with shop/other
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("RenderStatus (-want +got):\n%s", diff)
	}
}

// TestRackAnnouncedNeedsEstablishedSession: a rack with speakers, peers
// and next hops announces only once a speaker's session is up.
func TestRackAnnouncedNeedsEstablishedSession(t *testing.T) {
	in := StatusInput{
		Now:      now,
		Services: []corev1.Service{lbService("ns", "s", "u", "10.0.0.9")},
		Plans:    []v1alpha2.LoadBalancerPlan{plan("ns", "s", "u", v1alpha2.PlanAddress{IP: "10.0.0.9", Pool: "p", Protocol: "bgp"})},
		Racks: []v1alpha2.LoadBalancerRack{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1alpha2.LoadBalancerRackSpec{Rack: "r", Speakers: []string{"n1"},
			Peers: []v1alpha2.PlanPeer{{Name: "leaf", Address: "10.0.0.1", AS: 1}}, NextHops: []v1alpha2.RackNextHop{hop("n1", "10.0.0.11")}}}},
		Speakers: []v1alpha2.LoadBalancerSpeaker{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "r", Announcing: true,
			Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf", State: "established"}}}}},
	}
	if got := RenderStatus(in); !strings.Contains(got, "rack r: announced\n") || !strings.Contains(got, "announced from 1 of 1 racks") {
		t.Errorf("an established session of a speaker of the rack announces it:\n%s", got)
	}
	in.Speakers[0].Status.Sessions[0].State = "active"
	if got := RenderStatus(in); !strings.Contains(got, "rack r: planned, but no speaker has an established session") {
		t.Errorf("no established session:\n%s", got)
	}
}

func TestRenderStatusPlanMismatches(t *testing.T) {
	svc := lbService("ns", "s", "new-uid", "10.0.0.9")
	in := StatusInput{Now: now, Services: []corev1.Service{svc},
		Plans: []v1alpha2.LoadBalancerPlan{plan("ns", "s", "old-uid", v1alpha2.PlanAddress{IP: "10.0.0.8", Pool: "p", Protocol: "bgp"})}}
	want := `Service ns/s (externalTrafficPolicy Cluster)
├── LoadBalancerPlan ns/s belongs to an earlier Service of that name (uid old-uid): the CCM has not planned this one yet
└── addresses 10.0.0.9 in the Service's status but no LoadBalancerPlan: nothing announces them (is the openelb CCM running?)
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("stale plan (-want +got):\n%s", diff)
	}

	in.Plans[0].Spec.ServiceUID = "new-uid"
	in.Plans[0].Spec.Addresses[0].Protocol = ""
	want = `Service ns/s (externalTrafficPolicy Cluster)
├── in the Service's status but not in its plan (not announced): 10.0.0.9
└── 10.0.0.8 (pool p): not announced: the address lies in no current pool, or the pool's protocol "" is not served
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("plan and status disagree (-want +got):\n%s", diff)
	}
}

func TestRenderStatusLayer2Nobody(t *testing.T) {
	in := StatusInput{Now: now,
		Services: []corev1.Service{lbService("ns", "s", "u", "10.0.0.9")},
		Plans:    []v1alpha2.LoadBalancerPlan{plan("ns", "s", "u", v1alpha2.PlanAddress{IP: "10.0.0.9", Pool: "l2", Protocol: "layer2", Interface: "eth1"})},
	}
	want := `Service ns/s (externalTrafficPolicy Cluster)
└── 10.0.0.9 (pool l2, layer2 on eth1): answered by no node: no speaker reports pool l2
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	// The same with the Leases read: none lists the pool.
	in.LeasesListed = true
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("Leases read (-want +got):\n%s", diff)
	}
	in.LeasesListed = false
	in.Speakers = []v1alpha2.LoadBalancerSpeaker{
		{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: []v1alpha2.SpeakerLayer2{{Pool: "l2", Reason: "InterfaceUnavailable", Message: `interface "eth1" of Eip l2: no such network interface`}}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: []v1alpha2.SpeakerLayer2{{Pool: "l2", Reason: "Standby", MAC: "02:00:00:00:00:01"}}}},
	}
	want = `Service ns/s (externalTrafficPolicy Cluster)
└── 10.0.0.9 (pool l2, layer2 on eth1): answered by no node
    ├── n1: standby (MAC 02:00:00:00:00:01)
    └── n2: InterfaceUnavailable: interface "eth1" of Eip l2: no such network interface
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestTreeKeepsMessagesOnOneLine(t *testing.T) {
	root := &node{text: "root"}
	root.add("a\nmessage  over\r\nlines").add("child")
	root.add("last")
	var b strings.Builder
	root.write(&b)
	want := "root\n├── a message over lines\n│   └── child\n└── last\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestRenderStatusLocalWithoutEndpoints(t *testing.T) {
	svc := lbService("ns", "s", "u", "10.0.0.9")
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	p := plan("ns", "s", "u", v1alpha2.PlanAddress{IP: "10.0.0.9", Pool: "p", Protocol: "bgp"})
	p.Spec.ExternalTrafficPolicy = "Local"
	p.Status.Conditions = []metav1.Condition{
		{Type: "Planned", Status: metav1.ConditionFalse, Reason: "NoLocalEndpoints", Message: "see the other conditions"},
		{Type: "NoLocalEndpoints", Status: metav1.ConditionTrue, Reason: "NoLocalEndpoints", Message: "no node has a ready endpoint of the Service"},
	}
	in := StatusInput{Now: now, Services: []corev1.Service{svc}, Plans: []v1alpha2.LoadBalancerPlan{p},
		Racks: []v1alpha2.LoadBalancerRack{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1alpha2.LoadBalancerRackSpec{Rack: "r", Speakers: []string{"n1"},
			Peers: []v1alpha2.PlanPeer{{Name: "leaf", Address: "10.0.0.1", AS: 1}}, NextHops: []v1alpha2.RackNextHop{hop("n1", "10.0.0.11")}}}},
		Speakers: []v1alpha2.LoadBalancerSpeaker{{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Rack: "r", Announcing: true,
			Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf", Address: "10.0.0.1", State: "established", AddPathNegotiated: true}}}}},
	}
	want := `Service ns/s (externalTrafficPolicy Local, no node with a ready endpoint)
├── 10.0.0.9 (pool p, bgp): announced from 0 of 1 racks
│   └── rack r: not announced: no next hop for this address
│       ├── speaker n1: announcing 0 prefixes, 0 paths in all
│       │   └── session leaf 10.0.0.1: established, ADD-PATH, 0 paths
│       ├── peers: leaf 10.0.0.1 (AS 1)
│       └── not next hops of this address: n1 (no ready endpoint: externalTrafficPolicy Local)
└── [NoLocalEndpoints] no node has a ready endpoint of the Service
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// spreadInput is a layer-2 pool shared out among n1, n2 and n3: n1
// answers its share, n2 waits for n3 to acknowledge the current set of
// candidates before it takes over its addresses, n3 has no endpoint node's
// MAC for its address, and n4's Lease expired while its last report still
// says answering.
func spreadInput() StatusInput {
	svc := lbService("ns", "s", "u", "10.0.0.12", "10.0.0.9", "fd00::9")
	addr := func(ip string) v1alpha2.PlanAddress {
		return v1alpha2.PlanAddress{IP: ip, Pool: "l2", Protocol: "layer2", Interface: "eth1"}
	}
	l2 := func(e v1alpha2.SpeakerLayer2) []v1alpha2.SpeakerLayer2 {
		e.Pool, e.Interface = "l2", "eth1"
		return []v1alpha2.SpeakerLayer2{e}
	}
	return StatusInput{
		Now:      now,
		Services: []corev1.Service{svc},
		Plans:    []v1alpha2.LoadBalancerPlan{plan("ns", "s", "u", addr("10.0.0.12"), addr("10.0.0.9"), addr("fd00::9"))},
		Speakers: []v1alpha2.LoadBalancerSpeaker{
			{ObjectMeta: metav1.ObjectMeta{Name: "n1"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: l2(v1alpha2.SpeakerLayer2{
				MAC: "02:00:00:00:00:01", Answering: true, Addresses: 1, Reason: "Answering",
				Message: "answering for 1 of 3 address(es) on eth1, its share with 2 other candidate node(s); 1 with 02:00:00:00:00:01 of this node"})}},
			{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: l2(v1alpha2.SpeakerLayer2{
				MAC: "02:00:00:00:00:02", Reason: "Standby",
				Message: "candidate on eth1: taking over 1 address(es) once n3 acknowledge(s) the new set of candidates"})}},
			{ObjectMeta: metav1.ObjectMeta{Name: "n3"}, Status: v1alpha2.LoadBalancerSpeakerStatus{
				Layer2: l2(v1alpha2.SpeakerLayer2{MAC: "02:00:00:00:00:03", Reason: "NoLocalEndpoint",
					Message: "owning 1 address(es) of pool l2 but answering for none on eth1 (see problems)"}),
				Problems: []v1alpha2.SpeakerProblem{{Object: "Eip/l2", Reason: "NoLocalEndpoint", Services: []string{"ns/s"}, ServiceCount: 1,
					Message: "1 address(es) not answered: no node with a ready endpoint of the Service has published its MAC for pool l2 (externalTrafficPolicy Local): fd00::9"}},
			}},
			{ObjectMeta: metav1.ObjectMeta{Name: "n4"}, Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: l2(v1alpha2.SpeakerLayer2{
				MAC: "02:00:00:00:00:04", Answering: true, Addresses: 2, Reason: "Answering",
				Message: "answering for 2 of 3 address(es) on eth1, its share with 2 other candidate node(s); 2 with 02:00:00:00:00:04 of this node"})}},
		},
		Leases: []coordinationv1.Lease{
			l2Lease("n1", 100*time.Millisecond, l2Acks("l2", "n1", "n1", "n2", "n3")),
			l2Lease("n2", 400*time.Millisecond, l2Acks("l2", "n2", "n1", "n2", "n3")),
			l2Lease("n3", 2*time.Second, l2Acks("l2", "n3", "n1", "n2", "n3", "n4")), // expires now: still live
			l2Lease("n4", 10*time.Second, l2Acks("l2", "n4", "n1", "n2", "n3", "n4")),
		},
		LeasesListed:   true,
		LeaseNamespace: "openelb-system",
	}
}

// TestRenderStatusLayer2Spread: each address is answered by its owner
// among the live candidates, as the speakers compute it.
func TestRenderStatusLayer2Spread(t *testing.T) {
	in := spreadInput()
	want := `Service ns/s (externalTrafficPolicy Cluster)
├── 10.0.0.12 (pool l2, layer2 on eth1): answered by n1
│   ├── candidates: n1, n2, n3 (still acting on another set of candidates); Lease expired: n4 (8s ago)
│   ├── n1: answering (MAC 02:00:00:00:00:01), owner of this address: answering for 1 of 3 address(es) on eth1, its share with 2 other candidate node(s); 1 with 02:00:00:00:00:01 of this node
│   ├── n2: standby (MAC 02:00:00:00:00:02)
│   ├── n3: NoLocalEndpoint (MAC 02:00:00:00:00:03) (see speaker problems)
│   └── n4: answering (MAC 02:00:00:00:00:04), by its last report, but no live Lease of it lists the pool: answering for 2 of 3 address(es) on eth1, its share with 2 other candidate node(s); 2 with 02:00:00:00:00:04 of this node
├── 10.0.0.9 (pool l2, layer2 on eth1): answered by no node: its owner n2 reports Standby
│   ├── candidates: n1, n2, n3 (still acting on another set of candidates); Lease expired: n4 (8s ago)
│   ├── n1: answering (MAC 02:00:00:00:00:01), not this address: answering for 1 of 3 address(es) on eth1, its share with 2 other candidate node(s); 1 with 02:00:00:00:00:01 of this node
│   ├── n2: standby (MAC 02:00:00:00:00:02), owner of this address: candidate on eth1: taking over 1 address(es) once n3 acknowledge(s) the new set of candidates
│   ├── n3: NoLocalEndpoint (MAC 02:00:00:00:00:03) (see speaker problems)
│   └── n4: answering (MAC 02:00:00:00:00:04), by its last report, but no live Lease of it lists the pool: answering for 2 of 3 address(es) on eth1, its share with 2 other candidate node(s); 2 with 02:00:00:00:00:04 of this node
├── fd00::9 (pool l2, layer2 on eth1): answered by no node: its owner n3 reports NoLocalEndpoint
│   ├── candidates: n1, n2, n3 (still acting on another set of candidates); Lease expired: n4 (8s ago)
│   ├── n1: answering (MAC 02:00:00:00:00:01), not this address: answering for 1 of 3 address(es) on eth1, its share with 2 other candidate node(s); 1 with 02:00:00:00:00:01 of this node
│   ├── n2: standby (MAC 02:00:00:00:00:02)
│   ├── n3: NoLocalEndpoint (MAC 02:00:00:00:00:03), owner of this address (see speaker problems)
│   └── n4: answering (MAC 02:00:00:00:00:04), by its last report, but no live Lease of it lists the pool: answering for 2 of 3 address(es) on eth1, its share with 2 other candidate node(s); 2 with 02:00:00:00:00:04 of this node
└── speaker problems
    └── n3: [NoLocalEndpoint] Eip/l2: 1 address(es) not answered: no node with a ready endpoint of the Service has published its MAC for pool l2 (externalTrafficPolicy Local): fd00::9
`
	if diff := cmp.Diff(want, RenderStatus(in)); diff != "" {
		t.Errorf("RenderStatus (-want +got):\n%s", diff)
	}
	// The owners shown are the speakers' (election.View.Owner).
	v := l2View("l2", "n1", "n2", "n3")
	for ip, owner := range map[string]string{"10.0.0.12": "n1", "10.0.0.9": "n2", "fd00::9": "n3"} {
		if got := v.Owner(netip.MustParseAddr(ip)); got != owner {
			t.Errorf("owner of %s is %s, the test assumes %s", ip, got, owner)
		}
	}
}

// TestRenderStatusLayer2OwnerCannotAnswer: an owner that answers for its
// pool but reports a problem naming the address does not answer it.
func TestRenderStatusLayer2OwnerCannotAnswer(t *testing.T) {
	in := spreadInput()
	in.Speakers[0].Status.Problems = []v1alpha2.SpeakerProblem{{Object: "Eip/l2", Reason: "Rejected", Services: []string{"ns/s"}, ServiceCount: 1,
		Message: "1 address(es) cannot be answered on eth1: 10.0.0.12: taken by another responder"}}
	got := RenderStatus(in)
	if want := "10.0.0.12 (pool l2, layer2 on eth1): answered by no node: its owner n1 cannot answer it (Rejected, see speaker problems)\n"; !strings.Contains(got, want) {
		t.Errorf("want %q in:\n%s", want, got)
	}
	if strings.Contains(got, "10.0.0.120") || !strings.Contains(got, "├── fd00::9 (pool l2, layer2 on eth1): answered by no node: its owner n3 reports NoLocalEndpoint\n") {
		t.Errorf("the other addresses changed:\n%s", got)
	}
}

// TestRenderStatusLayer2Preferred: preferred candidates own every address
// while there are any.
func TestRenderStatusLayer2Preferred(t *testing.T) {
	in := spreadInput()
	in.Leases = []coordinationv1.Lease{
		l2Lease("n1", 0, l2Acks("l2", "n1", "n1", "n2*")),
		l2Lease("n2", 0, l2Acks("l2", "n2", "n1", "n2*")),
		// Named after another node than its holder: not a node Lease.
		func() coordinationv1.Lease {
			l := l2Lease("n3", 0, l2Acks("l2", "n3", "n1", "n2*", "n3"))
			l.Name = election.NodeLeaseName("n1")
			return l
		}(),
	}
	in.Speakers[1].Status.Layer2[0].Answering, in.Speakers[1].Status.Layer2[0].Reason, in.Speakers[1].Status.Layer2[0].Message =
		true, "Answering", "answering for 3 of 3 address(es) on eth1, its share with 1 other candidate node(s); 3 with 02:00:00:00:00:02 of this node"
	got := RenderStatus(in)
	for _, want := range []string{
		"├── 10.0.0.12 (pool l2, layer2 on eth1): answered by n2\n",
		"├── 10.0.0.9 (pool l2, layer2 on eth1): answered by n2\n",
		"├── fd00::9 (pool l2, layer2 on eth1): answered by n2\n",
		"│   ├── candidates: n1, n2 (preferred)\n",
		"│   ├── n1: answering (MAC 02:00:00:00:00:01), not this address: ",
		"│   ├── n2: answering (MAC 02:00:00:00:00:02), owner of this address: answering for 3 of 3",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("want %q in:\n%s", want, got)
		}
	}
}

// TestRenderStatusLayer2LeasesUnreadable: without the node Leases, the
// answering node is known only when one node answers for the pool.
func TestRenderStatusLayer2LeasesUnreadable(t *testing.T) {
	in := spreadInput()
	in.Leases, in.LeasesListed = nil, false
	got := RenderStatus(in)
	want := "├── 10.0.0.12 (pool l2, layer2 on eth1): answered by one of n1, n4 (the node Leases in openelb-system are not readable: which node owns this address is unknown)\n" +
		"│   ├── n1: answering (MAC 02:00:00:00:00:01): answering for 1 of 3"
	if !strings.Contains(got, want) {
		t.Errorf("want %q in:\n%s", want, got)
	}
	in.Speakers = in.Speakers[:1]
	if got := RenderStatus(in); !strings.Contains(got, "├── 10.0.0.12 (pool l2, layer2 on eth1): answered by n1\n") {
		t.Errorf("one node answering for the pool answers every address:\n%s", got)
	}
}

// TestRenderStatusLayer2NoCandidate: speakers report the pool, but no live
// Lease lists it.
func TestRenderStatusLayer2NoCandidate(t *testing.T) {
	in := spreadInput()
	in.Leases = in.Leases[3:] // n4's, expired
	got := RenderStatus(in)
	for _, want := range []string{
		"├── 10.0.0.12 (pool l2, layer2 on eth1): answered by no node: no live node Lease in openelb-system lists pool l2\n",
		"│   ├── candidates: none (no live node Lease lists the pool); Lease expired: n4 (8s ago)\n",
		"│   ├── n1: answering (MAC 02:00:00:00:00:01), by its last report, but no live Lease of it lists the pool: ",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("want %q in:\n%s", want, got)
		}
	}
}
