package ipam_test

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// The model fuzz's Services live in three namespaces: n0 has no labels,
// n1 and n2 carry team=blue and team=red. Pools may be bound to any of them
// by name, to team=blue by selector, or to none, and may allow any
// namespace; Services may opt in to sharing with other namespaces and use
// externalTrafficPolicy Local with one of two endpoint sets.
var modelNamespaces = []string{"n0", "n1", "n2"}

var modelNamespaceLabels = map[string]map[string]string{
	"n1": {"team": "blue"},
	"n2": {"team": "red"},
}

// modelServices is every Service of the fuzz: four per namespace.
var modelServices = func() []ipam.ServiceKey {
	var out []ipam.ServiceKey
	for _, ns := range modelNamespaces {
		for i := range 4 {
			out = append(out, ipam.ServiceKey(fmt.Sprintf("%s/s%d", ns, i)))
		}
	}
	return out
}()

// modelUniverse is every address the fuzz uses: 16 IPv4 and 16 IPv6, some
// outside every pool of modelRanges.
var modelUniverse = func() []netip.Addr {
	var out []netip.Addr
	for i := range 16 {
		out = append(out, netip.AddrFrom4([4]byte{10, 0, 0, byte(i)}))
	}
	for i := range 16 {
		out = append(out, netip.AddrFrom16([16]byte{0: 0xfd, 15: byte(i)}))
	}
	return out
}()

// modelRanges are the ranges pools may have: some overlap, so SetPools
// rejects some pool sets in part.
var modelRanges = []string{
	"10.0.0.0-10.0.0.3", "10.0.0.4-10.0.0.7", "10.0.0.0/29", "10.0.0.8-10.0.0.11", "10.0.0.12/30", "10.0.0.2-10.0.0.9", "10.0.0.5",
	"fd00::-fd00::3", "fd00::4-fd00::7", "fd00::/125", "fd00::8-fd00::b", "fd00::c",
}

var modelPorts = []ipam.Port{{Protocol: "TCP", Port: 80}, {Protocol: "TCP", Port: 443}, {Protocol: "UDP", Port: 53}}

// holding is one Service's hold on an address, as the model knows it.
// recorded marks a hold made by Assign (a holder recorded at the API
// server): the allocator takes those as they are, so only holds that
// Allocate made or confirmed must obey the tenancy rules with each other.
type holding struct {
	sh       ipam.Sharing
	ports    []ipam.Port
	recorded bool
}

// model is the reference: pools as SetPools accepts them, and who holds
// which address with which key and ports.
type model struct {
	pools map[string]ipam.Pool
	held  map[netip.Addr]map[ipam.ServiceKey]holding
}

func (m *model) clone() *model {
	c := &model{pools: m.pools, held: map[netip.Addr]map[ipam.ServiceKey]holding{}}
	for x, hs := range m.held {
		c.held[x] = map[ipam.ServiceKey]holding{}
		for s, h := range hs {
			c.held[x][s] = h
		}
	}
	return c
}

// accept applies SetPools' documented rules: by name, the first of a name
// wins, and a pool overlapping an accepted one (whose name sorts earlier)
// is rejected.
func (m *model) accept(pools []ipam.Pool) {
	sorted := slices.Clone(pools)
	slices.SortStableFunc(sorted, func(x, y ipam.Pool) int { return strings.Compare(x.Name, y.Name) })
	m.pools = map[string]ipam.Pool{}
	seen := map[string]bool{}
	var accepted []ipam.Pool
	for _, p := range sorted {
		if seen[p.Name] {
			continue
		}
		seen[p.Name] = true
		if slices.ContainsFunc(accepted, func(q ipam.Pool) bool { return q.Ranges.Overlaps(p.Ranges) }) {
			continue
		}
		m.pools[p.Name] = p
		accepted = append(accepted, p)
	}
}

