package ipam

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

var equateAddr = cmpopts.EquateComparable(netip.Addr{})

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }

func mustRange(t testing.TB, s string) Range {
	t.Helper()
	r, err := ParseRange(s)
	if err != nil {
		t.Fatalf("ParseRange(%q): %v", s, err)
	}
	return r
}

func TestParseRange(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want Range
	}{
		{"single IPv4", "192.168.0.1", Range{mustAddr("192.168.0.1"), mustAddr("192.168.0.1")}},
		{"single IPv6", "fd00::1", Range{mustAddr("fd00::1"), mustAddr("fd00::1")}},
		{"IPv4 CIDR", "192.168.0.0/24", Range{mustAddr("192.168.0.0"), mustAddr("192.168.0.255")}},
		{"IPv4 CIDR host bits masked", "10.0.0.5/24", Range{mustAddr("10.0.0.0"), mustAddr("10.0.0.255")}},
		{"IPv4 /32", "10.1.2.3/32", Range{mustAddr("10.1.2.3"), mustAddr("10.1.2.3")}},
		{"IPv4 /0", "0.0.0.0/0", Range{mustAddr("0.0.0.0"), mustAddr("255.255.255.255")}},
		{"IPv6 CIDR", "fd00::/112", Range{mustAddr("fd00::"), mustAddr("fd00::ffff")}},
		{"IPv6 /64", "2001:db8:1:2::/64", Range{mustAddr("2001:db8:1:2::"), mustAddr("2001:db8:1:2:ffff:ffff:ffff:ffff")}},
		{"IPv6 /1", "8000::/1", Range{mustAddr("8000::"), mustAddr("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")}},
		{"IPv6 CIDR host bits masked", "fd00::1:2/120", Range{mustAddr("fd00::1:0"), mustAddr("fd00::1:ff")}},
		{"IPv4 range", "172.22.0.2-172.22.0.10", Range{mustAddr("172.22.0.2"), mustAddr("172.22.0.10")}},
		{"IPv4 range spaces", "  172.22.0.2 - 172.22.0.10 ", Range{mustAddr("172.22.0.2"), mustAddr("172.22.0.10")}},
		{"IPv4 range of one", "10.0.0.1-10.0.0.1", Range{mustAddr("10.0.0.1"), mustAddr("10.0.0.1")}},
		{"IPv6 range", "fd00::10-fd00::1:0", Range{mustAddr("fd00::10"), mustAddr("fd00::1:0")}},
		{"CIDR with spaces", " 10.0.0.0/30\t", Range{mustAddr("10.0.0.0"), mustAddr("10.0.0.3")}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.in)
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tc.in, err)
			}
			if diff := cmp.Diff(tc.want, got, equateAddr); diff != "" {
				t.Errorf("ParseRange(%q) (-want +got):\n%s", tc.in, diff)
			}
		})
	}
}

func TestParseRangeInvalid(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantReason string // substring of the error message
	}{
		{"empty", "", "empty"},
		{"blank", "   ", "empty"},
		{"garbage", "hello", "not an IP address"},
		{"zone", "fe80::1%eth0", "zone"},
		{"zone in range", "fe80::1%eth0-fe80::2", "zone"},
		{"zone in CIDR", "fe80::1%eth0/64", "zone"},
		{"mixed families", "10.0.0.1-fd00::1", "mixes IPv4"},
		{"last before first", "10.0.0.10-10.0.0.1", "before first"},
		{"IPv6 last before first", "fd00::2-fd00::1", "before first"},
		{"IPv4-mapped", "::ffff:1.2.3.4", "write the IPv4 form 1.2.3.4"},
		{"IPv4-mapped CIDR", "::ffff:1.2.3.0/120", "IPv4 form"},
		{"IPv4-mapped range", "::ffff:1.2.3.4-::ffff:1.2.3.5", "IPv4 form"},
		{"IPv4 prefix too long", "10.0.0.0/33", "out of range 0-32"},
		{"IPv6 prefix too long", "fd00::/129", "out of range 0-128"},
		{"negative prefix", "10.0.0.0/-1", "not an IP address"},
		{"plus prefix", "10.0.0.0/+8", "not a number"},
		{"empty prefix", "10.0.0.0/", "not a number"},
		{"leading zero prefix", "10.0.0.0/08", "not a number"},
		{"garbage prefix", "10.0.0.0/abc", "not a number"},
		{"missing first", "-10.0.0.1", "missing address"},
		{"missing last", "10.0.0.1-", "missing address"},
		{"two dashes", "10.0.0.1-10.0.0.2-10.0.0.3", "not an IP address"},
		{"CIDR in range", "10.0.0.0/24-10.0.1.0", "not an IP address"},
		{"short IPv4", "10.0.0", "not an IP address"},
		{"octet overflow", "10.0.0.256", "not an IP address"},
		{"leading zero octet", "10.0.0.01", "not an IP address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseRange(tc.in)
			if !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("ParseRange(%q) = %v, %v; want error wrapping ErrInvalidRange", tc.in, got, err)
			}
			if !strings.Contains(err.Error(), tc.wantReason) {
				t.Errorf("ParseRange(%q) error %q does not mention %q", tc.in, err, tc.wantReason)
			}
		})
	}
}

