package bgp

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"unique"
)

// Attributes are the optional path attributes of an advertisement.
type Attributes struct {
	// Communities are standard communities (RFC 1997), as 32-bit values.
	Communities []uint32
	// LargeCommunities are large communities (RFC 8092). The global
	// administrator MarkerAdmin is the speaker's own.
	LargeCommunities [][3]uint32
	// LocalPref, when HasLocalPref, is sent to iBGP peers (GoBGP drops it
	// toward eBGP peers, as RFC 4271 wants).
	LocalPref    uint32
	HasLocalPref bool
	// Prepend is how many extra times the speaker's AS is prepended toward
	// eBGP peers (0..MaxPrepend), by the export policy (see attrpolicy.go).
	Prepend uint8
	// PrependPeers overrides Prepend toward the peers it names (Peer.Name).
	PrependPeers map[string]uint8
	// DenyPeers are the peers (Peer.Name) that must not receive the path
	// (an export policy statement per peer rejects it: attrpolicy.go).
	DenyPeers []string
	// LinkBandwidthMbps, when not 0, is sent as the link-bandwidth
	// extended community (transitive two-octet-AS type, sub-type 0x04;
	// the value is an IEEE float of bytes per second), which routers use
	// to weigh ECMP.
	LinkBandwidthMbps uint64
}

// MaxPrepend bounds Attributes.Prepend: the export policy has one
// statement per count.
const MaxPrepend = 10

// Attrs is an interned Attributes: comparable, one word in a Path, and
// shared by every path that carries the same attributes (a rack speaker
// holds tens of thousands of paths and a handful of attribute sets). The
// zero Attrs is "no optional attribute".
type Attrs struct {
	h unique.Handle[string]
}

// Intern returns the Attrs of a: communities and large communities are
// sorted and deduplicated (their order carries no meaning), so equal sets
// give equal Attrs.
func Intern(a Attributes) Attrs {
	a = a.canonical()
	if a.empty() {
		return Attrs{}
	}
	return Attrs{h: unique.Make(a.encode())}
}

// Attributes decodes the interned attributes (the zero value for none).
func (x Attrs) Attributes() Attributes {
	if x == (Attrs{}) {
		return Attributes{}
	}
	a, err := decodeAttributes(x.h.Value())
	if err != nil {
		// Only Intern makes Attrs, from its own encoding.
		panic(fmt.Sprintf("bgp: undecodable interned attributes %q: %v", x.h.Value(), err))
	}
	return a
}

// Equal says whether x and y are the same attributes (x == y; the method
// lets go-cmp compare paths).
func (x Attrs) Equal(y Attrs) bool { return x == y }

// String is the canonical text form, "" for none: e.g.
// "communities=65000:100,65535:65281 large=65000:1:2 localpref=200 prepend=2".
func (x Attrs) String() string {
	if x == (Attrs{}) {
		return ""
	}
	return x.h.Value()
}

// compareAttrs orders attribute sets by their text form.
func compareAttrs(a, b Attrs) int {
	if a == b {
		return 0
	}
	return strings.Compare(a.String(), b.String())
}

func (a Attributes) empty() bool {
	return len(a.Communities) == 0 && len(a.LargeCommunities) == 0 && !a.HasLocalPref && a.Prepend == 0 && len(a.PrependPeers) == 0 && len(a.DenyPeers) == 0 &&
		a.LinkBandwidthMbps == 0
}

func (a Attributes) canonical() Attributes {
	a.Communities = slices.Compact(slices.Sorted(slices.Values(a.Communities)))
	lc := slices.Clone(a.LargeCommunities)
	slices.SortFunc(lc, func(x, y [3]uint32) int { return slices.Compare(x[:], y[:]) })
	a.LargeCommunities = slices.Compact(lc)
	if len(a.Communities) == 0 {
		a.Communities = nil
	}
	if len(a.LargeCommunities) == 0 {
		a.LargeCommunities = nil
	}
	if !a.HasLocalPref {
		a.LocalPref = 0
	}
	if len(a.PrependPeers) == 0 {
		a.PrependPeers = nil
	}
	a.DenyPeers = slices.Compact(slices.Sorted(slices.Values(a.DenyPeers)))
	if len(a.DenyPeers) == 0 {
		a.DenyPeers = nil
	}
	return a
}

