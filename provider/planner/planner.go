package planner

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Label keys quoted in problem messages so an operator knows what to fix.
const (
	RackLabel    = "openelb.kubesphere.io/rack"
	SpeakerLabel = "lb.kubesphere.io/v1alpha1"
	SpeakerValue = "openelb"
	ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"
)

// Problem reasons, CamelCase so they can be used as Event or Condition reasons.
const (
	ReasonRackWithoutSpeaker = "RackWithoutSpeaker"
	ReasonSpeakerWithoutPeer = "SpeakerWithoutPeer"
	ReasonNoPeers            = "NoPeers"
	ReasonPeerSpansRacks     = "PeerSpansRacks"
	ReasonNoEligibleNodes    = "NoEligibleNodes"
	ReasonRackNotAnnounced   = "RackNotAnnounced"
)

// Node is a Kubernetes Node reduced to what planning needs.
type Node struct {
	Name      string
	Rack      string            // value of openelb.kubesphere.io/rack ("" = no rack label)
	Labels    map[string]string // all labels, for peer selectors
	Addresses []netip.Addr      // InternalIPs (both families possible)
	Ready     bool              // NodeReady condition True
	Excluded  bool              // labelled node.kubernetes.io/exclude-from-external-load-balancers
	Deleting  bool              // deletionTimestamp set
	// Draining: cordoned (spec.unschedulable, as kubectl drain does first)
	// or tainted ToBeDeletedByClusterAutoscaler. Its next hops leave the
	// plan before its pods are evicted, so no new flow lands on a node whose
	// endpoints are about to go; its speaker keeps speaking for the rack.
	Draining bool
	// GracefulShutdown: Draining, and still within the graceful-shutdown
	// delay (BgpConf spec.gracefulShutdown): the node stays a next hop,
	// marked, so its speakers announce it with the graceful-shutdown
	// community until the delay ends.
	GracefulShutdown bool
	Speaker          bool // runs the speaker (lb.kubesphere.io/v1alpha1=openelb)
}

// Peer is a BgpPeer reduced to what planning needs.
type Peer struct {
	Name    string
	Address string
	AS      uint32
	Matches func(labels map[string]string) bool // its nodeSelector; nil = matches every speaker
}

// Input is everything the racks' announcements depend on.
type Input struct {
	Nodes []Node
	Peers []Peer
}

// PeerRef identifies a peer in a plan; it is comparable so plans can be
// diffed without carrying selector functions around.
type PeerRef struct {
	Name, Address string
	AS            uint32
}

// NextHop is a node that may carry Service traffic, with its addresses.
type NextHop struct {
	Node      string
	Addresses []netip.Addr // sorted
	// Labels of the node (shared with Node.Labels: read only).
	Labels map[string]string
	// GracefulShutdown: announced with the graceful-shutdown community
	// (Node.GracefulShutdown).
	GracefulShutdown bool
}

// Problem is something an operator should fix; Message names the objects.
type Problem struct{ Reason, Message string }

// Rack is what the speakers of one rack announce, for every Service.
type Rack struct {
	Name     string
	Speakers []string  // sorted node names
	Peers    []PeerRef // sorted by name
	NextHops []NextHop // sorted by node
	Problems []Problem // sorted by Reason then Message
}

// Announced says whether the rack's routers learn the Services from it:
// it has next hops, speakers, and peers they match.
func (r Rack) Announced() bool {
	return len(r.NextHops) > 0 && len(r.Speakers) > 0 && len(r.Peers) > 0
}

type speaker struct {
	name   string
	rack   string
	labels map[string]string
	peers  []int // indexes into Input.Peers
}

type rackState struct {
	speakers []speaker
	hops     []NextHop
}

