package ipam

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
)

// Family is an IP address family.
type Family uint8

// The IP families, numbered like the IP version so they print naturally in logs.
const (
	IPv4 Family = 4
	IPv6 Family = 6
)

func (f Family) String() string {
	switch f {
	case IPv4:
		return "IPv4"
	case IPv6:
		return "IPv6"
	}
	return fmt.Sprintf("Family(%d)", uint8(f))
}

// FamilyOf returns the family of a, or 0 for the zero Addr. IPv4-mapped IPv6
// addresses are IPv6, matching netip, which keeps them distinct from IPv4.
func FamilyOf(a netip.Addr) Family {
	switch {
	case a.Is4():
		return IPv4
	case a.Is6():
		return IPv6
	}
	return 0
}

// Range is an inclusive range of addresses of one family.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses the address syntaxes OpenELB accepts in an Eip's
// spec.address: a single address, a CIDR prefix (host bits are masked off and
// the whole prefix, network and broadcast addresses included, is the range),
// or "first-last". Errors wrap ErrInvalidRange.
func ParseRange(s string) (Range, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return Range{}, invalidRange(s, "empty")
	}
	if first, last, ok := strings.Cut(t, "-"); ok {
		f, err := parseAddr(s, first)
		if err != nil {
			return Range{}, err
		}
		l, err := parseAddr(s, last)
		if err != nil {
			return Range{}, err
		}
		if FamilyOf(f) != FamilyOf(l) {
			return Range{}, invalidRange(s, fmt.Sprintf("mixes %s address %s with %s address %s", FamilyOf(f), f, FamilyOf(l), l))
		}
		if l.Less(f) {
			return Range{}, invalidRange(s, fmt.Sprintf("last address %s is before first address %s", l, f))
		}
		return checkMapped(s, Range{First: f, Last: l})
	}
	if addrPart, bitsPart, ok := strings.Cut(t, "/"); ok {
		a, err := parseAddr(s, addrPart)
		if err != nil {
			return Range{}, err
		}
		bitsPart = strings.TrimSpace(bitsPart)
		n, err := strconv.Atoi(bitsPart)
		// Atoi accepts signs and leading zeros; netip, like most tools, does not.
		if err != nil || strings.ContainsAny(bitsPart, "+-") || len(bitsPart) > 3 || (len(bitsPart) > 1 && bitsPart[0] == '0') {
			return Range{}, invalidRange(s, fmt.Sprintf("prefix length %q is not a number", bitsPart))
		}
		if n < 0 || n > a.BitLen() {
			return Range{}, invalidRange(s, fmt.Sprintf("prefix length %d out of range 0-%d for %s", n, a.BitLen(), FamilyOf(a)))
		}
		p, err := a.Prefix(n)
		if err != nil {
			return Range{}, invalidRange(s, err.Error())
		}
		first := p.Addr()
		last := u128From(first).or(hostMask(a.BitLen() - n)).addr(a.Is4())
		return checkMapped(s, Range{First: first, Last: last})
	}
	a, err := parseAddr(s, t)
	if err != nil {
		return Range{}, err
	}
	return Range{First: a, Last: a}, nil
}

func parseAddr(orig, part string) (netip.Addr, error) {
	part = strings.TrimSpace(part)
	if part == "" {
		return netip.Addr{}, invalidRange(orig, "missing address")
	}
	a, err := netip.ParseAddr(part)
	if err != nil {
		return netip.Addr{}, invalidRange(orig, fmt.Sprintf("%q is not an IP address", part))
	}
	if err := checkAddr(a); err != nil {
		return netip.Addr{}, invalidRange(orig, err.Error())
	}
	return a, nil
}

// checkAddr rejects addresses that would make pool membership ambiguous:
// zones tie an address to one host interface, and IPv4-mapped IPv6 addresses
// would be a second spelling of IPv4 addresses that never compare equal.
func checkAddr(a netip.Addr) error {
	switch {
	case !a.IsValid():
		return fmt.Errorf("invalid address")
	case a.Zone() != "":
		return fmt.Errorf("address %s has a zone; zones are not allowed", a)
	case a.Is4In6():
		return fmt.Errorf("IPv4-mapped IPv6 address %s is not allowed; write the IPv4 form %s", a, a.Unmap())
	}
	return nil
}

func invalidRange(s, reason string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidRange, s, reason)
}

