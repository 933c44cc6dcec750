package planner

import (
	"fmt"
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var addrCmp = cmpopts.EquateComparable(netip.Addr{})

func ips(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func hop(node string, addrs ...string) NextHop {
	return NextHop{Node: node, Addresses: ips(addrs...)}
}

// node builds a Ready node whose labels agree with its Rack and Speaker
// fields, as the Kubernetes adapter would.
func node(name, rack string, speaker bool, addrs ...string) Node {
	labels := map[string]string{"kubernetes.io/hostname": name}
	if rack != "" {
		labels[RackLabel] = rack
	}
	if speaker {
		labels[SpeakerLabel] = SpeakerValue
	}
	return Node{Name: name, Rack: rack, Labels: labels, Addresses: ips(addrs...), Ready: true, Speaker: speaker}
}

func labelPeer(name, addr string, as uint32, key, value string) Peer {
	return Peer{Name: name, Address: addr, AS: as, Matches: func(l map[string]string) bool { return l[key] == value }}
}

func rackPeer(name, addr string, as uint32, rack string) Peer {
	return labelPeer(name, addr, as, RackLabel, rack)
}

var (
	leaf1Ref = PeerRef{Name: "leaf1-peer", Address: "192.168.0.2", AS: 65001}
	leaf2Ref = PeerRef{Name: "leaf2-peer", Address: "192.168.1.1", AS: 65002}
	spineRef = PeerRef{Name: "spine", Address: "10.0.0.1", AS: 65000}
	torRef   = PeerRef{Name: "tor", Address: "10.0.0.1", AS: 65000}
)

// seed is the two-rack topology of OpenELB's multi-router guide.
func seed() Input {
	return Input{
		Nodes: []Node{
			node("master1", "leaf1", true, "192.168.0.3"),
			node("worker-p001", "leaf1", false, "192.168.0.4"),
			node("worker-p002", "leaf2", true, "192.168.1.2"),
		},
		Peers: []Peer{
			rackPeer("leaf1-peer", "192.168.0.2", 65001, "leaf1"),
			rackPeer("leaf2-peer", "192.168.1.1", 65002, "leaf2"),
		},
	}
}

func with(edit func(in *Input)) Input {
	in := seed()
	edit(&in)
	return in
}

func setNode(in *Input, name string, edit func(n *Node)) {
	for i := range in.Nodes {
		if in.Nodes[i].Name == name {
			edit(&in.Nodes[i])
			return
		}
	}
	panic("no node " + name)
}

// dualStack gives every seed node an IPv6 InternalIP, listed before its
// IPv4 one so that keeping the input order would show up.
func dualStack(in *Input) {
	v6 := map[string]string{"master1": "fd00::3", "worker-p001": "fd00::4", "worker-p002": "fd00:1::2"}
	for i := range in.Nodes {
		n := &in.Nodes[i]
		n.Addresses = append([]netip.Addr{netip.MustParseAddr(v6[n.Name])}, n.Addresses...)
	}
}

// manyNodes returns count eligible non-speaker nodes of rack, named
// w01, w02, ... and their next hops.
func manyNodes(rack string, count int) ([]Node, []NextHop) {
	var nodes []Node
	var hops []NextHop
	for i := 1; i <= count; i++ {
		name, addr := fmt.Sprintf("w%02d", i), fmt.Sprintf("10.9.0.%d", i)
		nodes = append(nodes, node(name, rack, false, addr))
		hops = append(hops, hop(name, addr))
	}
	return nodes, hops
}

const (
	noSpeakerSuffix  = " but no ready speaker (label lb.kubesphere.io/v1alpha1=openelb)"
	noEligibleSuffix = " but no node eligible as a next hop (Ready, not cordoned, not labelled node.kubernetes.io/exclude-from-external-load-balancers, not being deleted, with an InternalIP)"
	notAnnouncedTail = " but none of them matches a BgpPeer, so its routers never learn the Services"
	spansTail        = ", so its router learns next hops of several racks from different speakers"
	unlabelled       = `"" (nodes without label openelb.kubesphere.io/rack)`
)

func TestRacks(t *testing.T) {
	leaf1Hops := []NextHop{hop("master1", "192.168.0.3"), hop("worker-p001", "192.168.0.4")}
	leaf1 := Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: leaf1Hops}
	leaf1MasterOnly := Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: []NextHop{hop("master1", "192.168.0.3")}}
	leaf2 := Rack{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: []NextHop{hop("worker-p002", "192.168.1.2")}}
	leaf1WithoutSpeaker := Rack{
		Name:     "leaf1",
		NextHops: []NextHop{hop("worker-p001", "192.168.0.4")},
		Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf1 has 1 eligible node (worker-p001)" + noSpeakerSuffix}},
	}
	five, fiveHops := manyNodes("leaf3", 5)
	seven, sevenHops := manyNodes("leaf3", 7)

	tests := []struct {
		name string
		in   Input
		want []Rack
	}{
		{
			name: "seed topology",
			in:   seed(),
			want: []Rack{leaf1, leaf2},
		},
		{
			name: "no nodes at all gives no racks",
			in:   with(func(in *Input) { in.Nodes = nil }),
			want: nil,
		},
		{
			name: "empty input gives no racks",
			in:   Input{},
			want: nil,
		},
		{
			name: "NotReady node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Ready = false }) }),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "excluded node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Excluded = true }) }),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "deleting node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Deleting = true }) }),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "cordoned (draining) node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Draining = true }) }),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "cordoned speaker still speaks but is not a next hop",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Draining = true }) }),
			want: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: []NextHop{hop("worker-p001", "192.168.0.4")}},
				leaf2,
			},
		},
		{
			name: "draining within its graceful-shutdown delay: still a next hop, marked",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Draining, n.GracefulShutdown = true, true }) }),
			want: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: []NextHop{
					{Node: "master1", Addresses: []netip.Addr{netip.MustParseAddr("192.168.0.3")}, GracefulShutdown: true},
					hop("worker-p001", "192.168.0.4")}},
				leaf2,
			},
		},
		{
			name: "ineligible non-speaker alone in its rack creates no rack",
			in: with(func(in *Input) {
				n := node("worker-p003", "leaf3", false, "192.168.2.3")
				n.Ready = false
				m := node("worker-p004", "leaf4", false, "192.168.3.4")
				m.Excluded = true
				d := node("worker-p005", "leaf5", false, "192.168.4.5")
				d.Deleting = true
				in.Nodes = append(in.Nodes, n, m, d)
			}),
			want: []Rack{leaf1, leaf2},
		},
		{
			name: "excluded speaker still speaks but is not a next hop",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Excluded = true }) }),
			want: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: []NextHop{hop("worker-p001", "192.168.0.4")}},
				leaf2,
			},
		},
		{
			name: "NotReady speaker is not a speaker",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Ready = false }) }),
			want: []Rack{leaf1WithoutSpeaker, leaf2},
		},
		{
			name: "deleting speaker is not a speaker",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Deleting = true }) }),
			want: []Rack{leaf1WithoutSpeaker, leaf2},
		},
		{
			name: "NotReady speaker alone in its rack creates no rack",
			in: with(func(in *Input) {
				n := node("worker-p003", "leaf3", true, "192.168.2.3")
				n.Ready = false
				in.Nodes = append(in.Nodes, n)
			}),
			want: []Rack{leaf1, leaf2},
		},
		{
			name: "dual-stack nodes carry both families, sorted IPv4 first",
			in:   with(dualStack),
			want: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: []NextHop{
					hop("master1", "192.168.0.3", "fd00::3"),
					hop("worker-p001", "192.168.0.4", "fd00::4"),
				}},
				{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: []NextHop{
					hop("worker-p002", "192.168.1.2", "fd00:1::2"),
				}},
			},
		},
		{
			name: "IPv6-only node is a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p002", func(n *Node) { n.Addresses = ips("fd00:1::2") }) }),
			want: []Rack{
				leaf1,
				{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: []NextHop{hop("worker-p002", "fd00:1::2")}},
			},
		},
		{
			name: "IPv4-mapped addresses are unmapped and then deduplicated",
			in: with(func(in *Input) {
				setNode(in, "master1", func(n *Node) { n.Addresses = ips("::ffff:192.168.0.3", "192.168.0.3") })
				setNode(in, "worker-p002", func(n *Node) { n.Addresses = ips("::ffff:192.168.1.2") })
			}),
			want: []Rack{leaf1, leaf2},
		},
		{
			name: "invalid addresses are ignored",
			in: with(func(in *Input) {
				setNode(in, "master1", func(n *Node) { n.Addresses = []netip.Addr{{}, netip.MustParseAddr("192.168.0.3")} })
				setNode(in, "worker-p001", func(n *Node) { n.Addresses = []netip.Addr{{}} })
			}),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "node without addresses is not a next hop and creates no rack",
			in: with(func(in *Input) {
				setNode(in, "worker-p001", func(n *Node) { n.Addresses = nil })
				in.Nodes = append(in.Nodes, node("worker-p003", "leaf3", false))
			}),
			want: []Rack{leaf1MasterOnly, leaf2},
		},
		{
			name: "speaker without addresses speaks but its rack has no eligible node",
			in:   with(func(in *Input) { setNode(in, "worker-p002", func(n *Node) { n.Addresses = nil }) }),
			want: []Rack{
				leaf1,
				{
					Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref},
					Problems: []Problem{{ReasonNoEligibleNodes, "rack leaf2 has speakers (worker-p002)" + noEligibleSuffix}},
				},
			},
		},
		{
			name: "no node eligible",
			in: with(func(in *Input) {
				for i := range in.Nodes {
					in.Nodes[i].Excluded = true
				}
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref},
					Problems: []Problem{{ReasonNoEligibleNodes, "rack leaf1 has speakers (master1)" + noEligibleSuffix}},
				},
				{
					Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref},
					Problems: []Problem{{ReasonNoEligibleNodes, "rack leaf2 has speakers (worker-p002)" + noEligibleSuffix}},
				},
			},
		},
		{
			name: "racks are sorted by name, unlabelled rack first",
			in: Input{
				Nodes: []Node{
					node("z1", "zeta", true, "10.0.3.1"),
					node("a1", "alpha", true, "10.0.2.1"),
					node("u1", "", true, "10.0.1.1"),
				},
				Peers: []Peer{{Name: "tor", Address: "10.0.0.1", AS: 65000, Matches: func(l map[string]string) bool { return l[RackLabel] != "zeta" }}},
			},
			want: []Rack{
				{Name: "", Speakers: []string{"u1"}, Peers: []PeerRef{torRef}, NextHops: []NextHop{hop("u1", "10.0.1.1")}, Problems: []Problem{
					{ReasonPeerSpansRacks, "BgpPeer tor is matched by ready speakers of racks " + unlabelled + ", alpha" + spansTail},
				}},
				{Name: "alpha", Speakers: []string{"a1"}, Peers: []PeerRef{torRef}, NextHops: []NextHop{hop("a1", "10.0.2.1")}, Problems: []Problem{
					{ReasonPeerSpansRacks, "BgpPeer tor is matched by ready speakers of racks " + unlabelled + ", alpha" + spansTail},
				}},
				{Name: "zeta", Speakers: []string{"z1"}, NextHops: []NextHop{hop("z1", "10.0.3.1")}, Problems: []Problem{
					{ReasonRackNotAnnounced, "rack zeta has 1 eligible node (z1) and ready speakers (z1)" + notAnnouncedTail},
					{ReasonSpeakerWithoutPeer, "speaker z1 in rack zeta matches no BgpPeer nodeSelector"},
				}},
			},
		},
		{
			name: "relabelling master1 to leaf2 moves it",
			in: with(func(in *Input) {
				setNode(in, "master1", func(n *Node) {
					n.Rack = "leaf2"
					n.Labels = map[string]string{RackLabel: "leaf2", SpeakerLabel: SpeakerValue}
				})
			}),
			want: []Rack{
				leaf1WithoutSpeaker,
				{
					Name: "leaf2", Speakers: []string{"master1", "worker-p002"}, Peers: []PeerRef{leaf2Ref},
					NextHops: []NextHop{hop("master1", "192.168.0.3"), hop("worker-p002", "192.168.1.2")},
				},
			},
		},
		{
			name: "peer without selector in a two-rack cluster spans racks",
			in: with(func(in *Input) {
				in.Peers = append(in.Peers, Peer{Name: "spine", Address: "10.0.0.1", AS: 65000})
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref, spineRef}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf2" + spansTail}},
				},
				{
					Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref, spineRef}, NextHops: []NextHop{hop("worker-p002", "192.168.1.2")},
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf2" + spansTail}},
				},
			},
		},
		{
			name: "peer spanning racks is reported only on the racks it spans",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes, node("worker-p003", "leaf3", true, "192.168.2.3"))
				in.Nodes[len(in.Nodes)-1].Labels["tier"] = "edge"
				setNode(in, "master1", func(n *Node) { n.Labels["tier"] = "edge" })
				in.Peers = append(in.Peers, labelPeer("spine", "10.0.0.1", 65000, "tier", "edge"))
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref, spineRef}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf3" + spansTail}},
				},
				leaf2,
				{
					Name: "leaf3", Speakers: []string{"worker-p003"}, Peers: []PeerRef{spineRef}, NextHops: []NextHop{hop("worker-p003", "192.168.2.3")},
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf3" + spansTail}},
				},
			},
		},
		{
			name: "NotReady speakers do not make a peer span racks",
			in: with(func(in *Input) {
				in.Peers = append(in.Peers, Peer{Name: "spine", Address: "10.0.0.1", AS: 65000})
				setNode(in, "worker-p002", func(n *Node) { n.Ready = false })
			}),
			want: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref, spineRef}, NextHops: leaf1Hops},
			},
		},
		{
			name: "rack with eligible nodes but no speaker",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes,
					node("worker-p004", "leaf3", false, "192.168.2.4"),
					node("worker-p003", "leaf3", false, "192.168.2.3"))
			}),
			want: []Rack{leaf1, leaf2, {
				Name:     "leaf3",
				NextHops: []NextHop{hop("worker-p003", "192.168.2.3"), hop("worker-p004", "192.168.2.4")},
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf3 has 2 eligible nodes (worker-p003, worker-p004)" + noSpeakerSuffix}},
			}},
		},
		{
			name: "five eligible nodes are all named",
			in:   with(func(in *Input) { in.Nodes = append(in.Nodes, five...) }),
			want: []Rack{leaf1, leaf2, {
				Name:     "leaf3",
				NextHops: fiveHops,
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf3 has 5 eligible nodes (w01, w02, w03, w04, w05)" + noSpeakerSuffix}},
			}},
		},
		{
			name: "eligible nodes are named up to five",
			in: with(func(in *Input) {
				// Reversed: the names shown are the first five by name,
				// not by input order.
				rev := slices.Clone(seven)
				slices.Reverse(rev)
				in.Nodes = append(in.Nodes, rev...)
			}),
			want: []Rack{leaf1, leaf2, {
				Name:     "leaf3",
				NextHops: sevenHops,
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf3 has 7 eligible nodes (w01, w02, w03, w04, w05 and 2 more)" + noSpeakerSuffix}},
			}},
		},
		{
			name: "not-announced message names up to five eligible nodes",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes, seven...)
				in.Nodes = append(in.Nodes, node("speaker3", "leaf3", true))
			}),
			want: []Rack{leaf1, leaf2, {
				Name:     "leaf3",
				Speakers: []string{"speaker3"},
				NextHops: sevenHops,
				Problems: []Problem{
					{ReasonRackNotAnnounced, "rack leaf3 has 7 eligible nodes (w01, w02, w03, w04, w05 and 2 more) and ready speakers (speaker3)" + notAnnouncedTail},
					{ReasonSpeakerWithoutPeer, "speaker speaker3 in rack leaf3 matches no BgpPeer nodeSelector"},
				},
			}},
		},
		{
			name: "speaker outside its peer's selector",
			in: with(func(in *Input) {
				in.Peers[0] = labelPeer("leaf1-peer", "192.168.0.2", 65001, "kubernetes.io/hostname", "master1")
				setNode(in, "worker-p001", func(n *Node) {
					n.Speaker = true
					n.Labels[SpeakerLabel] = SpeakerValue
				})
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1", "worker-p001"}, Peers: []PeerRef{leaf1Ref}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonSpeakerWithoutPeer, "speaker worker-p001 in rack leaf1 matches no BgpPeer nodeSelector"}},
				},
				leaf2,
			},
		},
		{
			name: "rack whose speakers match no peer is not announced",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes, node("worker-p003", "leaf3", true, "192.168.2.3"))
			}),
			want: []Rack{leaf1, leaf2, {
				Name: "leaf3", Speakers: []string{"worker-p003"}, NextHops: []NextHop{hop("worker-p003", "192.168.2.3")},
				Problems: []Problem{
					{ReasonRackNotAnnounced, "rack leaf3 has 1 eligible node (worker-p003) and ready speakers (worker-p003)" + notAnnouncedTail},
					{ReasonSpeakerWithoutPeer, "speaker worker-p003 in rack leaf3 matches no BgpPeer nodeSelector"},
				},
			}},
		},
		{
			name: "speaker without peer in a rack without eligible nodes",
			in: with(func(in *Input) {
				n := node("worker-p003", "leaf3", true, "192.168.2.3")
				n.Excluded = true
				in.Nodes = append(in.Nodes, n)
			}),
			want: []Rack{leaf1, leaf2, {
				Name: "leaf3", Speakers: []string{"worker-p003"},
				Problems: []Problem{
					{ReasonNoEligibleNodes, "rack leaf3 has speakers (worker-p003)" + noEligibleSuffix},
					{ReasonSpeakerWithoutPeer, "speaker worker-p003 in rack leaf3 matches no BgpPeer nodeSelector"},
				},
			}},
		},
		{
			name: "no peers at all",
			in: with(func(in *Input) {
				in.Peers = nil
				setNode(in, "worker-p001", func(n *Node) {
					n.Speaker = true
					n.Labels[SpeakerLabel] = SpeakerValue
				})
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1", "worker-p001"}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonNoPeers, "no BgpPeer exists, so the ready speakers of rack leaf1 (master1, worker-p001) have no router to announce to"}},
				},
				{
					Name: "leaf2", Speakers: []string{"worker-p002"}, NextHops: []NextHop{hop("worker-p002", "192.168.1.2")},
					Problems: []Problem{{ReasonNoPeers, "no BgpPeer exists, so the ready speakers of rack leaf2 (worker-p002) have no router to announce to"}},
				},
			},
		},
		{
			name: "no peers and no speakers reports only the unspoken racks",
			in: with(func(in *Input) {
				in.Peers = nil
				for i := range in.Nodes {
					in.Nodes[i].Speaker = false
				}
			}),
			want: []Rack{
				{
					Name: "leaf1", NextHops: leaf1Hops,
					Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf1 has 2 eligible nodes (master1, worker-p001)" + noSpeakerSuffix}},
				},
				{
					Name: "leaf2", NextHops: []NextHop{hop("worker-p002", "192.168.1.2")},
					Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf2 has 1 eligible node (worker-p002)" + noSpeakerSuffix}},
				},
			},
		},
		{
			name: "no peers and no eligible node",
			in: with(func(in *Input) {
				in.Peers = nil
				setNode(in, "worker-p002", func(n *Node) { n.Excluded = true })
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1"}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonNoPeers, "no BgpPeer exists, so the ready speakers of rack leaf1 (master1) have no router to announce to"}},
				},
				{
					Name: "leaf2", Speakers: []string{"worker-p002"},
					Problems: []Problem{
						{ReasonNoEligibleNodes, "rack leaf2 has speakers (worker-p002)" + noEligibleSuffix},
						{ReasonNoPeers, "no BgpPeer exists, so the ready speakers of rack leaf2 (worker-p002) have no router to announce to"},
					},
				},
			},
		},
		{
			name: "single-rack cluster without rack labels",
			in: Input{
				Nodes: []Node{
					node("node-b", "", false, "10.0.0.12"),
					node("node-a", "", true, "10.0.0.11"),
				},
				Peers: []Peer{{Name: "tor", Address: "10.0.0.1", AS: 65000}},
			},
			want: []Rack{{
				Name:     "",
				Speakers: []string{"node-a"},
				Peers:    []PeerRef{torRef},
				NextHops: []NextHop{hop("node-a", "10.0.0.11"), hop("node-b", "10.0.0.12")},
			}},
		},
		{
			name: "unlabelled rack is named clearly when it has no speaker",
			in:   Input{Nodes: []Node{node("node-a", "", false, "10.0.0.11")}},
			want: []Rack{{
				Name:     "",
				NextHops: []NextHop{hop("node-a", "10.0.0.11")},
				Problems: []Problem{{ReasonRackWithoutSpeaker, `rack "" (nodes without label openelb.kubesphere.io/rack) has 1 eligible node (node-a)` + noSpeakerSuffix}},
			}},
		},
		{
			name: "unlabelled rack is named clearly when no peer exists",
			in:   Input{Nodes: []Node{node("node-a", "", true)}},
			want: []Rack{{
				Name:     "",
				Speakers: []string{"node-a"},
				Problems: []Problem{
					{ReasonNoEligibleNodes, "rack " + unlabelled + " has speakers (node-a)" + noEligibleSuffix},
					{ReasonNoPeers, "no BgpPeer exists, so the ready speakers of rack " + unlabelled + " (node-a) have no router to announce to"},
				},
			}},
		},
		{
			name: "unlabelled rack is named clearly when its speakers match no peer",
			in: Input{
				Nodes: []Node{node("node-a", "", true, "10.0.0.11")},
				Peers: []Peer{rackPeer("leaf1-peer", "192.168.0.2", 65001, "leaf1")},
			},
			want: []Rack{{
				Name:     "",
				Speakers: []string{"node-a"},
				NextHops: []NextHop{hop("node-a", "10.0.0.11")},
				Problems: []Problem{
					{ReasonRackNotAnnounced, "rack " + unlabelled + " has 1 eligible node (node-a) and ready speakers (node-a)" + notAnnouncedTail},
					{ReasonSpeakerWithoutPeer, "speaker node-a in rack " + unlabelled + " matches no BgpPeer nodeSelector"},
				},
			}},
		},
		{
			name: "peers with the same name are ordered by address then AS",
			in: Input{
				Nodes: []Node{node("node-a", "", true, "10.0.0.11")},
				Peers: []Peer{
					{Name: "tor", Address: "10.0.0.2", AS: 65000},
					{Name: "tor", Address: "10.0.0.1", AS: 65001},
					{Name: "tor", Address: "10.0.0.1", AS: 65000},
					{Name: "agg", Address: "10.0.0.9", AS: 65009},
				},
			},
			want: []Rack{{
				Name:     "",
				Speakers: []string{"node-a"},
				Peers: []PeerRef{
					{Name: "agg", Address: "10.0.0.9", AS: 65009},
					{Name: "tor", Address: "10.0.0.1", AS: 65000},
					{Name: "tor", Address: "10.0.0.1", AS: 65001},
					{Name: "tor", Address: "10.0.0.2", AS: 65000},
				},
				NextHops: []NextHop{hop("node-a", "10.0.0.11")},
			}},
		},
		{
			name: "duplicate addresses and peers are reported once",
			in: with(func(in *Input) {
				in.Peers = append(in.Peers, rackPeer("leaf1-peer", "192.168.0.2", 65001, "leaf1"))
				setNode(in, "master1", func(n *Node) { n.Addresses = ips("192.168.0.3", "192.168.0.3") })
			}),
			want: []Rack{leaf1, leaf2},
		},
		{
			name: "duplicate spanning peer is reported once per rack",
			in: with(func(in *Input) {
				spine := Peer{Name: "spine", Address: "10.0.0.1", AS: 65000}
				in.Peers = append(in.Peers, spine, spine)
			}),
			want: []Rack{
				{
					Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref, spineRef}, NextHops: leaf1Hops,
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf2" + spansTail}},
				},
				{
					Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref, spineRef}, NextHops: []NextHop{hop("worker-p002", "192.168.1.2")},
					Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf2" + spansTail}},
				},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Racks(tt.in)
			if len(got) == 0 {
				got = nil // nil and empty both mean no rack
			}
			// Labels are the nodes' own (checked below).
			if diff := cmp.Diff(tt.want, got, addrCmp, cmpopts.IgnoreFields(NextHop{}, "Labels")); diff != "" {
				t.Errorf("Racks() mismatch (-want +got):\n%s", diff)
			}
			labelsOf := map[string]map[string]string{}
			for _, n := range tt.in.Nodes {
				labelsOf[n.Name] = n.Labels
			}
			for _, r := range got {
				for _, h := range r.NextHops {
					if !maps.Equal(h.Labels, labelsOf[h.Node]) {
						t.Errorf("next hop %s carries labels %v, its node has %v", h.Node, h.Labels, labelsOf[h.Node])
					}
				}
			}
		})
	}
}

