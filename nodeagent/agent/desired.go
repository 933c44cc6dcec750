package agent

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"net/netip"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// DefaultAddPathSendMax is how many paths per prefix are sent when a
// BgpPeer does not say: enough for every node of a large rack.
const DefaultAddPathSendMax = 255

// Problem is something this node cannot do, found while computing what it
// must do. It names the object to fix, so it can go into that object's
// status, and the Services it affects, so whoever reads the speaker's
// report knows which Services are not served as planned.
type Problem struct {
	Object  string // e.g. "BgpPeer/leaf1", "Eip/pool"
	Reason  string
	Message string
	// Services affected (namespace/name, sorted), all of them: the report
	// names the first few and counts the rest.
	Services []string
}

// Reasons of the BGP configuration problems.
const (
	ReasonNoBgpConf      = "BgpConfMissing"
	ReasonInvalidBgpConf = "BgpConfInvalid"
	ReasonInvalidBgpPeer = "BgpPeerInvalid"
	// ReasonDuplicateBgpPeer: another BgpPeer of this node has the same
	// neighbor address (of those, the name that sorts first is used).
	ReasonDuplicateBgpPeer = "BgpPeerDuplicate"
	// ReasonBgpPeerRefused: the BGP speaker refused the neighbor (see
	// bgp.PeerError); the other peers and the paths are applied.
	ReasonBgpPeerRefused = "BgpPeerRefused"
	// ReasonPrefixLimitExceeded: the router sent more prefixes than the
	// speaker holds (bgp.DefaultMaxPrefixes per family), and its session
	// is held down (see nodeagent/bgp/prefixlimit.go).
	ReasonPrefixLimitExceeded = "PrefixLimitExceeded"
)

// SecretReader reads one key of a BgpPeer password Secret (see
// DefaultSecretsNamespace).
type SecretReader func(name, key string) (string, error)

// State is what this node's speaker must do.
type State struct {
	// Enabled is false when this node must not speak BGP at all (not a
	// speaker node, or no usable BgpConf): everything is withdrawn.
	Enabled bool
	Global  bgp.Global
	Peers   []bgp.Peer
	Paths   []bgp.Path
	// The rest is reported, not applied: a change of it alone does not
	// touch the BGP speaker (see sameBGP).

	// Announcing: BGP is enabled and the node is a speaker of its rack
	// object, so Paths follow that object.
	Announcing bool
	// Rack is the node's rack label; RackGeneration the generation of the
	// rack object the paths follow (0 when there is none).
	Rack           string
	RackGeneration int64
	// Prefixes counts the distinct prefixes of Paths.
	Prefixes int
}

// sameBGP says whether two states make the BGP speaker do the same thing,
// so a change of what is only reported never re-applies.
func (s State) sameBGP(o State) bool {
	return s.Enabled == o.Enabled && s.Global.Equal(o.Global) &&
		slices.EqualFunc(s.Peers, o.Peers, func(a, b bgp.Peer) bool { return reflect.DeepEqual(a, b) }) &&
		slices.Equal(s.Paths, o.Paths)
}

