package spread

import (
	"net/netip"
	"slices"
	"testing"
)

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	a := netip.MustParseAddr("10.0.0.0")
	for i := range out {
		a = a.Next()
		out[i] = a
	}
	return out
}

func counts(m map[netip.Addr]string) map[string]int {
	c := map[string]int{}
	for _, n := range m {
		c[n]++
	}
	return c
}

// TestSpreadEven: 1,000 addresses over 3 nodes, and 10,000 over 10, land
// within 10 % of an equal share on every node.
func TestSpreadEven(t *testing.T) {
	for _, tc := range []struct{ addrs, nodes int }{{1000, 3}, {10000, 10}, {1000, 2}} {
		var nodes []string
		for i := range tc.nodes {
			nodes = append(nodes, "node-"+string(rune('a'+i)))
		}
		c := counts(Assign("pool", addrs(tc.addrs), nodes, nil))
		share := float64(tc.addrs) / float64(tc.nodes)
		for _, n := range nodes {
			if d := float64(c[n])/share - 1; d > 0.1 || d < -0.1 {
				t.Errorf("%d addresses on %d nodes: %s answers %d, %.0f%% off an equal share (%v)", tc.addrs, tc.nodes, n, c[n], d*100, c)
			}
		}
	}
}

// TestMinimalMoves: a node leaving moves only its own addresses; a node
// joining takes addresses only for itself; the order of candidates does
// not matter.
func TestMinimalMoves(t *testing.T) {
	as := addrs(1000)
	three := Assign("pool", as, []string{"a", "b", "c"}, nil)
	two := Assign("pool", as, []string{"c", "a"}, nil)
	four := Assign("pool", as, []string{"d", "b", "c", "a"}, nil)
	for _, x := range as {
		if three[x] != "b" && two[x] != three[x] {
			t.Fatalf("%s moved from %s to %s when b left", x, three[x], two[x])
		}
		if four[x] != three[x] && four[x] != "d" {
			t.Fatalf("%s moved from %s to %s when d joined", x, three[x], four[x])
		}
	}
	if c := counts(four)["d"]; c < 200 || c > 300 {
		t.Errorf("the joining node took %d of 1,000 addresses, want about a quarter", c)
	}
}

func TestPreferredAndEmpty(t *testing.T) {
	as := addrs(100)
	got := Assign("pool", as, []string{"a", "b", "c"}, []string{"c", "z"})
	if c := counts(got); c["c"] != 100 {
		t.Errorf("with c preferred: %v, want every address on c", c)
	}
	got = Assign("pool", as, []string{"a", "b"}, []string{"z"})
	if c := counts(got); c["a"]+c["b"] != 100 || c["a"] == 0 || c["b"] == 0 {
		t.Errorf("with no preferred candidate: %v, want the addresses spread over a and b", c)
	}
	if o := Owner("pool", as[0], nil, nil); o != "" {
		t.Errorf("no candidates: owner %q, want none", o)
	}
	// Another pool spreads the same addresses differently (per-pool keys).
	p1, p2 := Assign("p1", as, []string{"a", "b"}, nil), Assign("p2", as, []string{"a", "b"}, nil)
	if slices.Equal(ownersOf(p1, as), ownersOf(p2, as)) {
		t.Error("two pools with the same addresses got the same assignment")
	}
}

func ownersOf(m map[netip.Addr]string, as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = m[a]
	}
	return out
}