func TestRackAnnounced(t *testing.T) {
	hops := []NextHop{hop("master1", "192.168.0.3")}
	tests := []struct {
		name string
		rack Rack
		want bool
	}{
		{name: "next hops, speakers and peers", rack: Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: hops}, want: true},
		{name: "problems alone do not withdraw", rack: Rack{
			Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: hops,
			Problems: []Problem{{ReasonPeerSpansRacks, "x"}},
		}, want: true},
		{name: "no next hops", rack: Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}}, want: false},
		{name: "no speakers", rack: Rack{Name: "leaf1", Peers: []PeerRef{leaf1Ref}, NextHops: hops}, want: false},
		{name: "no peers", rack: Rack{Name: "leaf1", Speakers: []string{"master1"}, NextHops: hops}, want: false},
		{name: "empty", rack: Rack{}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.rack.Announced(); got != tt.want {
				t.Errorf("Announced() = %v, want %v", got, tt.want)
			}
		})
	}

	// And on planned racks: the seed announces both racks, a rack without
	// speaker or whose speakers match no peer does not.
	in := with(func(in *Input) {
		in.Nodes = append(in.Nodes,
			node("worker-p003", "leaf3", false, "192.168.2.3"),
			node("worker-p004", "leaf4", true, "192.168.3.4"))
	})
	got := map[string]bool{}
	for _, r := range Racks(in) {
		got[r.Name] = r.Announced()
	}
	want := map[string]bool{"leaf1": true, "leaf2": true, "leaf3": false, "leaf4": false}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Announced() of planned racks (-want +got):\n%s", diff)
	}
}