// validate checks a Range built by hand rather than by ParseRange.
func (r Range) validate() error {
	if err := checkAddr(r.First); err != nil {
		return invalidRange(r.String(), "first: "+err.Error())
	}
	if err := checkAddr(r.Last); err != nil {
		return invalidRange(r.String(), "last: "+err.Error())
	}
	if FamilyOf(r.First) != FamilyOf(r.Last) {
		return invalidRange(r.String(), "mixed address families")
	}
	if r.Last.Less(r.First) {
		return invalidRange(r.String(), "last address is before first address")
	}
	_, err := checkMapped(r.String(), r)
	return err
}

// CheckUsableRange refuses a pool range that contains special-purpose
// addresses. ParseRange does not: it only checks syntax, and a range that
// merely covers such a block (0.0.0.0/0) is still a well-formed range.
func CheckUsableRange(r Range) error {
	for _, sp := range specialPurpose {
		if r.Overlaps(sp.r) {
			return invalidRange(r.String(), fmt.Sprintf("it contains %s addresses (%s), which cannot be load-balancer addresses", sp.what, sp.r))
		}
	}
	return nil
}

// specialPurpose lists the blocks no Service address may come from: traffic
// to them never reaches a node as a routed unicast destination (RFC 6890,
// RFC 4291).
var specialPurpose = func() []struct {
	r    Range
	what string
} {
	blocks := []struct{ prefix, what string }{
		{"0.0.0.0/8", "\"this network\""},
		{"127.0.0.0/8", "loopback"},
		{"224.0.0.0/4", "multicast"},
		{"255.255.255.255/32", "limited broadcast"},
		{"::/128", "unspecified"},
		{"::1/128", "loopback"},
		{"fe80::/10", "link-local"},
		{"ff00::/8", "multicast"},
	}
	out := make([]struct {
		r    Range
		what string
	}, len(blocks))
	for i, b := range blocks {
		p := netip.MustParsePrefix(b.prefix)
		last := u128From(p.Addr()).or(hostMask(p.Addr().BitLen() - p.Bits())).addr(p.Addr().Is4())
		out[i].r, out[i].what = Range{First: p.Addr(), Last: last}, b.what
	}
	return out
}()

// CheckUsable tells why a cannot be a Service's address, or nil: the
// checks pools get (no zone, no IPv4-mapped form, no special-purpose
// block), for addresses a Service requests.
func CheckUsable(a netip.Addr) error {
	if err := checkAddr(a); err != nil {
		return err
	}
	for _, sp := range specialPurpose {
		if sp.r.Contains(a) {
			return fmt.Errorf("%s is a %s address (%s), which cannot be a load-balancer address", a, sp.what, sp.r)
		}
	}
	return nil
}

// The IPv4-mapped IPv6 block ::ffff:0:0/96, as 16-byte addresses.
var (
	mappedFirst = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff})
	mappedLast  = netip.AddrFrom16([16]byte{10: 0xff, 11: 0xff, 12: 0xff, 13: 0xff, 14: 0xff, 15: 0xff})
)

// checkMapped refuses an IPv6 range that contains IPv4-mapped addresses:
// handed out, such an address would be the IPv4 address it maps.
func checkMapped(s string, r Range) (Range, error) {
	if r.First.Is6() && !r.Last.Less(mappedFirst) && !mappedLast.Less(r.First) {
		return Range{}, invalidRange(s, "it contains IPv4-mapped addresses (::ffff:0:0/96), which an IPv6 pool cannot hand out; write IPv4 pools in IPv4 form")
	}
	return r, nil
}

// Family returns the family of the range, or 0 for the zero Range.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether a lies in r; an address of another family never does.
func (r Range) Contains(a netip.Addr) bool {
	a = a.WithZone("")
	if !r.First.IsValid() || FamilyOf(a) != r.Family() {
		return false
	}
	return !a.Less(r.First) && !r.Last.Less(a)
}

// Size returns the number of addresses in r, saturating at math.MaxUint64
// because IPv6 ranges can hold up to 2^128 addresses.
func (r Range) Size() uint64 {
	if !r.First.IsValid() || !r.Last.IsValid() || r.Last.Less(r.First) {
		return 0
	}
	d := u128From(r.Last).sub(u128From(r.First))
	if d.hi != 0 || d.lo == math.MaxUint64 {
		return math.MaxUint64
	}
	return d.lo + 1
}

// String returns "first-last", or the single address when First == Last;
// ParseRange accepts both forms back.
func (r Range) String() string {
	if r.First == r.Last {
		return r.First.String()
	}
	return r.First.String() + "-" + r.Last.String()
}

// Overlaps reports whether r and o share at least one address.
func (r Range) Overlaps(o Range) bool {
	if !r.First.IsValid() || r.Family() != o.Family() {
		return false
	}
	return !r.Last.Less(o.First) && !o.Last.Less(r.First)
}
