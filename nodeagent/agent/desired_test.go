package agent

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

func seedNode(name, rack, ip string, speaker bool) *v1.Node {
	n := &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{v1alpha2.LabelRack: rack}}}
	if speaker {
		n.Labels[v1alpha2.LabelSpeaker] = v1alpha2.LabelSpeakerValue
	}
	n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: ip}}
	return n
}

func seedPeer(name, addr, rack string) *v1alpha2.BgpPeer {
	return &v1alpha2.BgpPeer{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: v1alpha2.BgpPeerSpec{
			Conf:         &v1alpha2.PeerConf{PeerAs: 50001, NeighborAddress: addr},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: rack}},
		},
	}
}

var seedPlan = &v1alpha2.LoadBalancerPlan{
	ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "nginx"},
	Spec: v1alpha2.LoadBalancerPlanSpec{
		Addresses: []v1alpha2.PlanAddress{{IP: "172.22.0.2", Pool: "eip", Protocol: "bgp"}},
	},
}

// rackObj is a LoadBalancerRack; hops are "node=ip,ip".
func rackObj(rack string, generation int64, speakers []string, hops ...string) *v1alpha2.LoadBalancerRack {
	r := &v1alpha2.LoadBalancerRack{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha2.RackObjectName(rack), Generation: generation},
		Spec:       v1alpha2.LoadBalancerRackSpec{Rack: rack, Speakers: speakers},
	}
	for _, h := range hops {
		node, addrs, _ := strings.Cut(h, "=")
		r.Spec.NextHops = append(r.Spec.NextHops, v1alpha2.RackNextHop{Node: node, Addresses: strings.Split(addrs, ",")})
	}
	return r
}

// The seed racks: leaf1 (master1 speaks; master1 and worker-p001 carry
// traffic), leaf2 (worker-p002).
var (
	seedLeaf1 = rackObj("leaf1", 3, []string{"master1"}, "master1=192.168.0.3", "worker-p001=192.168.0.4")
	seedLeaf2 = rackObj("leaf2", 1, []string{"worker-p002"}, "worker-p002=192.168.1.2")
)

func conf(tweak ...func(*v1alpha2.BgpConf)) *v1alpha2.BgpConf {
	c := &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha2.BgpConfSpec{As: 50000}}
	for _, f := range tweak {
		f(c)
	}
	return c
}

func path(prefix, hop string) bgp.Path {
	return bgp.Path{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(hop)}
}