// richInput exercises every rule but NoPeers at once so order and mutation
// checks see all code paths.
func richInput() Input {
	return with(func(in *Input) {
		dualStack(in)
		setNode(in, "master1", func(n *Node) {
			n.Labels["tier"] = "spine"
			n.Addresses = append(n.Addresses, netip.MustParseAddr("::ffff:192.168.0.3"), netip.Addr{})
		})
		setNode(in, "worker-p002", func(n *Node) { n.Labels["tier"] = "spine" })
		setNode(in, "worker-p001", func(n *Node) { n.Ready = false })
		in.Nodes = append(in.Nodes,
			node("worker-p003", "leaf3", false, "192.168.2.3", "fd00:2::3"),
			node("worker-p004", "leaf4", true, "192.168.3.4"),
			node("worker-p005", "", true, "10.0.0.5"),
			node("worker-p006", "leaf4", false),
		)
		setNode(in, "worker-p005", func(n *Node) { n.Excluded = true })
		many, _ := manyNodes("leaf5", 7)
		in.Nodes = append(in.Nodes, many...)
		in.Peers = append(in.Peers, labelPeer("spine", "10.0.0.1", 65000, "tier", "spine"))
	})
}

func reasons(racks []Rack) map[string]bool {
	out := map[string]bool{}
	for _, r := range racks {
		for _, p := range r.Problems {
			out[p.Reason] = true
		}
	}
	return out
}

