package v1alpha2

import (
	"fmt"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Well-known communities (RFC 1997, 3765, 7999, 8326, 9494, 7611).
var wellKnownCommunities = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"accept-own":          0xFFFF0001,
	"llgr-stale":          0xFFFF0006,
	"no-llgr":             0xFFFF0007,
	"blackhole":           0xFFFF029A,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"local-as":            0xFFFFFF03,
	"no-peer":             0xFFFFFF04,
}

// ReservedLargeCommunityAdmin is the large-community global administrator
// the speakers keep for themselves (4294967295, a reserved AS number, RFC
// 7300): markers that tell their export policy what to do with a path,
// stripped before anything is sent.
const ReservedLargeCommunityAdmin = math.MaxUint32

// ParseCommunity reads a standard community: "AS:value" (each 0..65535) or
// a well-known name (see BGPAttributes.Communities).
func ParseCommunity(s string) (uint32, error) {
	s = strings.TrimSpace(s)
	if v, ok := wellKnownCommunities[strings.ToLower(s)]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: want AS:value or a well-known name (no-export, no-advertise, graceful-shutdown...)", s)
	}
	a, err1 := strconv.ParseUint(hi, 10, 16)
	b, err2 := strconv.ParseUint(lo, 10, 16)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("community %q: both parts must be numbers 0..65535", s)
	}
	return uint32(a)<<16 | uint32(b), nil
}

// ParseLargeCommunity reads a large community "global:local1:local2".
func ParseLargeCommunity(s string) ([3]uint32, error) {
	s = strings.TrimSpace(s)
	parts := strings.Split(s, ":")
	var out [3]uint32
	if len(parts) != 3 {
		return out, fmt.Errorf("large community %q: want global:local1:local2", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return out, fmt.Errorf("large community %q: each part must be a number 0..4294967295", s)
		}
		out[i] = uint32(v)
	}
	if out[0] == ReservedLargeCommunityAdmin {
		return out, fmt.Errorf("large community %q: global administrator %d is reserved for the speakers", s, uint32(ReservedLargeCommunityAdmin))
	}
	return out, nil
}

// Validate checks every attribute and returns one error per bad value,
// naming the field under prefix (e.g. "spec.bgp").
func (a *BGPAttributes) Validate(prefix string) []error {
	if a == nil {
		return nil
	}
	var errs []error
	for i, c := range a.Communities {
		if _, err := ParseCommunity(c); err != nil {
			errs = append(errs, fmt.Errorf("%s.communities[%d]: %w", prefix, i, err))
		}
	}
	for i, c := range a.LargeCommunities {
		if _, err := ParseLargeCommunity(c); err != nil {
			errs = append(errs, fmt.Errorf("%s.largeCommunities[%d]: %w", prefix, i, err))
		}
	}
	if lp := a.LocalPref; lp != nil && (*lp < 0 || *lp > math.MaxUint32) {
		errs = append(errs, fmt.Errorf("%s.localPref %d is out of range (0..4294967295)", prefix, *lp))
	}
	if a.ASPathPrepend < 0 || a.ASPathPrepend > MaxASPathPrepend {
		errs = append(errs, fmt.Errorf("%s.asPathPrepend %d is out of range (0..%d)", prefix, a.ASPathPrepend, MaxASPathPrepend))
	}
	for _, peer := range slices.Sorted(maps.Keys(a.ASPathPrependPeers)) {
		if n := a.ASPathPrependPeers[peer]; n < 0 || n > MaxASPathPrepend {
			errs = append(errs, fmt.Errorf("%s.asPathPrependPeers[%s] %d is out of range (0..%d)", prefix, peer, n, MaxASPathPrepend))
		}
	}
	if a.LinkBandwidthMbps < 0 || a.LinkBandwidthMbps > MaxLinkBandwidthMbps {
		errs = append(errs, fmt.Errorf("%s.linkBandwidthMbps %d is out of range (0..%d)", prefix, a.LinkBandwidthMbps, MaxLinkBandwidthMbps))
	}
	for _, sel := range []struct {
		field string
		s     *metav1.LabelSelector
	}{{"peerSelector", a.PeerSelector}, {"nodeSelector", a.NodeSelector}} {
		if sel.s == nil {
			continue
		}
		if _, err := metav1.LabelSelectorAsSelector(sel.s); err != nil {
			errs = append(errs, fmt.Errorf("%s.%s: %w", prefix, sel.field, err))
		}
	}
	return errs
}