// Desired computes State from the objects. rack is the node's
// LoadBalancerRack (nil when it does not exist): every BGP address of every
// plan is announced with the rack's next hops of the address's family (for
// externalTrafficPolicy Local, those of the plan's endpoint nodes), and
// only while the node is one of the rack's speakers. Without the rack
// object the sessions are still configured, with nothing to announce. It
// never mutates the objects.
func Desired(node *v1.Node, conf *v1alpha2.BgpConf, peers []*v1alpha2.BgpPeer, rack *v1alpha2.LoadBalancerRack, plans []*v1alpha2.LoadBalancerPlan, secret SecretReader) (State, []Problem) {
	var st State
	var problems []Problem
	if node == nil || node.Labels[v1alpha2.LabelSpeaker] != v1alpha2.LabelSpeakerValue {
		return st, nil
	}
	st.Rack = node.Labels[v1alpha2.LabelRack]
	if rack != nil {
		st.RackGeneration = rack.Generation
		st.Announcing = slices.Contains(rack.Spec.Speakers, node.Name)
	}
	// The Services a configuration problem affects: those this node
	// would announce were the configuration right. Listed only when there
	// is a problem: a name per Service is memory a healthy speaker of
	// 10,000 Services does not need.
	var affected []string
	problem := func(obj, reason, msg string) Problem {
		if affected == nil {
			affected = affectedServices(node.Name, rack, plans)
		}
		return Problem{Object: obj, Reason: reason, Message: msg, Services: affected}
	}
	if conf == nil {
		st.Announcing = false
		return st, []Problem{problem("BgpConf/default", ReasonNoBgpConf, "BgpConf default does not exist: BGP is off on this node")}
	}
	g := bgp.Global{AS: conf.Spec.As, ListenPort: conf.Spec.ListenPort}
	if as, ok := conf.Spec.AsPerRack[st.Rack]; ok && st.Rack != "" {
		g.AS = uint32(as)
	}
	invalid := func(format string, args ...any) (State, []Problem) {
		st.Announcing = false
		return st, []Problem{problem("BgpConf/default", ReasonInvalidBgpConf, fmt.Sprintf(format, args...))}
	}
	if g.AS == 0 {
		return invalid("no AS for node %s (rack %q): set spec.as or spec.asPerRack", node.Name, st.Rack)
	}
	if g.ListenPort < 0 || g.ListenPort > 65535 {
		return invalid("spec.listenPort %d is out of range (0..65535)", g.ListenPort)
	}
	if conf.Spec.RouterId != "" {
		id, err := netip.ParseAddr(conf.Spec.RouterId)
		if err != nil || !id.Is4() {
			return invalid("spec.routerId %q is not an IPv4 address", conf.Spec.RouterId)
		}
		g.RouterID = id
	} else if id, ok := nodeIPv4(node); ok {
		g.RouterID = id
	} else {
		return invalid("node %s has no IPv4 InternalIP to use as router ID: set spec.routerId", node.Name)
	}
	if gr := conf.Spec.GracefulRestart; gr != nil && gr.Enabled {
		if gr.RestartTime > bgp.MaxRestartTime {
			// The OPEN message carries 12 bits of it; more would spill into
			// the capability's flags.
			return invalid("spec.gracefulRestart.restartTime %d is out of range (0..%d; 0 means 120)", gr.RestartTime, bgp.MaxRestartTime)
		}
		if gr.DeferralTime > math.MaxUint16 {
			return invalid("spec.gracefulRestart.deferralTime %d is out of range (0..65535)", gr.DeferralTime)
		}
		g.GracefulRestart, g.RestartTime = true, gr.RestartTime
		g.GRHelperOnly, g.GRNotification, g.GRDeferralTime = gr.HelperOnly, gr.NotificationEnabled, gr.DeferralTime
	}
	for _, a := range conf.Spec.ListenAddresses {
		ip, err := netip.ParseAddr(strings.TrimSpace(a))
		if err != nil {
			return invalid("spec.listenAddresses: %q is not an IP address", a)
		}
		g.ListenAddresses = append(g.ListenAddresses, ip.Unmap())
	}
	slices.SortFunc(g.ListenAddresses, netip.Addr.Compare)
	g.ListenAddresses = slices.Compact(g.ListenAddresses)
	st.Enabled, st.Global = true, g

	nodeLabels := labels.Set(node.Labels)
	for _, bp := range peers {
		if bp.Spec.NodeSelector != nil {
			sel, err := metav1.LabelSelectorAsSelector(bp.Spec.NodeSelector)
			if err != nil {
				problems = append(problems, problem("BgpPeer/"+bp.Name, ReasonInvalidBgpPeer, fmt.Sprintf("invalid nodeSelector: %v", err)))
				continue
			}
			if !sel.Matches(nodeLabels) {
				continue
			}
		}
		p, err := peerFrom(bp, secret)
		if err == nil {
			// The speaker's own rules, should peerFrom miss one.
			err = p.Validate()
		}
		if err != nil {
			problems = append(problems, problem("BgpPeer/"+bp.Name, ReasonInvalidBgpPeer, err.Error()))
			continue
		}
		st.Peers = append(st.Peers, p)
	}
	sort.Slice(st.Peers, func(i, j int) bool { return st.Peers[i].Name < st.Peers[j].Name })
	// One session per router: of BgpPeers with the same address the name
	// that sorts first is used, on every node and whatever the order of
	// the list, so a second BgpPeer never takes a working session over.
	used := map[netip.Addr]string{}
	st.Peers = slices.DeleteFunc(st.Peers, func(p bgp.Peer) bool {
		first, dup := used[p.Address]
		if dup {
			problems = append(problems, problem("BgpPeer/"+p.Name, ReasonDuplicateBgpPeer, fmt.Sprintf(
				"spec.conf.neighborAddress %s is also that of BgpPeer %s, which this node uses (of BgpPeers with the same address, the name that sorts first is used)",
				p.Address, first)))
			return true
		}
		used[p.Address] = p.Name
		return false
	})

	// The peers a peer selector reads: those this node configured.
	peerLabels := make(map[string]labels.Set, len(st.Peers))
	for _, bp := range peers {
		if slices.ContainsFunc(st.Peers, func(p bgp.Peer) bool { return p.Name == bp.Name }) {
			peerLabels[bp.Name] = bp.Labels
		}
	}
	paths, pathProblems := rackPaths(node.Name, rack, plans, peerLabels, nil)
	st.Paths = paths
	problems = append(problems, pathProblems...)
	for i, p := range st.Paths {
		if i == 0 || p.Prefix != st.Paths[i-1].Prefix {
			st.Prefixes++
		}
	}
	return st, problems
}

