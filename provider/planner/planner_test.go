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
)

// seed is the two-rack topology of OpenELB's multi-router guide.
func seed() Input {
	return Input{
		Addresses: ips("172.22.0.2"),
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

func dualStack(in *Input) {
	v6 := map[string]string{"master1": "fd00::3", "worker-p001": "fd00::4", "worker-p002": "fd00:1::2"}
	for i := range in.Nodes {
		n := &in.Nodes[i]
		n.Addresses = append(n.Addresses, netip.MustParseAddr(v6[n.Name]))
	}
}

const noSpeakerSuffix = " but no ready speaker (label lb.kubesphere.io/v1alpha1=openelb)"

func TestCompute(t *testing.T) {
	leaf1 := Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("192.168.0.3", "192.168.0.4")}
	leaf1MasterOnly := Rack{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("192.168.0.3")}
	leaf2 := Rack{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: ips("192.168.1.2")}

	tests := []struct {
		name string
		in   Input
		want Plan
	}{
		{
			name: "seed topology",
			in:   seed(),
			want: Plan{Racks: []Rack{leaf1, leaf2}},
		},
		{
			name: "empty addresses give an empty plan",
			in:   with(func(in *Input) { in.Addresses = nil }),
			want: Plan{},
		},
		{
			name: "invalid addresses count as none",
			in:   with(func(in *Input) { in.Addresses = []netip.Addr{{}} }),
			want: Plan{},
		},
		{
			name: "NotReady node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Ready = false }) }),
			want: Plan{Racks: []Rack{leaf1MasterOnly, leaf2}},
		},
		{
			name: "excluded node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Excluded = true }) }),
			want: Plan{Racks: []Rack{leaf1MasterOnly, leaf2}},
		},
		{
			name: "deleting node is not a next hop",
			in:   with(func(in *Input) { setNode(in, "worker-p001", func(n *Node) { n.Deleting = true }) }),
			want: Plan{Racks: []Rack{leaf1MasterOnly, leaf2}},
		},
		{
			name: "excluded speaker still speaks but is not a next hop",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Excluded = true }) }),
			want: Plan{Racks: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("192.168.0.4")},
				leaf2,
			}},
		},
		{
			name: "Local with endpoints only on worker-p002 makes leaf1 withdraw",
			in: with(func(in *Input) {
				in.Local = true
				in.EndpointNodes = map[string]bool{"worker-p002": true}
			}),
			want: Plan{Racks: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}},
				leaf2,
			}},
		},
		{
			name: "EndpointNodes ignored without Local",
			in:   with(func(in *Input) { in.EndpointNodes = map[string]bool{"worker-p002": true} }),
			want: Plan{Racks: []Rack{leaf1, leaf2}},
		},
		{
			name: "dual-stack nodes with an IPv4-only Service get IPv4 next hops",
			in:   with(dualStack),
			want: Plan{Racks: []Rack{leaf1, leaf2}},
		},
		{
			name: "IPv6 Service gets IPv6 next hops only",
			in: with(func(in *Input) {
				dualStack(in)
				in.Addresses = ips("fd00:ff::2")
			}),
			want: Plan{Racks: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("fd00::3", "fd00::4")},
				{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: ips("fd00:1::2")},
			}},
		},
		{
			name: "dual-stack Service gets both families, IPv4 first",
			in: with(func(in *Input) {
				dualStack(in)
				in.Addresses = ips("fd00:ff::2", "172.22.0.2")
			}),
			want: Plan{Racks: []Rack{
				{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("192.168.0.3", "192.168.0.4", "fd00::3", "fd00::4")},
				{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: ips("192.168.1.2", "fd00:1::2")},
			}},
		},
		{
			name: "IPv4-mapped addresses are treated as IPv4",
			in: with(func(in *Input) {
				in.Addresses = ips("::ffff:172.22.0.2")
				setNode(in, "worker-p002", func(n *Node) { n.Addresses = ips("::ffff:192.168.1.2") })
			}),
			want: Plan{Racks: []Rack{leaf1, leaf2}},
		},
		{
			name: "IPv6 Service on IPv4-only nodes has no eligible nodes",
			in:   with(func(in *Input) { in.Addresses = ips("fd00:ff::2") }),
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}},
				},
				Problems: []Problem{{ReasonNoEligibleNodes, "no node is eligible as a next hop (Ready, not excluded from external load balancers, not being deleted, with an IPv6 InternalIP)"}},
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
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", NextHops: ips("192.168.0.4")},
					{Name: "leaf2", Speakers: []string{"master1", "worker-p002"}, Peers: []PeerRef{leaf2Ref}, NextHops: ips("192.168.0.3", "192.168.1.2")},
				},
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf1 has 1 eligible node (worker-p001)" + noSpeakerSuffix}},
			},
		},
		{
			name: "peer without selector in a two-rack cluster spans racks",
			in: with(func(in *Input) {
				in.Peers = append(in.Peers, Peer{Name: "spine", Address: "10.0.0.1", AS: 65000})
			}),
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref, spineRef}, NextHops: ips("192.168.0.3", "192.168.0.4")},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref, spineRef}, NextHops: ips("192.168.1.2")},
				},
				Problems: []Problem{{ReasonPeerSpansRacks, "BgpPeer spine is matched by ready speakers of racks leaf1, leaf2, so its router learns next hops of several racks from different speakers"}},
			},
		},
		{
			name: "rack with eligible nodes but no speaker",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes,
					node("worker-p003", "leaf3", false, "192.168.2.3"),
					node("worker-p004", "leaf3", false, "192.168.2.4"))
			}),
			want: Plan{
				Racks:    []Rack{leaf1, leaf2, {Name: "leaf3", NextHops: ips("192.168.2.3", "192.168.2.4")}},
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf3 has 2 eligible nodes (worker-p003, worker-p004)" + noSpeakerSuffix}},
			},
		},
		{
			name: "NotReady speaker is not a speaker",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Ready = false }) }),
			want: Plan{
				Racks:    []Rack{{Name: "leaf1", NextHops: ips("192.168.0.4")}, leaf2},
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf1 has 1 eligible node (worker-p001)" + noSpeakerSuffix}},
			},
		},
		{
			name: "deleting speaker is not a speaker",
			in:   with(func(in *Input) { setNode(in, "master1", func(n *Node) { n.Deleting = true }) }),
			want: Plan{
				Racks:    []Rack{{Name: "leaf1", NextHops: ips("192.168.0.4")}, leaf2},
				Problems: []Problem{{ReasonRackWithoutSpeaker, "rack leaf1 has 1 eligible node (worker-p001)" + noSpeakerSuffix}},
			},
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
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1", "worker-p001"}, Peers: []PeerRef{leaf1Ref}, NextHops: ips("192.168.0.3", "192.168.0.4")},
					leaf2,
				},
				Problems: []Problem{{ReasonSpeakerWithoutPeer, "speaker worker-p001 in rack leaf1 matches no BgpPeer nodeSelector"}},
			},
		},
		{
			name: "rack whose speakers match no peer is not announced",
			in: with(func(in *Input) {
				in.Nodes = append(in.Nodes, node("worker-p003", "leaf3", true, "192.168.2.3"))
			}),
			want: Plan{
				Racks: []Rack{leaf1, leaf2, {Name: "leaf3", Speakers: []string{"worker-p003"}, NextHops: ips("192.168.2.3")}},
				Problems: []Problem{
					{ReasonRackNotAnnounced, "rack leaf3 has 1 eligible node (worker-p003) and ready speakers (worker-p003) but none of them matches a BgpPeer, so its routers never learn the Service"},
					{ReasonSpeakerWithoutPeer, "speaker worker-p003 in rack leaf3 matches no BgpPeer nodeSelector"},
				},
			},
		},
		{
			name: "no peers at all",
			in:   with(func(in *Input) { in.Peers = nil }),
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, NextHops: ips("192.168.0.3", "192.168.0.4")},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, NextHops: ips("192.168.1.2")},
				},
				Problems: []Problem{
					{ReasonNoPeers, "no BgpPeer exists, so the ready speakers (master1, worker-p002) have no router to announce to"},
					{ReasonRackNotAnnounced, "rack leaf1 has 2 eligible nodes (master1, worker-p001) and ready speakers (master1) but none of them matches a BgpPeer, so its routers never learn the Service"},
					{ReasonRackNotAnnounced, "rack leaf2 has 1 eligible node (worker-p002) and ready speakers (worker-p002) but none of them matches a BgpPeer, so its routers never learn the Service"},
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
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", NextHops: ips("192.168.0.3", "192.168.0.4")},
					{Name: "leaf2", NextHops: ips("192.168.1.2")},
				},
				Problems: []Problem{
					{ReasonRackWithoutSpeaker, "rack leaf1 has 2 eligible nodes (master1, worker-p001)" + noSpeakerSuffix},
					{ReasonRackWithoutSpeaker, "rack leaf2 has 1 eligible node (worker-p002)" + noSpeakerSuffix},
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
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}},
				},
				Problems: []Problem{{ReasonNoEligibleNodes, "no node is eligible as a next hop (Ready, not excluded from external load balancers, not being deleted, with an IPv4 InternalIP)"}},
			},
		},
		{
			name: "no nodes at all",
			in:   with(func(in *Input) { in.Nodes = nil }),
			want: Plan{Problems: []Problem{{ReasonNoEligibleNodes, "no node exists to carry the Service's traffic"}}},
		},
		{
			name: "Local without any endpoint",
			in:   with(func(in *Input) { in.Local = true }),
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}},
				},
				Problems: []Problem{{ReasonNoEligibleNodes, "no node has a ready endpoint of the Service (externalTrafficPolicy Local)"}},
			},
		},
		{
			name: "Local with endpoints only on ineligible nodes",
			in: with(func(in *Input) {
				in.Local = true
				in.EndpointNodes = map[string]bool{"worker-p001": true}
				setNode(in, "worker-p001", func(n *Node) { n.Deleting = true })
			}),
			want: Plan{
				Racks: []Rack{
					{Name: "leaf1", Speakers: []string{"master1"}, Peers: []PeerRef{leaf1Ref}},
					{Name: "leaf2", Speakers: []string{"worker-p002"}, Peers: []PeerRef{leaf2Ref}},
				},
				Problems: []Problem{{ReasonNoEligibleNodes, "no node with a ready endpoint of the Service is eligible (Ready, not excluded from external load balancers, not being deleted, with an IPv4 InternalIP; externalTrafficPolicy Local)"}},
			},
		},
		{
			name: "single-rack cluster without rack labels",
			in: Input{
				Addresses: ips("172.22.0.2"),
				Nodes: []Node{
					node("node-b", "", false, "10.0.0.12"),
					node("node-a", "", true, "10.0.0.11"),
				},
				Peers: []Peer{{Name: "tor", Address: "10.0.0.1", AS: 65000}},
			},
			want: Plan{Racks: []Rack{{
				Name:     "",
				Speakers: []string{"node-a"},
				Peers:    []PeerRef{{Name: "tor", Address: "10.0.0.1", AS: 65000}},
				NextHops: ips("10.0.0.11", "10.0.0.12"),
			}}},
		},
		{
			name: "unlabelled rack is named clearly in problems",
			in: Input{
				Addresses: ips("172.22.0.2"),
				Nodes:     []Node{node("node-a", "", false, "10.0.0.11")},
			},
			want: Plan{
				Racks:    []Rack{{Name: "", NextHops: ips("10.0.0.11")}},
				Problems: []Problem{{ReasonRackWithoutSpeaker, `rack "" (nodes without label openelb.kubesphere.io/rack) has 1 eligible node (node-a)` + noSpeakerSuffix}},
			},
		},
		{
			name: "duplicate addresses and peers are reported once",
			in: with(func(in *Input) {
				in.Peers = append(in.Peers, rackPeer("leaf1-peer", "192.168.0.2", 65001, "leaf1"))
				setNode(in, "master1", func(n *Node) { n.Addresses = ips("192.168.0.3", "192.168.0.3") })
			}),
			want: Plan{Racks: []Rack{leaf1, leaf2}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Compute(tt.in)
			if diff := cmp.Diff(tt.want, got, addrCmp); diff != "" {
				t.Errorf("Compute() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// richInput exercises every rule at once so order and mutation checks see
// all code paths.
func richInput() Input {
	in := with(func(in *Input) {
		dualStack(in)
		in.Addresses = ips("fd00:ff::2", "172.22.0.2")
		in.Local = true
		in.EndpointNodes = map[string]bool{"master1": true, "worker-p001": true, "worker-p003": true, "worker-p005": true}
		in.Nodes = append(in.Nodes,
			node("worker-p003", "leaf3", false, "192.168.2.3", "fd00:2::3"),
			node("worker-p004", "leaf4", true, "192.168.3.4"),
			node("worker-p005", "", true, "10.0.0.5"),
		)
		in.Peers = append(in.Peers, Peer{Name: "spine", Address: "10.0.0.1", AS: 65000})
	})
	return in
}

func TestComputeDeterministic(t *testing.T) {
	for _, base := range []Input{seed(), richInput()} {
		want := Compute(base)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range 50 {
			in := cloneInput(base)
			r.Shuffle(len(in.Nodes), func(a, b int) { in.Nodes[a], in.Nodes[b] = in.Nodes[b], in.Nodes[a] })
			r.Shuffle(len(in.Peers), func(a, b int) { in.Peers[a], in.Peers[b] = in.Peers[b], in.Peers[a] })
			r.Shuffle(len(in.Addresses), func(a, b int) { in.Addresses[a], in.Addresses[b] = in.Addresses[b], in.Addresses[a] })
			for _, n := range in.Nodes {
				r.Shuffle(len(n.Addresses), func(a, b int) { n.Addresses[a], n.Addresses[b] = n.Addresses[b], n.Addresses[a] })
			}
			if diff := cmp.Diff(want, Compute(in), addrCmp); diff != "" {
				t.Fatalf("shuffle %d changed the plan (-want +got):\n%s", i, diff)
			}
		}
	}
}

func cloneInput(in Input) Input {
	out := in
	out.Addresses = slices.Clone(in.Addresses)
	out.EndpointNodes = maps.Clone(in.EndpointNodes)
	out.Nodes = slices.Clone(in.Nodes)
	for i := range out.Nodes {
		out.Nodes[i].Labels = maps.Clone(in.Nodes[i].Labels)
		out.Nodes[i].Addresses = slices.Clone(in.Nodes[i].Addresses)
	}
	out.Peers = slices.Clone(in.Peers)
	return out
}

func TestComputeDoesNotMutateInput(t *testing.T) {
	in := richInput()
	// Out of order on purpose: sorting in place would show up here.
	in.Addresses = ips("fd00:ff::2", "::ffff:172.22.0.2")
	in.Nodes[0].Addresses = ips("fd00::3", "192.168.0.3", "192.168.0.3")
	before := cloneInput(in)
	plan := Compute(in)

	// Writing through the plan must not reach the input either.
	for i := range plan.Racks {
		for j := range plan.Racks[i].NextHops {
			plan.Racks[i].NextHops[j] = netip.IPv6Unspecified()
		}
	}
	opts := cmp.Options{addrCmp, cmpopts.IgnoreFields(Peer{}, "Matches")}
	if diff := cmp.Diff(before, in, opts); diff != "" {
		t.Errorf("Compute mutated its input (-before +after):\n%s", diff)
	}
}

// TestNextHopsBelongToEligibleNodes checks the invariants of Compute on
// random small topologies, with a fixed seed so failures reproduce.
func TestNextHopsBelongToEligibleNodes(t *testing.T) {
	r := rand.New(rand.NewPCG(42, 7))
	rackNames := []string{"", "leaf1", "leaf2", "leaf3"}
	for iter := range 2000 {
		in := randomInput(r, rackNames)
		plan := Compute(in)

		fam := map[bool]bool{} // key: Is4
		for _, a := range in.Addresses {
			fam[a.Unmap().Is4()] = true
		}
		if len(in.Addresses) == 0 {
			if diff := cmp.Diff(Plan{}, plan, addrCmp); diff != "" {
				t.Fatalf("iteration %d: empty Addresses gave a plan:\n%s", iter, diff)
			}
			continue
		}

		owner := map[netip.Addr][]Node{}
		for _, n := range in.Nodes {
			for _, a := range n.Addresses {
				owner[a] = append(owner[a], n)
			}
		}
		seen := map[string]bool{}
		for i, rack := range plan.Racks {
			if i > 0 && plan.Racks[i-1].Name >= rack.Name {
				t.Fatalf("iteration %d: racks not sorted and unique: %q then %q", iter, plan.Racks[i-1].Name, rack.Name)
			}
			seen[rack.Name] = true
			if len(rack.Speakers) == 0 && len(rack.NextHops) == 0 {
				t.Fatalf("iteration %d: rack %q has neither speakers nor next hops", iter, rack.Name)
			}
			if (rack.Speakers != nil && len(rack.Speakers) == 0) || (rack.Peers != nil && len(rack.Peers) == 0) || (rack.NextHops != nil && len(rack.NextHops) == 0) {
				t.Fatalf("iteration %d: rack %q has a non-nil empty slice", iter, rack.Name)
			}
			if !slices.IsSorted(rack.Speakers) || !slices.IsSortedFunc(rack.NextHops, netip.Addr.Compare) {
				t.Fatalf("iteration %d: rack %q not sorted: %+v", iter, rack.Name, rack)
			}
			for _, hop := range rack.NextHops {
				if !fam[hop.Is4()] {
					t.Fatalf("iteration %d: rack %q next hop %v is not of a Service family", iter, rack.Name, hop)
				}
				ok := false
				for _, n := range owner[hop] {
					if n.Rack == rack.Name && n.Ready && !n.Excluded && !n.Deleting && (!in.Local || in.EndpointNodes[n.Name]) {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("iteration %d: rack %q next hop %v has no eligible owner in the rack", iter, rack.Name, hop)
				}
			}
			for _, s := range rack.Speakers {
				ok := false
				for _, n := range in.Nodes {
					if n.Name == s && n.Rack == rack.Name && n.Speaker && n.Ready && !n.Deleting {
						ok = true
					}
				}
				if !ok {
					t.Fatalf("iteration %d: rack %q speaker %s is not a ready speaker of the rack", iter, rack.Name, s)
				}
			}
		}
		// The converse: every eligible in-family address shows up.
		for _, n := range in.Nodes {
			if !n.Ready || n.Excluded || n.Deleting || (in.Local && !in.EndpointNodes[n.Name]) {
				continue
			}
			for _, a := range n.Addresses {
				if !fam[a.Is4()] {
					continue
				}
				i := slices.IndexFunc(plan.Racks, func(r Rack) bool { return r.Name == n.Rack })
				if i < 0 || !slices.Contains(plan.Racks[i].NextHops, a) {
					t.Fatalf("iteration %d: eligible node %s address %v missing from rack %q", iter, n.Name, a, n.Rack)
				}
			}
		}
		if plan.Problems != nil && len(plan.Problems) == 0 {
			t.Fatalf("iteration %d: non-nil empty Problems", iter)
		}
		if !slices.IsSortedFunc(plan.Problems, func(a, b Problem) int {
			if a.Reason != b.Reason {
				return strings.Compare(a.Reason, b.Reason)
			}
			return strings.Compare(a.Message, b.Message)
		}) {
			t.Fatalf("iteration %d: problems not sorted: %v", iter, plan.Problems)
		}
	}
}

func randomInput(r *rand.Rand, rackNames []string) Input {
	var in Input
	switch r.IntN(4) {
	case 1:
		in.Addresses = ips("172.22.0.2")
	case 2:
		in.Addresses = ips("fd00:ff::2")
	case 3:
		in.Addresses = ips("172.22.0.2", "fd00:ff::2")
	}
	in.Local = r.IntN(2) == 0
	in.EndpointNodes = map[string]bool{}
	for i := range r.IntN(7) {
		rack := rackNames[r.IntN(len(rackNames))]
		n := node(fmt.Sprintf("n%d", i), rack, r.IntN(2) == 0)
		n.Ready = r.IntN(5) > 0
		n.Excluded = r.IntN(5) == 0
		n.Deleting = r.IntN(6) == 0
		if r.IntN(4) > 0 {
			n.Addresses = append(n.Addresses, netip.AddrFrom4([4]byte{10, 0, byte(i), 1}))
		}
		if r.IntN(2) == 0 {
			n.Addresses = append(n.Addresses, netip.MustParseAddr(fmt.Sprintf("fd00::%x", i+1)))
		}
		if r.IntN(2) == 0 {
			in.EndpointNodes[n.Name] = true
		}
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