func TestRichInputCoversEveryReason(t *testing.T) {
	got := reasons(Racks(richInput()))
	maps.Copy(got, reasons(Racks(with(func(in *Input) { in.Peers = nil }))))
	for _, r := range []string{ReasonRackWithoutSpeaker, ReasonSpeakerWithoutPeer, ReasonNoPeers, ReasonPeerSpansRacks, ReasonNoEligibleNodes, ReasonRackNotAnnounced} {
		if !got[r] {
			t.Errorf("no case produces %s", r)
		}
	}
}

func TestRacksDeterministic(t *testing.T) {
	noPeers := richInput()
	noPeers.Peers = nil
	for _, base := range []Input{seed(), richInput(), noPeers} {
		want := Racks(base)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 50 {
			in := cloneInput(base)
			r.Shuffle(len(in.Nodes), func(a, b int) { in.Nodes[a], in.Nodes[b] = in.Nodes[b], in.Nodes[a] })
			r.Shuffle(len(in.Peers), func(a, b int) { in.Peers[a], in.Peers[b] = in.Peers[b], in.Peers[a] })
			for _, n := range in.Nodes {
				r.Shuffle(len(n.Addresses), func(a, b int) { n.Addresses[a], n.Addresses[b] = n.Addresses[b], n.Addresses[a] })
			}
			if diff := cmp.Diff(want, Racks(in), addrCmp); diff != "" {
				t.Fatalf("shuffle %d changed the racks (-want +got):\n%s", i, diff)
			}
		}
	}
}