// rackHop is one next hop of the rack, parsed once for all plans.
type rackHop struct {
	node   string
	addr   netip.Addr
	labels labels.Set // the node's labels that node selectors read
	gshut  bool       // draining: announced with the graceful-shutdown community
}

// planPathCounts counts, per plan (namespace/name), the paths it makes node
// announce (plans that make it announce none are left out).
func planPathCounts(node string, rack *v1alpha2.LoadBalancerRack, plans []*v1alpha2.LoadBalancerPlan) map[string]int {
	counts := map[string]int{}
	_, _ = rackPaths(node, rack, plans, nil, func(p *v1alpha2.LoadBalancerPlan, n int) { counts[p.Namespace+"/"+p.Name] = n })
	return counts
}

// Reasons of the problems of plans.
const (
	// ReasonInvalidBGPAttributes: a plan's BGP attributes hold a value the
	// speaker cannot announce (the CCM never writes one; a hand-edited
	// plan may): that value is left out.
	ReasonInvalidBGPAttributes = "InvalidBGPAttributes"
	// ReasonBGPAttributesConflict: Services sharing an address ask for
	// different BGP attributes; one path per next hop can carry only one
	// set, the one whose text form sorts first.
	ReasonBGPAttributesConflict = "BGPAttributesConflict"
)

