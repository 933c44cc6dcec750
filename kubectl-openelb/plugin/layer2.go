package plugin

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// labelComponent is the label the speakers put on their layer-2 node
// Leases, with the value election.LeaseComponent.
const labelComponent = "app.kubernetes.io/component"

// nodeLease is one speaker's layer-2 node Lease as the plugin reads it.
type nodeLease struct {
	node  string
	pools election.Membership
	// expires is renewTime + leaseDurationSeconds; zero when the Lease
	// lacks either.
	expires time.Time
	// live: expires is not before StatusInput.Now.
	live bool
}

// layer2Pool is what the node Leases say about one pool: the view every
// speaker computes owners from, and the Leases that list the pool but
// have expired.
type layer2Pool struct {
	view election.View
	// acks is, by live candidate, the view hash its Lease says it acts on;
	// one that differs from view.Hash is mid-hand-over (or the plugin and
	// the speakers see different Leases for a moment).
	acks    map[string]string
	expired []nodeLease // by node
}

// parseLeases keeps the layer-2 node Leases (those named after their
// holder, as the speakers require) and says which are live at now. A
// Lease whose annotation does not parse lists no pool, as for the
// speakers.
func parseLeases(leases []coordinationv1.Lease, now time.Time) []nodeLease {
	var out []nodeLease
	for i := range leases {
		l := &leases[i]
		holder := ptr.Deref(l.Spec.HolderIdentity, "")
		if holder == "" || l.Name != election.NodeLeaseName(holder) {
			continue
		}
		pools, err := election.ParseMembership(l.Annotations[election.AnnotationPools])
		if err != nil {
			pools = election.Membership{}
		}
		nl := nodeLease{node: holder, pools: pools}
		if l.Spec.RenewTime != nil && l.Spec.LeaseDurationSeconds != nil {
			nl.expires = l.Spec.RenewTime.Add(time.Duration(*l.Spec.LeaseDurationSeconds) * time.Second)
			nl.live = !nl.expires.Before(now)
		}
		out = append(out, nl)
	}
	slices.SortFunc(out, func(a, b nodeLease) int { return cmp.Compare(a.node, b.node) })
	return out
}

// layer2Pool computes the pool's view from the node Leases, as a speaker
// does: the live nodes whose Lease lists the pool, with their preferred
// flag.
func (v *statusView) layer2Pool(pool string) *layer2Pool {
	if p, ok := v.l2pools[pool]; ok {
		return p
	}
	p := &layer2Pool{acks: map[string]string{}}
	var cands []election.Candidate
	for _, l := range v.leases {
		ack, ok := l.pools[pool]
		switch {
		case !ok:
		case l.live:
			cands = append(cands, election.Candidate{Node: l.node, Preferred: ack.Preferred})
			p.acks[l.node] = ack.View
		default:
			p.expired = append(p.expired, l)
		}
	}
	p.view = election.NewView(pool, cands)
	v.l2pools[pool] = p
	return p
}

// speakerEntry is one speaker's status.layer2 entry for a pool.
type speakerEntry struct {
	speaker *v1alpha2.LoadBalancerSpeaker
	entry   v1alpha2.SpeakerLayer2
}

// layer2Entries lists, by speaker, the speakers' entries for the pool.
func (v *statusView) layer2Entries(pool string) []speakerEntry {
	var out []speakerEntry
	for _, sp := range v.sortedSpeakers() {
		for _, e := range sp.Status.Layer2 {
			if e.Pool == pool {
				out = append(out, speakerEntry{speaker: sp, entry: e})
			}
		}
	}
	return out
}

// layer2Address adds an address answered by ARP/NDP: the node that
// answers it, and what every speaker says about the pool. The answering
// node of an address is its owner, computed from the node Leases as the
// speakers compute it, when that node reports answering for the pool;
// without the Leases (not readable) it is whoever reports answering.
func (v *statusView) layer2Address(root *node, a *v1alpha2.PlanAddress) {
	head := fmt.Sprintf("%s (pool %s, layer2", a.IP, orNone(a.Pool))
	if a.Interface != "" {
		head += " on " + a.Interface
	}
	n := root.add("%s)", head)
	entries := v.layer2Entries(a.Pool)
	ip, err := netip.ParseAddr(a.IP)
	if !v.in.LeasesListed || err != nil {
		v.layer2Reported(n, a, entries)
		return
	}

	p := v.layer2Pool(a.Pool)
	owner := p.view.Owner(ip)
	if len(p.view.Candidates) > 0 || len(p.expired) > 0 || len(entries) > 0 {
		v.layer2Candidates(n, p)
	}
	var ownerEntry *v1alpha2.SpeakerLayer2
	for _, se := range entries {
		e, name := se.entry, se.speaker.Name
		role := ""
		switch {
		case name == owner:
			ownerEntry = &e
			role = ", owner of this address"
		case e.Answering && p.view.Has(name):
			role = ", not this address"
		case e.Answering:
			// A report left by a speaker that stopped, or one written just
			// before its Lease lapsed: the speakers no longer count it.
			role = ", by its last report, but no live Lease of it lists the pool"
		}
		v.layer2Entry(n, se, a.Pool, role, e.Answering || name == owner)
	}

	problem := ""
	if ownerEntry != nil && ownerEntry.Answering {
		problem = v.addressProblem(owner, a.Pool, ip)
	}
	switch {
	case owner == "" && len(entries) == 0:
		n.text += fmt.Sprintf(": answered by no node: no speaker reports pool %s", a.Pool)
	case owner == "":
		n.text += fmt.Sprintf(": answered by no node: no live node Lease in %s lists pool %s", orNone(v.in.LeaseNamespace), a.Pool)
	case ownerEntry == nil:
		n.text += fmt.Sprintf(": answered by no node: its owner %s does not report pool %s", owner, a.Pool)
	case !ownerEntry.Answering:
		n.text += fmt.Sprintf(": answered by no node: its owner %s reports %s", owner, orNone(ownerEntry.Reason))
	case problem != "":
		n.text += fmt.Sprintf(": answered by no node: its owner %s cannot answer it (%s, see speaker problems)", owner, problem)
	default:
		n.text += ": answered by " + owner
	}
}

