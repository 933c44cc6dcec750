package ipam

import (
	"math/rand/v2"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// TestFreeSetModel checks the treap against a plain set under random operations.
func TestFreeSetModel(t *testing.T) {
	const lo, hi = 100, 400
	rng := rand.New(rand.NewPCG(1, 2))
	s := newFreeSet(u128{lo: lo}, u128{lo: hi})
	model := map[uint64]bool{}
	for i := uint64(lo); i <= hi; i++ {
		model[i] = true
	}
	for step := 0; step < 20000; step++ {
		x := lo + rng.Uint64N(hi-lo+1)
		switch rng.IntN(3) {
		case 0:
			if got, want := s.take(u128{lo: x}), model[x]; got != want {
				t.Fatalf("step %d: take(%d) = %v, want %v", step, x, got, want)
			}
			model[x] = false
		case 1:
			if got, want := s.put(u128{lo: x}), !model[x]; got != want {
				t.Fatalf("step %d: put(%d) = %v, want %v", step, x, got, want)
			}
			model[x] = true
		case 2:
			v, ok := s.takeLowest()
			var want uint64
			for want = lo; want <= hi && !model[want]; want++ {
			}
			if ok != (want <= hi) || (ok && v.lo != want) {
				t.Fatalf("step %d: takeLowest() = %d, %v; want %d", step, v.lo, ok, want)
			}
			if ok {
				model[want] = false
			}
		}
		if step%97 == 0 {
			checkIntervals(t, s, model, lo, hi)
		}
	}
	checkIntervals(t, s, model, lo, hi)
}

func checkIntervals(t *testing.T, s *freeSet, model map[uint64]bool, lo, hi uint64) {
	t.Helper()
	var want [][2]u128
	for i := lo; i <= hi; i++ {
		if !model[i] {
			continue
		}
		if n := len(want); n > 0 && want[n-1][1].lo == i-1 {
			want[n-1][1] = u128{lo: i}
			continue
		}
		want = append(want, [2]u128{{lo: i}, {lo: i}})
	}
	if diff := cmp.Diff(want, s.intervals(), cmp.AllowUnexported(u128{})); diff != "" {
		t.Fatalf("intervals (-want +got):\n%s", diff)
	}
}

// TestFreeSetHuge checks that 128-bit ranges work at their extremes without
// materializing anything.
func TestFreeSetHuge(t *testing.T) {
	max := u128{hi: ^uint64(0), lo: ^uint64(0)}
	s := newFreeSet(u128{}, max)
	if !s.take(max) || !s.take(u128{hi: 1}) || s.take(max) {
		t.Fatal("take at the top of the IPv6 space failed")
	}
	v, ok := s.takeLowest()
	if !ok || v != (u128{}) {
		t.Fatalf("takeLowest() = %v, %v", v, ok)
	}
	if !s.contains(u128{hi: 0, lo: ^uint64(0)}) || s.contains(u128{hi: 1}) {
		t.Fatal("contains around the 64-bit boundary is wrong")
	}
	for _, x := range []u128{max, {hi: 1}, {}} {
		if !s.put(x) {
			t.Fatalf("put(%v) = false", x)
		}
	}
	if got := s.intervals(); len(got) != 1 || got[0] != [2]u128{{}, max} {
		t.Fatalf("intervals after putting everything back = %v", got)
	}
}