func TestDesired(t *testing.T) {
	peers := []*v1alpha2.BgpPeer{seedPeer("leaf2", "192.168.1.1", "leaf2"), seedPeer("leaf1", "192.168.0.2", "leaf1")}
	leaf1 := bgp.Peer{Name: "leaf1", Address: netip.MustParseAddr("192.168.0.2"), AS: 50001, AddPathSendMax: DefaultAddPathSendMax}
	secrets := func(name, key string) (string, error) {
		if name == "bgp" && key == "password" {
			return "s3cret\n", nil
		}
		return "", errors.New("not found")
	}
	for _, tc := range []struct {
		name         string
		node         *v1.Node
		conf         *v1alpha2.BgpConf
		peers        []*v1alpha2.BgpPeer
		rack         *v1alpha2.LoadBalancerRack
		want         State
		wantProblems []Problem
	}{
		{
			name:  "seed master1 announces its rack's two next hops to leaf1 only",
			node:  seedNode("master1", "leaf1", "192.168.0.3", true),
			conf:  conf(),
			peers: peers,
			rack:  seedLeaf1,
			want: State{Enabled: true, Announcing: true, Rack: "leaf1", RackGeneration: 3, Prefixes: 1,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Peers:  []bgp.Peer{leaf1},
				Paths:  []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")}},
		},
		{
			name: "asPerRack and routerId override",
			node: seedNode("worker-p002", "leaf2", "192.168.1.2", true),
			conf: conf(func(c *v1alpha2.BgpConf) {
				c.Spec.AsPerRack = map[string]v1alpha2.ASN{"leaf2": 50002}
				c.Spec.RouterId = "10.0.0.9"
			}),
			peers: peers,
			rack:  seedLeaf2,
			want: State{Enabled: true, Announcing: true, Rack: "leaf2", RackGeneration: 1, Prefixes: 1,
				Global: bgp.Global{AS: 50002, RouterID: netip.MustParseAddr("10.0.0.9")},
				Peers: []bgp.Peer{{Name: "leaf2", Address: netip.MustParseAddr("192.168.1.1"), AS: 50001,
					AddPathSendMax: DefaultAddPathSendMax}},
				Paths: []bgp.Path{path("172.22.0.2/32", "192.168.1.2")}},
		},
		{name: "not a speaker node", node: seedNode("worker-p001", "leaf1", "192.168.0.4", false), conf: conf(), peers: peers, rack: seedLeaf1},
		{
			name: "no BgpConf: the Services it would announce are affected", node: seedNode("master1", "leaf1", "192.168.0.3", true), peers: peers, rack: seedLeaf1,
			want: State{Rack: "leaf1", RackGeneration: 3},
			wantProblems: []Problem{{Object: "BgpConf/default", Reason: ReasonNoBgpConf, Message: "BgpConf default does not exist: BGP is off on this node",
				Services: []string{"default/nginx"}}},
		},
		{
			name: "invalid BgpConf", node: seedNode("master1", "leaf1", "192.168.0.3", true), peers: peers, rack: seedLeaf1,
			conf: conf(func(c *v1alpha2.BgpConf) { c.Spec.RouterId = "2001:db8::1" }),
			want: State{Rack: "leaf1", RackGeneration: 3},
			wantProblems: []Problem{{Object: "BgpConf/default", Reason: ReasonInvalidBgpConf, Message: `spec.routerId "2001:db8::1" is not an IPv4 address`,
				Services: []string{"default/nginx"}}},
		},
		{
			name: "rack object missing: sessions, nothing announced", node: seedNode("master1", "leaf1", "192.168.0.3", true), conf: conf(), peers: peers,
			want: State{Enabled: true, Rack: "leaf1",
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Peers:  []bgp.Peer{leaf1}},
		},
		{
			name: "node not a speaker of its rack object: nothing announced", node: seedNode("master1", "leaf1", "192.168.0.3", true), conf: conf(), peers: peers,
			rack: rackObj("leaf1", 4, []string{"master2"}, "master1=192.168.0.3", "worker-p001=192.168.0.4"),
			want: State{Enabled: true, Rack: "leaf1", RackGeneration: 4,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Peers:  []bgp.Peer{leaf1}},
		},
		{
			name: "rack without next hops: no paths", node: seedNode("master1", "leaf1", "192.168.0.3", true), conf: conf(), peers: peers,
			rack: rackObj("leaf1", 5, []string{"master1"}),
			want: State{Enabled: true, Announcing: true, Rack: "leaf1", RackGeneration: 5,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Peers:  []bgp.Peer{leaf1}},
		},
		{
			name: "peer settings and password from a Secret",
			node: seedNode("master1", "leaf1", "192.168.0.3", true),
			conf: conf(func(c *v1alpha2.BgpConf) {
				c.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true, RestartTime: 90}
			}),
			peers: []*v1alpha2.BgpPeer{func() *v1alpha2.BgpPeer {
				p := seedPeer("leaf1", "192.168.0.2", "leaf1")
				p.Spec.Conf.AuthPassword = "ignored-when-secret-set"
				p.Spec.Conf.AuthPasswordSecretRef = &v1alpha2.SecretKeyRef{Name: "bgp"}
				p.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true}
				p.Spec.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{HoldTime: "9", KeepaliveInterval: "3s", ConnectRetry: "1"}}
				p.Spec.Transport = &v1alpha2.Transport{RemotePort: 1179}
				p.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true}
				p.Spec.AfiSafis = []*v1alpha2.AfiSafi{{AddPaths: &v1alpha2.AddPaths{Config: &v1alpha2.AddPathsConfig{SendMax: 8}}}}
				p.Spec.Bfd = &v1alpha2.Bfd{Enabled: true, DetectMultiplier: 3, DesiredMinTxIntervalMs: 100, RequiredMinRxIntervalMs: 200}
				return p
			}()},
			rack: seedLeaf1,
			want: State{Enabled: true, Announcing: true, Rack: "leaf1", RackGeneration: 3, Prefixes: 1,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3"), GracefulRestart: true, RestartTime: 90},
				Peers: []bgp.Peer{{Name: "leaf1", Address: netip.MustParseAddr("192.168.0.2"), AS: 50001, Port: 1179,
					Password: "s3cret", EBGPMultihopTTL: 255, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
					ConnectRetry: time.Second, GracefulRestart: true, AddPathSendMax: 8,
					BFD: &bgp.BFD{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 200 * time.Millisecond, DetectMultiplier: 3}}},
				Paths: []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")}},
		},
		{
			name: "bad peers are reported and skipped",
			node: seedNode("master1", "leaf1", "192.168.0.3", true),
			conf: conf(),
			peers: []*v1alpha2.BgpPeer{
				func() *v1alpha2.BgpPeer {
					p := seedPeer("nosecret", "192.168.0.2", "leaf1")
					p.Spec.Conf.AuthPasswordSecretRef = &v1alpha2.SecretKeyRef{Name: "missing"}
					return p
				}(),
				func() *v1alpha2.BgpPeer {
					p := seedPeer("badtimer", "192.168.0.2", "leaf1")
					p.Spec.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{HoldTime: "soon"}}
					return p
				}(),
			},
			rack: seedLeaf1,
			want: State{Enabled: true, Announcing: true, Rack: "leaf1", RackGeneration: 3, Prefixes: 1,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Paths:  []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")}},
			wantProblems: []Problem{
				{Object: "BgpPeer/nosecret", Reason: ReasonInvalidBgpPeer, Message: "spec.conf.authPasswordSecretRef (Secret missing, key password): not found", Services: []string{"default/nginx"}},
				{Object: "BgpPeer/badtimer", Reason: ReasonInvalidBgpPeer, Message: `spec.timers.config.holdTime "soon" is not a number of seconds`, Services: []string{"default/nginx"}},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := Desired(tc.node, tc.conf, tc.peers, tc.rack, []*v1alpha2.LoadBalancerPlan{seedPlan}, secrets)
			opts := []cmp.Option{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()}
			if diff := cmp.Diff(tc.want, got, opts...); diff != "" {
				t.Errorf("state (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantProblems, problems, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDesiredBadPeers: each BgpPeer the speaker could not configure is
// left out with a problem naming the field to fix, whatever the schema let
// through (objects stored before it had bounds); the good peer next to it
// and the paths stay. Of peers sharing an address, the name that sorts
// first is used, whatever the order of the list.
func TestDesiredBadPeers(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	good := seedPeer("leaf1", "192.168.0.2", "leaf1")
	bad := func(name string, tweak func(*v1alpha2.BgpPeerSpec)) *v1alpha2.BgpPeer {
		p := seedPeer(name, "10.9.0.1", "leaf1")
		tweak(&p.Spec)
		return p
	}
	for _, tc := range []struct {
		peer *v1alpha2.BgpPeer
		want string // in the message
	}{
		{bad("ttl", func(s *v1alpha2.BgpPeerSpec) {
			s.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true, MultihopTtl: 300}
		}),
			"spec.ebgpMultihop.multihopTtl 300 is out of range"},
		{bad("bfd-multiplier", func(s *v1alpha2.BgpPeerSpec) { s.Bfd = &v1alpha2.Bfd{Enabled: true, DetectMultiplier: 256} }),
			"spec.bfd.detectMultiplier 256 is out of range"},
		{bad("bfd-interval", func(s *v1alpha2.BgpPeerSpec) { s.Bfd = &v1alpha2.Bfd{Enabled: true, RequiredMinRxIntervalMs: 5000000} }),
			"spec.bfd.requiredMinRxIntervalMs 5000000 is out of range"},
		{bad("port", func(s *v1alpha2.BgpPeerSpec) { s.Transport = &v1alpha2.Transport{RemotePort: 70000} }),
			"spec.transport.remotePort 70000 is out of range"},
		{bad("address", func(s *v1alpha2.BgpPeerSpec) { s.Conf.NeighborAddress = "leaf1.example" }),
			`spec.conf.neighborAddress "leaf1.example" is not an IP address`},
		{bad("unspecified", func(s *v1alpha2.BgpPeerSpec) { s.Conf.NeighborAddress = "0.0.0.0" }),
			"spec.conf.neighborAddress 0.0.0.0 cannot be a BGP neighbor"},
		{bad("secret", func(s *v1alpha2.BgpPeerSpec) { s.Conf.AuthPasswordSecretRef = &v1alpha2.SecretKeyRef{Name: "gone"} }),
			"spec.conf.authPasswordSecretRef (Secret gone, key password)"},
		{bad("password", func(s *v1alpha2.BgpPeerSpec) { s.Conf.AuthPassword = strings.Repeat("x", 81) }),
			"spec.conf.authPassword: the password is longer than 80 bytes"},
		{bad("sendmax", func(s *v1alpha2.BgpPeerSpec) {
			s.AfiSafis = []*v1alpha2.AfiSafi{nil, {AddPaths: &v1alpha2.AddPaths{Config: &v1alpha2.AddPathsConfig{SendMax: 256}}}}
		}), "spec.afiSafis[1].addPaths.config.sendMax 256 is out of range"},
		{bad("holdtime", func(s *v1alpha2.BgpPeerSpec) {
			s.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{HoldTime: "2"}}
		}), `spec.timers.config.holdTime "2" is out of range (3..65535 seconds`},
		{bad("keepalive", func(s *v1alpha2.BgpPeerSpec) {
			s.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{KeepaliveInterval: "100000"}}
		}), `spec.timers.config.keepaliveInterval "100000" is out of range`},
		{bad("keepalive-above-hold", func(s *v1alpha2.BgpPeerSpec) {
			s.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{HoldTime: "3", KeepaliveInterval: "30"}}
		}), "spec.timers.config.keepaliveInterval 30s must be below holdTime 3s"},
		{bad("keepalive-default-hold", func(s *v1alpha2.BgpPeerSpec) {
			s.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{KeepaliveInterval: "90"}}
		}), "spec.timers.config.keepaliveInterval 1m30s must be below holdTime 1m30s"},
		{bad("selector", func(s *v1alpha2.BgpPeerSpec) {
			s.NodeSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}
		}), "invalid nodeSelector"},
	} {
		t.Run(tc.peer.Name, func(t *testing.T) {
			st, problems := Desired(node, conf(), []*v1alpha2.BgpPeer{tc.peer, good}, seedLeaf1, []*v1alpha2.LoadBalancerPlan{seedPlan}, nil)
			if len(st.Peers) != 1 || st.Peers[0].Name != "leaf1" {
				t.Errorf("peers %+v, want leaf1 only", st.Peers)
			}
			if len(st.Paths) != 2 {
				t.Errorf("paths %v, want the plan's two", st.Paths)
			}
			if len(problems) != 1 || problems[0].Object != "BgpPeer/"+tc.peer.Name || problems[0].Reason != ReasonInvalidBgpPeer ||
				!strings.Contains(problems[0].Message, tc.want) || !slices.Equal(problems[0].Services, []string{"default/nginx"}) {
				t.Errorf("problems %+v, want one for BgpPeer/%s mentioning %q", problems, tc.peer.Name, tc.want)
			}
		})
	}

	t.Run("duplicate address", func(t *testing.T) {
		dup := seedPeer("leaf1-copy", "192.168.0.2", "leaf1")
		dup.Spec.Conf.PeerAs = 50009
		for _, order := range [][]*v1alpha2.BgpPeer{{good, dup}, {dup, good}} {
			st, problems := Desired(node, conf(), order, seedLeaf1, []*v1alpha2.LoadBalancerPlan{seedPlan}, nil)
			if len(st.Peers) != 1 || st.Peers[0].Name != "leaf1" || st.Peers[0].AS != 50001 {
				t.Errorf("peers %+v, want leaf1 (its name sorts first)", st.Peers)
			}
			want := []Problem{{Object: "BgpPeer/leaf1-copy", Reason: ReasonDuplicateBgpPeer, Services: []string{"default/nginx"},
				Message: "spec.conf.neighborAddress 192.168.0.2 is also that of BgpPeer leaf1, which this node uses (of BgpPeers with the same address, the name that sorts first is used)"}}
			if diff := cmp.Diff(want, problems); diff != "" {
				t.Errorf("problems (-want +got):\n%s", diff)
			}
		}
	})

	t.Run("every peer Desired keeps is one the speaker takes", func(t *testing.T) {
		ok := seedPeer("edge", "192.168.0.9", "leaf1")
		ok.Spec.EbgpMultihop = &v1alpha2.EbgpMultihop{Enabled: true, MultihopTtl: 255}
		ok.Spec.Bfd = &v1alpha2.Bfd{Enabled: true, DetectMultiplier: 255, DesiredMinTxIntervalMs: 4294967, RequiredMinRxIntervalMs: 1}
		ok.Spec.Transport = &v1alpha2.Transport{RemotePort: 65535}
		ok.Spec.Conf.AuthPassword = strings.Repeat("x", 80)
		ok.Spec.AfiSafis = []*v1alpha2.AfiSafi{{AddPaths: &v1alpha2.AddPaths{Config: &v1alpha2.AddPathsConfig{SendMax: 255}}}}
		ok.Spec.Timers = &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{HoldTime: "65535", KeepaliveInterval: "1", ConnectRetry: "65535"}}
		st, problems := Desired(node, conf(), []*v1alpha2.BgpPeer{ok}, seedLeaf1, nil, nil)
		if len(problems) != 0 || len(st.Peers) != 1 {
			t.Fatalf("problems %+v, peers %+v: want the peer at every bound accepted", problems, st.Peers)
		}
		if err := st.Peers[0].Validate(); err != nil {
			t.Errorf("the speaker refuses a peer Desired accepted: %v", err)
		}
	})
}