func cloneInput(in Input) Input {
	out := in
	out.Nodes = slices.Clone(in.Nodes)
	for i := range out.Nodes {
		out.Nodes[i].Labels = maps.Clone(in.Nodes[i].Labels)
		out.Nodes[i].Addresses = slices.Clone(in.Nodes[i].Addresses)
	}
	out.Peers = slices.Clone(in.Peers)
	return out
}

func TestRacksDoesNotMutateInput(t *testing.T) {
	in := richInput()
	// Out of order on purpose: sorting in place would show up here.
	in.Nodes[0].Addresses = ips("fd00::3", "::ffff:192.168.0.3", "192.168.0.3", "192.168.0.3")
	slices.Reverse(in.Nodes)
	slices.Reverse(in.Peers)
	before := cloneInput(in)
	racks := Racks(in)

	// Writing through the racks must not reach the input either.
	for i := range racks {
		for j := range racks[i].NextHops {
			racks[i].NextHops[j].Node = "x"
			for k := range racks[i].NextHops[j].Addresses {
				racks[i].NextHops[j].Addresses[k] = netip.IPv6Unspecified()
			}
		}
		for j := range racks[i].Speakers {
			racks[i].Speakers[j] = "x"
		}
	}
	opts := cmp.Options{addrCmp, cmpopts.IgnoreFields(Peer{}, "Matches")}
	if diff := cmp.Diff(before, in, opts); diff != "" {
		t.Errorf("Racks mutated its input (-before +after):\n%s", diff)
	}
}