// Racks plans every rack that has a ready speaker or an eligible node,
// sorted by name. It only reads in.
func Racks(in Input) []Rack {
	racks := map[string]*rackState{}
	rackOf := func(name string) *rackState {
		r := racks[name]
		if r == nil {
			r = &rackState{}
			racks[name] = r
		}
		return r
	}
	for _, n := range in.Nodes {
		// A NotReady speaker may be partitioned or dead; counting it would
		// hide a rack that nobody is actually announcing from.
		if n.Speaker && n.Ready && !n.Deleting {
			r := rackOf(n.Rack)
			r.speakers = append(r.speakers, speaker{name: n.Name, rack: n.Rack, labels: n.Labels})
		}
		if !eligible(n) {
			continue
		}
		var addrs []netip.Addr
		for _, a := range n.Addresses {
			if a = a.Unmap(); a.IsValid() {
				addrs = append(addrs, a)
			}
		}
		// A node without an address cannot carry traffic, so it neither
		// counts as eligible nor creates a rack.
		if len(addrs) == 0 {
			continue
		}
		slices.SortFunc(addrs, netip.Addr.Compare)
		r := rackOf(n.Rack)
		r.hops = append(r.hops, NextHop{Node: n.Name, Addresses: slices.Compact(addrs), Labels: n.Labels, GracefulShutdown: n.Draining && n.GracefulShutdown})
	}

	names := make([]string, 0, len(racks))
	for name := range racks {
		names = append(names, name)
	}
	slices.Sort(names)

	out := make([]Rack, 0, len(names))
	peerRacks := make([][]string, len(in.Peers))
	for _, name := range names {
		st := racks[name]
		rack := Rack{Name: name}
		var lonely []string
		for i := range st.speakers {
			sp := &st.speakers[i]
			for pi, p := range in.Peers {
				if p.Matches == nil || p.Matches(sp.labels) {
					sp.peers = append(sp.peers, pi)
				}
			}
			rack.Speakers = append(rack.Speakers, sp.name)
			if len(sp.peers) == 0 {
				lonely = append(lonely, sp.name)
			}
			for _, pi := range sp.peers {
				p := in.Peers[pi]
				rack.Peers = append(rack.Peers, PeerRef{Name: p.Name, Address: p.Address, AS: p.AS})
				if !slices.Contains(peerRacks[pi], name) {
					peerRacks[pi] = append(peerRacks[pi], name)
				}
			}
		}
		slices.Sort(rack.Speakers)
		rack.Speakers = slices.Compact(rack.Speakers)
		slices.SortFunc(rack.Peers, comparePeerRef)
		rack.Peers = slices.Compact(rack.Peers)
		rack.NextHops = slices.Clone(st.hops)
		slices.SortFunc(rack.NextHops, func(a, b NextHop) int { return strings.Compare(a.Node, b.Node) })

		eligible := eligibleDesc(rack.NextHops)
		switch {
		case len(rack.NextHops) > 0 && len(rack.Speakers) == 0:
			rack.Problems = append(rack.Problems, Problem{ReasonRackWithoutSpeaker, fmt.Sprintf(
				"rack %s has %s but no ready speaker (label %s=%s)",
				rackName(name), eligible, SpeakerLabel, SpeakerValue)})
		case len(rack.NextHops) > 0 && len(rack.Peers) == 0 && len(in.Peers) > 0:
			rack.Problems = append(rack.Problems, Problem{ReasonRackNotAnnounced, fmt.Sprintf(
				"rack %s has %s and ready speakers (%s) but none of them matches a BgpPeer, so its routers never learn the Services",
				rackName(name), eligible, strings.Join(rack.Speakers, ", "))})
		}
		if len(rack.NextHops) == 0 && len(rack.Speakers) > 0 {
			rack.Problems = append(rack.Problems, Problem{ReasonNoEligibleNodes, fmt.Sprintf(
				"rack %s has speakers (%s) but no node eligible as a next hop (Ready, not cordoned, not labelled %s, not being deleted, with an InternalIP)",
				rackName(name), strings.Join(rack.Speakers, ", "), ExcludeLabel)})
		}
		switch {
		case len(in.Peers) == 0 && len(rack.Speakers) > 0:
			rack.Problems = append(rack.Problems, Problem{ReasonNoPeers, fmt.Sprintf(
				"no BgpPeer exists, so the ready speakers of rack %s (%s) have no router to announce to",
				rackName(name), strings.Join(rack.Speakers, ", "))})
		default:
			for _, sp := range lonely {
				rack.Problems = append(rack.Problems, Problem{ReasonSpeakerWithoutPeer, fmt.Sprintf(
					"speaker %s in rack %s matches no BgpPeer nodeSelector", sp, rackName(name))})
			}
		}
		out = append(out, rack)
	}

	for pi, rs := range peerRacks {
		if len(rs) < 2 {
			continue
		}
		quoted := make([]string, len(rs))
		for i, r := range rs {
			quoted[i] = rackName(r)
		}
		pr := Problem{ReasonPeerSpansRacks, fmt.Sprintf(
			"BgpPeer %s is matched by ready speakers of racks %s, so its router learns next hops of several racks from different speakers",
			in.Peers[pi].Name, strings.Join(quoted, ", "))}
		for i := range out {
			if slices.Contains(rs, out[i].Name) {
				out[i].Problems = append(out[i].Problems, pr)
			}
		}
	}
	for i := range out {
		slices.SortFunc(out[i].Problems, func(a, b Problem) int {
			if c := strings.Compare(a.Reason, b.Reason); c != 0 {
				return c
			}
			return strings.Compare(a.Message, b.Message)
		})
		out[i].Problems = slices.Compact(out[i].Problems)
	}
	return out
}

// eligible says whether a node may carry Service traffic. For
// externalTrafficPolicy Local the speakers further keep only the nodes with
// an endpoint (the plan's endpointNodes): a node without one drops the
// traffic instead of forwarding it.
func eligible(n Node) bool {
	return n.Ready && !n.Excluded && !n.Deleting && (!n.Draining || n.GracefulShutdown)
}

func comparePeerRef(a, b PeerRef) int {
	if c := strings.Compare(a.Name, b.Name); c != 0 {
		return c
	}
	if c := strings.Compare(a.Address, b.Address); c != 0 {
		return c
	}
	switch {
	case a.AS < b.AS:
		return -1
	case a.AS > b.AS:
		return 1
	}
	return 0
}

// rackName keeps the unlabelled rack visible in messages; an empty string
// would read as a typo.
func rackName(name string) string {
	if name == "" {
		return fmt.Sprintf(`"" (nodes without label %s)`, RackLabel)
	}
	return name
}

func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// eligibleDesc counts the eligible nodes and names the first few, so an
// operator knows which nodes to label: "2 eligible nodes (a, b)".
func eligibleDesc(hops []NextHop) string {
	const show = 5
	names := make([]string, 0, min(len(hops), show))
	for _, h := range hops[:min(len(hops), show)] {
		names = append(names, h.Node)
	}
	list := strings.Join(names, ", ")
	if len(hops) > show {
		list += fmt.Sprintf(" and %d more", len(hops)-show)
	}
	return fmt.Sprintf("%s (%s)", plural(len(hops), "eligible node"), list)
}