// SelectorKeys are the label keys a selector reads (nil for nil).
func SelectorKeys(s *metav1.LabelSelector) []string {
	if s == nil {
		return nil
	}
	keys := slices.Collect(maps.Keys(s.MatchLabels))
	for _, e := range s.MatchExpressions {
		keys = append(keys, e.Key)
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}

// ParseASPathPrepend reads the prepend annotation: a count for every eBGP
// peer, then optional per-peer counts, comma-separated: "1,leaf2=3"
// ("leaf2=3" alone: none toward the others).
func ParseASPathPrepend(v string) (int32, map[string]int32, error) {
	var all int32
	var peers map[string]int32
	count := func(s string) (int32, error) {
		n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 8)
		if err != nil || n > MaxASPathPrepend {
			return 0, fmt.Errorf("%q is not a count 0..%d", strings.TrimSpace(s), MaxASPathPrepend)
		}
		return int32(n), nil
	}
	for i, item := range strings.Split(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		peer, n, perPeer := strings.Cut(item, "=")
		if !perPeer {
			if i != 0 {
				return 0, nil, fmt.Errorf("%q: only the first item may be a count for every peer; the others are peer=count", item)
			}
			c, err := count(item)
			if err != nil {
				return 0, nil, err
			}
			all = c
			continue
		}
		peer = strings.TrimSpace(peer)
		if peer == "" {
			return 0, nil, fmt.Errorf("%q: no BgpPeer name before '='", item)
		}
		c, err := count(n)
		if err != nil {
			return 0, nil, fmt.Errorf("%s: %w", peer, err)
		}
		if peers == nil {
			peers = map[string]int32{}
		}
		peers[peer] = c
	}
	return all, peers, nil
}

// Validate checks the attributes and the aggregation lengths.
func (b *EipBGP) Validate(prefix string) []error {
	if b == nil {
		return nil
	}
	errs := b.BGPAttributes.Validate(prefix)
	if b.AggregationLength < 0 || b.AggregationLength > 32 {
		errs = append(errs, fmt.Errorf("%s.aggregationLength %d is out of range (0..32)", prefix, b.AggregationLength))
	}
	if b.AggregationLengthV6 < 0 || b.AggregationLengthV6 > 128 {
		errs = append(errs, fmt.Errorf("%s.aggregationLengthV6 %d is out of range (0..128)", prefix, b.AggregationLengthV6))
	}
	return errs
}

// AggregatePrefix is what is announced for addr of a pool with these
// settings: its covering prefix of the pool's aggregation length for
// addr's family, and false when that is addr itself (no aggregation, or a
// length out of range).
func (b *EipBGP) AggregatePrefix(addr netip.Addr) (netip.Prefix, bool) {
	if b == nil {
		return netip.Prefix{}, false
	}
	addr = addr.Unmap()
	l := int(b.AggregationLength)
	if addr.Is6() {
		l = int(b.AggregationLengthV6)
	}
	if l <= 0 || l >= addr.BitLen() {
		return netip.Prefix{}, false
	}
	return netip.PrefixFrom(addr, l).Masked(), true
}

// IsZero says whether no attribute is set.
func (a *BGPAttributes) IsZero() bool {
	return a == nil || (len(a.Communities) == 0 && len(a.LargeCommunities) == 0 && a.LocalPref == nil && a.ASPathPrepend == 0 &&
		len(a.ASPathPrependPeers) == 0 && a.PeerSelector == nil && a.NodeSelector == nil && a.LinkBandwidthMbps == 0)
}

// Service annotations overriding a pool's BGP attributes (BGPAttributes),
// each replacing the pool's value of that attribute; an empty value clears
// it. Lists are comma-separated.
const (
	AnnotationBGPCommunities      = "openelb.kubesphere.io/bgp-communities"
	AnnotationBGPLargeCommunities = "openelb.kubesphere.io/bgp-large-communities"
	AnnotationBGPLocalPref        = "openelb.kubesphere.io/bgp-local-pref"
	AnnotationBGPASPathPrepend    = "openelb.kubesphere.io/bgp-as-path-prepend"
	// AnnotationBGPPeerSelector and AnnotationBGPNodeSelector are label
	// selectors in kubectl's syntax ("tier=edge,zone in (a,b)").
	AnnotationBGPPeerSelector = "openelb.kubesphere.io/bgp-peer-selector"
	AnnotationBGPNodeSelector = "openelb.kubesphere.io/bgp-node-selector"
	// AnnotationBGPLinkBandwidth is LinkBandwidthMbps: Mbit/s per node,
	// "0" or empty for none.
	AnnotationBGPLinkBandwidth = "openelb.kubesphere.io/bgp-link-bandwidth-mbps"
)