// TestDesiredListenPort: a BgpConf listen port out of range is reported
// (the speaker would refuse the whole configuration).
func TestDesiredListenPort(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	st, problems := Desired(node, conf(func(c *v1alpha2.BgpConf) { c.Spec.ListenPort = 70000 }), nil, seedLeaf1, nil, nil)
	if st.Enabled || len(problems) != 1 || problems[0].Reason != ReasonInvalidBgpConf || !strings.Contains(problems[0].Message, "spec.listenPort 70000") {
		t.Errorf("enabled %v, problems %+v: want BGP off with a BgpConf problem", st.Enabled, problems)
	}
}

// TestDesiredPaths covers how plans and the rack object make paths.
func TestDesiredPaths(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	plan := func(name, etp string, endpoints []string, ips ...string) *v1alpha2.LoadBalancerPlan {
		p := &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: v1alpha2.LoadBalancerPlanSpec{ExternalTrafficPolicy: etp, EndpointNodes: endpoints}}
		for _, ip := range ips {
			proto := v1alpha2.ProtocolBGP
			if strings.HasPrefix(ip, "l2:") {
				proto, ip = v1alpha2.ProtocolLayer2, strings.TrimPrefix(ip, "l2:")
			}
			p.Spec.Addresses = append(p.Spec.Addresses, v1alpha2.PlanAddress{IP: ip, Pool: "eip", Protocol: proto})
		}
		return p
	}
	dual := rackObj("leaf1", 7, []string{"master1"},
		"master1=192.168.0.3,2001:db8::3", "worker1=192.168.0.4", "worker2=::ffff:192.168.0.5,2001:db8::5", "broken=not-an-ip")
	for _, tc := range []struct {
		name          string
		rack          *v1alpha2.LoadBalancerRack
		plans         []*v1alpha2.LoadBalancerPlan
		want          []bgp.Path
		wantPlanPaths map[string]int
		wantPrefixes  int
	}{
		{
			name:  "dual stack: each address with the next hops of its family (mapped IPv4 unmapped)",
			rack:  dual,
			plans: []*v1alpha2.LoadBalancerPlan{plan("web", "Cluster", nil, "172.22.0.2", "2001:db8:22::2")},
			want: []bgp.Path{
				path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4"), path("172.22.0.2/32", "192.168.0.5"),
				path("2001:db8:22::2/128", "2001:db8::3"), path("2001:db8:22::2/128", "2001:db8::5"),
			},
			wantPlanPaths: map[string]int{"default/web": 5},
			wantPrefixes:  2,
		},
		{
			name: "Local: only the next hops of endpoint nodes; none, no paths",
			rack: dual,
			plans: []*v1alpha2.LoadBalancerPlan{
				plan("local", "Local", []string{"worker2", "elsewhere"}, "172.22.0.3", "2001:db8:22::3"),
				plan("noendpoint", "Local", nil, "172.22.0.4"),
				plan("outside", "Local", []string{"node-of-another-rack"}, "172.22.0.5"),
			},
			want:          []bgp.Path{path("172.22.0.3/32", "192.168.0.5"), path("2001:db8:22::3/128", "2001:db8::5")},
			wantPlanPaths: map[string]int{"default/local": 2},
			wantPrefixes:  2,
		},
		{
			name: "a shared address is one path, counted for each plan; layer 2 and bad addresses skipped",
			rack: seedLeaf1,
			plans: []*v1alpha2.LoadBalancerPlan{
				plan("a", "Cluster", nil, "172.22.0.2"),
				plan("b", "Cluster", nil, "::ffff:172.22.0.2", "l2:192.168.50.100", "bogus"),
				plan("c", "Cluster", nil, "l2:192.168.50.101"),
			},
			want:          []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")},
			wantPlanPaths: map[string]int{"default/a": 2, "default/b": 2},
			wantPrefixes:  1,
		},
		{
			name:  "IPv6 addresses without IPv6 next hops: none",
			rack:  seedLeaf1,
			plans: []*v1alpha2.LoadBalancerPlan{plan("v6", "Cluster", nil, "2001:db8:22::2")},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := Desired(node, conf(), nil, tc.rack, tc.plans, nil)
			if len(problems) > 0 {
				t.Fatalf("problems: %v", problems)
			}
			opts := []cmp.Option{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{}), cmpopts.EquateEmpty()}
			if diff := cmp.Diff(tc.want, got.Paths, opts...); diff != "" {
				t.Errorf("paths (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantPlanPaths, planPathCounts(node.Name, tc.rack, tc.plans), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("plan paths (-want +got):\n%s", diff)
			}
			if got.Prefixes != tc.wantPrefixes || !got.Announcing {
				t.Errorf("prefixes %d announcing %v, want %d true", got.Prefixes, got.Announcing, tc.wantPrefixes)
			}
		})
	}
}