func (a Attributes) encode() string {
	var parts []string
	if len(a.Communities) > 0 {
		cs := make([]string, len(a.Communities))
		for i, c := range a.Communities {
			cs[i] = fmt.Sprintf("%d:%d", c>>16, c&0xFFFF)
		}
		parts = append(parts, "communities="+strings.Join(cs, ","))
	}
	if len(a.LargeCommunities) > 0 {
		cs := make([]string, len(a.LargeCommunities))
		for i, c := range a.LargeCommunities {
			cs[i] = fmt.Sprintf("%d:%d:%d", c[0], c[1], c[2])
		}
		parts = append(parts, "large="+strings.Join(cs, ","))
	}
	if a.HasLocalPref {
		parts = append(parts, "localpref="+strconv.FormatUint(uint64(a.LocalPref), 10))
	}
	if a.Prepend > 0 {
		parts = append(parts, "prepend="+strconv.Itoa(int(a.Prepend)))
	}
	if len(a.PrependPeers) > 0 {
		ps := make([]string, 0, len(a.PrependPeers))
		for _, name := range slices.Sorted(maps.Keys(a.PrependPeers)) {
			ps = append(ps, name+":"+strconv.Itoa(int(a.PrependPeers[name])))
		}
		parts = append(parts, "prepend-peers="+strings.Join(ps, ","))
	}
	if len(a.DenyPeers) > 0 {
		parts = append(parts, "deny-peers="+strings.Join(a.DenyPeers, ","))
	}
	if a.LinkBandwidthMbps > 0 {
		parts = append(parts, "lb-mbps="+strconv.FormatUint(a.LinkBandwidthMbps, 10))
	}
	return strings.Join(parts, " ")
}

func decodeAttributes(s string) (Attributes, error) {
	var a Attributes
	for _, part := range strings.Fields(s) {
		k, v, _ := strings.Cut(part, "=")
		switch k {
		case "communities":
			for _, c := range strings.Split(v, ",") {
				hi, lo, _ := strings.Cut(c, ":")
				x, err1 := strconv.ParseUint(hi, 10, 16)
				y, err2 := strconv.ParseUint(lo, 10, 16)
				if err1 != nil || err2 != nil {
					return a, fmt.Errorf("community %q", c)
				}
				a.Communities = append(a.Communities, uint32(x)<<16|uint32(y))
			}
		case "large":
			for _, c := range strings.Split(v, ",") {
				f := strings.Split(c, ":")
				if len(f) != 3 {
					return a, fmt.Errorf("large community %q", c)
				}
				var lc [3]uint32
				for i := range f {
					n, err := strconv.ParseUint(f[i], 10, 32)
					if err != nil {
						return a, fmt.Errorf("large community %q", c)
					}
					lc[i] = uint32(n)
				}
				a.LargeCommunities = append(a.LargeCommunities, lc)
			}
		case "localpref":
			n, err := strconv.ParseUint(v, 10, 32)
			if err != nil {
				return a, fmt.Errorf("localpref %q", v)
			}
			a.LocalPref, a.HasLocalPref = uint32(n), true
		case "prepend":
			n, err := strconv.ParseUint(v, 10, 8)
			if err != nil {
				return a, fmt.Errorf("prepend %q", v)
			}
			a.Prepend = uint8(n)
		case "prepend-peers":
			a.PrependPeers = map[string]uint8{}
			for _, c := range strings.Split(v, ",") {
				name, count, _ := strings.Cut(c, ":")
				n, err := strconv.ParseUint(count, 10, 8)
				if err != nil || name == "" {
					return a, fmt.Errorf("prepend-peers %q", c)
				}
				a.PrependPeers[name] = uint8(n)
			}
		case "deny-peers":
			a.DenyPeers = strings.Split(v, ",")
		case "lb-mbps":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return a, fmt.Errorf("lb-mbps %q", v)
			}
			a.LinkBandwidthMbps = n
		default:
			return a, fmt.Errorf("unknown part %q", part)
		}
	}
	return a, nil
}

// validate refuses what the export policy cannot carry out.
func (a Attributes) validate() error {
	if a.Prepend > MaxPrepend {
		return errInvalid("AS-path prepend %d > %d", a.Prepend, MaxPrepend)
	}
	for name, n := range a.PrependPeers {
		if n > MaxPrepend {
			return errInvalid("AS-path prepend %d toward %s > %d", n, name, MaxPrepend)
		}
		if name == "" || strings.ContainsAny(name, ":, =") {
			return errInvalid("AS-path prepend toward %q: not a peer name", name)
		}
	}
	for _, name := range a.DenyPeers {
		if name == "" || strings.ContainsAny(name, ":, =") {
			return errInvalid("peer %q excluded: not a peer name", name)
		}
	}
	for _, c := range a.LargeCommunities {
		if c[0] == MarkerAdmin {
			return errInvalid("large community %d:%d:%d: global administrator %d is the speaker's own", c[0], c[1], c[2], uint32(MarkerAdmin))
		}
	}
	return nil
}