// rackPaths are the paths this node announces when it is a speaker of the
// rack (none otherwise, and none without the rack object), sorted and
// without duplicates, with the problems of the plans' attributes; count,
// when set, is told how many each plan contributed.
func rackPaths(node string, rack *v1alpha2.LoadBalancerRack, plans []*v1alpha2.LoadBalancerPlan, peers map[string]labels.Set,
	count func(*v1alpha2.LoadBalancerPlan, int)) ([]bgp.Path, []Problem) {
	if rack == nil || !slices.Contains(rack.Spec.Speakers, node) {
		return nil, nil
	}
	var hops []rackHop
	for _, nh := range rack.Spec.NextHops {
		for _, a := range nh.Addresses {
			if ip, err := netip.ParseAddr(a); err == nil {
				hops = append(hops, rackHop{node: nh.Node, addr: ip.Unmap(), labels: nh.Labels, gshut: nh.GracefulShutdown})
			}
		}
	}
	if len(hops) == 0 {
		return nil, nil
	}
	var paths []bgp.Path
	var problems []Problem
	resolved := attrCache{}
	gshut := map[bgp.Attrs]bgp.Attrs{}
	for _, plan := range plans {
		local := plan.Spec.ExternalTrafficPolicy == string(v1.ServiceExternalTrafficPolicyLocal)
		var endpoints map[string]bool
		if local {
			endpoints = make(map[string]bool, len(plan.Spec.EndpointNodes))
			for _, n := range plan.Spec.EndpointNodes {
				endpoints[n] = true
			}
		}
		n := 0
		for _, a := range plan.Spec.Addresses {
			if a.Protocol != v1alpha2.ProtocolBGP {
				continue
			}
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				continue
			}
			ip = ip.Unmap()
			res := resolved.of(a.BGP, peers)
			attrs, errs := res.attrs, res.errs
			if len(errs) > 0 {
				problems = append(problems, Problem{Object: "LoadBalancerPlan/" + plan.Namespace + "/" + plan.Name,
					Reason: ReasonInvalidBGPAttributes, Message: fmt.Sprintf("address %s: %s (left out)", ip, errors.Join(errs...)),
					Services: []string{plan.Namespace + "/" + plan.Name}})
			}
			prefix, err := announcedPrefix(a, ip)
			if err != nil {
				problems = append(problems, Problem{Object: "LoadBalancerPlan/" + plan.Namespace + "/" + plan.Name,
					Reason: ReasonInvalidBGPAttributes, Services: []string{plan.Namespace + "/" + plan.Name},
					Message: fmt.Sprintf("address %s: %v (announced as %s instead)", ip, err, prefix)})
			}
			for _, h := range hops {
				if h.addr.Is4() != ip.Is4() || (local && !endpoints[h.node]) || (res.nodes != nil && !res.nodes.Matches(h.labels)) {
					continue
				}
				a := attrs
				if h.gshut {
					a = withGracefulShutdown(attrs, gshut)
				}
				paths = append(paths, bgp.Path{Prefix: prefix, NextHop: h.addr, Attrs: a})
				n++
			}
		}
		if n > 0 && count != nil {
			count(plan, n)
		}
	}
	// Sorted, then duplicates (a shared address) dropped in place: no set
	// of 40,000 paths on every reconcile. Services sharing an address
	// with different attributes are reported.
	slices.SortFunc(paths, func(a, b bgp.Path) int {
		if c := bgp.ComparePaths(a, b); c != 0 {
			return c
		}
		return strings.Compare(a.Attrs.String(), b.Attrs.String())
	})
	var conflicts []netip.Prefix
	for i := 1; i < len(paths); i++ {
		if bgp.ComparePaths(paths[i-1], paths[i]) == 0 && paths[i-1].Attrs != paths[i].Attrs {
			if p := paths[i].Prefix; len(conflicts) == 0 || conflicts[len(conflicts)-1] != p {
				conflicts = append(conflicts, p)
			}
		}
	}
	if len(conflicts) > 0 {
		problems = append(problems, conflictProblems(plans, conflicts)...)
	}
	// The speaker keeps this slice as what it advertises: copied when the
	// appends left much spare capacity, which would be held with it.
	paths = slices.CompactFunc(paths, func(a, b bgp.Path) bool { return bgp.ComparePaths(a, b) == 0 })
	if cap(paths) > len(paths)+len(paths)/8 {
		paths = slices.Clone(paths)
	}
	return paths, problems
}

// announcedPrefix is what is announced for ip, an address of a: its
// aggregate when the plan names one, otherwise ip itself; an aggregate
// that does not cover ip is an error (and ip itself is returned).
func announcedPrefix(a v1alpha2.PlanAddress, ip netip.Addr) (netip.Prefix, error) {
	host := netip.PrefixFrom(ip, ip.BitLen())
	if a.Prefix == "" {
		return host, nil
	}
	agg, err := netip.ParsePrefix(a.Prefix)
	if err != nil || !agg.Contains(ip) || agg.Bits() == 0 || agg != agg.Masked() {
		return host, fmt.Errorf("prefix %q is not a prefix covering it", a.Prefix)
	}
	return agg, nil
}

// conflictProblems names, for each prefix announced with different
// attributes, the Services announcing it (found again here: conflicts are
// rare, and remembering every prefix's Services would cost a healthy
// speaker memory).
func conflictProblems(plans []*v1alpha2.LoadBalancerPlan, conflicts []netip.Prefix) []Problem {
	owners := make(map[netip.Prefix][]string, len(conflicts))
	for _, plan := range plans {
		for _, a := range plan.Spec.Addresses {
			ip, err := netip.ParseAddr(a.IP)
			if a.Protocol != v1alpha2.ProtocolBGP || err != nil {
				continue
			}
			p, _ := announcedPrefix(a, ip.Unmap())
			if slices.Contains(conflicts, p) {
				owners[p] = append(owners[p], plan.Namespace+"/"+plan.Name)
			}
		}
	}
	var out []Problem
	for _, p := range conflicts {
		svcs := slices.Compact(slices.Sorted(slices.Values(owners[p])))
		if len(svcs) == 0 {
			continue
		}
		what := "address " + p.Addr().String()
		if p.Bits() != p.Addr().BitLen() {
			what = "aggregate " + p.String()
		}
		out = append(out, Problem{Object: "LoadBalancerPlan/" + svcs[0], Reason: ReasonBGPAttributesConflict, Services: svcs,
			Message: fmt.Sprintf("Services sharing %s (%s) ask for different BGP attributes; it is announced with those whose text form sorts first (give them the same annotations)",
				what, strings.Join(svcs, ", "))})
	}
	return out
}