// TestSameBGP: what is only reported never makes the agent re-apply.
func TestSameBGP(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	a, _ := Desired(node, conf(), nil, seedLeaf1, []*v1alpha2.LoadBalancerPlan{seedPlan}, nil)
	bumped := seedLeaf1.DeepCopy()
	bumped.Generation++
	bumped.Spec.Peers = []v1alpha2.PlanPeer{{Name: "leaf1"}}
	b, _ := Desired(node, conf(), nil, bumped, []*v1alpha2.LoadBalancerPlan{seedPlan}, nil)
	if !a.sameBGP(b) || a.RackGeneration == b.RackGeneration {
		t.Errorf("a new rack generation with the same next hops: sameBGP %v, generations %d %d", a.sameBGP(b), a.RackGeneration, b.RackGeneration)
	}
	moved := rackObj("leaf1", 9, []string{"master1"}, "master1=192.168.0.3")
	c, _ := Desired(node, conf(), nil, moved, []*v1alpha2.LoadBalancerPlan{seedPlan}, nil)
	if a.sameBGP(c) {
		t.Errorf("a next hop gone must re-apply")
	}
}

// TestDesiredRestartTime: a graceful restart time above 12 bits is a
// BgpConf problem, not a corrupted OPEN message.
func TestDesiredRestartTime(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	for _, tc := range []struct {
		restart uint32
		ok      bool
	}{{4095, true}, {4096, false}, {32888, false}} {
		st, problems := Desired(node, conf(func(c *v1alpha2.BgpConf) {
			c.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true, RestartTime: tc.restart}
		}), nil, seedLeaf1, nil, nil)
		if tc.ok {
			if !st.Enabled || st.Global.RestartTime != tc.restart || len(problems) != 0 {
				t.Errorf("restartTime %d: enabled %v, restart %d, problems %+v: want it applied", tc.restart, st.Enabled, st.Global.RestartTime, problems)
			}
			continue
		}
		if st.Enabled || len(problems) != 1 || problems[0].Reason != ReasonInvalidBgpConf || !strings.Contains(problems[0].Message, "spec.gracefulRestart.restartTime") {
			t.Errorf("restartTime %d: enabled %v, problems %+v: want BGP off with a BgpConf problem", tc.restart, st.Enabled, problems)
		}
	}
}