func eligibleAddrs(n Node) []netip.Addr {
	if !n.Ready || n.Excluded || n.Deleting {
		return nil
	}
	var out []netip.Addr
	for _, a := range n.Addresses {
		if a = a.Unmap(); a.IsValid() {
			out = append(out, a)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out)
}

func count(ps []Problem, reason string) int {
	n := 0
	for _, p := range ps {
		if p.Reason == reason {
			n++
		}
	}
	return n
}

// TestRacksInvariants checks the invariants of Racks on random small
// topologies, with a fixed seed so failures reproduce.
func TestRacksInvariants(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 7))
	rackNames := []string{"", "leaf1", "leaf2", "leaf3"}
	for iter := range 2000 {
		in := randomInput(r, rackNames)
		racks := Racks(in)
		fail := func(format string, args ...any) {
			t.Helper()
			t.Fatalf("iteration %d: %s\nracks: %+v", iter, fmt.Sprintf(format, args...), racks)
		}

		// What every rack should hold, computed independently.
		wantSpeakers := map[string][]string{}
		wantHops := map[string][]NextHop{}
		for _, n := range in.Nodes {
			if n.Speaker && n.Ready && !n.Deleting {
				wantSpeakers[n.Rack] = append(wantSpeakers[n.Rack], n.Name)
			}
			if a := eligibleAddrs(n); len(a) > 0 {
				wantHops[n.Rack] = append(wantHops[n.Rack], NextHop{Node: n.Name, Addresses: a, Labels: n.Labels})
			}
		}
		present := map[string]bool{}
		for name := range wantSpeakers {
			present[name] = true
		}
		for name := range wantHops {
			present[name] = true
		}
		wantNames := slices.Sorted(maps.Keys(present))
		gotNames := make([]string, 0, len(racks))
		for _, rack := range racks {
			gotNames = append(gotNames, rack.Name)
		}
		if !slices.Equal(wantNames, gotNames) {
			fail("racks %q, want %q (sorted, unique, each with a ready speaker or an eligible node)", gotNames, wantNames)
		}
		// racks that each peer's matching speakers are in
		peerRacks := make([]map[string]bool, len(in.Peers))
		for pi, p := range in.Peers {
			peerRacks[pi] = map[string]bool{}
			for _, n := range in.Nodes {
				if n.Speaker && n.Ready && !n.Deleting && (p.Matches == nil || p.Matches(n.Labels)) {
					peerRacks[pi][n.Rack] = true
				}
			}
		}

		for _, rack := range racks {
			if (rack.Speakers != nil && len(rack.Speakers) == 0) || (rack.Peers != nil && len(rack.Peers) == 0) ||
				(rack.NextHops != nil && len(rack.NextHops) == 0) || (rack.Problems != nil && len(rack.Problems) == 0) {
				fail("rack %q has a non-nil empty slice", rack.Name)
			}
			speakers := slices.Sorted(slices.Values(wantSpeakers[rack.Name]))
			if !slices.Equal(speakers, rack.Speakers) {
				fail("rack %q speakers %q, want %q", rack.Name, rack.Speakers, speakers)
			}
			hops := slices.Clone(wantHops[rack.Name])
			slices.SortFunc(hops, func(a, b NextHop) int { return strings.Compare(a.Node, b.Node) })
			if diff := cmp.Diff(hops, rack.NextHops, addrCmp); diff != "" {
				fail("rack %q next hops (-want +got):\n%s", rack.Name, diff)
			}
			for _, h := range rack.NextHops {
				for _, a := range h.Addresses {
					if a.Is4In6() {
						fail("rack %q next hop %s keeps mapped address %v", rack.Name, h.Node, a)
					}
				}
			}
			var peers []PeerRef
			spanning := 0
			for pi, p := range in.Peers {
				if peerRacks[pi][rack.Name] {
					peers = append(peers, PeerRef{Name: p.Name, Address: p.Address, AS: p.AS})
					if len(peerRacks[pi]) > 1 {
						spanning++
					}
				}
			}
			slices.SortFunc(peers, comparePeerRef)
			if diff := cmp.Diff(peers, rack.Peers); diff != "" {
				fail("rack %q peers (-want +got):\n%s", rack.Name, diff)
			}
			if !slices.IsSortedFunc(rack.Problems, func(a, b Problem) int {
				if a.Reason != b.Reason {
					return strings.Compare(a.Reason, b.Reason)
				}
				return strings.Compare(a.Message, b.Message)
			}) || len(slices.Compact(slices.Clone(rack.Problems))) != len(rack.Problems) {
				fail("rack %q problems not sorted and unique: %v", rack.Name, rack.Problems)
			}

			hasHops, hasSpeakers, hasPeers, anyPeer := len(hops) > 0, len(speakers) > 0, len(peers) > 0, len(in.Peers) > 0
			lonely := 0
			for _, n := range in.Nodes {
				if n.Rack != rack.Name || !n.Speaker || !n.Ready || n.Deleting {
					continue
				}
				if !slices.ContainsFunc(in.Peers, func(p Peer) bool { return p.Matches == nil || p.Matches(n.Labels) }) {
					lonely++
				}
			}
			if !anyPeer {
				lonely = 0
			}
			b2i := func(b bool) int {
				if b {
					return 1
				}
				return 0
			}
			want := map[string]int{
				ReasonRackWithoutSpeaker: b2i(hasHops && !hasSpeakers),
				ReasonRackNotAnnounced:   b2i(hasHops && hasSpeakers && !hasPeers && anyPeer),
				ReasonNoEligibleNodes:    b2i(!hasHops && hasSpeakers),
				ReasonNoPeers:            b2i(!anyPeer && hasSpeakers),
				ReasonSpeakerWithoutPeer: lonely,
				ReasonPeerSpansRacks:     spanning,
			}
			got := map[string]int{}
			for reason := range want {
				got[reason] = count(rack.Problems, reason)
			}
			if diff := cmp.Diff(want, got); diff != "" {
				fail("rack %q problem counts (-want +got):\n%s", rack.Name, diff)
			}
			blocked := got[ReasonRackWithoutSpeaker]+got[ReasonRackNotAnnounced]+got[ReasonNoEligibleNodes]+got[ReasonNoPeers] > 0
			if rack.Announced() == blocked {
				fail("rack %q Announced() = %v with problems %v", rack.Name, rack.Announced(), rack.Problems)
			}
		}
	}
}