// communityGracefulShutdown is GRACEFUL_SHUTDOWN (RFC 8326, 65535:0).
const communityGracefulShutdown = 0xFFFF0000

// withGracefulShutdown is a with the graceful-shutdown community and
// LOCAL_PREF 0 (sent to iBGP peers only; RFC 8326 asks both), computed
// once per distinct a.
func withGracefulShutdown(a bgp.Attrs, cache map[bgp.Attrs]bgp.Attrs) bgp.Attrs {
	if g, ok := cache[a]; ok {
		return g
	}
	x := a.Attributes()
	x.Communities = append(x.Communities, communityGracefulShutdown)
	x.LocalPref, x.HasLocalPref = 0, true
	g := bgp.Intern(x)
	cache[a] = g
	return g
}

// resolvedAttrs is a plan address's attributes as the speaker uses them.
type resolvedAttrs struct {
	attrs bgp.Attrs
	errs  []error
	nodes labels.Selector // nil: every next hop
}

// attrCache resolves each distinct attributes object once per
// computation: the cache shares one object among the plans that carry
// equal attributes (trimPlan), so 10,000 plans of one pool resolve once.
type attrCache map[*v1alpha2.BGPAttributes]resolvedAttrs

func (c attrCache) of(a *v1alpha2.BGPAttributes, peers map[string]labels.Set) resolvedAttrs {
	if a == nil {
		return resolvedAttrs{}
	}
	if r, ok := c[a]; ok {
		return r
	}
	var r resolvedAttrs
	r.attrs, r.errs = pathAttrs(a, peers)
	if a.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(a.NodeSelector)
		if err != nil {
			// Matching nothing would withdraw the address everywhere;
			// the CCM never writes such a selector, so this is a
			// hand-edited plan: reported, and every next hop kept.
			r.errs = append(r.errs, fmt.Errorf("bgp.nodeSelector: %w (every next hop announced)", err))
		} else {
			r.nodes = sel
		}
	}
	c[a] = r
	return r
}

// pathAttrs turns a plan address's attributes into the speaker's,
// leaving out (and returning an error for) each value it cannot announce.
// A peer selector becomes the names of the peers (of peers, this node's)
// that must not receive the paths.
func pathAttrs(a *v1alpha2.BGPAttributes, peers map[string]labels.Set) (bgp.Attrs, []error) {
	if a == nil {
		return bgp.Attrs{}, nil
	}
	var out bgp.Attributes
	var errs []error
	if a.PeerSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(a.PeerSelector)
		if err != nil {
			errs = append(errs, fmt.Errorf("bgp.peerSelector: %w (every peer receives the address)", err))
		} else {
			for _, name := range slices.Sorted(maps.Keys(peers)) {
				if !sel.Matches(peers[name]) {
					out.DenyPeers = append(out.DenyPeers, name)
				}
			}
		}
	}
	out.Communities = parseEach(a.Communities, "bgp.communities", v1alpha2.ParseCommunity, &errs)
	out.LargeCommunities = parseEach(a.LargeCommunities, "bgp.largeCommunities", v1alpha2.ParseLargeCommunity, &errs)
	if lp := a.LocalPref; lp != nil {
		if *lp < 0 || *lp > math.MaxUint32 {
			errs = append(errs, fmt.Errorf("bgp.localPref %d is out of range (0..4294967295)", *lp))
		} else {
			out.LocalPref, out.HasLocalPref = uint32(*lp), true
		}
	}
	if n := a.ASPathPrepend; n != 0 {
		if n < 0 || n > bgp.MaxPrepend {
			errs = append(errs, fmt.Errorf("bgp.asPathPrepend %d is out of range (0..%d)", n, bgp.MaxPrepend))
		} else {
			out.Prepend = uint8(n)
		}
	}
	if n := a.LinkBandwidthMbps; n < 0 || n > v1alpha2.MaxLinkBandwidthMbps {
		errs = append(errs, fmt.Errorf("bgp.linkBandwidthMbps %d is out of range (0..%d)", n, v1alpha2.MaxLinkBandwidthMbps))
	} else {
		out.LinkBandwidthMbps = uint64(n)
	}
	for _, peer := range slices.Sorted(maps.Keys(a.ASPathPrependPeers)) {
		n := a.ASPathPrependPeers[peer]
		if n < 0 || n > bgp.MaxPrepend || peer == "" || strings.ContainsAny(peer, ":, =") {
			errs = append(errs, fmt.Errorf("bgp.asPathPrependPeers[%s] %d: not a BgpPeer name with a count 0..%d", peer, n, bgp.MaxPrepend))
			continue
		}
		if out.PrependPeers == nil {
			out.PrependPeers = map[string]uint8{}
		}
		out.PrependPeers[peer] = uint8(n)
	}
	return bgp.Intern(out), errs
}