// TestDesiredPathAttributes: a plan address's attributes ride on each of
// its paths; a bad value is left out and reported on the plan; Services
// sharing an address with different attributes are reported, and the
// attributes that sort first are announced.
func TestDesiredPathAttributes(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	lp := int64(200)
	plan := func(name, ip string, a *v1alpha2.BGPAttributes) *v1alpha2.LoadBalancerPlan {
		return &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: v1alpha2.LoadBalancerPlanSpec{Addresses: []v1alpha2.PlanAddress{{IP: ip, Pool: "eip", Protocol: "bgp", BGP: a}}}}
	}
	plans := []*v1alpha2.LoadBalancerPlan{
		plan("web", "172.22.0.2", &v1alpha2.BGPAttributes{Communities: []string{"no-export", "65000:100"}, LargeCommunities: []string{"65000:1:2"}, LocalPref: &lp, ASPathPrepend: 2, LinkBandwidthMbps: 10000}),
		plan("bad", "172.22.0.3", &v1alpha2.BGPAttributes{Communities: []string{"65000:100", "99999:1"}, ASPathPrepend: 11, LinkBandwidthMbps: -1}),
		plan("share-a", "172.22.0.4", &v1alpha2.BGPAttributes{ASPathPrepend: 2}),
		plan("share-b", "172.22.0.4", &v1alpha2.BGPAttributes{ASPathPrepend: 1}),
	}
	got, problems := Desired(node, conf(), nil, seedLeaf1, plans, nil)
	web := bgp.Intern(bgp.Attributes{Communities: []uint32{0xFFFFFF01, 65000<<16 | 100}, LargeCommunities: [][3]uint32{{65000, 1, 2}},
		LocalPref: 200, HasLocalPref: true, Prepend: 2, LinkBandwidthMbps: 10000})
	bad := bgp.Intern(bgp.Attributes{Communities: []uint32{65000<<16 | 100}})
	shared := bgp.Intern(bgp.Attributes{Prepend: 1}) // "prepend=1" sorts before "prepend=2"
	with := func(p bgp.Path, a bgp.Attrs) bgp.Path { p.Attrs = a; return p }
	want := []bgp.Path{
		with(path("172.22.0.2/32", "192.168.0.3"), web), with(path("172.22.0.2/32", "192.168.0.4"), web),
		with(path("172.22.0.3/32", "192.168.0.3"), bad), with(path("172.22.0.3/32", "192.168.0.4"), bad),
		with(path("172.22.0.4/32", "192.168.0.3"), shared), with(path("172.22.0.4/32", "192.168.0.4"), shared),
	}
	opts := []cmp.Option{cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})}
	if diff := cmp.Diff(want, got.Paths, opts...); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	byReason := map[string]Problem{}
	for _, p := range problems {
		byReason[p.Reason] = p
	}
	if p := byReason[ReasonInvalidBGPAttributes]; p.Object != "LoadBalancerPlan/default/bad" ||
		!strings.Contains(p.Message, "99999:1") || !strings.Contains(p.Message, "asPathPrepend 11") || !strings.Contains(p.Message, "linkBandwidthMbps -1") {
		t.Errorf("invalid attributes problem = %+v", p)
	}
	if p := byReason[ReasonBGPAttributesConflict]; !slices.Equal(p.Services, []string{"default/share-a", "default/share-b"}) ||
		!strings.Contains(p.Message, "172.22.0.4") {
		t.Errorf("conflict problem = %+v", p)
	}
	if len(problems) != 2 {
		t.Errorf("problems = %+v, want 2", problems)
	}
}