// boundTo is a pool's namespace binding: by name or by label selector.
func boundTo(p ipam.Pool, ns string) bool {
	if slices.Contains(p.Namespaces, ns) {
		return true
	}
	if len(p.NamespaceSelector) == 0 {
		return false
	}
	for k, v := range p.NamespaceSelector {
		if modelNamespaceLabels[ns][k] != v {
			return false
		}
	}
	return true
}

// openTo: who may name a pool or request its addresses.
func openTo(p ipam.Pool, ns string) bool {
	return p.Default || p.AllowAnyNamespace || (len(p.Namespaces) == 0 && len(p.NamespaceSelector) == 0) || boundTo(p, ns)
}

func (m *model) poolOf(x netip.Addr) (ipam.Pool, bool) {
	for _, p := range m.pools {
		if p.Ranges.Contains(x) {
			return p, true
		}
	}
	return ipam.Pool{}, false
}

// lowestFree is the lowest address of p no Service holds.
func (m *model) lowestFree(p ipam.Pool) (netip.Addr, bool) {
	for _, x := range modelUniverse {
		if p.Ranges.Contains(x) && len(m.held[x]) == 0 {
			return x, true
		}
	}
	return netip.Addr{}, false
}

// heldBy lists the addresses svc holds, sorted.
func (m *model) heldBy(svc ipam.ServiceKey) []netip.Addr {
	var out []netip.Addr
	for x, hs := range m.held {
		if _, ok := hs[svc]; ok {
			out = append(out, x)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func (m *model) hold(x netip.Addr, svc ipam.ServiceKey, h holding) {
	if m.held[x] == nil {
		m.held[x] = map[ipam.ServiceKey]holding{}
	}
	m.held[x][svc] = h
}

func (m *model) drop(x netip.Addr, svc ipam.ServiceKey) {
	delete(m.held[x], svc)
	if len(m.held[x]) == 0 {
		delete(m.held, x)
	}
}

// modelOps reads operations from fuzz bytes; past the end it reads zeros.
type modelOps struct{ b []byte }

func (o *modelOps) next() byte {
	if len(o.b) == 0 {
		return 0
	}
	c := o.b[0]
	o.b = o.b[1:]
	return c
}

func (o *modelOps) svc() ipam.ServiceKey {
	return modelServices[int(o.next())%len(modelServices)]
}

func (o *modelOps) key() string { return []string{"", "k1", "k2"}[o.next()%3] }

// sharing reads a key, then the namespaces the Service shares with (n0,
// n1, n2, "*"), externalTrafficPolicy Local and its endpoints.
func (o *modelOps) sharing() ipam.Sharing {
	sh := ipam.Sharing{Key: o.key()}
	flags := o.next()
	for i, ns := range []string{"n0", "n1", "n2", "*"} {
		if flags&(1<<i) != 0 {
			sh.Namespaces = append(sh.Namespaces, ns)
		}
	}
	sh.Local = flags&0x10 != 0
	sh.Endpoints = []string{"", "e1", "e2", "e1"}[flags>>5&3]
	return sh
}

func (o *modelOps) ports() []ipam.Port {
	bits := o.next()
	var out []ipam.Port
	for i, p := range modelPorts {
		if bits&(1<<i) != 0 {
			out = append(out, p)
		}
	}
	return out
}

func (o *modelOps) addr() netip.Addr { return modelUniverse[int(o.next())%len(modelUniverse)] }

func (o *modelOps) pools() []ipam.Pool {
	n := 1 + int(o.next())%4
	var out []ipam.Pool
	for range n {
		flags := o.next()
		r, err := ipam.ParseRange(modelRanges[int(o.next())%len(modelRanges)])
		if err != nil {
			panic(err)
		}
		// Half the pools have a second range, when it is of the same
		// family and does not overlap the first (NewRangeSet refuses
		// that): lowest-free and membership then span a gap.
		rs := ipam.RangeSet{r}
		if second := o.next(); second%2 == 1 {
			r2, err := ipam.ParseRange(modelRanges[int(second/2)%len(modelRanges)])
			if err != nil {
				panic(err)
			}
			if both, err := ipam.NewRangeSet(r, r2); err == nil {
				rs = both
			}
		}
		p := ipam.Pool{
			Name: string(rune('a' + flags%4)), Ranges: rs,
			Default: flags&0x10 != 0, Disabled: flags&0x20 != 0, Priority: int(flags >> 6),
		}
		// The binding: namespaces by name, the team=blue selector, and
		// the opt-in for any namespace.
		bind := o.next()
		for i, ns := range modelNamespaces {
			if bind&(1<<i) != 0 {
				p.Namespaces = append(p.Namespaces, ns)
			}
		}
		if bind&0x08 != 0 {
			p.NamespaceSelector = map[string]string{"team": "blue"}
		}
		p.AllowAnyNamespace = bind&0x10 != 0
		out = append(out, p)
	}
	return out
}

// FuzzAllocatorModel runs sequences of SetPools, Allocate, Assign, Release
// and ReleaseAddr from fuzz bytes against a reference model and checks,
// after every operation, that the allocator's holdings are exactly the
// model's: an address is held by two Services only when both use the same
// non-empty sharing key and their ports do not clash, and, unless one of
// them is a recorded holder (Assign), only when they are in the same
// namespace or both opted in to each other's and their traffic policies
// allow it (CheckSharing); a failed operation changes nothing; an address
// newly taken or joined by Allocate is in a pool open to the Service's
// namespace and, when neither explicit nor shared, is the lowest free one
// of the first candidate pool with room (the pools bound to the namespace
// by priority, then the default pools in name order; or the named pools
// in order); a Service keeps the address it holds when the request allows;
// a refusal for a pool's binding names a pool that is indeed closed to the
// namespace. At the end, every pool hands out exactly its free addresses,
// lowest first: none was lost.
func FuzzAllocatorModel(f *testing.F) {
	f.Add([]byte{0, 1, 0x10, 0, 1, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0, 0, 0, 3, 0})
	f.Add([]byte{0, 2, 0x10, 2, 0x11, 9, 1, 0, 3, 1, 0, 0, 1, 1, 1, 1, 3, 1, 0, 2, 2, 2, 1, 0, 4, 1})
	f.Add([]byte{0, 3, 0x10, 0, 0x31, 1, 0x12, 7, 2, 3, 2, 5, 1, 1, 2, 4, 3, 1, 2, 2, 1, 1, 1, 3})
	f.Add([]byte{0, 1, 0x10, 2, 1, 0, 0, 0, 0, 1, 1, 1, 0, 1, 0, 0, 1, 0, 1, 1, 2, 0, 0, 4, 0, 3, 3, 1, 0, 0, 0, 0})
	f.Add([]byte{2, 0, 2, 3, 1, 1, 2, 17, 18, 0, 1, 0, 0x10, 0, 1, 0, 0, 0, 0, 0, 0})
	// A pool bound to n1, one open to all; Services of n0 and n1 under one
	// key, opted in to each other's namespace, then a Local one.
	f.Add([]byte{0, 1, 0x00, 0, 0x02, 0x11, 1, 0x00, 1, 4, 0, 0x01, 0x02, 1, 0, 0, 1, 0x02, 0x01, 1, 4, 0, 1, 0x12, 0x30, 1})
	f.Add([]byte{0, 1, 0x00, 2, 0x08, 0x11, 9, 0x10, 1, 8, 0, 0x48, 1, 0, 1, 1, 0x40, 1, 0, 1, 2, 3, 0, 1, 0x30, 2, 5, 1})
	// Local Services: under k1, unknown endpoints are refused the key's
	// address; under k2, the same endpoints share one.
	f.Add([]byte{0, 0, 0x10, 0, 0x00, 1, 0, 0, 0, 1, 0x10, 1, 1, 1, 0, 0, 1, 0x10, 2, 1, 2, 0, 0, 2, 0x30, 1, 1, 3, 0, 0, 2, 0x30, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		ops := &modelOps{b: data}
		alloc := ipam.New()
		m := &model{pools: map[string]ipam.Pool{}, held: map[netip.Addr]map[ipam.ServiceKey]holding{}}
		var lastPools []ipam.Pool
		for step := 0; len(ops.b) > 0 && step < 64; step++ {
			op := ops.next() % 5
			var what string
			switch op {
			case 0:
				pools := ops.pools()
				what = fmt.Sprintf("SetPools(%+v)", pools)
				_ = alloc.SetPools(pools) // the rejected ones are checked through Stats
				m.accept(pools)
				lastPools = pools
			case 1:
				req := modelRequest(ops)
				what = fmt.Sprintf("Allocate(%+v)", req)
				before := m.clone()
				as, err := alloc.Allocate(req)
				checkPredicted(t, what, before, req, as, err)
				if err == nil {
					checkAllocated(t, what, before, req, as)
					for _, x := range before.heldBy(req.Service) {
						m.drop(x, req.Service)
					}
					for _, a := range as {
						m.hold(a.Addr, req.Service, holding{sh: req.Sharing, ports: req.Ports})
					}
				} else if errors.Is(err, ipam.ErrNotBound) {
					checkNotBound(t, what, m, req, err)
				}
			case 2:
				svc, sh, ports := ops.svc(), ops.sharing(), ops.ports()
				addrs := []netip.Addr{ops.addr()}
				if ops.next()%2 == 1 {
					addrs = append(addrs, ops.addr())
				}
				what = fmt.Sprintf("Assign(%s, %v, %+v, %v)", svc, addrs, sh, ports)
				if _, err := alloc.Assign(svc, addrs, sh, ports); err == nil {
					for _, x := range addrs {
						m.hold(x, svc, holding{sh: sh, ports: ports, recorded: true})
					}
				}
			case 3:
				svc := ops.svc()
				what = fmt.Sprintf("Release(%s)", svc)
				got := addrsOf(alloc.Release(svc))
				if want := m.heldBy(svc); !slices.Equal(got, want) {
					t.Fatalf("%s returned %v, the Service held %v", what, got, want)
				}
				for _, x := range m.heldBy(svc) {
					m.drop(x, svc)
				}
			case 4:
				svc, x := ops.svc(), ops.addr()
				what = fmt.Sprintf("ReleaseAddr(%s, %s)", svc, x)
				alloc.ReleaseAddr(svc, x)
				m.drop(x, svc)
			}
			checkModel(t, what, alloc, m)
		}
		drainPools(t, alloc, m, lastPools)
	})
}

// modelRequest reads an Allocate request.
func modelRequest(ops *modelOps) ipam.Request {
	svc := ops.svc()
	req := ipam.Request{Service: svc, Namespace: svc.Namespace(), NamespaceLabels: modelNamespaceLabels[svc.Namespace()]}
	req.Families = [][]ipam.Family{{ipam.IPv4}, {ipam.IPv6}, {ipam.IPv4, ipam.IPv6}, {ipam.IPv6, ipam.IPv4}}[ops.next()%4]
	flags := ops.next()
	req.RequireAll = flags&1 != 0
	for i := range int(flags>>1) % 3 {
		req.Pools = append(req.Pools, string(rune('a'+(int(flags>>3)+i)%5)))
	}
	for range int(flags>>6) % 3 {
		req.Addresses = append(req.Addresses, ops.addr())
	}
	req.Sharing = ops.sharing()
	req.Ports = ops.ports()
	return req
}

// checkPredicted checks the outcome of the requests whose result the model
// predicts exactly: automatic, one family, by a Service that holds nothing.
// With a sharing key, the address to join is the first (by candidate pool,
// then address) of those under the key in a candidate pool whose holders
// all may share with the Service (sharingAllowed) and leave its ports free; an
// address under the key whose holders are all of the Service's tenancy
// but refuse it otherwise (ports, traffic policy) is an error; with none
// of the Service's tenancy, the lowest free address of the first candidate
// pool with room, else an error.
func checkPredicted(t *testing.T, what string, m *model, req ipam.Request, as []ipam.Assignment, err error) {
	t.Helper()
	if len(req.Pools) > 0 || len(req.Addresses) > 0 || len(req.Families) != 1 || len(m.heldBy(req.Service)) > 0 {
		return
	}
	cands := candidates(m, req, req.Families[0])
	want, ok := netip.Addr{}, false
	matched := false
	if req.Sharing.Key != "" {
		for _, c := range cands {
			for _, y := range modelUniverse {
				hs := m.held[y]
				if !c.Ranges.Contains(y) || len(hs) == 0 {
					continue
				}
				tenancy, accepts := true, true
				for other, h := range hs {
					if h.sh.Key != req.Sharing.Key {
						tenancy = false
					}
					if !sameTenancyModel(req.Service, req.Sharing, other, h.sh) {
						tenancy = false
					}
					if !sharingAllowed(req.Service, req.Sharing, other, h.sh) ||
						slices.ContainsFunc(h.ports, func(p ipam.Port) bool { return slices.Contains(req.Ports, p) }) {
						accepts = false
					}
				}
				if !tenancy {
					continue
				}
				matched = true
				if accepts && !ok {
					want, ok = y, true
				}
			}
		}
	}
	if !matched {
		for _, c := range cands {
			if want, ok = m.lowestFree(c); ok {
				break
			}
		}
	}
	switch {
	case !ok && err == nil:
		t.Fatalf("%s: got %+v, the model expects a refusal (candidates %v)", what, as, poolNames(cands))
	case ok && err != nil:
		t.Fatalf("%s: %v, the model expects %s (candidates %v)", what, err, want, poolNames(cands))
	case ok && (len(as) != 1 || as[0].Addr != want):
		t.Fatalf("%s: got %+v, the model expects %s (candidates %v)", what, as, want, poolNames(cands))
	}
}

// checkNotBound checks a refusal for a pool's namespace binding: a named
// pool or the pool of a requested address is closed to the namespace.
func checkNotBound(t *testing.T, what string, m *model, req ipam.Request, err error) {
	t.Helper()
	for _, name := range req.Pools {
		if p, ok := m.pools[name]; ok && !openTo(p, req.Namespace) {
			return
		}
	}
	for _, x := range req.Addresses {
		if p, ok := m.poolOf(x); ok && !openTo(p, req.Namespace) {
			return
		}
	}
	t.Fatalf("%s: %v, but every pool it names or asks an address of is open to %s", what, err, req.Namespace)
}

func addrsOf(as []ipam.Assignment) []netip.Addr {
	var out []netip.Addr
	for _, a := range as {
		out = append(out, a.Addr)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// checkAllocated checks a successful Allocate against the model as it was
// before.
func checkAllocated(t *testing.T, what string, m *model, req ipam.Request, as []ipam.Assignment) {
	t.Helper()
	explicit := map[ipam.Family]netip.Addr{}
	for _, x := range req.Addresses {
		explicit[ipam.FamilyOf(x)] = x
	}
	held := m.heldBy(req.Service)
	var fams []ipam.Family
	for _, a := range as {
		x, fam := a.Addr, ipam.FamilyOf(a.Addr)
		if slices.Contains(fams, fam) || !slices.Contains(req.Families, fam) {
			t.Fatalf("%s: assignments %+v: one per requested family expected", what, as)
		}
		fams = append(fams, fam)
		if want, ok := explicit[fam]; ok && x != want {
			t.Fatalf("%s: got %s for %s, the Service asked for %s", what, x, fam, want)
		}
		if slices.Contains(held, x) {
			continue // kept
		}
		// Idempotence: with neither address nor pools named, a held
		// address of the family is kept.
		if _, ok := explicit[fam]; !ok && len(req.Pools) == 0 && slices.ContainsFunc(held, func(h netip.Addr) bool { return ipam.FamilyOf(h) == fam }) {
			t.Fatalf("%s: got %s although the Service held %v", what, x, held)
		}
		p, ok := m.poolOf(x)
		if !ok || p.Disabled || !openTo(p, req.Namespace) {
			t.Fatalf("%s: new %s is in no enabled pool open to namespace %s (pool %+v)", what, x, req.Namespace, p)
		}
		_, isExplicit := explicit[fam]
		cands := candidates(m, req, fam)
		inCands := slices.ContainsFunc(cands, func(c ipam.Pool) bool { return c.Name == p.Name })
		if !isExplicit && !inCands {
			t.Fatalf("%s: %s is in pool %s, not a candidate (candidates %v)", what, x, p.Name, poolNames(cands))
		}
		if len(m.held[x]) > 0 {
			// Joined a shared address: every holder accepts this Service
			// (checkModel checks keys and ports).
			for other, h := range m.held[x] {
				if !sharingAllowed(req.Service, req.Sharing, other, h.sh) {
					t.Fatalf("%s: joined %s held by %s (%+v), which may not share with it", what, x, other, h.sh)
				}
			}
			continue
		}
		if isExplicit {
			continue
		}
		if req.Sharing.Key != "" {
			for y, hs := range m.held {
				q, ok := m.poolOf(y)
				if !ok || !slices.ContainsFunc(cands, func(c ipam.Pool) bool { return c.Name == q.Name }) {
					continue
				}
				sameKey, tenancy := false, true
				for other, h := range hs {
					sameKey = sameKey || h.sh.Key == req.Sharing.Key
					if other != req.Service && !sameTenancyModel(req.Service, req.Sharing, other, h.sh) {
						tenancy = false
					}
				}
				if sameKey && tenancy {
					t.Fatalf("%s: fresh %s although %s under key %q, open to this Service's namespace, is in candidate pool %s", what, x, y, req.Sharing.Key, q.Name)
				}
			}
		}
		for _, c := range cands {
			if low, ok := m.lowestFree(c); ok {
				if x != low {
					t.Fatalf("%s: got %s, want %s, the lowest free address of %s (candidates %v)", what, x, low, c.Name, poolNames(cands))
				}
				break
			}
		}
	}
}

// sameTenancyModel: Services of one namespace, or of two that opted in to
// each other's ("*" is any).
func sameTenancyModel(a ipam.ServiceKey, as ipam.Sharing, b ipam.ServiceKey, bs ipam.Sharing) bool {
	allows := func(sh ipam.Sharing, ns string) bool {
		return slices.Contains(sh.Namespaces, ns) || slices.Contains(sh.Namespaces, "*")
	}
	return a.Namespace() == b.Namespace() || (allows(as, b.Namespace()) && allows(bs, a.Namespace()))
}

// sharingAllowed is the model's CheckSharing: same tenancy, and with
// externalTrafficPolicy Local on either side, both Local with the same
// known endpoints.
func sharingAllowed(a ipam.ServiceKey, as ipam.Sharing, b ipam.ServiceKey, bs ipam.Sharing) bool {
	if !sameTenancyModel(a, as, b, bs) {
		return false
	}
	return !as.Local && !bs.Local || as.Local && bs.Local && as.Endpoints != "" && as.Endpoints == bs.Endpoints
}

// candidates are the pools Allocate tries for fam, in order: the named
// pools, or the pools bound to the namespace by priority (then name) and
// the default pools by name.
func candidates(m *model, req ipam.Request, fam ipam.Family) []ipam.Pool {
	var out []ipam.Pool
	add := func(p ipam.Pool) {
		if p.Ranges.Family() == fam && !p.Disabled && !slices.ContainsFunc(out, func(q ipam.Pool) bool { return q.Name == p.Name }) {
			out = append(out, p)
		}
	}
	if len(req.Pools) > 0 {
		for _, name := range req.Pools {
			if p, ok := m.pools[name]; ok {
				add(p)
			}
		}
		return out
	}
	names := make([]string, 0, len(m.pools))
	for name := range m.pools {
		names = append(names, name)
	}
	slices.Sort(names)
	byPriority := slices.Clone(names)
	slices.SortStableFunc(byPriority, func(x, y string) int { return m.pools[x].Priority - m.pools[y].Priority })
	for _, name := range byPriority {
		if boundTo(m.pools[name], req.Namespace) {
			add(m.pools[name])
		}
	}
	for _, name := range names {
		if m.pools[name].Default {
			add(m.pools[name])
		}
	}
	return out
}

func poolNames(ps []ipam.Pool) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Name)
	}
	return out
}

// checkModel compares the allocator with the model: holders of every
// address, what every Service holds, pool usage, and the sharing rule.
func checkModel(t *testing.T, what string, alloc *ipam.Allocator, m *model) {
	t.Helper()
	for _, x := range modelUniverse {
		var want []ipam.ServiceKey
		for svc := range m.held[x] {
			want = append(want, svc)
		}
		slices.Sort(want)
		if got := alloc.Owners(x); !slices.Equal(got, want) {
			t.Fatalf("after %s: %s is held by %v, the model says %v", what, x, got, want)
		}
		hs := m.held[x]
		for s1, h1 := range hs {
			for s2, h2 := range hs {
				if s1 >= s2 {
					continue
				}
				if h1.sh.Key == "" || h1.sh.Key != h2.sh.Key {
					t.Fatalf("after %s: %s held by %s (key %q) and %s (key %q)", what, x, s1, h1.sh.Key, s2, h2.sh.Key)
				}
				if !h1.recorded && !h2.recorded && !sharingAllowed(s1, h1.sh, s2, h2.sh) {
					t.Fatalf("after %s: %s held by %s (%+v) and %s (%+v), which may not share", what, x, s1, h1.sh, s2, h2.sh)
				}
				for _, p := range h1.ports {
					if slices.Contains(h2.ports, p) {
						t.Fatalf("after %s: %s held by %s and %s, both on %s", what, x, s1, s2, p)
					}
				}
			}
		}
	}
	for _, svc := range modelServices {
		if got, want := addrsOf(alloc.Lookup(svc)), m.heldBy(svc); !slices.Equal(got, want) {
			t.Fatalf("after %s: %s holds %v, the model says %v", what, svc, got, want)
		}
	}
	for _, name := range []string{"a", "b", "c", "d", "e"} {
		st, ok := alloc.Stats(name)
		p, want := m.pools[name]
		if ok != want {
			t.Fatalf("after %s: pool %s exists %v, the model says %v", what, name, ok, want)
		}
		if !ok {
			continue
		}
		var used uint64
		for x := range m.held {
			if p.Ranges.Contains(x) {
				used++
			}
		}
		if st.Size != p.Ranges.Size() || st.Used != used {
			t.Fatalf("after %s: pool %s size %d used %d, the model says %d and %d", what, name, st.Size, st.Used, p.Ranges.Size(), used)
		}
	}
}

// drainPools enables every pool, opens it to any namespace, and allocates
// from each until it is full: it must hand out exactly the addresses the
// model has free, lowest first.
func drainPools(t *testing.T, alloc *ipam.Allocator, m *model, pools []ipam.Pool) {
	t.Helper()
	for i := range pools {
		pools[i].Disabled = false
		pools[i].AllowAnyNamespace = true
	}
	_ = alloc.SetPools(pools)
	m.accept(pools)
	for name, p := range m.pools {
		for i := 0; ; i++ {
			svc := ipam.ServiceKey(fmt.Sprintf("n0/drain-%s-%d", name, i))
			want, free := m.lowestFree(p)
			as, err := alloc.Allocate(ipam.Request{Service: svc, Namespace: "n0", Families: []ipam.Family{p.Ranges.Family()}, Pools: []string{name}})
			if !free {
				if err == nil {
					t.Fatalf("pool %s handed out %+v although the model has nothing free", name, as)
				}
				break
			}
			if err != nil || len(as) != 1 || as[0].Addr != want {
				t.Fatalf("pool %s: want %s (free in the model), got %+v, %v: an address was lost", name, want, as, err)
			}
			m.hold(want, svc, holding{})
		}
	}
}
