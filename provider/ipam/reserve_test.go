package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func newWith(t *testing.T, ps ...Pool) *Allocator {
	t.Helper()
	a := New()
	if err := a.SetPools(ps); err != nil {
		t.Fatalf("SetPools: %v", err)
	}
	return a
}

func mustReserve(t *testing.T, a *Allocator, pool string, want string) netip.Addr {
	t.Helper()
	x, err := a.Reserve(pool)
	if err != nil {
		t.Fatalf("Reserve(%s): %v", pool, err)
	}
	if x != mustAddr(want) {
		t.Fatalf("Reserve(%s) = %s, want %s", pool, x, want)
	}
	return x
}

func mustAllocate(t *testing.T, a *Allocator, r Request, want ...Assignment) {
	t.Helper()
	got, err := a.Allocate(r)
	if err != nil {
		t.Fatalf("Allocate(%s): %v", r.Service, err)
	}
	if diff := cmp.Diff(want, got, equateAddr); diff != "" {
		t.Fatalf("Allocate(%s) (-want +got):\n%s", r.Service, diff)
	}
}

func reservedAs(poolName, addr string) Assignment {
	a := as(poolName, addr)
	a.Reserved = true
	return a
}

func pendingAs(poolName, addr string) Assignment {
	a := reservedAs(poolName, addr)
	a.Pending = true
	return a
}

func TestReservationPendingHandOut(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0-10.0.0.3", isDefault))
	x := mustReserve(t, a, "p", "10.0.0.0")
	// The lowest address is being reserved: it is handed out, marked
	// Pending, rather than skipped for a higher one.
	mustAllocate(t, a, req("ns/a"), pendingAs("p", "10.0.0.0"))
	a.ReservationDone(x, true)
	if got := a.Lookup("ns/a"); !got[0].Reserved || got[0].Pending {
		t.Fatalf("after a confirmed reservation Lookup = %+v, want Reserved, not Pending", got)
	}

	// A failed reservation leaves its holder an ordinary address to claim.
	y := mustReserve(t, a, "p", "10.0.0.1")
	mustAllocate(t, a, req("ns/b", addrs("10.0.0.1")), pendingAs("p", "10.0.0.1"))
	a.ReservationDone(y, false)
	if got := a.Lookup("ns/b"); got[0].Reserved || got[0].Pending {
		t.Fatalf("after a failed reservation Lookup = %+v, want neither Reserved nor Pending", got)
	}
	a.Release("ns/b")
	mustAllocate(t, a, req("ns/c"), as("p", "10.0.0.1"))

	// Released while pending: back to the pending reservations; its
	// outcome still lands.
	z := mustReserve(t, a, "p", "10.0.0.2")
	mustAllocate(t, a, req("ns/d"), pendingAs("p", "10.0.0.2"))
	a.Release("ns/d")
	if n := a.Reservations("p"); n != 1 {
		t.Fatalf("Reservations after releasing a pending hand-out = %d, want 1", n)
	}
	a.ReservationDone(z, false)
	mustAllocate(t, a, req("ns/e"), as("p", "10.0.0.2"))
}

func TestReservationLifecycle(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0-10.0.0.3", isDefault))
	mustAllocate(t, a, req("ns/a"), as("p", "10.0.0.0"))
	x := mustReserve(t, a, "p", "10.0.0.1")

	a.ReservationDone(x, true)
	mustAllocate(t, a, req("ns/b"), reservedAs("p", "10.0.0.1"))
	if got := a.Lookup("ns/b"); !got[0].Reserved {
		t.Fatalf("Lookup before Bound = %+v, want Reserved", got)
	}
	if n := a.Reservations("p"); n != 0 {
		t.Fatalf("Reservations after hand-out = %d, want 0", n)
	}

	// Released before Bound: back to the ready reservations.
	a.Release("ns/b")
	if n := a.Reservations("p"); n != 1 {
		t.Fatalf("Reservations after releasing an unbound address = %d, want 1", n)
	}
	mustAllocate(t, a, req("ns/c"), reservedAs("p", "10.0.0.1"))

	// Bound: an ordinary address, freed to the pool.
	a.Bound(x)
	if got := a.Lookup("ns/c"); got[0].Reserved {
		t.Fatalf("Lookup after Bound = %+v, want not Reserved", got)
	}
	a.Release("ns/c")
	if n := a.Reservations("p"); n != 0 {
		t.Fatalf("Reservations after releasing a bound address = %d, want 0", n)
	}
	mustAllocate(t, a, req("ns/d"), as("p", "10.0.0.1"))
}

func TestReservationExplicitAndUnreserve(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0/30", isDefault))
	x := mustReserve(t, a, "p", "10.0.0.0")
	a.ReservationDone(x, true)
	// An explicit request for a ready reservation gets it.
	mustAllocate(t, a, req("ns/a", addrs("10.0.0.0")), reservedAs("p", "10.0.0.0"))
	y := mustReserve(t, a, "p", "10.0.0.1")
	a.Unreserve(y)
	if n := a.Reservations("p"); n != 0 {
		t.Fatalf("Reservations after Unreserve = %d, want 0", n)
	}
	mustAllocate(t, a, req("ns/b"), as("p", "10.0.0.1"))
	// Unreserve of a handed-out address is a no-op.
	a.Unreserve(x)
	if got := a.Owners(x); !slices.Equal(got, []ServiceKey{"ns/a"}) {
		t.Fatalf("Owners(%s) after Unreserve of a held address = %v", x, got)
	}
}

