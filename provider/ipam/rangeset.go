package ipam

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
)

// RangeSet is the address space of one pool: one or more ranges of one
// family, sorted, disjoint and not adjacent (NewRangeSet merges ranges that
// touch, so "10.0.0.0/25" and "10.0.0.128/25" are the /24 they spell). An
// Eip's spec.address and each entry of its spec.ranges give one Range each.
//
// A pool stays of one family: the planner, the layer-2 responder and
// Eip.status (v4, firstIP, lastIP) describe a pool by its family, and a
// dual-stack Service takes one address from a pool of each family.
type RangeSet []Range

// NewRangeSet builds the RangeSet of rs. It refuses an empty list, ranges of
// two families and ranges that overlap (a pool listing an address twice is a
// mistake worth reporting, not merging); adjacent ranges are merged. Each
// range is checked as by Range.validate.
func NewRangeSet(rs ...Range) (RangeSet, error) {
	if len(rs) == 0 {
		return nil, fmt.Errorf("%w: a pool needs at least one range", ErrInvalidRange)
	}
	for _, r := range rs {
		if err := r.validate(); err != nil {
			return nil, err
		}
		if r.Family() != rs[0].Family() {
			return nil, invalidRange(r.String(), fmt.Sprintf("is %s but %s is %s: a pool holds one family (use one Eip per family)", r.Family(), rs[0], rs[0].Family()))
		}
	}
	sorted := slices.Clone(rs)
	slices.SortFunc(sorted, func(x, y Range) int { return x.First.Compare(y.First) })
	out := RangeSet{sorted[0]}
	for _, r := range sorted[1:] {
		last := &out[len(out)-1]
		switch {
		case r.Overlaps(*last):
			return nil, invalidRange(r.String(), fmt.Sprintf("overlaps %s of the same pool", *last))
		case last.Last.Next() == r.First:
			last.Last = r.Last
		default:
			out = append(out, r)
		}
	}
	return out, nil
}

// Family returns the family of the set, or 0 when it is empty.
func (s RangeSet) Family() Family {
	if len(s) == 0 {
		return 0
	}
	return s[0].Family()
}

// First is the lowest address of the set (the zero Addr when empty).
func (s RangeSet) First() netip.Addr {
	if len(s) == 0 {
		return netip.Addr{}
	}
	return s[0].First
}

// Last is the highest address of the set (the zero Addr when empty).
func (s RangeSet) Last() netip.Addr {
	if len(s) == 0 {
		return netip.Addr{}
	}
	return s[len(s)-1].Last
}

// Contains reports whether a lies in one of the ranges: a binary search, so
// a pool of many ranges costs O(log ranges) per lookup.
func (s RangeSet) Contains(a netip.Addr) bool {
	i, found := slices.BinarySearchFunc(s, a, func(r Range, x netip.Addr) int { return r.First.Compare(x) })
	if found {
		return true
	}
	return i > 0 && s[i-1].Contains(a)
}

// Size is the number of addresses, saturating at math.MaxUint64.
func (s RangeSet) Size() uint64 {
	var n uint64
	for _, r := range s {
		m := r.Size()
		if n > math.MaxUint64-m {
			return math.MaxUint64
		}
		n += m
	}
	return n
}

// Overlaps reports whether s and o share an address: a merge walk over the
// two sorted lists.
func (s RangeSet) Overlaps(o RangeSet) bool {
	i, j := 0, 0
	for i < len(s) && j < len(o) {
		if s[i].Overlaps(o[j]) {
			return true
		}
		if s[i].Last.Less(o[j].Last) {
			i++
		} else {
			j++
		}
	}
	return false
}

// Equal reports whether the two sets hold the same ranges.
func (s RangeSet) Equal(o RangeSet) bool { return slices.Equal(s, o) }

// String lists the ranges, comma separated.
func (s RangeSet) String() string {
	parts := make([]string, len(s))
	for i, r := range s {
		parts[i] = r.String()
	}
	return strings.Join(parts, ",")
}

// validate checks a RangeSet built by hand rather than by NewRangeSet.
func (s RangeSet) validate() error {
	n, err := NewRangeSet(s...)
	if err != nil {
		return err
	}
	if !n.Equal(s) {
		return fmt.Errorf("%w %q: ranges must be sorted, disjoint and not adjacent (build them with NewRangeSet)", ErrInvalidRange, s)
	}
	return nil
}

// CheckUsableRanges is CheckUsableRange for every range of s.
func CheckUsableRanges(s RangeSet) error {
	for _, r := range s {
		if err := CheckUsableRange(r); err != nil {
			return err
		}
	}
	return nil
}

// SkipEdges drops the first and the last address of a CIDR range parsed
// from s (an Eip's spec.skipNetworkAndBroadcast): the network and broadcast
// addresses of an IPv4 subnet, which some client stacks will not send to,
// and the Subnet-Router anycast address (RFC 4291) and the top of the
// subnet's reserved anycast block (RFC 2526) of an IPv6 one. A prefix of
// two addresses or one (/31, /32, /127, /128) has no such addresses
// (RFC 3021) and is kept whole, as are single addresses and first-last
// ranges, whose ends the admin wrote on purpose.
func SkipEdges(s string, r Range) Range {
	if !strings.Contains(s, "/") || r.Size() < 4 {
		return r
	}
	return Range{First: r.First.Next(), Last: r.Last.Prev()}
}