// ServiceBGPAttributes is pool (nil: none) with a Service's annotations
// applied. A bad annotation keeps the pool's value of its attribute and is
// returned as an error naming the annotation; the result is never a value
// the speakers would refuse. Lists come out trimmed, without empty
// entries; nil when nothing is set.
func ServiceBGPAttributes(pool *BGPAttributes, annotations map[string]string) (*BGPAttributes, []error) {
	out := BGPAttributes{}
	if pool != nil {
		out = *pool.DeepCopy()
	}
	var errs []error
	list := func(key string, parse func(string) error, dst *[]string) {
		v, ok := annotations[key]
		if !ok {
			return
		}
		var items []string
		for _, it := range strings.Split(v, ",") {
			if it = strings.TrimSpace(it); it == "" {
				continue
			}
			if err := parse(it); err != nil {
				errs = append(errs, fmt.Errorf("annotation %s: %w", key, err))
				return
			}
			items = append(items, it)
		}
		if len(items) > 32 {
			errs = append(errs, fmt.Errorf("annotation %s: %d values, at most 32", key, len(items)))
			return
		}
		*dst = items
	}
	list(AnnotationBGPCommunities, func(s string) error { _, err := ParseCommunity(s); return err }, &out.Communities)
	list(AnnotationBGPLargeCommunities, func(s string) error { _, err := ParseLargeCommunity(s); return err }, &out.LargeCommunities)
	if v, ok := annotations[AnnotationBGPLocalPref]; ok {
		if v = strings.TrimSpace(v); v == "" {
			out.LocalPref = nil
		} else if n, err := strconv.ParseUint(v, 10, 32); err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not a number 0..4294967295", AnnotationBGPLocalPref, v))
		} else {
			lp := int64(n)
			out.LocalPref = &lp
		}
	}
	if v, ok := annotations[AnnotationBGPLinkBandwidth]; ok {
		if v = strings.TrimSpace(v); v == "" {
			out.LinkBandwidthMbps = 0
		} else if n, err := strconv.ParseUint(v, 10, 32); err != nil || n > MaxLinkBandwidthMbps {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not a number 0..%d", AnnotationBGPLinkBandwidth, v, MaxLinkBandwidthMbps))
		} else {
			out.LinkBandwidthMbps = int32(n)
		}
	}
	selector := func(key string, dst **metav1.LabelSelector) {
		v, ok := annotations[key]
		if !ok {
			return
		}
		if strings.TrimSpace(v) == "" {
			*dst = nil
			return
		}
		sel, err := metav1.ParseToLabelSelector(v)
		if err == nil {
			_, err = metav1.LabelSelectorAsSelector(sel)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %q is not a label selector: %w", key, v, err))
			return
		}
		if len(sel.MatchLabels) == 0 {
			sel.MatchLabels = nil
		}
		if len(sel.MatchExpressions) == 0 {
			sel.MatchExpressions = nil
		}
		*dst = sel
	}
	selector(AnnotationBGPPeerSelector, &out.PeerSelector)
	selector(AnnotationBGPNodeSelector, &out.NodeSelector)
	if v, ok := annotations[AnnotationBGPASPathPrepend]; ok {
		if all, peers, err := ParseASPathPrepend(v); err != nil {
			errs = append(errs, fmt.Errorf("annotation %s: %w", AnnotationBGPASPathPrepend, err))
		} else {
			out.ASPathPrepend, out.ASPathPrependPeers = all, peers
		}
	}
	// What the pool holds is checked too: objects stored before the
	// schema said so, or written by API servers that skipped it.
	if pool != nil {
		errs = append(errs, pool.Validate("pool")...)
		out = dropInvalid(out)
	}
	if out.IsZero() {
		return nil, errs
	}
	return &out, errs
}

// dropInvalid removes the values Validate refuses.
func dropInvalid(a BGPAttributes) BGPAttributes {
	a.Communities = slices.DeleteFunc(slices.Clone(a.Communities), func(c string) bool { _, err := ParseCommunity(c); return err != nil })
	a.LargeCommunities = slices.DeleteFunc(slices.Clone(a.LargeCommunities), func(c string) bool { _, err := ParseLargeCommunity(c); return err != nil })
	if a.LocalPref != nil && (*a.LocalPref < 0 || *a.LocalPref > math.MaxUint32) {
		a.LocalPref = nil
	}
	if a.ASPathPrepend < 0 || a.ASPathPrepend > MaxASPathPrepend {
		a.ASPathPrepend = 0
	}
	if a.LinkBandwidthMbps < 0 || a.LinkBandwidthMbps > MaxLinkBandwidthMbps {
		a.LinkBandwidthMbps = 0
	}
	if a.ASPathPrependPeers != nil {
		a.ASPathPrependPeers = maps.Clone(a.ASPathPrependPeers)
		maps.DeleteFunc(a.ASPathPrependPeers, func(_ string, n int32) bool { return n < 0 || n > MaxASPathPrepend })
		if len(a.ASPathPrependPeers) == 0 {
			a.ASPathPrependPeers = nil
		}
	}
	if a.PeerSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(a.PeerSelector); err != nil {
			a.PeerSelector = nil
		}
	}
	if a.NodeSelector != nil {
		if _, err := metav1.LabelSelectorAsSelector(a.NodeSelector); err != nil {
			a.NodeSelector = nil
		}
	}
	if len(a.Communities) == 0 {
		a.Communities = nil
	}
	if len(a.LargeCommunities) == 0 {
		a.LargeCommunities = nil
	}
	return a
}
