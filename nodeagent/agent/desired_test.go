package agent

import (
	"errors"
	"net/netip"
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
		Racks: []v1alpha2.RackPlan{
			{Name: "leaf1", Speakers: []string{"master1"}, NextHops: []string{"192.168.0.3", "192.168.0.4"}},
			{Name: "leaf2", Speakers: []string{"worker-p002"}, NextHops: []string{"192.168.1.2"}},
		},
	},
}

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
		want         State
		wantProblems []Problem
	}{
		{
			name:  "seed master1 announces its rack's two next hops to leaf1 only",
			node:  seedNode("master1", "leaf1", "192.168.0.3", true),
			conf:  conf(),
			peers: peers,
			want: State{Enabled: true,
				Global:    bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Peers:     []bgp.Peer{leaf1},
				Paths:     []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")},
				PlanPaths: map[string]int{"default/nginx": 2}},
		},
		{
			name: "asPerRack and routerId override",
			node: seedNode("worker-p002", "leaf2", "192.168.1.2", true),
			conf: conf(func(c *v1alpha2.BgpConf) {
				c.Spec.AsPerRack = map[string]uint32{"leaf2": 50002}
				c.Spec.RouterId = "10.0.0.9"
			}),
			peers: peers,
			want: State{Enabled: true,
				Global: bgp.Global{AS: 50002, RouterID: netip.MustParseAddr("10.0.0.9")},
				Peers: []bgp.Peer{{Name: "leaf2", Address: netip.MustParseAddr("192.168.1.1"), AS: 50001,
					AddPathSendMax: DefaultAddPathSendMax}},
				Paths:     []bgp.Path{path("172.22.0.2/32", "192.168.1.2")},
				PlanPaths: map[string]int{"default/nginx": 1}},
		},
		{name: "not a speaker node", node: seedNode("worker-p001", "leaf1", "192.168.0.4", false), conf: conf(), peers: peers},
		{
			name: "no BgpConf", node: seedNode("master1", "leaf1", "192.168.0.3", true), peers: peers,
			wantProblems: []Problem{{"BgpConf/default", "BgpConf default does not exist: BGP is off on this node"}},
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
			want: State{Enabled: true,
				Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3"), GracefulRestart: true, RestartTime: 90},
				Peers: []bgp.Peer{{Name: "leaf1", Address: netip.MustParseAddr("192.168.0.2"), AS: 50001, Port: 1179,
					Password: "s3cret", EBGPMultihopTTL: 255, HoldTime: 9 * time.Second, Keepalive: 3 * time.Second,
					ConnectRetry: time.Second, GracefulRestart: true, AddPathSendMax: 8,
					BFD: &bgp.BFD{DesiredMinTx: 100 * time.Millisecond, RequiredMinRx: 200 * time.Millisecond, DetectMultiplier: 3}}},
				Paths:     []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")},
				PlanPaths: map[string]int{"default/nginx": 2}},
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
			want: State{Enabled: true,
				Global:    bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
				Paths:     []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")},
				PlanPaths: map[string]int{"default/nginx": 2}},
			wantProblems: []Problem{
				{"BgpPeer/nosecret", "password Secret missing key password: not found"},
				{"BgpPeer/badtimer", `spec.timers.config.holdTime "soon" is not a number of seconds`},
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, problems := Desired(tc.node, tc.conf, tc.peers, []*v1alpha2.LoadBalancerPlan{seedPlan}, secrets)
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