// layer2Candidates adds the pool's candidates: the live nodes whose Lease
// lists it (preferred ones marked, and those acting on another view), and
// the Leases that list it but have expired.
func (v *statusView) layer2Candidates(n *node, p *layer2Pool) {
	var parts []string
	if len(p.view.Candidates) == 0 {
		parts = append(parts, "candidates: none (no live node Lease lists the pool)")
	} else {
		names := make([]string, len(p.view.Candidates))
		for i, c := range p.view.Candidates {
			var notes []string
			if c.Preferred {
				notes = append(notes, "preferred")
			}
			if p.acks[c.Node] != p.view.Hash {
				notes = append(notes, "still acting on another set of candidates")
			}
			names[i] = c.Node
			if len(notes) > 0 {
				names[i] += " (" + strings.Join(notes, ", ") + ")"
			}
		}
		parts = append(parts, "candidates: "+strings.Join(names, ", "))
	}
	if len(p.expired) > 0 {
		gone := make([]string, len(p.expired))
		for i, l := range p.expired {
			gone[i] = l.node
			if !l.expires.IsZero() {
				gone[i] += " (" + v.age(l.expires) + " ago)"
			}
		}
		parts = append(parts, "Lease expired: "+strings.Join(gone, ", "))
	}
	n.add("%s", strings.Join(parts, "; "))
}

// layer2Reported adds the speakers' entries and names the answering node
// from their reports alone: used when the node Leases could not be read.
// With several nodes answering parts of the pool, which one answers this
// address is then unknown.
func (v *statusView) layer2Reported(n *node, a *v1alpha2.PlanAddress, entries []speakerEntry) {
	var answering []string
	for _, se := range entries {
		if se.entry.Answering {
			answering = append(answering, se.speaker.Name)
		}
		v.layer2Entry(n, se, a.Pool, "", se.entry.Answering)
	}
	switch {
	case len(entries) == 0:
		n.text += fmt.Sprintf(": answered by no node: no speaker reports pool %s", a.Pool)
	case len(answering) == 0:
		n.text += ": answered by no node"
	case len(answering) == 1:
		n.text += ": answered by " + answering[0]
	default:
		n.text += fmt.Sprintf(": answered by one of %s (the node Leases in %s are not readable: which node owns this address is unknown)",
			strings.Join(answering, ", "), orNone(v.in.LeaseNamespace))
	}
}

// layer2Entry adds one speaker's line for the pool: its state, its MAC,
// role (its part in this address, "" when unknown) and, when withMessage
// or when the state is a problem, the speaker's message.
func (v *statusView) layer2Entry(n *node, se speakerEntry, pool, role string, withMessage bool) {
	e, name := se.entry, se.speaker.Name
	switch {
	case e.Answering:
		n.add("%s: answering%s%s: %s", name, mac(e.MAC), role, e.Message)
	case e.Reason == reasonStandby && withMessage && e.Message != "":
		n.add("%s: standby%s%s: %s", name, mac(e.MAC), role, e.Message)
	case e.Reason == reasonStandby:
		n.add("%s: standby%s%s", name, mac(e.MAC), role)
	case hasProblem(se.speaker, "Eip/"+pool, e.Reason):
		// The problem, listed below, carries the same message.
		n.add("%s: %s%s%s (see speaker problems)", name, orNone(e.Reason), mac(e.MAC), role)
	default:
		n.add("%s: %s%s%s: %s", name, orNone(e.Reason), mac(e.MAC), role, e.Message)
	}
}

// addressProblem is the reason of a problem the speaker reports with the
// pool that names addr (an address it owns but cannot answer: rejected,
// or no endpoint node's MAC for externalTrafficPolicy Local); "" when none
// does. A problem lists the first few addresses only, so one it leaves
// out goes unnoticed here.
func (v *statusView) addressProblem(speaker, pool string, addr netip.Addr) string {
	sp := v.speakers[speaker]
	if sp == nil {
		return ""
	}
	for _, p := range sp.Status.Problems {
		if p.Object == "Eip/"+pool && mentions(p.Message, addr) {
			return orNone(p.Reason)
		}
	}
	return ""
}

// mentions says whether the message names addr as a word of its own
// (an IPv6 address may be followed by the colon that ends an item).
func mentions(msg string, addr netip.Addr) bool {
	words := strings.FieldsFunc(msg, func(r rune) bool { return strings.ContainsRune(" ;,()[]", r) })
	for _, w := range words {
		x, err := netip.ParseAddr(w)
		if err != nil {
			x, err = netip.ParseAddr(strings.TrimSuffix(w, ":"))
		}
		if err == nil && x == addr {
			return true
		}
	}
	return false
}
