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
	Speaker   bool              // runs the speaker (lb.kubesphere.io/v1alpha1=openelb)
}

// Peer is a BgpPeer reduced to what planning needs.
type Peer struct {
	Name    string
	Address string
	AS      uint32
	Matches func(labels map[string]string) bool // its nodeSelector; nil = matches every speaker
}

// Input is everything one Service's plan depends on.
type Input struct {
	Addresses     []netip.Addr    // the Service's IPs (BGP ones)
	Local         bool            // externalTrafficPolicy: Local
	EndpointNodes map[string]bool // nodes with a ready endpoint of the Service (used only when Local)
	Nodes         []Node
	Peers         []Peer
}

// PeerRef identifies a peer in a plan; it is comparable so plans can be
// diffed without carrying selector functions around.
type PeerRef struct {
	Name, Address string
	AS            uint32
}

// Rack is what the speakers of one rack announce.
type Rack struct {
	Name     string
	Speakers []string     // sorted node names
	Peers    []PeerRef    // sorted by name
	NextHops []netip.Addr // sorted; only families present in Input.Addresses
}

// Problem is something an operator should fix; Message names the objects.
type Problem struct{ Reason, Message string }

// Plan is the rack-scoped announcement for one Service.
type Plan struct {
	Racks    []Rack    // sorted by name
	Problems []Problem // sorted by Reason then Message
}

type families struct{ v4, v6 bool }

func (f families) has(a netip.Addr) bool {
	return (a.Is4() && f.v4) || (a.Is6() && f.v6)
}

func (f families) String() string {
	switch {
	case f.v4 && f.v6:
		return "IPv4 or IPv6"
	case f.v6:
		return "IPv6"
	default:
		return "IPv4"
	}
}

// normalize unmaps IPv4-in-IPv6 so an IPv4 Service is matched (and
// announced) with a plain IPv4 next hop, which is what IPv4 unicast NLRI needs.
func normalize(a netip.Addr) netip.Addr {
	return a.Unmap()
}

type speaker struct {
	name   string
	rack   string
	labels map[string]string
	peers  []int // indexes into Input.Peers
}

type rackState struct {
	speakers []speaker
	eligible []string // names of nodes that contributed at least one next hop
	hops     []netip.Addr
}

