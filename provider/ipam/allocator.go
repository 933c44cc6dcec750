package ipam

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// Pool is one Eip, reduced to what allocation needs.
type Pool struct {
	Name              string
	Ranges            RangeSet          // built by NewRangeSet: sorted, disjoint, one family
	Disabled          bool              // stops new allocations; existing ones stay
	Priority          int               // lower value = preferred (OpenELB semantics)
	Default           bool              // eip.openelb.kubesphere.io/is-default-eip: "true"
	Namespaces        []string          // namespaces bound to this pool
	NamespaceSelector map[string]string // namespace labels bound to this pool (all must match); empty = none
	// AllowAnyNamespace lets Services of namespaces not bound to the pool
	// name it or request its addresses; automatic allocation still serves
	// bound namespaces only.
	AllowAnyNamespace bool
	// ServiceSelector, when set, limits the pool to Services whose labels
	// it matches, whichever way they ask: automatically, by pool name, by
	// address or by sharing an address.
	ServiceSelector Selector
}

// Selector matches Service labels (an Eip's spec.serviceSelector).
type Selector interface {
	Matches(labels map[string]string) bool
	String() string
}

// Sharing says with whom a Service may share an address.
//
// Services share an address only when they use the same non-empty Key, and
// by default only inside one namespace: a tenant must not be able to join
// (and then block ports of) another namespace's address by guessing its
// key. Services of two namespaces share when each lists the other's
// namespace (or "*") in Namespaces. Services with externalTrafficPolicy
// Local share only with Local Services that have the same endpoints, since
// the address is announced with the union of the sharers' next hops and a
// flow landing on a node without a local endpoint of its Service is dropped.
type Sharing struct {
	Key        string   // openelb.kubesphere.io/shared-ip; "" = exclusive
	Namespaces []string // other namespaces this Service shares with; "*" = any
	Local      bool     // externalTrafficPolicy: Local
	// Endpoints identifies the Service's endpoints for Local sharing: equal
	// values select the same pods. "" means unknown (no selector), which
	// never shares with Local.
	Endpoints string
}

// Namespace returns the namespace part of a ServiceKey.
func (k ServiceKey) Namespace() string {
	ns, _, _ := strings.Cut(string(k), "/")
	return ns
}

func (s Sharing) allows(ns string) bool {
	return slices.Contains(s.Namespaces, ns) || slices.Contains(s.Namespaces, "*")
}

// sameTenancy tells whether two Services may share regardless of keys and
// ports: same namespace, or both opted in to each other's.
func sameTenancy(a ServiceKey, as Sharing, b ServiceKey, bs Sharing) bool {
	na, nb := a.Namespace(), b.Namespace()
	return na == nb || (as.allows(nb) && bs.allows(na))
}

// CheckSharing tells why Service a (with sharing settings as) may not share
// an address with Service b, or nil; keys and ports are not compared. The
// provider uses it against holders recorded at the API server that the
// allocator may not know yet.
func CheckSharing(a ServiceKey, as Sharing, b ServiceKey, bs Sharing) error {
	if !sameTenancy(a, as, b, bs) {
		return fmt.Errorf("%w: Service %s and Service %s are in different namespaces; to share an address both must list the other's namespace in openelb.kubesphere.io/shared-ip-namespaces",
			ErrShareNamespace, a, b)
	}
	if as.Local || bs.Local {
		switch {
		case as.Local != bs.Local:
			return fmt.Errorf("%w: Service %s (externalTrafficPolicy %s) and Service %s (%s) cannot share an address: the Local one's flows would reach nodes without its endpoints",
				ErrShareTrafficPolicy, a, policyName(as.Local), b, policyName(bs.Local))
		case as.Endpoints == "" || as.Endpoints != bs.Endpoints:
			return fmt.Errorf("%w: Services %s and %s have externalTrafficPolicy Local and may select different pods; Local Services share an address only with the same selector in the same namespace",
				ErrShareTrafficPolicy, a, b)
		}
	}
	return nil
}

func policyName(local bool) string {
	if local {
		return "Local"
	}
	return "Cluster"
}

// HeldFor is the key under which an address reserved for svc by an admin
// (an IPClaim with spec.reservedFor) is held until svc asks for it: held,
// it is never handed out automatically, and requesting it explicitly is
// refused for every other Service; svc's explicit request takes it over in
// place. Keys of Services contain a "/" after a namespace, which cannot
// start with "@", so this never names a Service.
func HeldFor(svc ServiceKey) ServiceKey { return "@held-for:" + svc }

// ServiceKey identifies a Service as "namespace/name".
type ServiceKey string