// TestDesiredAggregates: addresses whose plan names an aggregate announce
// it once per next hop, however many Services hold an address in it; an
// aggregate that does not cover its address is reported and the address
// announced as itself.
func TestDesiredAggregates(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	plan := func(name, ip, prefix string) *v1alpha2.LoadBalancerPlan {
		return &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: v1alpha2.LoadBalancerPlanSpec{Addresses: []v1alpha2.PlanAddress{{IP: ip, Pool: "eip", Protocol: "bgp", Prefix: prefix}}}}
	}
	plans := []*v1alpha2.LoadBalancerPlan{
		plan("a", "172.22.0.2", "172.22.0.0/24"),
		plan("b", "172.22.0.7", "172.22.0.0/24"),
		plan("wrong", "172.22.1.9", "172.22.0.0/24"),
		plan("local", "172.22.0.9", ""),
	}
	got, problems := Desired(node, conf(), nil, seedLeaf1, plans, nil)
	want := []bgp.Path{
		path("172.22.0.0/24", "192.168.0.3"), path("172.22.0.0/24", "192.168.0.4"),
		path("172.22.0.9/32", "192.168.0.3"), path("172.22.0.9/32", "192.168.0.4"),
		path("172.22.1.9/32", "192.168.0.3"), path("172.22.1.9/32", "192.168.0.4"),
	}
	if diff := cmp.Diff(want, got.Paths, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
	if got.Prefixes != 3 {
		t.Errorf("prefixes = %d, want 3", got.Prefixes)
	}
	if len(problems) != 1 || problems[0].Object != "LoadBalancerPlan/default/wrong" || problems[0].Reason != ReasonInvalidBGPAttributes {
		t.Errorf("problems = %+v, want the uncovered address of default/wrong", problems)
	}
	if n := planPathCounts(node.Name, seedLeaf1, plans); n["default/a"] != 2 || n["default/b"] != 2 {
		t.Errorf("plan path counts = %v: each Service of the aggregate counts its paths", n)
	}
}