// parseEach parses every item, leaving out (with an error naming field)
// those parse refuses.
func parseEach[T any](items []string, field string, parse func(string) (T, error), errs *[]error) []T {
	var out []T
	for _, it := range items {
		v, err := parse(it)
		if err != nil {
			*errs = append(*errs, fmt.Errorf("%s: %w", field, err))
			continue
		}
		out = append(out, v)
	}
	return out
}

func nodeIPv4(n *v1.Node) (netip.Addr, bool) {
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil && ip.Unmap().Is4() {
			return ip.Unmap(), true
		}
	}
	return netip.Addr{}, false
}

// peerFrom maps a BgpPeer to the speaker's neighbor settings. Its errors
// name the field to fix, with the range the speaker takes: the CRD's
// schema bounds the numbers too, but objects stored before it did, and
// API servers that skipped it, reach the speaker as they are.
func peerFrom(bp *v1alpha2.BgpPeer, secret SecretReader) (bgp.Peer, error) {
	p := bgp.Peer{Name: bp.Name, AddPathSendMax: DefaultAddPathSendMax}
	c := bp.Spec.Conf
	if c == nil || c.NeighborAddress == "" {
		return p, fmt.Errorf("spec.conf.neighborAddress is required")
	}
	addr, err := netip.ParseAddr(c.NeighborAddress)
	if err != nil {
		return p, fmt.Errorf("spec.conf.neighborAddress %q is not an IP address", c.NeighborAddress)
	}
	if addr.IsUnspecified() || addr.IsMulticast() {
		return p, fmt.Errorf("spec.conf.neighborAddress %s cannot be a BGP neighbor", addr)
	}
	p.Address = addr.Unmap()
	if c.PeerAs == 0 {
		return p, fmt.Errorf("spec.conf.peerAs is required")
	}
	p.AS = c.PeerAs
	p.Password = c.AuthPassword
	passwordField := "spec.conf.authPassword"
	if ref := c.AuthPasswordSecretRef; ref != nil {
		key := ref.Key
		if key == "" {
			key = "password"
		}
		passwordField = fmt.Sprintf("spec.conf.authPasswordSecretRef (Secret %s, key %s)", ref.Name, key)
		if secret == nil {
			return p, fmt.Errorf("%s: the Secret cannot be read", passwordField)
		}
		pw, err := secret(ref.Name, key)
		if err != nil {
			return p, fmt.Errorf("%s: %w", passwordField, err)
		}
		p.Password = strings.TrimRight(pw, "\n")
	}
	if len(p.Password) > maxPasswordBytes {
		return p, fmt.Errorf("%s: the password is longer than %d bytes, the TCP MD5 key limit", passwordField, maxPasswordBytes)
	}
	if m := bp.Spec.EbgpMultihop; m != nil && m.Enabled {
		if m.MultihopTtl > math.MaxUint8 {
			return p, fmt.Errorf("spec.ebgpMultihop.multihopTtl %d is out of range (1..255; 0 means 255)", m.MultihopTtl)
		}
		p.EBGPMultihopTTL = m.MultihopTtl
		if p.EBGPMultihopTTL == 0 {
			p.EBGPMultihopTTL = 255
		}
	}
	if t := bp.Spec.Timers; t != nil && t.Config != nil {
		var err error
		if p.HoldTime, err = seconds("holdTime", t.Config.HoldTime, 3); err != nil {
			return p, err
		}
		if p.Keepalive, err = seconds("keepaliveInterval", t.Config.KeepaliveInterval, 1); err != nil {
			return p, err
		}
		if p.ConnectRetry, err = seconds("connectRetry", t.Config.ConnectRetry, 1); err != nil {
			return p, err
		}
		hold, keepalive := p.HoldTime, p.Keepalive
		if hold == 0 {
			hold = bgp.DefaultHoldTime
		}
		if keepalive == 0 {
			keepalive = bgp.DefaultKeepalive
		}
		if keepalive >= hold {
			// The router's hold timer would expire between keepalives: the
			// session would flap.
			return p, fmt.Errorf("spec.timers.config.keepaliveInterval %s must be below holdTime %s (a third of it is usual)", keepalive, hold)
		}
	}
	if tr := bp.Spec.Transport; tr != nil && tr.RemotePort != 0 {
		if tr.RemotePort > math.MaxUint16 {
			return p, fmt.Errorf("spec.transport.remotePort %d is out of range (1..65535; 0 means 179)", tr.RemotePort)
		}
		p.Port = uint16(tr.RemotePort)
	}
	if gr := bp.Spec.GracefulRestart; gr != nil && gr.Enabled {
		p.GracefulRestart = true
		if gr.RestartTime > bgp.MaxRestartTime {
			return p, fmt.Errorf("spec.gracefulRestart.restartTime %d is out of range (0..%d; 0 means the BgpConf's)", gr.RestartTime, bgp.MaxRestartTime)
		}
		if gr.StaleRoutesTime > 1<<24-1 {
			return p, fmt.Errorf("spec.gracefulRestart.staleRoutesTime %d is out of range (0..16777215)", gr.StaleRoutesTime)
		}
		p.GRRestartTime, p.GRHelperOnly, p.GRNotification = gr.RestartTime, gr.HelperOnly, gr.NotificationEnabled
		p.GRLongLived, p.GRStaleRoutesTime = gr.LonglivedEnabled, gr.StaleRoutesTime
	}
	if err := neighborSettings(bp, &p); err != nil {
		return p, err
	}
	if b := bp.Spec.Bfd; b != nil && b.Enabled {
		if b.DetectMultiplier > math.MaxUint8 {
			return p, fmt.Errorf("spec.bfd.detectMultiplier %d is out of range (1..255; 0 means 3)", b.DetectMultiplier)
		}
		for _, iv := range []struct {
			field string
			ms    uint32
		}{{"desiredMinTxIntervalMs", b.DesiredMinTxIntervalMs}, {"requiredMinRxIntervalMs", b.RequiredMinRxIntervalMs}} {
			if iv.ms > maxBFDIntervalMs {
				return p, fmt.Errorf("spec.bfd.%s %d is out of range (1..%d; 0 means 1000)", iv.field, iv.ms, maxBFDIntervalMs)
			}
		}
		p.BFD = &bgp.BFD{
			DesiredMinTx:     time.Duration(b.DesiredMinTxIntervalMs) * time.Millisecond,
			RequiredMinRx:    time.Duration(b.RequiredMinRxIntervalMs) * time.Millisecond,
			DetectMultiplier: b.DetectMultiplier,
		}
	}
	for i, af := range bp.Spec.AfiSafis {
		if af != nil && af.AddPaths != nil && af.AddPaths.Config != nil && af.AddPaths.Config.SendMax > 0 {
			if n := af.AddPaths.Config.SendMax; n > math.MaxUint8 {
				return p, fmt.Errorf("spec.afiSafis[%d].addPaths.config.sendMax %d is out of range (1..255; 0 means %d)", i, n, DefaultAddPathSendMax)
			}
			p.AddPathSendMax = af.AddPaths.Config.SendMax
		}
	}
	return p, nil
}