func randomInput(r *rand.Rand, rackNames []string) Input {
	var in Input
	for i := range r.IntN(7) {
		rack := rackNames[r.IntN(len(rackNames))]
		n := node(fmt.Sprintf("n%d", i), rack, r.IntN(2) == 0)
		n.Ready = r.IntN(5) > 0
		n.Excluded = r.IntN(5) == 0
		n.Deleting = r.IntN(6) == 0
		v4 := netip.AddrFrom4([4]byte{10, 0, byte(i), 1})
		switch r.IntN(5) {
		case 1, 2:
			n.Addresses = append(n.Addresses, v4)
		case 3:
			n.Addresses = append(n.Addresses, netip.AddrFrom16(v4.As16()), v4)
		case 4:
			n.Addresses = append(n.Addresses, netip.Addr{})
		}
		if r.IntN(2) == 0 {
			n.Addresses = append(n.Addresses, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i+1)))
		}
		r.Shuffle(len(n.Addresses), func(a, b int) { n.Addresses[a], n.Addresses[b] = n.Addresses[b], n.Addresses[a] })
		in.Nodes = append(in.Nodes, n)
	}
	for i := range r.IntN(4) {
		p := Peer{Name: fmt.Sprintf("p%d", i), Address: fmt.Sprintf("10.255.0.%d", i), AS: 65000 + uint32(i)}
		if rack := r.IntN(len(rackNames) + 1); rack < len(rackNames) {
			p = rackPeer(p.Name, p.Address, p.AS, rackNames[rack])
		}
		in.Peers = append(in.Peers, p)
	}
	return in
}