// TestDesiredSelectors: a node selector keeps the next hops whose labels
// (as the rack object carries them) match, and a rack without one
// announces nothing for that address, without a problem; a peer selector
// marks the paths for the configured peers it does not match.
func TestDesiredSelectors(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	rack := rackObj("leaf1", 3, []string{"master1"}, "master1=192.168.0.3", "worker-p001=192.168.0.4")
	rack.Spec.NextHops[1].Labels = map[string]string{"edge": "true"}
	peers := []*v1alpha2.BgpPeer{seedPeer("leaf1", "192.168.0.2", "leaf1"), seedPeer("leaf1-b", "192.168.0.9", "leaf1")}
	peers[0].Labels = map[string]string{"tier": "core"}
	sel := func(s string) *metav1.LabelSelector {
		ls, err := metav1.ParseToLabelSelector(s)
		if err != nil {
			t.Fatal(err)
		}
		return ls
	}
	plan := func(name, ip string, a *v1alpha2.BGPAttributes) *v1alpha2.LoadBalancerPlan {
		return &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: v1alpha2.LoadBalancerPlanSpec{Addresses: []v1alpha2.PlanAddress{{IP: ip, Pool: "eip", Protocol: "bgp", BGP: a}}}}
	}
	plans := []*v1alpha2.LoadBalancerPlan{
		plan("edge", "172.22.0.2", &v1alpha2.BGPAttributes{NodeSelector: sel("edge=true")}),
		plan("nowhere", "172.22.0.3", &v1alpha2.BGPAttributes{NodeSelector: sel("edge=false")}),
		plan("core", "172.22.0.4", &v1alpha2.BGPAttributes{PeerSelector: sel("tier=core")}),
	}
	got, problems := Desired(node, conf(), peers, rack, plans, nil)
	if len(problems) > 0 {
		t.Fatalf("problems: %+v", problems)
	}
	notB := bgp.Intern(bgp.Attributes{DenyPeers: []string{"leaf1-b"}})
	with := func(p bgp.Path, a bgp.Attrs) bgp.Path { p.Attrs = a; return p }
	want := []bgp.Path{
		path("172.22.0.2/32", "192.168.0.4"),
		with(path("172.22.0.4/32", "192.168.0.3"), notB), with(path("172.22.0.4/32", "192.168.0.4"), notB),
	}
	if diff := cmp.Diff(want, got.Paths, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}

