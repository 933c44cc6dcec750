package ipam

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
)

var benchPools = []struct {
	name string
	rng  string
	fam  Family
}{
	{"IPv4_16", "10.0.0.0/16", IPv4},
	{"IPv6_112", "fd00::/112", IPv6},
}

var benchFills = []int{0, 50, 90, 99}

// filledAllocator returns an allocator whose only pool is fill percent used,
// with the used addresses scattered at random so the free set is fragmented
// (the worst case for an interval structure), and the addresses left free.
func filledAllocator(b *testing.B, rng string, fill int) (*Allocator, []netip.Addr) {
	b.Helper()
	a := New()
	r, err := ParseRange(rng)
	if err != nil {
		b.Fatal(err)
	}
	if err := a.SetPools([]Pool{{Name: "bench", Ranges: RangeSet{r}, Default: true}}); err != nil {
		b.Fatal(err)
	}
	size := int(r.Size())
	perm := rand.New(rand.NewPCG(42, uint64(fill))).Perm(size)
	used := size * fill / 100
	base := u128From(r.First)
	at := func(i int) netip.Addr {
		return u128{hi: base.hi, lo: base.lo + uint64(i)}.addr(r.Family() == IPv4)
	}
	for n, i := range perm[:used] {
		if _, err := a.Assign(ServiceKey(fmt.Sprintf("fill/%d", n)), []netip.Addr{at(i)}, Sharing{}, nil); err != nil {
			b.Fatal(err)
		}
	}
	free := make([]netip.Addr, 0, size-used)
	for _, i := range perm[used:] {
		free = append(free, at(i))
	}
	return a, free
}

func BenchmarkAllocate(b *testing.B) {
	for _, p := range benchPools {
		for _, fill := range benchFills {
			b.Run(fmt.Sprintf("%s/fill=%d%%", p.name, fill), func(b *testing.B) {
				a, _ := filledAllocator(b, p.rng, fill)
				r := Request{Service: "bench/svc", Namespace: "bench", Families: []Family{p.fam}}
				b.ReportAllocs()
				for b.Loop() {
					if _, err := a.Allocate(r); err != nil {
						b.Fatal(err)
					}
					a.Release(r.Service)
				}
			})
		}
	}
}

func BenchmarkAssign(b *testing.B) {
	for _, p := range benchPools {
		for _, fill := range benchFills {
			b.Run(fmt.Sprintf("%s/fill=%d%%", p.name, fill), func(b *testing.B) {
				a, free := filledAllocator(b, p.rng, fill)
				addrs := make([][]netip.Addr, len(free))
				for i, x := range free {
					addrs[i] = []netip.Addr{x}
				}
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := a.Assign("bench/svc", addrs[i%len(addrs)], Sharing{}, nil); err != nil {
						b.Fatal(err)
					}
					a.Release("bench/svc")
					i++
				}
			})
		}
	}
}