// neighborSettings maps the OpenELB neighbor fields GoBGP carries out
// (the others are reported Unsupported by the CCM: v1alpha2's field
// support table).
func neighborSettings(bp *v1alpha2.BgpPeer, p *bgp.Peer) error {
	c := bp.Spec.Conf
	p.Description = c.Description
	p.LocalAS = c.LocalAs
	p.AdminDown = c.AdminDown
	p.ReplacePeerAS = c.ReplacePeerAs
	if c.AllowOwnAs > math.MaxUint8 {
		return fmt.Errorf("spec.conf.allowOwnAs %d is out of range (0..255)", c.AllowOwnAs)
	}
	p.AllowOwnAS = uint8(c.AllowOwnAs)
	switch strings.ToLower(strings.TrimSpace(c.RemovePrivateAs)) {
	case "", "none":
	case "all":
		p.RemovePrivateAS = "all"
	case "replace":
		p.RemovePrivateAS = "replace"
	default:
		return fmt.Errorf("spec.conf.removePrivateAs %q is not all, replace or none", c.RemovePrivateAs)
	}
	switch c.SendCommunity {
	case 0, 2:
		// 0 is also what an unset field reads as: every community is sent,
		// as OpenELB's GoBGP did whatever the field said.
	case 1:
		p.SendCommunity = bgp.SendCommunityExtended
	case 3:
		p.SendCommunity = bgp.SendCommunityNone
	default:
		return fmt.Errorf("spec.conf.sendCommunity %d is out of range (0..3)", c.SendCommunity)
	}
	if tr := bp.Spec.Transport; tr != nil {
		p.Passive = tr.PassiveMode
		if tr.TcpMss > math.MaxUint16 {
			return fmt.Errorf("spec.transport.tcpMss %d is out of range (0..65535)", tr.TcpMss)
		}
		p.TCPMSS = uint16(tr.TcpMss)
		if ra := strings.TrimSpace(tr.RemoteAddress); ra != "" {
			ip, err := netip.ParseAddr(ra)
			if err != nil || ip.Unmap() != p.Address {
				return fmt.Errorf("spec.transport.remoteAddress %q differs from spec.conf.neighborAddress %s (leave it unset)", ra, p.Address)
			}
		}
	}
	if len(bp.Spec.AfiSafis) > 0 {
		v4, v6 := false, false
		for _, af := range bp.Spec.AfiSafis {
			if af == nil || af.Config == nil || af.Config.Family == nil {
				continue
			}
			f := af.Config.Family
			switch strings.ToLower(f.Afi) + "/" + strings.ToLower(f.Safi) {
			case "ipv4/unicast":
				v4 = v4 || af.Config.Enabled
			case "ipv6/unicast":
				v6 = v6 || af.Config.Enabled
			default:
				// Other families carry nothing the speaker announces; the
				// CCM reports them (v1alpha2.UnsupportedFields).
			}
		}
		if v4 || v6 {
			// Families listed: those enabled, and only those.
			p.NoIPv4, p.NoIPv6 = !v4, !v6
		}
	}
	return nil
}