func TestRangeMethods(t *testing.T) {
	tests := []struct {
		name       string
		r          string
		wantFamily Family
		wantSize   uint64
		wantString string
		in, out    []string
	}{
		{
			name: "IPv4 range", r: "172.22.0.2-172.22.0.10", wantFamily: IPv4, wantSize: 9, wantString: "172.22.0.2-172.22.0.10",
			in:  []string{"172.22.0.2", "172.22.0.10", "172.22.0.5"},
			out: []string{"172.22.0.1", "172.22.0.11", "fd00::1", "::ffff:172.22.0.5"},
		},
		{
			name: "single", r: "10.0.0.1/32", wantFamily: IPv4, wantSize: 1, wantString: "10.0.0.1",
			in: []string{"10.0.0.1"}, out: []string{"10.0.0.0", "10.0.0.2"},
		},
		{
			name: "IPv4 everything", r: "0.0.0.0/0", wantFamily: IPv4, wantSize: 1 << 32, wantString: "0.0.0.0-255.255.255.255",
			in: []string{"0.0.0.0", "255.255.255.255"}, out: []string{"::"},
		},
		{
			name: "IPv6 /112", r: "fd00::/112", wantFamily: IPv6, wantSize: 65536, wantString: "fd00::-fd00::ffff",
			in: []string{"fd00::", "fd00::ffff", "fd00::1%eth0"}, out: []string{"fd00::1:0", "0.0.0.1"},
		},
		{
			name: "IPv6 /65", r: "fd00::/65", wantFamily: IPv6, wantSize: 1 << 63, wantString: "fd00::-fd00::7fff:ffff:ffff:ffff",
			in: []string{"fd00::7fff:ffff:ffff:ffff"}, out: []string{"fd00::8000:0:0:0"},
		},
		{
			name: "IPv6 /64 saturates", r: "fd00::/64", wantFamily: IPv6, wantSize: math.MaxUint64, wantString: "fd00::-fd00::ffff:ffff:ffff:ffff",
		},
		{
			name: "IPv6 /1 saturates", r: "8000::/1", wantFamily: IPv6, wantSize: math.MaxUint64, wantString: "8000::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := mustRange(t, tc.r)
			if got := r.Family(); got != tc.wantFamily {
				t.Errorf("Family() = %v, want %v", got, tc.wantFamily)
			}
			if got := r.Size(); got != tc.wantSize {
				t.Errorf("Size() = %d, want %d", got, tc.wantSize)
			}
			if got := r.String(); got != tc.wantString {
				t.Errorf("String() = %q, want %q", got, tc.wantString)
			}
			for _, s := range tc.in {
				if !r.Contains(mustAddr(s)) {
					t.Errorf("Contains(%s) = false, want true", s)
				}
			}
			for _, s := range tc.out {
				if r.Contains(mustAddr(s)) {
					t.Errorf("Contains(%s) = true, want false", s)
				}
			}
		})
	}
}

func TestRangeOverlaps(t *testing.T) {
	tests := []struct {
		name string
		a, b string
		want bool
	}{
		{"disjoint", "10.0.0.0-10.0.0.9", "10.0.0.10-10.0.0.20", false},
		{"touching end", "10.0.0.0-10.0.0.10", "10.0.0.10-10.0.0.20", true},
		{"contained", "10.0.0.0/24", "10.0.0.5", true},
		{"containing", "10.0.0.5", "10.0.0.0/24", true},
		{"other family", "0.0.0.0/0", "8000::/1", false},
		{"IPv6 partial", "fd00::/112", "fd00::ff00-fd00::1:ff", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mustRange(t, tc.a), mustRange(t, tc.b)
			if got := a.Overlaps(b); got != tc.want {
				t.Errorf("%s.Overlaps(%s) = %v, want %v", a, b, got, tc.want)
			}
			if got := b.Overlaps(a); got != tc.want {
				t.Errorf("%s.Overlaps(%s) = %v, want %v", b, a, got, tc.want)
			}
		})
	}
}