// Port is one Service port; only protocol and number matter for sharing.
type Port struct {
	Protocol string
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Request describes what a Service wants from the allocator.
type Request struct {
	Service         ServiceKey
	Namespace       string
	NamespaceLabels map[string]string
	ServiceLabels   map[string]string // for pools with a ServiceSelector
	Pools           []string          // explicit pool names (annotation eip.openelb.kubesphere.io/v1alpha2, may name one pool per family); empty = automatic
	Addresses       []netip.Addr      // explicit addresses (spec.loadBalancerIP / annotation); empty = any
	Families        []Family          // wanted families in order (from spec.ipFamilies); len 1 or 2
	RequireAll      bool              // RequireDualStack: every family must be satisfied, else error and nothing kept
	Sharing         Sharing
	Ports           []Port
}

// Assignment is one address held by a Service and the pool it came from.
type Assignment struct {
	Pool string
	Addr netip.Addr
	// Reserved marks an address handed out from a reservation that is not
	// Bound yet (see Reserve).
	Reserved bool
	// Pending marks a Reserved address whose reservation was still pending:
	// the caller waits for ReservationDone before relying on it.
	Pending bool
}

// PoolStats describes the usage of one pool.
type PoolStats struct {
	Size   uint64                      // addresses in the range, saturating at math.MaxUint64
	Used   uint64                      // addresses held, however many Services share each
	Owners map[netip.Addr][]ServiceKey // Services holding each used address, sorted
	// Outside lists addresses still held under this pool's name but outside
	// its range (the pool shrank, or moved, under them), sorted.
	Outside []netip.Addr
}

// Allocator assigns addresses from pools to Services. It is safe for
// concurrent use; one mutex suffices because every operation is O(log n).
type Allocator struct {
	mu sync.Mutex

	pools      map[string]*poolState
	byName     []*poolState   // default pools are tried in name order
	byPriority []*poolState   // bound pools are tried by priority, then name
	byFirst    [2][]poolRange // every pool's ranges per family (0 IPv4, 1 IPv6), sorted by first address, for finding the pool of an address

	held  map[netip.Addr]*addrState
	bySvc map[ServiceKey][]netip.Addr
	byKey map[string]map[netip.Addr]struct{} // sharing key -> addresses whose owners use it

	reserved map[netip.Addr]*reservation // set aside from their pool's free set (see Reserve)
}

type poolState struct {
	Pool
	free *freeSet
}

// poolRange is one range of a pool in the byFirst index.
type poolRange struct {
	r  Range
	ps *poolState
}

type addrState struct {
	addr   netip.Addr
	pool   string
	key    string  // sharing key common to all owners; "" means exclusive
	owners []owner // sorted by Service
	// reserved: handed out from a reservation and not Bound yet; it goes
	// back to the reservations, not to the free set, when released.
	// pending: that reservation was not confirmed yet (ReservationDone).
	reserved, pending bool
}

type owner struct {
	svc   ServiceKey
	sh    Sharing
	ports []Port
	// recorded: added by Assign from what the API server records; the
	// namespace and traffic-policy rules (CheckSharing) are not applied when
	// it joins, so re-adoption never takes an address from a Service that
	// uses it. They are applied whenever a Service allocates (Allocate),
	// against every holder, so a sharing that breaks them is reported on
	// the next sync of that Service, which keeps its address meanwhile.
	recorded bool
}

func (o owner) key() string { return o.sh.Key }

// New returns an Allocator without pools.
func New() *Allocator {
	return &Allocator{
		pools:    map[string]*poolState{},
		held:     map[netip.Addr]*addrState{},
		bySvc:    map[ServiceKey][]netip.Addr{},
		byKey:    map[string]map[netip.Addr]struct{}{},
		reserved: map[netip.Addr]*reservation{},
	}
}

// SetPools replaces the pool set. Pools without a name, with a duplicate name
// (the first occurrence wins), with an invalid range, or overlapping a pool
// whose name sorts earlier are rejected; the rest are applied, and the
// returned error joins one error per rejected pool.
//
// Existing assignments are never dropped, even when their pool disappeared
// or shrank, because a Service's address must never change under it: such
// addresses stay held, keep blocking reuse, and keep their last pool name
// until some pool contains them again.
func (a *Allocator) SetPools(pools []Pool) error {
	sorted := slices.Clone(pools)
	slices.SortStableFunc(sorted, func(x, y Pool) int { return strings.Compare(x.Name, y.Name) })

	var errs []error
	var accepted []Pool
	seen := map[string]bool{}
	for _, p := range sorted {
		switch {
		case p.Name == "":
			errs = append(errs, fmt.Errorf("%w: pool with range %s has no name", ErrInvalidPool, p.Ranges))
			continue
		case seen[p.Name]:
			errs = append(errs, fmt.Errorf("%w: duplicate pool name %q (range %s ignored)", ErrInvalidPool, p.Name, p.Ranges))
			continue
		}
		seen[p.Name] = true
		if err := p.Ranges.validate(); err != nil {
			errs = append(errs, fmt.Errorf("pool %q: %w", p.Name, err))
			continue
		}
		if err := CheckUsableRanges(p.Ranges); err != nil {
			errs = append(errs, fmt.Errorf("pool %q: %w", p.Name, err))
			continue
		}
		if i := slices.IndexFunc(accepted, func(q Pool) bool { return q.Ranges.Overlaps(p.Ranges) }); i >= 0 {
			q := accepted[i]
			errs = append(errs, fmt.Errorf("%w: pool %q (%s) overlaps pool %q (%s); %q is ignored",
				ErrPoolOverlap, p.Name, p.Ranges, q.Name, q.Ranges, p.Name))
			continue
		}
		p.Ranges = slices.Clone(p.Ranges)
		p.Namespaces = slices.Clone(p.Namespaces)
		p.NamespaceSelector = maps.Clone(p.NamespaceSelector)
		accepted = append(accepted, p)
	}

	a.mu.Lock()
	defer a.mu.Unlock()

	next := make(map[string]*poolState, len(accepted))
	byName := make([]*poolState, 0, len(accepted))
	for _, p := range accepted {
		ps := &poolState{Pool: p}
		if old := a.pools[p.Name]; old != nil && old.Ranges.Equal(p.Ranges) {
			ps.free = old.free
		} else {
			ps.free = a.buildFree(p.Ranges)
		}
		next[p.Name] = ps
		byName = append(byName, ps)
	}
	a.pools = next
	a.byName = byName
	a.byPriority = slices.Clone(byName)
	slices.SortStableFunc(a.byPriority, func(x, y *poolState) int { return cmp.Compare(x.Priority, y.Priority) })
	a.byFirst = [2][]poolRange{}
	for _, ps := range byName {
		i := familyIndex(ps.Ranges.Family())
		for _, r := range ps.Ranges {
			a.byFirst[i] = append(a.byFirst[i], poolRange{r, ps})
		}
	}
	for i := range a.byFirst {
		slices.SortFunc(a.byFirst[i], func(x, y poolRange) int { return x.r.First.Compare(y.r.First) })
	}
	for addr, st := range a.held {
		if ps := a.poolFor(addr); ps != nil {
			st.pool = ps.Name
		}
	}
	return errors.Join(errs...)
}

// buildFree costs O(held) so it is only used for new or resized pools. The
// ranges of a RangeSet are disjoint and not adjacent, as the free set's
// intervals must be.
func (a *Allocator) buildFree(rs RangeSet) *freeSet {
	fs := newFreeSet(u128From(rs[0].First), u128From(rs[0].Last))
	for _, r := range rs[1:] {
		fs.insert(fs.node(u128From(r.First), u128From(r.Last)))
	}
	for addr := range a.held {
		if rs.Contains(addr) {
			fs.take(u128From(addr))
		}
	}
	for addr := range a.reserved {
		if rs.Contains(addr) {
			fs.take(u128From(addr))
		}
	}
	return fs
}

func familyIndex(f Family) int {
	if f == IPv6 {
		return 1
	}
	return 0
}

// poolFor returns the pool containing addr; pools never overlap, so there is at most one.
func (a *Allocator) poolFor(addr netip.Addr) *poolState {
	list := a.byFirst[familyIndex(FamilyOf(addr))]
	i, found := slices.BinarySearchFunc(list, addr, func(pr poolRange, x netip.Addr) int { return pr.r.First.Compare(x) })
	if !found {
		i-- // the candidate is the last range starting before addr
	}
	if i < 0 || i >= len(list) || !list[i].r.Contains(addr) {
		return nil
	}
	return list[i].ps
}

// Assign records that svc holds addrs, typically re-adopting addresses from
// Service status at startup. Addresses outside every pool are accepted with
// an empty pool name and disabled pools do not matter, because refusing would
// change an address a Service already uses. An address held by another
// Service is accepted only when both use the same non-empty sharing key and
// their ports do not clash (ErrAddressTaken / ErrPortClash otherwise). Either
// all addresses are recorded or none. Addresses svc already holds are kept
// (their sharing key and ports are updated) and other addresses svc holds are
// left alone. It returns the assignments for addrs, in order.
func (a *Allocator) Assign(svc ServiceKey, addrs []netip.Addr, sh Sharing, ports []Port) ([]Assignment, error) {
	if svc == "" {
		return nil, fmt.Errorf("%w: empty Service key", ErrInvalidRequest)
	}
	norm := make([]netip.Addr, 0, len(addrs))
	for _, x := range addrs {
		n, err := normalizeAddr(x)
		if err != nil {
			return nil, fmt.Errorf("%w: Service %s: %w", ErrInvalidRequest, svc, err)
		}
		if !slices.Contains(norm, n) {
			norm = append(norm, n)
		}
	}
	o := owner{svc: svc, sh: sh, ports: normalizePorts(ports), recorded: true}

	a.mu.Lock()
	defer a.mu.Unlock()

	var added, kept []netip.Addr
	rollback := func() {
		for _, x := range added {
			a.dropOwner(x, svc)
		}
	}
	for _, x := range norm {
		if st := a.held[x]; st != nil {
			if err := st.canShare(o); err != nil {
				rollback()
				return nil, err
			}
			if st.owner(svc) >= 0 {
				kept = append(kept, x)
				continue
			}
			a.addOwner(st, o)
			added = append(added, x)
			continue
		}
		name := ""
		if r := a.reserved[x]; r != nil {
			// The outside record names a holder for an address this
			// allocator reserved: the record wins.
			delete(a.reserved, x)
			if ps := a.poolFor(x); ps != nil {
				name = ps.Name
			}
		} else if ps := a.poolFor(x); ps != nil {
			if !ps.free.take(u128From(x)) {
				rollback()
				return nil, fmt.Errorf("ipam: internal error: %s is neither held nor free in pool %q", x, ps.Name)
			}
			name = ps.Name
		}
		a.newAddr(x, name, o)
		added = append(added, x)
	}
	for _, x := range kept {
		a.updateOwner(a.held[x], o)
	}
	a.bySvc[svc] = append(a.bySvc[svc], added...)
	return a.assignments(norm), nil
}

// Allocate gives the Service one address per requested family, in
// req.Families order, and makes the returned assignments exactly what the
// Service holds afterwards.
//
// Idempotence: for each family, an address the Service already holds is
// kept when it still satisfies the request: it equals the explicit address
// of that family if one is given, otherwise it comes from one of the named
// pools if pools are given, otherwise any held address of the family is kept,
// even if namespace bindings, priorities or Disabled changed since, because
// an address must not change merely because the pool configuration did. Only
// when the request explicitly names a different address or different pools is
// a new address allocated; the old one is released only after the whole
// request succeeded, so a failed change leaves the Service's holdings intact
// and returns the error (even with PreferDualStack). Held addresses of
// families no longer requested, and extra addresses of a family (from
// Assign), are released. Sharing key and ports of kept addresses are updated;
// if that makes a shared address clash, the error is returned and nothing
// changes.
//
// Dual-stack: with RequireAll, any failing family fails the whole request and
// nothing new is kept. Without it (PreferDualStack), a family that cannot be
// served (and for which the Service held no address) is left out, whatever
// its place in req.Families, and the assignments of the other family are
// returned with a nil error; callers detect this by comparing families. When
// no family can be served, the first family's error is returned.
func (a *Allocator) Allocate(req Request) ([]Assignment, error) {
	explicit, err := checkRequest(&req)
	if err != nil {
		return nil, err
	}
	svc := req.Service
	o := owner{svc: svc, sh: req.Sharing, ports: normalizePorts(req.Ports)}

	a.mu.Lock()
	defer a.mu.Unlock()

	held := a.bySvc[svc]
	var result, added, kept []netip.Addr
	var firstErr error
	rollback := func() {
		for _, x := range added {
			a.dropOwner(x, svc)
		}
	}
	for _, fam := range req.Families {
		want, hasExplicit := explicit[fam]
		if x, ok := a.heldSatisfying(held, fam, want, hasExplicit, req.Pools); ok {
			if err := a.held[x].canShare(o); err != nil {
				rollback()
				return nil, fmt.Errorf("Service %s keeps %s: %w", svc, x, err)
			}
			kept = append(kept, x)
			result = append(result, x)
			continue
		}
		hadHeld := slices.ContainsFunc(held, func(x netip.Addr) bool { return FamilyOf(x) == fam })
		var x netip.Addr
		var err error
		switch {
		case hasExplicit:
			x, err = a.takeExplicit(req, o, want)
		case len(req.Pools) > 0:
			x, err = a.takeNamed(req, o, fam)
		default:
			x, err = a.takeAuto(req, o, fam)
		}
		if err != nil {
			err = fmt.Errorf("Service %s, %s: %w", svc, fam, err)
			// A family the named pools do not have at all is dropped even
			// if held: the request changed to pools without it.
			mismatch := errors.Is(err, ErrFamilyMismatch) && !hasExplicit
			if !req.RequireAll && len(req.Families) > 1 && (!hadHeld || mismatch) {
				if firstErr == nil {
					firstErr = err
				}
				continue
			}
			rollback()
			return nil, err
		}
		added = append(added, x)
		result = append(result, x)
	}
	if len(result) == 0 {
		return nil, firstErr
	}
	for _, x := range kept {
		a.updateOwner(a.held[x], o)
	}
	for _, x := range held {
		if !slices.Contains(result, x) {
			a.dropOwner(x, svc)
		}
	}
	a.bySvc[svc] = result
	return a.assignments(result), nil
}

// checkRequest normalizes explicit addresses and indexes them by family.
func checkRequest(req *Request) (map[Family]netip.Addr, error) {
	if req.Service == "" {
		return nil, fmt.Errorf("%w: empty Service key", ErrInvalidRequest)
	}
	if len(req.Families) == 0 || len(req.Families) > 2 {
		return nil, fmt.Errorf("%w: Service %s asks for %d IP families, want 1 or 2", ErrInvalidRequest, req.Service, len(req.Families))
	}
	for i, f := range req.Families {
		if f != IPv4 && f != IPv6 {
			return nil, fmt.Errorf("%w: Service %s asks for unknown %s", ErrInvalidRequest, req.Service, f)
		}
		if i > 0 && req.Families[0] == f {
			return nil, fmt.Errorf("%w: Service %s asks for %s twice", ErrInvalidRequest, req.Service, f)
		}
	}
	explicit := map[Family]netip.Addr{}
	for _, x := range req.Addresses {
		n, err := normalizeAddr(x)
		if err != nil {
			return nil, fmt.Errorf("%w: Service %s: %w", ErrInvalidRequest, req.Service, err)
		}
		f := FamilyOf(n)
		if !slices.Contains(req.Families, f) {
			return nil, fmt.Errorf("%w: Service %s requests %s address %s but its IP families are %v",
				ErrFamilyMismatch, req.Service, f, n, req.Families)
		}
		if prev, ok := explicit[f]; ok && prev != n {
			return nil, fmt.Errorf("%w: Service %s requests two %s addresses (%s, %s); one per family is allowed",
				ErrFamilyMismatch, req.Service, f, prev, n)
		}
		explicit[f] = n
	}
	return explicit, nil
}

// normalizeAddr maps the spellings a caller may get from the API to the one
// pools use, so the same address is never recorded twice.
func normalizeAddr(x netip.Addr) (netip.Addr, error) {
	if !x.IsValid() {
		return netip.Addr{}, errors.New("invalid (zero) address")
	}
	return x.Unmap().WithZone(""), nil
}

func (a *Allocator) heldSatisfying(held []netip.Addr, fam Family, want netip.Addr, hasExplicit bool, pools []string) (netip.Addr, bool) {
	if hasExplicit {
		return want, slices.Contains(held, want)
	}
	for _, x := range held {
		if FamilyOf(x) != fam {
			continue
		}
		if len(pools) == 0 || slices.Contains(pools, a.held[x].pool) {
			return x, true
		}
	}
	return netip.Addr{}, false
}

func (a *Allocator) takeExplicit(req Request, o owner, x netip.Addr) (netip.Addr, error) {
	ps := a.poolFor(x)
	switch {
	case ps == nil:
		return netip.Addr{}, fmt.Errorf("%w: requested address %s is not in any pool", ErrNotInPool, x)
	case !ps.openTo(req.Namespace, req.NamespaceLabels):
		return netip.Addr{}, fmt.Errorf("%w: requested address %s is in pool %q, which is not bound to namespace %q", ErrNotBound, x, ps.Name, req.Namespace)
	case !ps.selects(req.ServiceLabels):
		return netip.Addr{}, fmt.Errorf("%w: requested address %s is in pool %q, which serves only Services with labels %s", ErrNotSelected, x, ps.Name, ps.ServiceSelector)
	case ps.Disabled:
		return netip.Addr{}, fmt.Errorf("%w: pool %q containing requested address %s is disabled", ErrPoolDisabled, ps.Name, x)
	case len(req.Pools) > 0 && !slices.Contains(req.Pools, ps.Name):
		return netip.Addr{}, fmt.Errorf("%w: requested address %s is in pool %q, not in the requested pools %q",
			ErrNotInPool, x, ps.Name, req.Pools)
	}
	if st := a.held[x]; st != nil {
		if len(st.owners) == 1 && st.owners[0].svc == HeldFor(o.svc) {
			// Held for this very Service (an admin's reservation): handed
			// over in place, never through the free set, so no other
			// request can take it in between.
			held := st.owners[0].svc
			a.bySvc[held] = slices.DeleteFunc(a.bySvc[held], func(y netip.Addr) bool { return y == x })
			if len(a.bySvc[held]) == 0 {
				delete(a.bySvc, held)
			}
			a.unindexKey(st)
			st.owners[0], st.key = o, o.key()
			a.indexKey(st)
			return x, nil
		}
		if err := st.canShare(o); err != nil {
			return netip.Addr{}, err
		}
		a.addOwner(st, o)
		return x, nil
	}
	if r := a.reserved[x]; r != nil {
		delete(a.reserved, x)
		a.newAddr(x, ps.Name, o)
		a.held[x].reserved = true
		a.held[x].pending = !r.ready
		return x, nil
	}
	if !ps.free.take(u128From(x)) {
		return netip.Addr{}, fmt.Errorf("ipam: internal error: %s is neither held nor free in pool %q", x, ps.Name)
	}
	a.newAddr(x, ps.Name, o)
	return x, nil
}

func (a *Allocator) takeNamed(req Request, o owner, fam Family) (netip.Addr, error) {
	var cands []*poolState
	var disabled []string
	for _, name := range req.Pools {
		ps := a.pools[name]
		switch {
		case ps == nil:
			return netip.Addr{}, fmt.Errorf("%w: requested pool %q does not exist", ErrPoolNotFound, name)
		case !ps.openTo(req.Namespace, req.NamespaceLabels):
			return netip.Addr{}, fmt.Errorf("%w: requested pool %q is not bound to namespace %q", ErrNotBound, name, req.Namespace)
		case !ps.selects(req.ServiceLabels):
			return netip.Addr{}, fmt.Errorf("%w: requested pool %q serves only Services with labels %s", ErrNotSelected, name, ps.ServiceSelector)
		case ps.Ranges.Family() != fam || slices.Contains(cands, ps):
		case ps.Disabled:
			disabled = append(disabled, name)
		default:
			cands = append(cands, ps)
		}
	}
	if len(cands) == 0 {
		if len(disabled) > 0 {
			return netip.Addr{}, fmt.Errorf("%w: requested pool %q is disabled", ErrPoolDisabled, strings.Join(disabled, ","))
		}
		return netip.Addr{}, fmt.Errorf("%w: none of the requested pools %q has %s addresses", ErrFamilyMismatch, req.Pools, fam)
	}
	return a.takeFrom(o, cands)
}

func (a *Allocator) takeAuto(req Request, o owner, fam Family) (netip.Addr, error) {
	var cands []*poolState
	var disabled []string
	consider := func(ps *poolState) {
		if ps.Ranges.Family() != fam || slices.Contains(cands, ps) || slices.Contains(disabled, ps.Name) {
			return
		}
		if ps.Disabled {
			disabled = append(disabled, ps.Name)
			return
		}
		cands = append(cands, ps)
	}
	var unselected []string
	for _, ps := range a.byPriority {
		if ps.boundTo(req.Namespace, req.NamespaceLabels) {
			if !ps.selects(req.ServiceLabels) {
				if !slices.Contains(unselected, ps.Name) {
					unselected = append(unselected, ps.Name)
				}
				continue
			}
			consider(ps)
		}
	}
	for _, ps := range a.byName {
		if ps.Default {
			if !ps.selects(req.ServiceLabels) {
				if !slices.Contains(unselected, ps.Name) {
					unselected = append(unselected, ps.Name)
				}
				continue
			}
			consider(ps)
		}
	}
	if len(cands) == 0 {
		skipped := ""
		if len(disabled) > 0 {
			skipped = fmt.Sprintf(" (disabled pools skipped: %s)", strings.Join(disabled, ", "))
		}
		if len(unselected) > 0 {
			skipped += fmt.Sprintf(" (pools whose serviceSelector the Service's labels do not match: %s)", strings.Join(unselected, ", "))
		}
		return netip.Addr{}, fmt.Errorf("%w: no enabled %s pool is bound to namespace %q and no default %s pool exists%s",
			ErrNoPool, fam, req.Namespace, fam, skipped)
	}
	return a.takeFrom(o, cands)
}

// openTo tells whether Services of namespace ns may use the pool by name
// or by address: a pool bound to no namespace, a default pool and a pool
// that allows any namespace are open to all; a bound pool only to its
// namespaces.
func (ps *poolState) openTo(ns string, labels map[string]string) bool {
	if ps.Default || ps.AllowAnyNamespace || (len(ps.Namespaces) == 0 && len(ps.NamespaceSelector) == 0) {
		return true
	}
	return ps.boundTo(ns, labels)
}

// selects tells whether the pool serves a Service with these labels.
func (ps *poolState) selects(labels map[string]string) bool {
	return ps.ServiceSelector == nil || ps.ServiceSelector.Matches(labels)
}

func (ps *poolState) boundTo(ns string, labels map[string]string) bool {
	if slices.Contains(ps.Namespaces, ns) {
		return true
	}
	if len(ps.NamespaceSelector) == 0 {
		return false
	}
	for k, v := range ps.NamespaceSelector {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

// takeFrom gets an address for o from the first candidate pool that can
// provide one: an address already shared under o's key if there is one, else
// the lowest free address.
func (a *Allocator) takeFrom(o owner, cands []*poolState) (netip.Addr, error) {
	if o.key() != "" {
		if x, err, ok := a.findShared(o, cands); ok {
			if err != nil {
				return netip.Addr{}, err
			}
			a.addOwner(a.held[x], o)
			return x, nil
		}
	}
	for _, ps := range cands {
		if x, ok := a.takeReserved(o, ps); ok {
			return x, nil
		}
		if v, ok := ps.free.takeLowest(); ok {
			x := v.addr(ps.Ranges.Family() == IPv4)
			a.newAddr(x, ps.Name, o)
			return x, nil
		}
	}
	names := make([]string, len(cands))
	for i, ps := range cands {
		names[i] = fmt.Sprintf("%s (%s)", ps.Name, ps.Ranges)
	}
	return netip.Addr{}, fmt.Errorf("%w: no free address in %s", ErrPoolExhausted, strings.Join(names, ", "))
}

// findShared picks the address under o's sharing key in the best-ranked
// candidate pool whose ports do not clash. ok is false when no candidate pool
// has an address under that key, so a fresh one should be allocated.
func (a *Allocator) findShared(o owner, cands []*poolState) (_ netip.Addr, _ error, ok bool) {
	type match struct {
		rank int
		addr netip.Addr
	}
	var matches []match
	for x := range a.byKey[o.key()] {
		ps := a.poolFor(x)
		if ps == nil || !a.held[x].tenancyAllows(o) {
			// Another tenant's address under the same key is not a match:
			// this Service gets its own.
			continue
		}
		if i := slices.Index(cands, ps); i >= 0 {
			matches = append(matches, match{i, x})
		}
	}
	if len(matches) == 0 {
		return netip.Addr{}, nil, false
	}
	slices.SortFunc(matches, func(p, q match) int {
		if c := cmp.Compare(p.rank, q.rank); c != 0 {
			return c
		}
		return p.addr.Compare(q.addr)
	})
	var first error
	for _, m := range matches {
		err := a.held[m.addr].canShare(o)
		if err == nil {
			return m.addr, nil, true
		}
		if first == nil {
			first = err
		}
	}
	return netip.Addr{}, first, true
}

// canShare reports why o may not hold st's address alongside its other owners.
func (st *addrState) canShare(o owner) error {
	for _, other := range st.owners {
		if other.svc == o.svc {
			continue
		}
		switch {
		case o.key() == "" && other.key() == "":
			return fmt.Errorf("%w: %s is held by Service %s", ErrAddressTaken, st.addr, other.svc)
		case o.key() == "" || other.key() != o.key():
			if other.svc.Namespace() != o.svc.Namespace() {
				return fmt.Errorf("%w: %s is held by a Service of another namespace", ErrAddressTaken, st.addr)
			}
			return fmt.Errorf("%w: %s is held by Service %s with sharing key %q, requested sharing key %q",
				ErrAddressTaken, st.addr, other.svc, other.key(), o.key())
		}
		if !o.recorded {
			if err := CheckSharing(o.svc, o.sh, other.svc, other.sh); err != nil {
				return fmt.Errorf("%s: %w", st.addr, err)
			}
		}
		for _, p := range o.ports {
			if slices.Contains(other.ports, p) {
				return fmt.Errorf("%w: %s on shared address %s is already used by Service %s", ErrPortClash, p, st.addr, other.svc)
			}
		}
	}
	return nil
}

// tenancyAllows tells whether o may share st's address as far as
// namespaces go (CheckSharing's first rule).
func (st *addrState) tenancyAllows(o owner) bool {
	for _, other := range st.owners {
		if other.svc != o.svc && !sameTenancy(o.svc, o.sh, other.svc, other.sh) {
			return false
		}
	}
	return true
}

func (st *addrState) owner(svc ServiceKey) int {
	i, found := slices.BinarySearchFunc(st.owners, svc, func(o owner, s ServiceKey) int { return strings.Compare(string(o.svc), string(s)) })
	if !found {
		return -1
	}
	return i
}

func (a *Allocator) newAddr(x netip.Addr, pool string, o owner) {
	st := &addrState{addr: x, pool: pool, key: o.key(), owners: []owner{o}}
	a.held[x] = st
	a.indexKey(st)
}

func (a *Allocator) addOwner(st *addrState, o owner) {
	i, _ := slices.BinarySearchFunc(st.owners, o.svc, func(p owner, s ServiceKey) int { return strings.Compare(string(p.svc), string(s)) })
	st.owners = slices.Insert(st.owners, i, o)
}

// updateOwner replaces an existing owner's key and ports; canShare must have
// accepted o, so the key only changes when o is the sole owner.
func (a *Allocator) updateOwner(st *addrState, o owner) {
	i := st.owner(o.svc)
	if i < 0 {
		return
	}
	st.owners[i] = o
	if st.key != o.key() {
		a.unindexKey(st)
		st.key = o.key()
		a.indexKey(st)
	}
}

// dropOwner removes svc from x and frees x once nobody holds it. It leaves
// bySvc alone; callers maintain it.
func (a *Allocator) dropOwner(x netip.Addr, svc ServiceKey) {
	st := a.held[x]
	if st == nil {
		return
	}
	if i := st.owner(svc); i >= 0 {
		st.owners = slices.Delete(st.owners, i, i+1)
	}
	if len(st.owners) > 0 {
		return
	}
	delete(a.held, x)
	a.unindexKey(st)
	if st.reserved {
		a.reserved[x] = &reservation{pool: st.pool, ready: !st.pending}
		return
	}
	if ps := a.poolFor(x); ps != nil {
		ps.free.put(u128From(x))
	}
}

func (a *Allocator) indexKey(st *addrState) {
	if st.key == "" {
		return
	}
	m := a.byKey[st.key]
	if m == nil {
		m = map[netip.Addr]struct{}{}
		a.byKey[st.key] = m
	}
	m[st.addr] = struct{}{}
}

func (a *Allocator) unindexKey(st *addrState) {
	if st.key == "" {
		return
	}
	m := a.byKey[st.key]
	delete(m, st.addr)
	if len(m) == 0 {
		delete(a.byKey, st.key)
	}
}

func (a *Allocator) assignments(addrs []netip.Addr) []Assignment {
	if len(addrs) == 0 {
		return nil
	}
	out := make([]Assignment, len(addrs))
	for i, x := range addrs {
		st := a.held[x]
		out[i] = Assignment{Pool: st.pool, Addr: x, Reserved: st.reserved, Pending: st.pending}
	}
	return out
}

// Release drops everything svc holds and returns what it held. Addresses
// shared with other Services stay held by them; the rest become free again.
func (a *Allocator) Release(svc ServiceKey) []Assignment {
	a.mu.Lock()
	defer a.mu.Unlock()
	addrs := a.bySvc[svc]
	out := a.assignments(addrs)
	for _, x := range addrs {
		a.dropOwner(x, svc)
	}
	delete(a.bySvc, svc)
	return out
}

// ReleaseAddr drops svc's hold on one address, leaving its other addresses
// alone; addr becomes free once nobody holds it. Used when an outside record
// (the API server) says svc does not hold addr after all.
func (a *Allocator) ReleaseAddr(svc ServiceKey, addr netip.Addr) {
	x, err := normalizeAddr(addr)
	if err != nil {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if !slices.Contains(a.bySvc[svc], x) {
		return
	}
	a.dropOwner(x, svc)
	a.bySvc[svc] = slices.DeleteFunc(a.bySvc[svc], func(y netip.Addr) bool { return y == x })
	if len(a.bySvc[svc]) == 0 {
		delete(a.bySvc, svc)
	}
}

// Lookup returns what svc holds, or nil.
func (a *Allocator) Lookup(svc ServiceKey) []Assignment {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.assignments(a.bySvc[svc])
}

// Stats reports the usage of the named pool; false if there is no such pool.
func (a *Allocator) Stats(pool string) (PoolStats, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	ps := a.pools[pool]
	if ps == nil {
		return PoolStats{}, false
	}
	st := PoolStats{Size: ps.Ranges.Size(), Owners: map[netip.Addr][]ServiceKey{}}
	for x, h := range a.held {
		switch {
		case ps.Ranges.Contains(x):
			st.Used++
			st.Owners[x] = h.services()
		case h.pool == pool:
			st.Outside = append(st.Outside, x)
		}
	}
	slices.SortFunc(st.Outside, netip.Addr.Compare)
	return st, true
}

// Owners returns the Services holding addr, sorted; nil if it is free.
func (a *Allocator) Owners(addr netip.Addr) []ServiceKey {
	x, err := normalizeAddr(addr)
	if err != nil {
		return nil
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if st := a.held[x]; st != nil {
		return st.services()
	}
	return nil
}

func (st *addrState) services() []ServiceKey {
	out := make([]ServiceKey, len(st.owners))
	for i, o := range st.owners {
		out[i] = o.svc
	}
	return out
}

// normalizePorts makes protocols comparable: Kubernetes defaults an empty
// protocol to TCP.
func normalizePorts(ports []Port) []Port {
	out := make([]Port, 0, len(ports))
	for _, p := range ports {
		p.Protocol = strings.ToUpper(p.Protocol)
		if p.Protocol == "" {
			p.Protocol = "TCP"
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out
}