// What the wire and the kernel bound (see bgp.Peer.Validate).
const (
	// maxPasswordBytes is Linux's TCP MD5 key limit.
	maxPasswordBytes = 80
	// maxBFDIntervalMs is the largest interval a BFD packet carries (a
	// 32-bit count of microseconds), in milliseconds.
	maxBFDIntervalMs = math.MaxUint32 / 1000
	// maxTimerSeconds is the largest hold time an OPEN carries (16 bits);
	// the other timers are bounded alike.
	maxTimerSeconds = math.MaxUint16
)

// seconds parses OpenELB's timer strings ("30", "30s"); "" and "0" are
// the default. Other values below least seconds or above maxTimerSeconds
// are refused.
func seconds(field, v string, least int) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if n, nerr := strconv.ParseUint(v, 10, 32); nerr == nil {
		d, err = time.Duration(n)*time.Second, nil
	}
	if err != nil || d < 0 {
		return 0, fmt.Errorf("spec.timers.config.%s %q is not a number of seconds", field, v)
	}
	if d != 0 && (d < time.Duration(least)*time.Second || d > maxTimerSeconds*time.Second) {
		return 0, fmt.Errorf("spec.timers.config.%s %q is out of range (%d..%d seconds; 0 means the default)", field, v, least, maxTimerSeconds)
	}
	return d, nil
}