func TestFamilyString(t *testing.T) {
	for f, want := range map[Family]string{IPv4: "IPv4", IPv6: "IPv6", 0: "Family(0)"} {
		if got := f.String(); got != want {
			t.Errorf("Family(%d).String() = %q, want %q", uint8(f), got, want)
		}
	}
}

// An IPv6 range must not contain IPv4-mapped addresses (::ffff:0:0/96):
// handed out, one would be the IPv4 address it maps.
func TestParseRangeRejectsIPv4Mapped(t *testing.T) {
	for _, s := range []string{"::/0", "::/80", "::ffff:0:0/96", "::fffe:ffff:ffff-::1:0:0:0", "::ffff:1.2.3.4/128"} {
		if r, err := ParseRange(s); err == nil {
			t.Errorf("ParseRange(%q) = %v, want an error", s, r)
		} else if !errors.Is(err, ErrInvalidRange) {
			t.Errorf("ParseRange(%q) error %v does not wrap ErrInvalidRange", s, err)
		}
	}
	for _, s := range []string{"::1-::fffe:ffff:ffff", "::1:0:0:0/112"} {
		if _, err := ParseRange(s); err != nil {
			t.Errorf("ParseRange(%q): %v", s, err)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{
		// Valid forms.
		"192.168.0.1", "fd00::1", "192.168.0.0/24", "fd00::/112", "10.0.0.5/24", "0.0.0.0/0", "::/0",
		"10.0.0.1/32", "fd00::1/128", "2001:db8::/64", "172.22.0.2-172.22.0.10", "fd00::10-fd00::20",
		" 172.22.0.2 - 172.22.0.10 ", "\t10.0.0.0/8\n", "10.0.0.1-10.0.0.1", "::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"255.255.255.255", "0.0.0.0-255.255.255.255", "1.2.3.4/31", "fe80::/10",
		// Invalid forms.
		"", " ", "-", "/", "--", "garbage", "fe80::1%eth0", "fe80::1%eth0/64", "fe80::1%eth-0-fe80::2",
		"10.0.0.1-fd00::1", "fd00::1-10.0.0.1", "10.0.0.10-10.0.0.1", "fd00::2-fd00::1",
		"::ffff:1.2.3.4", "::ffff:1.2.3.0/120", "::ffff:1.2.3.4-::ffff:1.2.3.5", "10.0.0.0/33", "fd00::/129",
		"10.0.0.0/-1", "10.0.0.0/+8", "10.0.0.0/", "10.0.0.0/08", "10.0.0.0/0x8", "/24", "-10.0.0.1", "10.0.0.1-",
		"10.0.0.1-10.0.0.2-10.0.0.3", "10.0.0.0/24-10.0.1.0", "10.0.0", "10.0.0.256", "10.0.0.01", "1.2.3.4.5",
		"::1::2", ":::", "1.2.3.4/24/8", "10.0.0.0/99999999999999999999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRange(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidRange) {
				t.Fatalf("ParseRange(%q) error %v does not wrap ErrInvalidRange", s, err)
			}
			return
		}
		if r.Last.Less(r.First) {
			t.Fatalf("ParseRange(%q) = %v: Last before First", s, r)
		}
		if FamilyOf(r.First) != FamilyOf(r.Last) || r.Family() == 0 {
			t.Fatalf("ParseRange(%q) = %v: bad family", s, r)
		}
		if r.First.Zone() != "" || r.First.Is4In6() || r.Last.Is4In6() {
			t.Fatalf("ParseRange(%q) = %v: zone or IPv4-mapped address accepted", s, r)
		}
		if !r.Contains(r.First) || !r.Contains(r.Last) {
			t.Fatalf("ParseRange(%q) = %v: does not contain its ends", s, r)
		}
		if r.Size() < 1 {
			t.Fatalf("ParseRange(%q) = %v: Size() = %d", s, r, r.Size())
		}
		again, err := ParseRange(r.String())
		if err != nil {
			t.Fatalf("ParseRange(%q).String() = %q does not re-parse: %v", s, r.String(), err)
		}
		if again != r {
			t.Fatalf("ParseRange(%q) = %v, but its String() re-parses to %v", s, r, again)
		}
	})
}