// TestDesiredNeighborSettings: OpenELB's neighbor fields reach the
// speaker's peer; impossible values make the BgpPeer a problem.
func TestDesiredNeighborSettings(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	bp := seedPeer("leaf1", "192.168.0.2", "leaf1")
	bp.Spec.Conf.Description, bp.Spec.Conf.LocalAs, bp.Spec.Conf.AdminDown = "leaf one", 65010, true
	bp.Spec.Conf.RemovePrivateAs, bp.Spec.Conf.AllowOwnAs, bp.Spec.Conf.ReplacePeerAs, bp.Spec.Conf.SendCommunity = "Replace", 3, true, 3
	bp.Spec.Transport = &v1alpha2.Transport{PassiveMode: true, TcpMss: 1400, RemoteAddress: "192.168.0.2"}
	bp.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true, RestartTime: 90, HelperOnly: true, LonglivedEnabled: true, StaleRoutesTime: 600}
	bp.Spec.AfiSafis = []*v1alpha2.AfiSafi{{Config: &v1alpha2.AfiSafiConfig{Family: &v1alpha2.Family{Afi: "ipv4", Safi: "unicast"}, Enabled: true}},
		{Config: &v1alpha2.AfiSafiConfig{Family: &v1alpha2.Family{Afi: "l2vpn", Safi: "evpn"}, Enabled: true}}}
	c := conf(func(c *v1alpha2.BgpConf) {
		c.Spec.ListenAddresses = []string{"192.168.0.3", "::ffff:192.168.0.3"}
		c.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true, DeferralTime: 30, NotificationEnabled: true}
	})
	st, problems := Desired(node, c, []*v1alpha2.BgpPeer{bp}, seedLeaf1, nil, nil)
	if len(problems) > 0 || len(st.Peers) != 1 {
		t.Fatalf("peers %+v problems %+v", st.Peers, problems)
	}
	p := st.Peers[0]
	if p.Description != "leaf one" || p.LocalAS != 65010 || !p.AdminDown || p.RemovePrivateAS != "replace" || p.AllowOwnAS != 3 ||
		!p.ReplacePeerAS || p.SendCommunity != bgp.SendCommunityNone || !p.Passive || p.TCPMSS != 1400 || p.GRRestartTime != 90 ||
		!p.GRHelperOnly || !p.GRLongLived || p.GRStaleRoutesTime != 600 || p.NoIPv4 || !p.NoIPv6 {
		t.Errorf("peer = %+v", p)
	}
	if g := st.Global; len(g.ListenAddresses) != 1 || g.GRDeferralTime != 30 || !g.GRNotification {
		t.Errorf("global = %+v", g)
	}
	for _, bad := range []func(*v1alpha2.BgpPeer){
		func(b *v1alpha2.BgpPeer) { b.Spec.Conf.RemovePrivateAs = "some" },
		func(b *v1alpha2.BgpPeer) { b.Spec.Transport.RemoteAddress = "192.168.0.9" },
		func(b *v1alpha2.BgpPeer) { b.Spec.Conf.AllowOwnAs = 256 },
	} {
		b := bp.DeepCopy()
		bad(b)
		if _, problems := Desired(node, c, []*v1alpha2.BgpPeer{b}, seedLeaf1, nil, nil); len(problems) != 1 || problems[0].Reason != ReasonInvalidBgpPeer {
			t.Errorf("%+v: problems %+v, want one BgpPeerInvalid", b.Spec, problems)
		}
	}
}

// TestDesiredGracefulShutdown: a next hop marked for graceful shutdown is
// announced with the graceful-shutdown community and LOCAL_PREF 0, on top
// of the address's own attributes; the other next hops are untouched.
func TestDesiredGracefulShutdown(t *testing.T) {
	node := seedNode("master1", "leaf1", "192.168.0.3", true)
	rack := rackObj("leaf1", 3, []string{"master1"}, "master1=192.168.0.3", "worker-p001=192.168.0.4")
	rack.Spec.NextHops[0].GracefulShutdown = true
	plan := &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: v1alpha2.LoadBalancerPlanSpec{Addresses: []v1alpha2.PlanAddress{{IP: "172.22.0.2", Pool: "eip", Protocol: "bgp",
			BGP: &v1alpha2.BGPAttributes{Communities: []string{"65000:1"}}}}}}
	got, problems := Desired(node, conf(), nil, rack, []*v1alpha2.LoadBalancerPlan{plan}, nil)
	if len(problems) > 0 {
		t.Fatalf("problems: %+v", problems)
	}
	own := bgp.Intern(bgp.Attributes{Communities: []uint32{65000<<16 | 1}})
	drained := bgp.Intern(bgp.Attributes{Communities: []uint32{65000<<16 | 1, 0xFFFF0000}, HasLocalPref: true})
	with := func(p bgp.Path, a bgp.Attrs) bgp.Path { p.Attrs = a; return p }
	want := []bgp.Path{with(path("172.22.0.2/32", "192.168.0.3"), drained), with(path("172.22.0.2/32", "192.168.0.4"), own)}
	if diff := cmp.Diff(want, got.Paths, cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
		t.Errorf("paths (-want +got):\n%s", diff)
	}
}
