package ipam

import (
	"errors"
	"math"
	"net/netip"
	"strings"
	"testing"
)

func mustSet(t *testing.T, specs ...string) RangeSet {
	t.Helper()
	rs := make([]Range, len(specs))
	for i, s := range specs {
		rs[i] = mustRange(t, s)
	}
	set, err := NewRangeSet(rs...)
	if err != nil {
		t.Fatalf("NewRangeSet(%q): %v", specs, err)
	}
	return set
}

func TestNewRangeSet(t *testing.T) {
	tests := []struct {
		in      []string
		want    string // String() of the set
		wantErr string
	}{
		{in: []string{"10.0.0.0/24"}, want: "10.0.0.0-10.0.0.255"},
		{in: []string{"10.0.2.0/24", "10.0.0.0/24"}, want: "10.0.0.0-10.0.0.255,10.0.2.0-10.0.2.255"},
		{in: []string{"10.0.0.128/25", "10.0.0.0/25"}, want: "10.0.0.0-10.0.0.255"}, // adjacent: merged
		{in: []string{"10.0.0.1", "10.0.0.2", "10.0.0.4"}, want: "10.0.0.1-10.0.0.2,10.0.0.4"},
		{in: []string{"fd00::/127", "fd00::2"}, want: "fd00::-fd00::2"},
		{in: nil, wantErr: "at least one range"},
		{in: []string{"10.0.0.0/24", "10.0.0.200-10.0.1.5"}, wantErr: "overlaps 10.0.0.0-10.0.0.255 of the same pool"},
		{in: []string{"10.0.0.0/24", "fd00::/120"}, wantErr: "a pool holds one family"},
	}
	for _, tc := range tests {
		rs := make([]Range, len(tc.in))
		for i, s := range tc.in {
			rs[i] = mustRange(t, s)
		}
		got, err := NewRangeSet(rs...)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !errors.Is(err, ErrInvalidRange) {
				t.Errorf("NewRangeSet(%q) = %v, %v; want an ErrInvalidRange saying %q", tc.in, got, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got.String() != tc.want {
			t.Errorf("NewRangeSet(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestRangeSetQueries(t *testing.T) {
	s := mustSet(t, "10.0.0.8/30", "10.0.0.0-10.0.0.1", "10.0.0.20")
	for addr, want := range map[string]bool{
		"10.0.0.0": true, "10.0.0.1": true, "10.0.0.2": false, "10.0.0.7": false, "10.0.0.8": true,
		"10.0.0.11": true, "10.0.0.12": false, "10.0.0.20": true, "10.0.0.21": false, "9.255.255.255": false, "fd00::1": false,
	} {
		if got := s.Contains(mustAddr(addr)); got != want {
			t.Errorf("%s.Contains(%s) = %v, want %v", s, addr, got, want)
		}
	}
	if s.Size() != 7 || s.First() != mustAddr("10.0.0.0") || s.Last() != mustAddr("10.0.0.20") || s.Family() != IPv4 {
		t.Errorf("%s: size %d first %s last %s family %s, want 7 10.0.0.0 10.0.0.20 IPv4", s, s.Size(), s.First(), s.Last(), s.Family())
	}
	for other, want := range map[string]bool{
		"10.0.0.2-10.0.0.7": false, "10.0.0.12-10.0.0.19": false, "10.0.0.5-10.0.0.8": true,
		"10.0.0.20": true, "10.0.0.0/16": true, "fd00::/64": false,
	} {
		if got := s.Overlaps(mustSet(t, other)); got != want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v", s, other, got, want)
		}
		if got := mustSet(t, other).Overlaps(s); got != want {
			t.Errorf("%s.Overlaps(%s) = %v, want %v", other, s, got, want)
		}
	}
	if huge := mustSet(t, "fd00::/65", "fd01::/65"); huge.Size() != math.MaxUint64 {
		t.Errorf("two /65s: size %d, want saturated", huge.Size())
	}
}

func TestSkipEdges(t *testing.T) {
	for in, want := range map[string]string{
		"10.0.0.0/24":             "10.0.0.1-10.0.0.254",
		"10.0.0.0/30":             "10.0.0.1-10.0.0.2",
		"10.0.0.0/31":             "10.0.0.0-10.0.0.1", // RFC 3021: no network or broadcast address
		"10.0.0.7/32":             "10.0.0.7",
		"10.0.0.0-10.0.0.255":     "10.0.0.0-10.0.0.255", // written out on purpose
		"10.0.0.9":                "10.0.0.9",
		"fd00::/120":              "fd00::1-fd00::fe",
		"fd00::/127":              "fd00::-fd00::1",
		" 10.0.1.0 / 24 ":         "10.0.1.1-10.0.1.254",
		"192.168.0.0/16":          "192.168.0.1-192.168.255.254",
		"192.168.0.0-192.168.0.3": "192.168.0.0-192.168.0.3",
	} {
		if got := SkipEdges(in, mustRange(t, in)).String(); got != want {
			t.Errorf("SkipEdges(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestAllocatorRanges: a pool of several ranges hands out the lowest free
// address across them, never one of the gap, finds the pool of an address
// of any range, and counts every range in its size.
func TestAllocatorRanges(t *testing.T) {
	a := New()
	multi := Pool{Name: "multi", Ranges: mustSet(t, "10.0.0.9", "10.0.0.1-10.0.0.2", "10.0.1.0/31"), Default: true}
	if err := a.SetPools([]Pool{multi, pool("next", "10.0.0.3-10.0.0.8")}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range 5 {
		as, err := a.Allocate(Request{Service: ServiceKey("ns/s" + string(rune('a'+i))), Namespace: "ns", Families: []Family{IPv4}})
		if err != nil {
			t.Fatalf("allocation %d: %v", i, err)
		}
		if as[0].Pool != "multi" {
			t.Errorf("allocation %d: %s from pool %q, want multi", i, as[0].Addr, as[0].Pool)
		}
		got = append(got, as[0].Addr.String())
	}
	if want := "10.0.0.1 10.0.0.2 10.0.0.9 10.0.1.0 10.0.1.1"; strings.Join(got, " ") != want {
		t.Errorf("addresses %s, want %s", strings.Join(got, " "), want)
	}
	if _, err := a.Allocate(Request{Service: "ns/full", Namespace: "ns", Families: []Family{IPv4}}); !errors.Is(err, ErrPoolExhausted) {
		t.Errorf("sixth allocation: %v, want ErrPoolExhausted", err)
	}
	st, ok := a.Stats("multi")
	if !ok || st.Size != 5 || st.Used != 5 {
		t.Errorf("Stats(multi) = %+v, %v; want size 5, 5 used", st, ok)
	}
	// An address of the gap belongs to the other pool; one of the third
	// range to multi.
	if as, err := a.Assign("ns/gap", []netip.Addr{mustAddr("10.0.0.5")}, Sharing{}, nil); err != nil || as[0].Pool != "next" {
		t.Errorf("Assign(10.0.0.5) = %v, %v; want pool next", as, err)
	}
	a.Release("ns/sd")
	if as, err := a.Assign("ns/back", []netip.Addr{mustAddr("10.0.1.0")}, Sharing{}, nil); err != nil || as[0].Pool != "multi" {
		t.Errorf("Assign(10.0.1.0) = %v, %v; want pool multi", as, err)
	}
	// Growing the pool by a range keeps what is held and frees the new range.
	multi.Ranges = mustSet(t, "10.0.0.9", "10.0.0.1-10.0.0.2", "10.0.1.0/31", "10.0.2.7")
	if err := a.SetPools([]Pool{multi, pool("next", "10.0.0.3-10.0.0.8")}); err != nil {
		t.Fatal(err)
	}
	if as, err := a.Allocate(Request{Service: "ns/grown", Namespace: "ns", Families: []Family{IPv4}}); err != nil || as[0].Addr != mustAddr("10.0.2.7") {
		t.Errorf("after adding a range: %v, %v; want 10.0.2.7", as, err)
	}
	// Pools built by hand must be sorted and disjoint.
	err := a.SetPools([]Pool{{Name: "bad", Ranges: RangeSet{mustRange(t, "10.9.0.5"), mustRange(t, "10.9.0.1")}}})
	if !errors.Is(err, ErrInvalidRange) {
		t.Errorf("unsorted ranges: %v, want ErrInvalidRange", err)
	}
}
