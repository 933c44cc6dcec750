package bgp

import (
	"net/netip"
	"slices"
	"testing"
)

func TestSortedPathsAndDiff(t *testing.T) {
	p := func(prefix, nh string) Path {
		return Path{Prefix: netip.MustParsePrefix(prefix), NextHop: netip.MustParseAddr(nh)}
	}
	clean := []Path{p("10.0.0.1/32", "192.168.0.1"), p("10.0.0.1/32", "192.168.0.2"), p("10.0.0.2/32", "192.168.0.1")}
	got, err := sortedPaths(clean)
	if err != nil {
		t.Fatal(err)
	}
	if &got[0] != &clean[0] {
		t.Error("sorted, normalized paths were copied; the speaker would hold them twice")
	}

	messy := []Path{p("10.0.0.2/32", "::ffff:192.168.0.1"), p("10.0.0.1/32", "192.168.0.2"), p("10.0.0.1/32", "192.168.0.1"), p("10.0.0.1/32", "192.168.0.2")}
	got, err = sortedPaths(messy)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, clean) {
		t.Errorf("sortedPaths(messy) = %v, want %v", got, clean)
	}
	if messy[0] != p("10.0.0.2/32", "::ffff:192.168.0.1") {
		t.Error("sortedPaths modified its argument")
	}
	if _, err := sortedPaths([]Path{p("0.0.0.0/0", "192.168.0.1")}); err == nil {
		t.Error("a default route was accepted")
	}
	if got, err := sortedPaths([]Path{p("10.0.0.7/24", "192.168.0.1")}); err != nil || got[0].Prefix.String() != "10.0.0.0/24" {
		t.Errorf("an aggregate: %v, %v; want it masked", got, err)
	}

	have := []Path{clean[0], clean[2]}
	want := []Path{clean[1], clean[2], p("10.0.0.3/32", "192.168.0.1")}
	gone, added := diffPaths(have, want)
	if !slices.Equal(gone, []Path{clean[0]}) || !slices.Equal(added, []Path{clean[1], want[2]}) {
		t.Errorf("diffPaths = withdraw %v add %v", gone, added)
	}
}
