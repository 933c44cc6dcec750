package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Reservations let a caller take an address out of a pool ahead of demand,
// record it somewhere slow (the provider creates its IPClaim at the API
// server), and hand it out later without that round trip on the allocation
// path. A reservation is pending from Reserve until ReservationDone.
// Allocate hands out a pool's lowest reservation when no free address of the
// pool is lower, so the order of addresses is the same with or without
// reservations, and marks such assignments Reserved until Bound is called
// for them; a pending one is also marked Pending, and its caller waits for
// the outcome (ReservationDone) before relying on it. An address whose last
// owner leaves before Bound returns to the ready reservations, not to the
// free set: whatever records it elsewhere still records it as reserved.

type reservation struct {
	pool  string
	ready bool
}

// Reserve sets aside the lowest free address of pool and returns it as a
// pending reservation. It fails when the pool does not exist, is disabled or
// has no free address.
func (a *Allocator) Reserve(pool string) (netip.Addr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pools[pool]
	switch {
	case ps == nil:
		return netip.Addr{}, fmt.Errorf("%w: pool %q does not exist", ErrPoolNotFound, pool)
	case ps.Disabled:
		return netip.Addr{}, fmt.Errorf("%w: pool %q is disabled", ErrPoolDisabled, pool)
	}
	v, ok := ps.free.takeLowest()
	if !ok {
		return netip.Addr{}, fmt.Errorf("%w: no free address in %s (%s)", ErrPoolExhausted, ps.Name, ps.Ranges)
	}
	x := v.addr(ps.Ranges.Family() == IPv4)
	a.reserved[x] = &reservation{pool: ps.Name}
	return x, nil
}

// ReservationDone records the outcome of a pending reservation, whether or
// not Allocate handed it out meanwhile: confirmed (ok), it is ready or its
// holder keeps it as Reserved; failed, it returns to the free set or its
// holder keeps it as an ordinary address that still needs recording.
func (a *Allocator) ReservationDone(x netip.Addr, ok bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r := a.reserved[x]; r != nil {
		if ok {
			r.ready = true
			return
		}
		delete(a.reserved, x)
		if ps := a.poolFor(x); ps != nil {
			ps.free.put(u128From(x))
		}
		return
	}
	if st := a.held[x]; st != nil && st.pending {
		st.pending = false
		st.reserved = ok
	}
}

// Unreserve returns a reservation that was not handed out to the free set
// of the pool containing it (if any). It does nothing for an address that is
// not reserved, including one Allocate has handed out.
func (a *Allocator) Unreserve(x netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.reserved[x] == nil {
		return
	}
	delete(a.reserved, x)
	if ps := a.poolFor(x); ps != nil {
		ps.free.put(u128From(x))
	}
}

// Reservations counts the reservations (pending and ready) in pool.
func (a *Allocator) Reservations(pool string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	n := 0
	for _, r := range a.reserved {
		if r.pool == pool {
			n++
		}
	}
	return n
}

// StaleReservations lists reservations no pool should hand out any more:
// their pool is gone, disabled, or no longer contains them. The caller
// removes whatever records them and then calls Unreserve.
func (a *Allocator) StaleReservations() []netip.Addr {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []netip.Addr
	for x, r := range a.reserved {
		if ps := a.poolFor(x); ps == nil || ps.Disabled || ps.Name != r.pool {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Bound says the outside record of a handed-out reservation now names its
// holder: x is an ordinary held address from here on, and freeing it returns
// it to the free set.
func (a *Allocator) Bound(x netip.Addr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.held[x]; st != nil {
		st.reserved = false
	}
}

// takeReserved hands the lowest reservation of ps to o, unless a free
// address of ps is lower: a pool hands out its lowest available address
// either way, and reservations only make that faster.
func (a *Allocator) takeReserved(o owner, ps *poolState) (netip.Addr, bool) {
	var best netip.Addr
	for x, r := range a.reserved {
		if r.pool == ps.Name && (!best.IsValid() || x.Less(best)) {
			best = x
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, false
	}
	if v, ok := ps.free.lowest(); ok && v.less(u128From(best)) {
		return netip.Addr{}, false
	}
	pending := !a.reserved[best].ready
	delete(a.reserved, best)
	a.newAddr(best, ps.Name, o)
	a.held[best].reserved = true
	a.held[best].pending = pending
	return best, true
}