// Compute plans the announcement of in.Addresses. It only reads in.
func Compute(in Input) Plan {
	var fam families
	for _, a := range in.Addresses {
		a = normalize(a)
		fam.v4 = fam.v4 || a.Is4()
		fam.v6 = fam.v6 || a.Is6()
	}
	if !fam.v4 && !fam.v6 {
		return Plan{}
	}

	racks := map[string]*rackState{}
	rackOf := func(name string) *rackState {
		r := racks[name]
		if r == nil {
			r = &rackState{}
			racks[name] = r
		}
		return r
	}
	endpointNodes := 0
	for _, n := range in.Nodes {
		if in.Local && in.EndpointNodes[n.Name] {
			endpointNodes++
		}
		// A NotReady speaker may be partitioned or dead; counting it would
		// hide a rack that nobody is actually announcing from.
		if n.Speaker && n.Ready && !n.Deleting {
			r := rackOf(n.Rack)
			r.speakers = append(r.speakers, speaker{name: n.Name, rack: n.Rack, labels: n.Labels})
		}
		if !eligible(n, in) {
			continue
		}
		var hops []netip.Addr
		for _, a := range n.Addresses {
			a = normalize(a)
			if a.IsValid() && fam.has(a) {
				hops = append(hops, a)
			}
		}
		// A node without an address of the Service's family cannot carry
		// its traffic, so it neither counts as eligible nor creates a rack.
		if len(hops) == 0 {
			continue
		}
		r := rackOf(n.Rack)
		r.eligible = append(r.eligible, n.Name)
		r.hops = append(r.hops, hops...)
	}

	names := make([]string, 0, len(racks))
	for name := range racks {
		names = append(names, name)
	}
	slices.Sort(names)

	var plan Plan
	var problems []Problem
	peerRacks := make([][]string, len(in.Peers))
	var allSpeakers, lonely []speaker
	anyHops := false

	for _, name := range names {
		st := racks[name]
		rack := Rack{Name: name}

		for i := range st.speakers {
			sp := &st.speakers[i]
			for pi, p := range in.Peers {
				if p.Matches == nil || p.Matches(sp.labels) {
					sp.peers = append(sp.peers, pi)
				}
			}
			rack.Speakers = append(rack.Speakers, sp.name)
			allSpeakers = append(allSpeakers, *sp)
			if len(sp.peers) == 0 {
				lonely = append(lonely, *sp)
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

		if len(st.hops) > 0 {
			anyHops = true
			rack.NextHops = slices.Clone(st.hops)
			slices.SortFunc(rack.NextHops, netip.Addr.Compare)
			rack.NextHops = slices.Compact(rack.NextHops)
		}

		eligible := eligibleDesc(st.eligible)
		switch {
		case len(rack.NextHops) > 0 && len(rack.Speakers) == 0:
			problems = append(problems, Problem{ReasonRackWithoutSpeaker, fmt.Sprintf(
				"rack %s has %s but no ready speaker (label %s=%s)",
				rackName(name), eligible, SpeakerLabel, SpeakerValue)})
		case len(rack.NextHops) > 0 && len(rack.Peers) == 0:
			problems = append(problems, Problem{ReasonRackNotAnnounced, fmt.Sprintf(
				"rack %s has %s and ready speakers (%s) but none of them matches a BgpPeer, so its routers never learn the Service",
				rackName(name), eligible, strings.Join(rack.Speakers, ", "))})
		}

		if len(rack.Speakers) > 0 || len(rack.NextHops) > 0 {
			plan.Racks = append(plan.Racks, rack)
		}
	}

	if len(in.Peers) == 0 {
		if len(allSpeakers) > 0 {
			problems = append(problems, Problem{ReasonNoPeers, fmt.Sprintf(
				"no BgpPeer exists, so the ready speakers (%s) have no router to announce to",
				strings.Join(speakerNames(allSpeakers), ", "))})
		}
	} else {
		for _, sp := range lonely {
			problems = append(problems, Problem{ReasonSpeakerWithoutPeer, fmt.Sprintf(
				"speaker %s in rack %s matches no BgpPeer nodeSelector",
				sp.name, rackName(sp.rack))})
		}
	}

	for pi, rs := range peerRacks {
		if len(rs) < 2 {
			continue
		}
		quoted := make([]string, len(rs))
		for i, r := range rs {
			quoted[i] = rackName(r)
		}
		problems = append(problems, Problem{ReasonPeerSpansRacks, fmt.Sprintf(
			"BgpPeer %s is matched by ready speakers of racks %s, so its router learns next hops of several racks from different speakers",
			in.Peers[pi].Name, strings.Join(quoted, ", "))})
	}

	if !anyHops {
		problems = append(problems, Problem{ReasonNoEligibleNodes, noEligibleMessage(in, fam, endpointNodes)})
	}

	slices.SortFunc(problems, func(a, b Problem) int {
		if c := strings.Compare(a.Reason, b.Reason); c != 0 {
			return c
		}
		return strings.Compare(a.Message, b.Message)
	})
	plan.Problems = slices.Compact(problems)
	return plan
}

func eligible(n Node, in Input) bool {
	if !n.Ready || n.Excluded || n.Deleting {
		return false
	}
	// With Local, a node without an endpoint drops the traffic instead of
	// forwarding it, so it must not be a next hop.
	return !in.Local || in.EndpointNodes[n.Name]
}

func noEligibleMessage(in Input, fam families, endpointNodes int) string {
	criteria := fmt.Sprintf("Ready, not excluded from external load balancers, not being deleted, with an %s InternalIP", fam)
	switch {
	case in.Local && endpointNodes == 0:
		return "no node has a ready endpoint of the Service (externalTrafficPolicy Local)"
	case in.Local:
		return fmt.Sprintf("no node with a ready endpoint of the Service is eligible (%s; externalTrafficPolicy Local)", criteria)
	case len(in.Nodes) == 0:
		return "no node exists to carry the Service's traffic"
	default:
		return fmt.Sprintf("no node is eligible as a next hop (%s)", criteria)
	}
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
func eligibleDesc(names []string) string {
	s := slices.Clone(names)
	slices.Sort(s)
	s = slices.Compact(s)
	const show = 5
	list := strings.Join(s[:min(len(s), show)], ", ")
	if len(s) > show {
		list += fmt.Sprintf(" and %d more", len(s)-show)
	}
	return fmt.Sprintf("%s (%s)", plural(len(s), "eligible node"), list)
}

func speakerNames(sps []speaker) []string {
	names := make([]string, 0, len(sps))
	for _, sp := range sps {
		names = append(names, sp.name)
	}
	slices.Sort(names)
	return slices.Compact(names)
}