func TestReservationRespectsPoolOrder(t *testing.T) {
	a := newWith(t,
		pool("first", "10.0.0.0/30", ns("ns"), prio(1)),
		pool("second", "10.0.1.0/30", ns("ns"), prio(2)),
	)
	y := mustReserve(t, a, "second", "10.0.1.0")
	a.ReservationDone(y, true)
	// The preferred pool still has free addresses: its lowest wins over
	// the other pool's reservation.
	mustAllocate(t, a, req("ns/a"), as("first", "10.0.0.0"))
	x := mustReserve(t, a, "first", "10.0.0.1")
	a.ReservationDone(x, true)
	mustAllocate(t, a, req("ns/b"), reservedAs("first", "10.0.0.1"))
	// Named pools use their reservations too.
	mustAllocate(t, a, req("ns/c", pools("second")), reservedAs("second", "10.0.1.0"))
}

func TestReservationKeepsLowestFirst(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0/29", isDefault))
	mustAllocate(t, a, req("ns/a"), as("p", "10.0.0.0"))
	x := mustReserve(t, a, "p", "10.0.0.1")
	a.ReservationDone(x, true)
	// A released address below the reservation goes first.
	a.Release("ns/a")
	mustAllocate(t, a, req("ns/b"), as("p", "10.0.0.0"))
	mustAllocate(t, a, req("ns/c"), reservedAs("p", "10.0.0.1"))
	mustAllocate(t, a, req("ns/d"), as("p", "10.0.0.2"))
}

func TestReservationExhaustion(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0-10.0.0.1", isDefault))
	x := mustReserve(t, a, "p", "10.0.0.0")
	mustReserve(t, a, "p", "10.0.0.1")
	if _, err := a.Reserve("p"); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Reserve on a fully reserved pool: err = %v, want ErrPoolExhausted", err)
	}
	a.ReservationDone(x, true)
	mustAllocate(t, a, req("ns/a"), reservedAs("p", "10.0.0.0"))
	// The last address is only pending: it is handed out as such.
	mustAllocate(t, a, req("ns/b"), pendingAs("p", "10.0.0.1"))
	if _, err := a.Allocate(req("ns/c")); !errors.Is(err, ErrPoolExhausted) {
		t.Fatalf("Allocate on a pool with nothing left: err = %v, want ErrPoolExhausted", err)
	}
	if _, err := a.Reserve("nope"); !errors.Is(err, ErrPoolNotFound) {
		t.Fatalf("Reserve(nope): err = %v, want ErrPoolNotFound", err)
	}
}

func TestStaleReservations(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0/30", isDefault), pool("q", "10.0.1.0/30"), pool("r", "10.0.2.0/30"))
	x := mustReserve(t, a, "p", "10.0.0.0")
	y := mustReserve(t, a, "q", "10.0.1.0")
	z := mustReserve(t, a, "r", "10.0.2.0")
	if got := a.StaleReservations(); len(got) != 0 {
		t.Fatalf("StaleReservations with unchanged pools = %v", got)
	}
	// p shrinks (and no longer contains x), q is disabled, r is unchanged.
	if err := a.SetPools([]Pool{pool("p", "10.0.0.2/31", isDefault), pool("q", "10.0.1.0/30", disabled), pool("r", "10.0.2.0/30")}); err != nil {
		t.Fatal(err)
	}
	if got, want := a.StaleReservations(), []netip.Addr{x, y}; !slices.Equal(got, want) {
		t.Fatalf("StaleReservations = %v, want %v", got, want)
	}
	if _, err := a.Reserve("q"); !errors.Is(err, ErrPoolDisabled) {
		t.Fatalf("Reserve on a disabled pool: err = %v", err)
	}
	for _, s := range a.StaleReservations() {
		a.Unreserve(s)
	}
	if got := a.StaleReservations(); len(got) != 0 {
		t.Fatalf("StaleReservations after Unreserve = %v", got)
	}
	// A resized pool's free set leaves the remaining reservation out.
	if err := a.SetPools([]Pool{pool("r", "10.0.2.0/29", isDefault)}); err != nil {
		t.Fatal(err)
	}
	a.ReservationDone(z, true)
	mustAllocate(t, a, req("ns/a"), reservedAs("r", "10.0.2.0"))
	mustAllocate(t, a, req("ns/b"), as("r", "10.0.2.1"))
}

func TestAssignOverridesReservation(t *testing.T) {
	a := newWith(t, pool("p", "10.0.0.0/30", isDefault))
	x := mustReserve(t, a, "p", "10.0.0.0")
	a.ReservationDone(x, true)
	// The outside record says ns/a holds x: the record wins.
	got, err := a.Assign("ns/a", []netip.Addr{x}, Sharing{}, nil)
	if err != nil {
		t.Fatalf("Assign: %v", err)
	}
	if diff := cmp.Diff([]Assignment{as("p", "10.0.0.0")}, got, equateAddr); diff != "" {
		t.Fatalf("Assign (-want +got):\n%s", diff)
	}
	if n := a.Reservations("p"); n != 0 {
		t.Fatalf("Reservations after Assign = %d, want 0", n)
	}
	a.Release("ns/a")
	mustAllocate(t, a, req("ns/b"), as("p", "10.0.0.0"))
}
