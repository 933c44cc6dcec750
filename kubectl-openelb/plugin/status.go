package plugin

import (
	"cmp"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// StatusInput is everything `status` reads, fetched once. RenderStatus
// needs nothing else (no client, no clock), so a test builds one by hand
// and the output is a function of it.
type StatusInput struct {
	// Now is the time ages are measured from.
	Now time.Time
	// Services to show, each as one tree.
	Services []corev1.Service
	// Plans of those Services (others are ignored).
	Plans []v1alpha2.LoadBalancerPlan
	// Racks and Speakers are cluster-wide: every rack announces every BGP
	// address, and a layer-2 pool may be answered by any speaker.
	Racks    []v1alpha2.LoadBalancerRack
	Speakers []v1alpha2.LoadBalancerSpeaker
	// Peers are read for their labels only (an address's peerSelector);
	// nil when they could not be read, and then no session is marked as
	// left out by a selector.
	Peers []v1alpha2.BgpPeer
	// Events are the Warning events of the Services that have no address
	// or no plan; those the CCM recorded (its refusals) say why.
	Events []corev1.Event
	// Leases are the speakers' layer-2 node Leases (in LeaseNamespace,
	// label app.kubernetes.io/component=layer2-node): the owner of each
	// layer-2 address is computed from them, as the speakers compute it.
	Leases []coordinationv1.Lease
	// LeasesListed is false when the Leases were not read (no layer-2
	// address, or RBAC): a layer-2 address is then shown answered by the
	// node that reports answering its pool, when there is one only.
	LeasesListed bool
	// LeaseNamespace is the namespace of the speakers and their Leases.
	LeaseNamespace string
}

// Condition types and reasons the renderer treats specially. They are the
// CCM's and the speaker's; redeclared here because the plugin depends on
// the API package and the pure election code only (nodeagent/election,
// for the owner of a layer-2 address), not on the provider or the rest of
// the node agent.
const (
	conditionAnnounced = "Announced"
	conditionPlanned   = "Planned"
	reasonAnswering    = "Answering"
	reasonStandby      = "Standby"
	sessionEstablished = "established"
)

// ccmEventSources are the components the openelb CCM records Service
// events as: its provider (allocation refusals: NoPool, PoolNotFound...)
// and its service controller (SyncLoadBalancerFailed). Other components'
// warnings on a Service (kube-apiserver's ClusterIP repair, say) do not
// explain what openelb did, and kubectl describe shows them anyway.
var ccmEventSources = []string{"openelb-cloud-controller-manager", "service-controller"}

// maxEvents bounds the refusal events shown per Service: the latest reason
// says why; older ones are history.
const maxEvents = 3

// RenderStatus prints one tree per Service, in namespace/name order: its
// addresses, the pool and protocol of each, and for a BGP address every
// rack (speakers with their sessions, peers, next hops, whether the rack
// announces it and why not), for a layer-2 address the node that answers
// it (its owner among the pool's candidates, from the node Leases);
// then the plan's conditions and the speakers' problems that touch the
// Service. Services are separated by a blank line.
func RenderStatus(in StatusInput) string {
	v := newStatusView(in)
	svcs := slices.Clone(in.Services)
	slices.SortFunc(svcs, func(a, b corev1.Service) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	var b strings.Builder
	for i := range svcs {
		if i > 0 {
			b.WriteByte('\n')
		}
		v.service(&svcs[i]).write(&b)
	}
	return b.String()
}

// statusView indexes a StatusInput for the renderer.
type statusView struct {
	in       StatusInput
	plans    map[string]*v1alpha2.LoadBalancerPlan
	speakers map[string]*v1alpha2.LoadBalancerSpeaker
	peers    map[string]*v1alpha2.BgpPeer // nil: unknown
	racks    []*v1alpha2.LoadBalancerRack // by spec.rack
	leases   []nodeLease                  // by node
	l2pools  map[string]*layer2Pool       // by pool, computed on demand
}

// newStatusView indexes in: plans by namespace/name, speakers and
// BgpPeers by name, racks sorted, the node Leases parsed.
func newStatusView(in StatusInput) *statusView {
	v := &statusView{in: in, plans: map[string]*v1alpha2.LoadBalancerPlan{}, speakers: map[string]*v1alpha2.LoadBalancerSpeaker{},
		leases: parseLeases(in.Leases, in.Now), l2pools: map[string]*layer2Pool{}}
	for i := range in.Plans {
		p := &in.Plans[i]
		v.plans[p.Namespace+"/"+p.Name] = p
	}
	for i := range in.Speakers {
		v.speakers[in.Speakers[i].Name] = &in.Speakers[i]
	}
	if in.Peers != nil {
		v.peers = map[string]*v1alpha2.BgpPeer{}
		for i := range in.Peers {
			v.peers[in.Peers[i].Name] = &in.Peers[i]
		}
	}
	for i := range in.Racks {
		v.racks = append(v.racks, &in.Racks[i])
	}
	slices.SortFunc(v.racks, func(a, b *v1alpha2.LoadBalancerRack) int {
		return cmp.Or(cmp.Compare(a.Spec.Rack, b.Spec.Rack), cmp.Compare(a.Name, b.Name))
	})
	return v
}

// service is the tree of one Service.
func (v *statusView) service(svc *corev1.Service) *node {
	key := svc.Namespace + "/" + svc.Name
	policy := string(svc.Spec.ExternalTrafficPolicy)
	if policy == "" {
		policy = string(corev1.ServiceExternalTrafficPolicyCluster)
	}
	root := &node{text: fmt.Sprintf("Service %s (externalTrafficPolicy %s)", key, policy)}
	ingress := ingressIPs(svc)

	plan := v.plans[key]
	if plan != nil && plan.Spec.ServiceUID != "" && plan.Spec.ServiceUID != svc.UID {
		root.add("LoadBalancerPlan %s belongs to an earlier Service of that name (uid %s): the CCM has not planned this one yet", key, plan.Spec.ServiceUID)
		plan = nil
	}
	if plan == nil {
		if len(ingress) == 0 {
			root.add("no address yet, and no LoadBalancerPlan")
		} else {
			root.add("addresses %s in the Service's status but no LoadBalancerPlan: nothing announces them (is the openelb CCM running?)", strings.Join(ingress, ", "))
		}
		v.events(root, svc)
		return root
	}
	if policy == string(corev1.ServiceExternalTrafficPolicyLocal) {
		endpoints := "no node with a ready endpoint"
		if len(plan.Spec.EndpointNodes) > 0 {
			endpoints = "endpoints on " + listed(plan.Spec.EndpointNodes, 5)
		}
		root.text = fmt.Sprintf("Service %s (externalTrafficPolicy Local, %s)", key, endpoints)
	}
	if len(plan.Spec.Addresses) == 0 {
		root.add("no address in the LoadBalancerPlan")
		v.events(root, svc)
	}
	if missing := notIn(ingress, planIPs(plan)); len(missing) > 0 {
		root.add("in the Service's status but not in its plan (not announced): %s", strings.Join(missing, ", "))
	}
	bgp := false
	pools := map[string]bool{}
	for i := range plan.Spec.Addresses {
		a := &plan.Spec.Addresses[i]
		pools[a.Pool] = true
		switch a.Protocol {
		case v1alpha2.ProtocolBGP:
			bgp = true
			v.bgpAddress(root, plan, a)
		case v1alpha2.ProtocolLayer2:
			v.layer2Address(root, a)
		default:
			root.add("%s (pool %s): not announced: the address lies in no current pool, or the pool's protocol %q is not served", a.IP, orNone(a.Pool), a.Protocol)
		}
	}
	for _, c := range sortedConditions(plan.Status.Conditions) {
		if c.Type == conditionPlanned || c.Status != metav1.ConditionTrue {
			continue
		}
		root.add("[%s] %s", c.Type, c.Message)
	}
	v.problems(root, key, pools, bgp)
	return root
}

// bgpAddress adds an address announced over BGP: per rack, whether the
// rack announces it and who does.
func (v *statusView) bgpAddress(root *node, plan *v1alpha2.LoadBalancerPlan, a *v1alpha2.PlanAddress) {
	head := fmt.Sprintf("%s (pool %s, bgp", a.IP, orNone(a.Pool))
	if a.Prefix != "" {
		head += ", announced as " + a.Prefix
	}
	n := root.add("%s)", head)
	if s := attributes(a.BGP); s != "" {
		n.add("attributes: %s", s)
	}
	if len(v.racks) == 0 {
		n.text += ": not announced: no LoadBalancerRack (no node in any rack, or the CCM has not written them)"
		return
	}
	announced := 0
	for _, r := range v.racks {
		if v.rack(n, plan, a, r) {
			announced++
		}
	}
	n.text += fmt.Sprintf(": announced from %d of %d racks", announced, len(v.racks))
}

// rack adds one rack's part in announcing the address, and says whether
// it announces it: speakers, a BgpPeer the address may go to, a next hop,
// and an established session of one of its speakers.
func (v *statusView) rack(parent *node, plan *v1alpha2.LoadBalancerPlan, a *v1alpha2.PlanAddress, r *v1alpha2.LoadBalancerRack) bool {
	n := parent.add("rack %s", rackLabel(r.Spec.Rack))
	for _, c := range sortedConditions(r.Status.Conditions) {
		if c.Type != conditionAnnounced && c.Status == metav1.ConditionTrue {
			n.add("[%s] %s", c.Type, c.Message)
		}
	}

	peerSel := selector(a.BGP, func(b *v1alpha2.BGPAttributes) *metav1.LabelSelector { return b.PeerSelector })
	selected := map[string]bool{}
	var peerTexts []string
	for _, p := range r.Spec.Peers {
		t := fmt.Sprintf("%s %s (AS %d)", p.Name, p.Address, p.AS)
		if v.peerSelected(peerSel, p.Name) {
			selected[p.Name] = true
		} else {
			t += " not selected by the peerSelector"
		}
		peerTexts = append(peerTexts, t)
	}

	established := false
	for _, name := range r.Spec.Speakers {
		if v.speaker(n, name, r, peerSel) {
			established = true
		}
	}
	if len(peerTexts) > 0 {
		n.add("peers: %s", strings.Join(peerTexts, ", "))
	}

	hops, why := nextHops(plan, a, r)
	if len(hops) > 0 {
		n.add("next hops: %s", strings.Join(hops, ", "))
	}
	if len(why) > 0 {
		n.add("not next hops of this address: %s", strings.Join(why, ", "))
	}
	v.leftOut(n, r)

	switch {
	case len(r.Spec.Speakers) == 0:
		n.text += ": not announced: no speaker"
	case len(r.Spec.Peers) == 0:
		n.text += ": not announced: its speakers match no BgpPeer"
	case len(selected) == 0:
		n.text += ": not announced: the peerSelector matches none of its BgpPeers"
	case len(hops) == 0:
		n.text += ": not announced: no next hop for this address"
	case !established:
		n.text += ": planned, but no speaker has an established session"
	default:
		n.text += ": announced"
		return true
	}
	return false
}

// speaker adds one speaker of a rack and its sessions, from its
// LoadBalancerSpeaker; it says whether the speaker announces over an
// established session to a peer the address may go to.
func (v *statusView) speaker(parent *node, name string, r *v1alpha2.LoadBalancerRack, peerSel labels.Selector) bool {
	sp := v.speakers[name]
	if sp == nil {
		parent.add("speaker %s: no LoadBalancerSpeaker report (is its speaker running?)", name)
		return false
	}
	st := &sp.Status
	text := "speaker " + name
	if st.AS != 0 {
		text += fmt.Sprintf(" (AS %d)", st.AS)
	}
	switch {
	case st.Rack != r.Spec.Rack:
		text += fmt.Sprintf(": reports rack %s, not this one (it has not caught up yet)", rackLabel(st.Rack))
	case !st.Announcing:
		text += ": not announcing"
	default:
		text += fmt.Sprintf(": announcing %s, %s in all", plural(int(st.Prefixes), "prefix", "prefixes"), plural(int(st.Paths), "path", "paths"))
		if st.ObservedRackGeneration != 0 && st.ObservedRackGeneration < r.Generation {
			text += fmt.Sprintf(" (following rack generation %d of %d)", st.ObservedRackGeneration, r.Generation)
		}
	}
	n := parent.add("%s", text)
	if len(st.Sessions) == 0 {
		n.add("no BGP session")
		return false
	}
	up := false
	sessions := slices.Clone(st.Sessions)
	slices.SortFunc(sessions, func(a, b v1alpha2.SpeakerSession) int { return cmp.Compare(a.Peer, b.Peer) })
	for _, s := range sessions {
		parts := []string{s.State}
		if s.LastTransitionTime != nil {
			parts[0] += " for " + v.age(s.LastTransitionTime.Time)
		}
		if s.State == sessionEstablished {
			switch {
			case s.NextHopSelf:
				parts = append(parts, "next-hop-self (no ADD-PATH)")
			case s.AddPathNegotiated:
				parts = append(parts, "ADD-PATH")
			}
			parts = append(parts, plural(int(s.AdvertisedPaths), "path", "paths"))
		}
		if s.BfdState != "" {
			parts = append(parts, "BFD "+s.BfdState)
		}
		sel := v.peerSelected(peerSel, s.Peer)
		if !sel {
			parts = append(parts, "not selected by the peerSelector")
		}
		addr := ""
		if s.Address != "" {
			addr = " " + s.Address
		}
		n.add("session %s%s: %s", s.Peer, addr, strings.Join(parts, ", "))
		if s.State == sessionEstablished && sel && st.Announcing && st.Rack == r.Spec.Rack {
			up = true
		}
	}
	return up
}

// peerSelected says whether the address may be sent to the BgpPeer; with
// the BgpPeers unknown, it may.
func (v *statusView) peerSelected(sel labels.Selector, peer string) bool {
	if sel == nil || v.peers == nil {
		return true
	}
	bp := v.peers[peer]
	return bp != nil && sel.Matches(labels.Set(bp.Labels))
}

// nextHops lists the rack's next hops the address is sent with, as the
// speakers choose them: an address of its family, among the endpoint
// nodes for externalTrafficPolicy Local, matching the node selector; and
// why the others are not.
func nextHops(plan *v1alpha2.LoadBalancerPlan, a *v1alpha2.PlanAddress, r *v1alpha2.LoadBalancerRack) (hops, why []string) {
	ip, err := netip.ParseAddr(a.IP)
	local := plan.Spec.ExternalTrafficPolicy == string(corev1.ServiceExternalTrafficPolicyLocal)
	nodeSel := selector(a.BGP, func(b *v1alpha2.BGPAttributes) *metav1.LabelSelector { return b.NodeSelector })
	for _, h := range r.Spec.NextHops {
		var addrs []string
		for _, s := range h.Addresses {
			if x, perr := netip.ParseAddr(s); perr == nil && err == nil && x.Is4() == ip.Is4() {
				addrs = append(addrs, s)
			}
		}
		switch {
		case len(addrs) == 0:
			why = append(why, h.Node+" (no InternalIP of the address's family)")
		case local && !slices.Contains(plan.Spec.EndpointNodes, h.Node):
			why = append(why, h.Node+" (no ready endpoint: externalTrafficPolicy Local)")
		case nodeSel != nil && !nodeSel.Matches(labels.Set(h.Labels)):
			why = append(why, h.Node+" (not selected by the nodeSelector)")
		default:
			t := fmt.Sprintf("%s (%s)", h.Node, strings.Join(addrs, " "))
			if h.GracefulShutdown {
				t += " draining: graceful-shutdown community"
			}
			hops = append(hops, t)
		}
	}
	return hops, why
}

// leftOut adds the next hops a speaker of the rack leaves out because
// their kube-proxy health check fails.
func (v *statusView) leftOut(n *node, r *v1alpha2.LoadBalancerRack) {
	for _, name := range r.Spec.Speakers {
		sp := v.speakers[name]
		if sp == nil || sp.Status.DataPath == nil || len(sp.Status.DataPath.Unhealthy) == 0 {
			continue
		}
		dp := sp.Status.DataPath
		var bad []string
		for _, u := range dp.Unhealthy {
			t := u.Node
			if u.Message != "" {
				t += " (" + u.Message + ")"
			}
			bad = append(bad, t)
		}
		slices.Sort(bad)
		if dp.FailOpen {
			n.add("kube-proxy health check fails on every next hop as %s sees it; none left out (fail open): %s", name, strings.Join(bad, ", "))
		} else {
			n.add("left out by %s, kube-proxy health check failing: %s", name, strings.Join(bad, ", "))
		}
	}
}

// problems adds what the speakers report that touches the Service: a
// problem naming it, or its plan, or one of its pools, and for a Service
// with BGP addresses the problems of BgpPeers and of the BgpConf (every
// BGP Service depends on them).
func (v *statusView) problems(root *node, key string, pools map[string]bool, bgp bool) {
	var lines []string
	for _, sp := range v.sortedSpeakers() {
		for _, p := range sp.Status.Problems {
			if !touches(p, key, pools, bgp) {
				continue
			}
			t := fmt.Sprintf("%s: [%s] %s: %s", sp.Name, orNone(p.Reason), p.Object, p.Message)
			if more := int(p.ServiceCount) - len(p.Services); more > 0 && !slices.Contains(p.Services, key) {
				t += fmt.Sprintf(" (%d Services affected)", p.ServiceCount)
			}
			lines = append(lines, t)
		}
	}
	if len(lines) == 0 {
		return
	}
	n := root.add("speaker problems")
	for _, l := range lines {
		n.add("%s", l)
	}
}

// hasProblem says whether the speaker reports a problem of this object
// and reason.
func hasProblem(sp *v1alpha2.LoadBalancerSpeaker, object, reason string) bool {
	return slices.ContainsFunc(sp.Status.Problems, func(p v1alpha2.SpeakerProblem) bool {
		return p.Object == object && p.Reason == reason
	})
}

// touches says whether a speaker problem concerns the Service key, whose
// plan uses pools and, when bgp, has BGP addresses.
func touches(p v1alpha2.SpeakerProblem, key string, pools map[string]bool, bgp bool) bool {
	kind, name, _ := strings.Cut(p.Object, "/")
	switch {
	case slices.Contains(p.Services, key):
		return true
	case kind == "LoadBalancerPlan":
		return name == key
	case kind == "Eip":
		return pools[name]
	case kind == "BgpPeer" || kind == "BgpConf":
		return bgp
	}
	return false
}

// events adds the latest Warning events the CCM recorded on the Service,
// one per reason: its refusals (NoPool, PoolExhausted...) say why it has
// no address.
func (v *statusView) events(root *node, svc *corev1.Service) {
	latest := map[string]corev1.Event{}
	for _, e := range v.in.Events {
		if e.InvolvedObject.Kind != "Service" || e.InvolvedObject.Namespace != svc.Namespace || e.InvolvedObject.Name != svc.Name ||
			(svc.UID != "" && e.InvolvedObject.UID != "" && e.InvolvedObject.UID != svc.UID) || e.Type != corev1.EventTypeWarning ||
			!slices.Contains(ccmEventSources, cmp.Or(e.Source.Component, e.ReportingController)) {
			continue
		}
		if cur, ok := latest[e.Reason]; !ok || eventTime(e).After(eventTime(cur)) {
			latest[e.Reason] = e
		}
	}
	evs := make([]corev1.Event, 0, len(latest))
	for _, e := range latest {
		evs = append(evs, e)
	}
	// Newest first; the reason breaks ties so that events of one second
	// print in the same order every time.
	slices.SortFunc(evs, func(a, b corev1.Event) int {
		return cmp.Or(eventTime(b).Compare(eventTime(a)), cmp.Compare(a.Reason, b.Reason))
	})
	if len(evs) == 0 {
		return
	}
	n := root.add("events")
	for _, e := range evs[:min(len(evs), maxEvents)] {
		n.add("[%s] %s", e.Reason, e.Message)
	}
}

// eventTime is when an event last happened, whichever of its times is
// set.
func eventTime(e corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}

// sortedSpeakers lists the LoadBalancerSpeakers by name.
func (v *statusView) sortedSpeakers() []*v1alpha2.LoadBalancerSpeaker {
	out := make([]*v1alpha2.LoadBalancerSpeaker, 0, len(v.speakers))
	for _, sp := range v.speakers {
		out = append(out, sp)
	}
	slices.SortFunc(out, func(a, b *v1alpha2.LoadBalancerSpeaker) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// age is how long ago t was, as kubectl prints ages (3m20s, 5h, 12d).
func (v *statusView) age(t time.Time) string {
	d := v.in.Now.Sub(t)
	if d < 0 {
		d = 0
	}
	return duration.HumanDuration(d)
}

// attributes summarizes the BGP path attributes of an address; "" when
// it has none.
func attributes(b *v1alpha2.BGPAttributes) string {
	if b == nil {
		return ""
	}
	var parts []string
	if len(b.Communities) > 0 {
		parts = append(parts, "communities "+strings.Join(b.Communities, " "))
	}
	if len(b.LargeCommunities) > 0 {
		parts = append(parts, "large communities "+strings.Join(b.LargeCommunities, " "))
	}
	if b.LocalPref != nil {
		parts = append(parts, fmt.Sprintf("local-pref %d", *b.LocalPref))
	}
	if b.ASPathPrepend != 0 || len(b.ASPathPrependPeers) > 0 {
		t := fmt.Sprintf("AS-path prepend %d", b.ASPathPrepend)
		var per []string
		for _, peer := range slices.Sorted(maps.Keys(b.ASPathPrependPeers)) {
			per = append(per, fmt.Sprintf("%s %d", peer, b.ASPathPrependPeers[peer]))
		}
		if len(per) > 0 {
			t += " (" + strings.Join(per, ", ") + ")"
		}
		parts = append(parts, t)
	}
	if b.LinkBandwidthMbps != 0 {
		parts = append(parts, fmt.Sprintf("link bandwidth %d Mbit/s per node", b.LinkBandwidthMbps))
	}
	if b.PeerSelector != nil {
		parts = append(parts, "peerSelector "+metav1.FormatLabelSelector(b.PeerSelector))
	}
	if b.NodeSelector != nil {
		parts = append(parts, "nodeSelector "+metav1.FormatLabelSelector(b.NodeSelector))
	}
	return strings.Join(parts, "; ")
}

// selector returns one of the address's label selectors; nil when unset
// or invalid (the CCM keeps invalid selectors out of plans, and a speaker
// reading one anyway reports it as a problem).
func selector(b *v1alpha2.BGPAttributes, get func(*v1alpha2.BGPAttributes) *metav1.LabelSelector) labels.Selector {
	if b == nil || get(b) == nil {
		return nil
	}
	s, err := metav1.LabelSelectorAsSelector(get(b))
	if err != nil {
		return nil
	}
	return s
}

// rackLabel names a rack, saying what the rack "" is.
func rackLabel(rack string) string {
	if rack == "" {
		return `"" (nodes without label ` + v1alpha2.LabelRack + `)`
	}
	return rack
}

// ingressIPs lists the addresses in the Service's status.
func ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if ing.IP != "" {
			out = append(out, ing.IP)
		}
	}
	return out
}

// planIPs lists the addresses of the plan.
func planIPs(p *v1alpha2.LoadBalancerPlan) []string {
	out := make([]string, 0, len(p.Spec.Addresses))
	for _, a := range p.Spec.Addresses {
		out = append(out, a.IP)
	}
	return out
}

// notIn lists the items of a missing from b.
func notIn(a, b []string) []string {
	var out []string
	for _, x := range a {
		if !slices.Contains(b, x) {
			out = append(out, x)
		}
	}
	return out
}

// sortedConditions returns the conditions sorted by type.
func sortedConditions(cs []metav1.Condition) []metav1.Condition {
	out := slices.Clone(cs)
	slices.SortFunc(out, func(a, b metav1.Condition) int { return cmp.Compare(a.Type, b.Type) })
	return out
}

// mac is " (MAC m)", or "" when m is unknown.
func mac(m string) string {
	if m == "" {
		return ""
	}
	return " (MAC " + m + ")"
}

// orNone quotes an empty name so that it shows.
func orNone(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

// plural is n with the noun's singular or plural form.
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// listed joins the first n items and counts the rest.
func listed(items []string, n int) string {
	if len(items) <= n {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], ", "), len(items)-n)
}
