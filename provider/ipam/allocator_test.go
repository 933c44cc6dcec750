package ipam

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Test helpers keep the tables readable.

func pool(name, rng string, opts ...func(*Pool)) Pool {
	r, err := ParseRange(rng)
	if err != nil {
		panic(err)
	}
	p := Pool{Name: name, Ranges: RangeSet{r}}
	for _, o := range opts {
		o(&p)
	}
	return p
}

func prio(n int) func(*Pool)         { return func(p *Pool) { p.Priority = n } }
func ns(names ...string) func(*Pool) { return func(p *Pool) { p.Namespaces = names } }
func sel(kv ...string) func(*Pool)   { return func(p *Pool) { p.NamespaceSelector = kvMap(kv) } }
func isDefault(p *Pool)              { p.Default = true }
func disabled(p *Pool)               { p.Disabled = true }
func kvMap(kv []string) map[string]string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

// req builds a request for "namespace/name", IPv4 unless told otherwise.
func req(svc string, mods ...func(*Request)) Request {
	nsName, _, _ := strings.Cut(svc, "/")
	r := Request{Service: ServiceKey(svc), Namespace: nsName, Families: []Family{IPv4}}
	for _, m := range mods {
		m(&r)
	}
	return r
}

func labels(kv ...string) func(*Request) { return func(r *Request) { r.NamespaceLabels = kvMap(kv) } }
func svcLabels(kv ...string) func(*Request) {
	return func(r *Request) { r.ServiceLabels = kvMap(kv) }
}

// matchLabels is a Selector of equality requirements, as an Eip's
// serviceSelector.matchLabels.
type matchLabels map[string]string

func (m matchLabels) Matches(l map[string]string) bool {
	for k, v := range m {
		if got, ok := l[k]; !ok || got != v {
			return false
		}
	}
	return true
}
func (m matchLabels) String() string {
	var parts []string
	for k, v := range m {
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ",")
}
func svcSel(kv ...string) func(*Pool) {
	return func(p *Pool) { p.ServiceSelector = matchLabels(kvMap(kv)) }
}
func fams(f ...Family) func(*Request)  { return func(r *Request) { r.Families = f } }
func pools(p ...string) func(*Request) { return func(r *Request) { r.Pools = p } }
func requireAll(r *Request)            { r.RequireAll = true }
func addrs(s ...string) func(*Request) {
	return func(r *Request) {
		for _, x := range s {
			r.Addresses = append(r.Addresses, mustAddr(x))
		}
	}
}
func share(key string, ports ...Port) func(*Request) {
	return func(r *Request) { r.Sharing.Key, r.Ports = key, ports }
}

func shareWith(nss ...string) func(*Request) {
	return func(r *Request) { r.Sharing.Namespaces = nss }
}
func local(endpoints string) func(*Request) {
	return func(r *Request) { r.Sharing.Local, r.Sharing.Endpoints = true, endpoints }
}

func tcp(n int32) Port { return Port{Protocol: "TCP", Port: n} }
func udp(n int32) Port { return Port{Protocol: "UDP", Port: n} }

func as(poolName, addr string) Assignment { return Assignment{Pool: poolName, Addr: mustAddr(addr)} }
func asl(pairs ...string) []Assignment {
	var out []Assignment
	for i := 0; i+1 < len(pairs); i += 2 {
		out = append(out, as(pairs[i], pairs[i+1]))
	}
	return out
}

// op is one call in a scripted scenario; want is compared with cmp.Diff.
type op struct {
	desc    string
	do      func(*Allocator) (any, error)
	want    any
	wantErr error
	wantMsg string // substring of the error message, if set
}

func allocOp(r Request, want []Assignment) op {
	return op{desc: "Allocate " + string(r.Service), do: func(a *Allocator) (any, error) { return a.Allocate(r) }, want: want}
}

func allocErr(r Request, wantErr error, msg string) op {
	return op{desc: "Allocate " + string(r.Service), do: func(a *Allocator) (any, error) {
		got, err := a.Allocate(r)
		return got, err
	}, want: []Assignment(nil), wantErr: wantErr, wantMsg: msg}
}

func assignOp(svc, key string, ports []Port, addrList []string, want []Assignment, wantErr error) op {
	return op{desc: "Assign " + svc, do: func(a *Allocator) (any, error) {
		var xs []netip.Addr
		for _, s := range addrList {
			xs = append(xs, mustAddr(s))
		}
		return a.Assign(ServiceKey(svc), xs, Sharing{Key: key}, ports)
	}, want: want, wantErr: wantErr}
}

func releaseOp(svc string, want []Assignment) op {
	return op{desc: "Release " + svc, do: func(a *Allocator) (any, error) { return a.Release(ServiceKey(svc)), nil }, want: want}
}

func lookupOp(svc string, want []Assignment) op {
	return op{desc: "Lookup " + svc, do: func(a *Allocator) (any, error) { return a.Lookup(ServiceKey(svc)), nil }, want: want}
}

func ownersOp(addr string, want ...ServiceKey) op {
	if len(want) == 0 {
		want = nil
	}
	return op{desc: "Owners " + addr, do: func(a *Allocator) (any, error) { return a.Owners(mustAddr(addr)), nil }, want: want}
}

func setPoolsOp(ps ...Pool) op {
	return op{desc: "SetPools", do: func(a *Allocator) (any, error) { return nil, a.SetPools(ps) }}
}

func statsOp(name string, size, used uint64) op {
	return op{desc: "Stats " + name, do: func(a *Allocator) (any, error) {
		st, ok := a.Stats(name)
		if !ok {
			return nil, fmt.Errorf("no pool %q", name)
		}
		return [2]uint64{st.Size, st.Used}, nil
	}, want: [2]uint64{size, used}}
}

func runOps(t *testing.T, a *Allocator, ops []op) {
	t.Helper()
	for i, o := range ops {
		got, err := o.do(a)
		switch {
		case o.wantErr == nil && err != nil:
			t.Fatalf("op %d (%s): unexpected error: %v", i, o.desc, err)
		case o.wantErr != nil && !errors.Is(err, o.wantErr):
			t.Fatalf("op %d (%s): error = %v, want %v", i, o.desc, err, o.wantErr)
		case o.wantMsg != "" && (err == nil || !strings.Contains(err.Error(), o.wantMsg)):
			t.Fatalf("op %d (%s): error %q does not mention %q", i, o.desc, err, o.wantMsg)
		}
		if diff := cmp.Diff(o.want, got, equateAddr); diff != "" {
			t.Fatalf("op %d (%s) (-want +got):\n%s", i, o.desc, diff)
		}
	}
}

func TestAllocate(t *testing.T) {
	tests := []struct {
		name  string
		pools []Pool
		ops   []op
	}{
		{
			name:  "lowest free address first",
			pools: []Pool{pool("eip", "172.22.0.2-172.22.0.10", isDefault)},
			ops: []op{
				allocOp(req("ns/a"), asl("eip", "172.22.0.2")),
				allocOp(req("ns/b"), asl("eip", "172.22.0.3")),
				statsOp("eip", 9, 2),
			},
		},
		{
			name: "a service selector limits a pool to matching Services, whichever way they ask",
			pools: []Pool{
				pool("gold", "10.0.1.0/30", prio(1), ns("ns"), svcSel("tier", "gold")),
				pool("any", "10.0.2.0/30", prio(2), ns("ns")),
				pool("gold-default", "10.0.3.0/30", isDefault, svcSel("tier", "gold")),
			},
			ops: []op{
				allocOp(req("ns/gold", svcLabels("tier", "gold", "app", "x")), asl("gold", "10.0.1.0")),
				allocOp(req("ns/plain"), asl("any", "10.0.2.0")),
				allocErr(req("other/plain"), ErrNoPool, "serviceSelector"),
				allocOp(req("other/gold", svcLabels("tier", "gold")), asl("gold-default", "10.0.3.0")),
				allocErr(req("ns/named", pools("gold")), ErrNotSelected, "tier=gold"),
				allocErr(req("ns/addr", addrs("10.0.1.1")), ErrNotSelected, `pool "gold"`),
				allocOp(req("ns/addr-gold", addrs("10.0.1.1"), svcLabels("tier", "gold")), asl("gold", "10.0.1.1")),
				// Held addresses stay when the labels change, as they do
				// when a namespace is unbound.
				allocOp(req("ns/gold"), asl("gold", "10.0.1.0")),
			},
		},
		{
			name: "bound pools by priority then name, then defaults, falling through when full",
			pools: []Pool{
				pool("a-slow", "10.0.1.0/31", prio(10), ns("ns")),
				pool("c-fast", "10.0.3.1", prio(1), ns("ns")),
				pool("b-fast", "10.0.2.1", prio(1), ns("ns")),
				pool("z-default", "10.9.0.0/31", prio(-5), isDefault),
				pool("y-default", "10.8.0.0", isDefault),
			},
			ops: []op{
				allocOp(req("ns/1"), asl("b-fast", "10.0.2.1")),
				allocOp(req("ns/2"), asl("c-fast", "10.0.3.1")),
				allocOp(req("ns/3"), asl("a-slow", "10.0.1.0")),
				allocOp(req("ns/4"), asl("a-slow", "10.0.1.1")),
				allocOp(req("ns/5"), asl("y-default", "10.8.0.0")),
				allocOp(req("ns/6"), asl("z-default", "10.9.0.0")),
				allocOp(req("ns/7"), asl("z-default", "10.9.0.1")),
				allocErr(req("ns/8"), ErrPoolExhausted, "a-slow"),
				allocErr(req("other/1", fams(IPv6)), ErrNoPool, `namespace "other"`),
			},
		},
		{
			name: "namespace list",
			pools: []Pool{
				pool("team", "10.0.0.0/30", ns("team-a", "team-b")),
				pool("def", "10.1.0.0/30", isDefault),
			},
			ops: []op{
				allocOp(req("team-b/a"), asl("team", "10.0.0.0")),
				allocOp(req("other/a"), asl("def", "10.1.0.0")),
			},
		},
		{
			name:  "pool bound to another namespace without default",
			pools: []Pool{pool("team", "10.0.0.0/30", ns("team-a"))},
			ops: []op{
				allocErr(req("other/a"), ErrNoPool, "no default IPv4 pool"),
				allocOp(req("team-a/a"), asl("team", "10.0.0.0")),
			},
		},
		{
			name: "namespace selector",
			pools: []Pool{
				pool("sel", "10.0.0.0/30", sel("env", "prod", "team", "a")),
				pool("def", "10.1.0.0/30", isDefault),
			},
			ops: []op{
				allocOp(req("x/a", labels("env", "prod", "team", "a", "other", "y")), asl("sel", "10.0.0.0")),
				allocOp(req("x/b", labels("env", "prod")), asl("def", "10.1.0.0")),
				allocOp(req("x/c", labels("env", "prod", "team", "b")), asl("def", "10.1.0.1")),
				allocOp(req("x/d"), asl("def", "10.1.0.2")),
			},
		},
		{
			name:  "pool neither bound nor default is never chosen automatically",
			pools: []Pool{pool("idle", "10.0.0.0/24")},
			ops: []op{
				allocErr(req("ns/a"), ErrNoPool, ""),
				allocOp(req("ns/b", pools("idle")), asl("idle", "10.0.0.0")),
			},
		},
		{
			name: "disabled pools are skipped",
			pools: []Pool{
				pool("off", "10.0.0.0/30", prio(0), ns("ns"), disabled),
				pool("def", "10.1.0.0/30", isDefault),
			},
			ops: []op{
				allocOp(req("ns/a"), asl("def", "10.1.0.0")),
			},
		},
		{
			name:  "only disabled pools",
			pools: []Pool{pool("off", "10.0.0.0/30", isDefault, disabled)},
			ops: []op{
				allocErr(req("ns/a"), ErrNoPool, "disabled pools skipped: off"),
			},
		},
		{
			name: "explicit addresses",
			pools: []Pool{
				pool("elsewhere", "10.0.0.0/24"),
				pool("off", "10.1.0.0/24", isDefault, disabled),
			},
			ops: []op{
				allocOp(req("ns/a", addrs("10.0.0.7")), asl("elsewhere", "10.0.0.7")),
				allocErr(req("ns/b", addrs("10.0.0.7")), ErrAddressTaken, "held by Service ns/a"),
				allocErr(req("ns/c", addrs("10.2.0.1")), ErrNotInPool, "10.2.0.1"),
				allocErr(req("ns/d", addrs("10.1.0.1")), ErrPoolDisabled, `pool "off"`),
				allocErr(req("ns/e", addrs("fd00::1")), ErrFamilyMismatch, "fd00::1"),
				allocErr(req("ns/f", addrs("10.0.0.7"), share("k", tcp(80))), ErrAddressTaken, "ns/a"),
				allocErr(req("ns/g", addrs("10.0.0.8", "10.0.0.9")), ErrFamilyMismatch, "two IPv4 addresses"),
				allocOp(req("ns/h", addrs("::ffff:10.0.0.8")), asl("elsewhere", "10.0.0.8")),
				allocErr(req("ns/i"), ErrNoPool, "disabled pools skipped: off"),
			},
		},
		{
			name: "explicit pools",
			pools: []Pool{
				pool("v4", "10.0.0.0/29"),
				pool("v6", "fd00::/126"),
				pool("off", "10.1.0.0/30", disabled),
			},
			ops: []op{
				allocOp(req("ns/a", pools("v4")), asl("v4", "10.0.0.0")),
				allocErr(req("ns/b", pools("missing")), ErrPoolNotFound, `"missing"`),
				allocErr(req("ns/c", pools("off")), ErrPoolDisabled, `"off"`),
				allocErr(req("ns/d", pools("v6")), ErrFamilyMismatch, "IPv4"),
				allocOp(req("ns/e", pools("v4", "v6"), fams(IPv4, IPv6)), asl("v4", "10.0.0.1", "v6", "fd00::")),
				allocOp(req("ns/f", pools("v6", "v4"), fams(IPv6, IPv4)), asl("v6", "fd00::1", "v4", "10.0.0.2")),
				allocOp(req("ns/g", pools("v4"), fams(IPv4, IPv6)), asl("v4", "10.0.0.3")),
				allocOp(req("ns/h", pools("v4"), fams(IPv6, IPv4)), asl("v4", "10.0.0.4")),
				allocErr(req("ns/i", pools("v4"), fams(IPv4, IPv6), requireAll), ErrFamilyMismatch, "IPv6"),
				lookupOp("ns/i", nil),
				allocOp(req("ns/j", pools("v6"), fams(IPv6), addrs("fd00::3")), asl("v6", "fd00::3")),
				allocErr(req("ns/k", pools("v4"), fams(IPv6), addrs("fd00::2")), ErrNotInPool, `in pool "v6"`),
				allocOp(req("ns/l", pools("off", "v4")), asl("v4", "10.0.0.5")),
				statsOp("v4", 8, 6),
			},
		},
		{
			name:  "sharing",
			pools: []Pool{pool("eip", "10.0.0.0/29", isDefault)},
			ops: []op{
				allocOp(req("ns/a", share("k", tcp(80))), asl("eip", "10.0.0.0")),
				allocOp(req("ns/b", share("k", tcp(443))), asl("eip", "10.0.0.0")),
				allocErr(req("ns/c", share("k", tcp(80))), ErrPortClash, "TCP/80 on shared address 10.0.0.0 is already used by Service ns/a"),
				allocOp(req("ns/c2", share("k", udp(80))), asl("eip", "10.0.0.0")),
				allocOp(req("ns/d", share("other", tcp(80))), asl("eip", "10.0.0.1")),
				allocOp(req("ns/e"), asl("eip", "10.0.0.2")),
				allocErr(req("ns/f", addrs("10.0.0.0")), ErrAddressTaken, "ns/a"),
				allocErr(req("ns/g", addrs("10.0.0.0"), share("other", tcp(1))), ErrAddressTaken, `sharing key "k"`),
				allocOp(req("ns/h", addrs("10.0.0.0"), share("k", tcp(8080))), asl("eip", "10.0.0.0")),
				allocErr(req("ns/i", addrs("10.0.0.0"), share("k", Port{Protocol: "tcp", Port: 443})), ErrPortClash, "ns/b"),
				allocErr(req("ns/j", addrs("10.0.0.2"), share("k")), ErrAddressTaken, "ns/e"),
				ownersOp("10.0.0.0", "ns/a", "ns/b", "ns/c2", "ns/h"),
				statsOp("eip", 8, 3),
				releaseOp("ns/a", asl("eip", "10.0.0.0")),
				ownersOp("10.0.0.0", "ns/b", "ns/c2", "ns/h"),
				allocOp(req("ns/a", share("k", tcp(80))), asl("eip", "10.0.0.0")),
				releaseOp("ns/a", asl("eip", "10.0.0.0")),
				releaseOp("ns/b", asl("eip", "10.0.0.0")),
				releaseOp("ns/c2", asl("eip", "10.0.0.0")),
				releaseOp("ns/h", asl("eip", "10.0.0.0")),
				ownersOp("10.0.0.0"),
				allocOp(req("ns/z"), asl("eip", "10.0.0.0")),
			},
		},
		{
			name: "sharing only joins addresses in eligible pools",
			pools: []Pool{
				pool("team-a", "10.0.0.0/30", ns("a")),
				pool("team-b", "10.1.0.0/30", ns("b")),
			},
			ops: []op{
				allocOp(req("a/x", share("k", tcp(80))), asl("team-a", "10.0.0.0")),
				allocOp(req("b/y", share("k", tcp(443))), asl("team-b", "10.1.0.0")),
				allocOp(req("b/z", share("k", tcp(80))), asl("team-b", "10.1.0.0")),
				// Naming another namespace's pool is refused, key or not.
				allocErr(req("b/w", share("k", tcp(8080)), pools("team-a")), ErrNotBound, `"team-a" is not bound to namespace "b"`),
			},
		},
		{
			name: "namespace bindings hold on every path",
			pools: []Pool{
				pool("team-a", "10.0.0.0/30", ns("a")),
				pool("team-a-sel", "10.0.1.0/30", sel("tenant", "a")),
				pool("legacy", "10.0.2.0/30", ns("a"), func(p *Pool) { p.AllowAnyNamespace = true }),
				pool("open", "10.0.3.0/30"),
				pool("shared", "10.0.4.0/30", isDefault, ns("a")),
			},
			ops: []op{
				allocOp(req("a/x", pools("team-a")), asl("team-a", "10.0.0.0")),
				allocErr(req("b/y", pools("team-a")), ErrNotBound, `pool "team-a" is not bound to namespace "b"`),
				allocErr(req("b/y", addrs("10.0.0.1")), ErrNotBound, `10.0.0.1 is in pool "team-a"`),
				allocErr(req("b/y", addrs("10.0.0.0")), ErrNotBound, "team-a"),
				allocErr(req("b/y", pools("team-a-sel")), ErrNotBound, "team-a-sel"),
				allocErr(req("b/y", pools("team-a-sel"), labels("tenant", "b")), ErrNotBound, "team-a-sel"),
				allocOp(req("b/y", pools("team-a-sel"), labels("tenant", "a")), asl("team-a-sel", "10.0.1.0")),
				// The Eip's opt-in restores OpenELB's naming by anyone...
				allocOp(req("b/z", pools("legacy")), asl("legacy", "10.0.2.0")),
				allocOp(req("b/w", addrs("10.0.2.1")), asl("legacy", "10.0.2.1")),
				// ...pools bound to nobody and default pools are open to all.
				allocOp(req("c/a", pools("open")), asl("open", "10.0.3.0")),
				allocOp(req("c/b", pools("shared")), asl("shared", "10.0.4.0")),
				allocOp(req("c/c"), asl("shared", "10.0.4.1")),
			},
		},
		{
			name:  "sharing stays inside a namespace unless both opt in",
			pools: []Pool{pool("p", "10.0.0.0/29", isDefault)},
			ops: []op{
				allocOp(req("a/x", share("k", tcp(80))), asl("p", "10.0.0.0")),
				// Same key in another namespace: its own address, not a's.
				allocOp(req("b/y", share("k", tcp(443))), asl("p", "10.0.0.1")),
				// Asking for a's address by value is refused.
				allocErr(req("b/z", share("k", tcp(8080)), addrs("10.0.0.0")), ErrShareNamespace, "a/x"),
				// a still adds a port freely: b holds nothing of its address.
				allocOp(req("a/x", share("k", tcp(80), tcp(443))), asl("p", "10.0.0.0")),
				// One side opting in is not enough.
				allocOp(req("c/v", share("j", tcp(80)), shareWith("d")), asl("p", "10.0.0.2")),
				allocErr(req("d/w", share("j", tcp(81)), addrs("10.0.0.2")), ErrShareNamespace, "c/v"),
				allocOp(req("d/w", share("j", tcp(81))), asl("p", "10.0.0.3")),
				// Both opting in share.
				allocOp(req("d/s", share("j", tcp(83)), shareWith("c")), asl("p", "10.0.0.2")),
				ownersOp("10.0.0.2", "c/v", "d/s"),
				// "*" on one side only: nobody lets e in.
				allocOp(req("e/u", share("j", tcp(82)), shareWith("*")), asl("p", "10.0.0.4")),
			},
		},
		{
			name:  "externalTrafficPolicy Local shares only with the same endpoints",
			pools: []Pool{pool("p", "10.0.0.0/29", isDefault)},
			ops: []op{
				allocOp(req("a/x", share("k", tcp(80)), local("a/app=web")), asl("p", "10.0.0.0")),
				allocOp(req("a/y", share("k", tcp(443)), local("a/app=web")), asl("p", "10.0.0.0")),
				allocErr(req("a/z", share("k", tcp(8080)), local("a/app=db")), ErrShareTrafficPolicy, "different pods"),
				allocErr(req("a/z", share("k", tcp(8080))), ErrShareTrafficPolicy, "externalTrafficPolicy Cluster"),
				allocErr(req("a/z", share("k", tcp(8080)), local("")), ErrShareTrafficPolicy, "a/z"),
				// Cluster with Cluster shares as before.
				allocOp(req("a/c1", share("c", tcp(80))), asl("p", "10.0.0.1")),
				allocOp(req("a/c2", share("c", tcp(81))), asl("p", "10.0.0.1")),
				// A sharer switching to Local is refused and keeps its address.
				allocErr(req("a/c2", share("c", tcp(81)), local("a/app=web")), ErrShareTrafficPolicy, "a/c1"),
				lookupOp("a/c2", asl("p", "10.0.0.1")),
			},
		},
		{
			name: "dual-stack",
			pools: []Pool{
				pool("v4", "10.0.0.0/30", isDefault),
				pool("v6", "fd00::", isDefault),
			},
			ops: []op{
				allocOp(req("ns/a", fams(IPv6, IPv4), requireAll), asl("v6", "fd00::", "v4", "10.0.0.0")),
				allocErr(req("ns/b", fams(IPv4, IPv6), requireAll), ErrPoolExhausted, "v6"),
				lookupOp("ns/b", nil),
				statsOp("v4", 4, 1),
				allocOp(req("ns/c", fams(IPv4, IPv6)), asl("v4", "10.0.0.1")),
				// PreferDualStack takes what it can, whichever family is first.
				allocOp(req("ns/d", fams(IPv6, IPv4)), asl("v4", "10.0.0.2")),
				lookupOp("ns/d", asl("v4", "10.0.0.2")),
				releaseOp("ns/a", asl("v6", "fd00::", "v4", "10.0.0.0")),
				// c now gets its missing family because nothing held blocks it.
				allocOp(req("ns/c", fams(IPv4, IPv6)), asl("v4", "10.0.0.1", "v6", "fd00::")),
				// Dropping a family releases its address.
				allocOp(req("ns/c", fams(IPv4)), asl("v4", "10.0.0.1")),
				ownersOp("fd00::"),
			},
		},
		{
			name:  "dual-stack without any IPv6 pool",
			pools: []Pool{pool("v4", "10.0.0.0/30", isDefault)},
			ops: []op{
				allocErr(req("ns/a", fams(IPv4, IPv6), requireAll), ErrNoPool, "IPv6"),
				statsOp("v4", 4, 0),
				allocOp(req("ns/b", fams(IPv4, IPv6)), asl("v4", "10.0.0.0")),
				allocOp(req("ns/c", fams(IPv6, IPv4)), asl("v4", "10.0.0.1")),
				allocErr(req("ns/d", fams(IPv6)), ErrNoPool, "IPv6"),
				statsOp("v4", 4, 2),
			},
		},
		{
			name: "idempotence and changed requests",
			pools: []Pool{
				pool("a", "10.0.0.0/30", prio(1), ns("ns")),
				pool("b", "10.1.0.0/30", isDefault),
			},
			ops: []op{
				allocOp(req("ns/s"), asl("a", "10.0.0.0")),
				allocOp(req("ns/s"), asl("a", "10.0.0.0")),
				// A pool configuration change does not move the Service.
				setPoolsOp(pool("a", "10.0.0.0/30", ns("ns"), disabled), pool("b", "10.1.0.0/30", prio(-1), isDefault)),
				allocOp(req("ns/s"), asl("a", "10.0.0.0")),
				// Explicitly naming another address moves it and frees the old one.
				allocOp(req("ns/s", addrs("10.1.0.2")), asl("b", "10.1.0.2")),
				ownersOp("10.0.0.0"),
				allocOp(req("ns/s", pools("b")), asl("b", "10.1.0.2")),
				allocOp(req("ns/s"), asl("b", "10.1.0.2")),
				// A failed change keeps what the Service had.
				allocOp(req("ns/t", addrs("10.1.0.3")), asl("b", "10.1.0.3")),
				allocErr(req("ns/s", addrs("10.1.0.3")), ErrAddressTaken, "ns/t"),
				allocErr(req("ns/s", pools("a")), ErrPoolDisabled, `"a"`),
				lookupOp("ns/s", asl("b", "10.1.0.2")),
				// Held addresses satisfy a pool list even if another named pool is missing.
				allocOp(req("ns/s", pools("b", "missing")), asl("b", "10.1.0.2")),
			},
		},
		{
			name: "named pool change moves the address",
			pools: []Pool{
				pool("a", "10.0.0.0/30", isDefault),
				pool("b", "10.1.0.0/30"),
			},
			ops: []op{
				allocOp(req("ns/s"), asl("a", "10.0.0.0")),
				allocOp(req("ns/s", pools("b")), asl("b", "10.1.0.0")),
				allocErr(req("ns/s", pools("c")), ErrPoolNotFound, `"c"`),
				lookupOp("ns/s", asl("b", "10.1.0.0")),
				statsOp("a", 4, 0),
			},
		},
		{
			name: "changing the sharing key of a shared address fails without changes",
			pools: []Pool{
				pool("eip", "10.0.0.0/30", isDefault),
			},
			ops: []op{
				allocOp(req("ns/a", share("k", tcp(80))), asl("eip", "10.0.0.0")),
				allocOp(req("ns/b", share("k", tcp(81))), asl("eip", "10.0.0.0")),
				allocErr(req("ns/b", share("k", tcp(80))), ErrPortClash, "ns/a"),
				allocErr(req("ns/b", share("other", tcp(81))), ErrAddressTaken, "ns/a"),
				allocOp(req("ns/b", share("k", tcp(82))), asl("eip", "10.0.0.0")),
				// ns/a, now alone under "k" after b leaves, may change its key.
				releaseOp("ns/b", asl("eip", "10.0.0.0")),
				allocOp(req("ns/a", share("new", tcp(80))), asl("eip", "10.0.0.0")),
				allocOp(req("ns/c", share("new", tcp(81))), asl("eip", "10.0.0.0")),
				allocOp(req("ns/d", share("k", tcp(81))), asl("eip", "10.0.0.1")),
			},
		},
		{
			name:  "release and reuse of the lowest address",
			pools: []Pool{pool("eip", "172.22.0.2-172.22.0.10", isDefault)},
			ops: []op{
				allocOp(req("ns/a"), asl("eip", "172.22.0.2")),
				allocOp(req("ns/b"), asl("eip", "172.22.0.3")),
				allocOp(req("ns/c"), asl("eip", "172.22.0.4")),
				releaseOp("ns/b", asl("eip", "172.22.0.3")),
				releaseOp("ns/b", nil),
				allocOp(req("ns/d"), asl("eip", "172.22.0.3")),
				allocOp(req("ns/e"), asl("eip", "172.22.0.5")),
			},
		},
		{
			name:  "shrinking or removing a pool keeps assignments",
			pools: []Pool{pool("eip", "10.0.0.0/29", isDefault)},
			ops: []op{
				allocOp(req("ns/a"), asl("eip", "10.0.0.0")),
				allocOp(req("ns/b"), asl("eip", "10.0.0.1")),
				setPoolsOp(pool("eip", "10.0.0.4/30", isDefault)),
				lookupOp("ns/a", asl("eip", "10.0.0.0")),
				allocOp(req("ns/a"), asl("eip", "10.0.0.0")),
				statsOp("eip", 4, 0),
				allocOp(req("ns/c"), asl("eip", "10.0.0.4")),
				setPoolsOp(pool("other", "10.5.0.0/30", isDefault)),
				lookupOp("ns/c", asl("eip", "10.0.0.4")),
				allocOp(req("ns/d"), asl("other", "10.5.0.0")),
				// Growing back: held addresses stay blocked.
				setPoolsOp(pool("eip", "10.0.0.0/29", isDefault), pool("other", "10.5.0.0/30")),
				allocOp(req("ns/e"), asl("eip", "10.0.0.2")),
				statsOp("eip", 8, 4),
				releaseOp("ns/a", asl("eip", "10.0.0.0")),
				allocOp(req("ns/f"), asl("eip", "10.0.0.0")),
				// Releasing an address outside every pool must not break anything.
				setPoolsOp(),
				releaseOp("ns/b", asl("eip", "10.0.0.1")),
				setPoolsOp(pool("renamed", "10.0.0.0/29", isDefault)),
				lookupOp("ns/f", asl("renamed", "10.0.0.0")),
				allocOp(req("ns/g"), asl("renamed", "10.0.0.1")),
			},
		},
		{
			name: "IPv6",
			pools: []Pool{
				pool("v6", "fd00::/112", isDefault),
				pool("big", "2001:db8::/64", ns("big")),
			},
			ops: []op{
				allocOp(req("ns/a", fams(IPv6)), asl("v6", "fd00::")),
				allocOp(req("ns/b", fams(IPv6)), asl("v6", "fd00::1")),
				allocOp(req("ns/c", fams(IPv6), addrs("fd00::ffff")), asl("v6", "fd00::ffff")),
				allocOp(req("big/a", fams(IPv6)), asl("big", "2001:db8::")),
				allocOp(req("big/b", fams(IPv6), addrs("2001:db8::ffff:ffff:ffff:ffff")), asl("big", "2001:db8::ffff:ffff:ffff:ffff")),
				allocOp(req("big/c", fams(IPv6)), asl("big", "2001:db8::1")),
				statsOp("big", math.MaxUint64, 3),
				statsOp("v6", 65536, 3),
				allocErr(req("big/d", fams(IPv4)), ErrNoPool, "IPv4"),
			},
		},
		{
			name:  "Assign re-adopts addresses",
			pools: []Pool{pool("eip", "10.0.0.0/30", isDefault)},
			ops: []op{
				assignOp("ns/a", "", nil, []string{"10.0.0.1"}, asl("eip", "10.0.0.1"), nil),
				assignOp("ns/a", "", nil, []string{"10.0.0.1"}, asl("eip", "10.0.0.1"), nil),
				allocOp(req("ns/a"), asl("eip", "10.0.0.1")),
				allocOp(req("ns/b"), asl("eip", "10.0.0.0")),
				allocOp(req("ns/c"), asl("eip", "10.0.0.2")),
				assignOp("ns/d", "", nil, []string{"10.0.0.1"}, nil, ErrAddressTaken),
				assignOp("ns/x", "", nil, []string{"192.168.1.1"}, asl("", "192.168.1.1"), nil),
				assignOp("ns/e", "", nil, []string{"::ffff:10.0.0.3"}, asl("eip", "10.0.0.3"), nil),
				assignOp("ns/f", "k", []Port{tcp(80)}, []string{"10.9.9.9"}, asl("", "10.9.9.9"), nil),
				assignOp("ns/g", "k", []Port{tcp(80)}, []string{"10.9.9.9"}, nil, ErrPortClash),
				assignOp("ns/g", "k", []Port{tcp(53)}, []string{"10.9.9.9"}, asl("", "10.9.9.9"), nil),
				ownersOp("10.9.9.9", "ns/f", "ns/g"),
				// All or nothing.
				assignOp("ns/h", "", nil, []string{"192.168.1.2", "10.0.0.1"}, nil, ErrAddressTaken),
				ownersOp("192.168.1.2"),
				lookupOp("ns/h", nil),
				// Assign adds to what the Service holds.
				assignOp("ns/x", "", nil, []string{"192.168.1.3"}, asl("", "192.168.1.3"), nil),
				lookupOp("ns/x", asl("", "192.168.1.1", "", "192.168.1.3")),
				// A later Allocate trims to one address per family.
				allocOp(req("ns/x"), asl("", "192.168.1.1")),
				ownersOp("192.168.1.3"),
				// Addresses adopted outside every pool get their pool once one covers them.
				setPoolsOp(pool("eip", "10.0.0.0/30", isDefault), pool("late", "192.168.1.0/24")),
				lookupOp("ns/x", asl("late", "192.168.1.1")),
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := New()
			if err := a.SetPools(tc.pools); err != nil {
				t.Fatalf("SetPools: %v", err)
			}
			runOps(t, a, tc.ops)
		})
	}
}

func TestAllocateInvalidRequest(t *testing.T) {
	a := New()
	if err := a.SetPools([]Pool{pool("eip", "10.0.0.0/30", isDefault)}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  Request
	}{
		{"no service", Request{Families: []Family{IPv4}}},
		{"no families", Request{Service: "ns/a"}},
		{"three families", Request{Service: "ns/a", Families: []Family{IPv4, IPv6, IPv4}}},
		{"same family twice", Request{Service: "ns/a", Families: []Family{IPv6, IPv6}}},
		{"unknown family", Request{Service: "ns/a", Families: []Family{5}}},
		{"zero address", Request{Service: "ns/a", Families: []Family{IPv4}, Addresses: []netip.Addr{{}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := a.Allocate(tc.req)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("Allocate() = %v, %v; want ErrInvalidRequest", got, err)
			}
		})
	}
}

func TestSetPoolsRejects(t *testing.T) {
	a := New()
	err := a.SetPools([]Pool{
		pool("b", "10.0.0.0/24"),
		pool("a", "10.0.0.128/25"),
		pool("c", "10.1.0.0/24"),
		pool("c", "10.2.0.0/24"),
		pool("", "10.3.0.0/24"),
		{Name: "d", Ranges: RangeSet{{First: mustAddr("10.4.0.5"), Last: mustAddr("10.4.0.1")}}},
		{Name: "e", Ranges: RangeSet{{First: mustAddr("::ffff:10.5.0.1"), Last: mustAddr("::ffff:10.5.0.2")}}},
		{Name: "h", Ranges: RangeSet{{First: mustAddr("10.6.0.1"), Last: mustAddr("fd00::1")}}},
		{Name: "i"},
		pool("f", "fd00::/64"),
		pool("g", "fd00::5"),
	})
	for _, want := range []error{ErrPoolOverlap, ErrInvalidPool, ErrInvalidRange} {
		if !errors.Is(err, want) {
			t.Errorf("SetPools error %v does not wrap %v", err, want)
		}
	}
	for _, want := range []string{
		`pool "b" (10.0.0.0-10.0.0.255) overlaps pool "a" (10.0.0.128-10.0.0.255); "b" is ignored`,
		`pool "g" (fd00::5) overlaps pool "f"`,
		`duplicate pool name "c" (range 10.2.0.0-10.2.0.255 ignored)`,
		`pool with range 10.3.0.0-10.3.0.255 has no name`,
		`pool "d"`, `pool "e"`, `pool "h"`, `pool "i"`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("SetPools error %q does not mention %q", err, want)
		}
	}
	got := map[string]uint64{}
	for _, name := range []string{"a", "b", "c", "d", "e", "f", "g", "h", "i"} {
		if st, ok := a.Stats(name); ok {
			got[name] = st.Size
		}
	}
	want := map[string]uint64{"a": 128, "c": 256, "f": math.MaxUint64}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("applied pools (-want +got):\n%s", diff)
	}
}

func TestStatsOwners(t *testing.T) {
	a := New()
	if err := a.SetPools([]Pool{pool("eip", "10.0.0.0/30", isDefault)}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []Request{req("ns/a", share("k", tcp(1))), req("ns/b", share("k", tcp(2))), req("ns/c")} {
		if _, err := a.Allocate(r); err != nil {
			t.Fatal(err)
		}
	}
	got, ok := a.Stats("eip")
	if !ok {
		t.Fatal("Stats(eip) not found")
	}
	want := PoolStats{Size: 4, Used: 2, Owners: map[netip.Addr][]ServiceKey{
		mustAddr("10.0.0.0"): {"ns/a", "ns/b"},
		mustAddr("10.0.0.1"): {"ns/c"},
	}}
	if diff := cmp.Diff(want, got, equateAddr); diff != "" {
		t.Errorf("Stats (-want +got):\n%s", diff)
	}
	if _, ok := a.Stats("missing"); ok {
		t.Error("Stats(missing) found a pool")
	}
}

func TestConcurrentAllocate(t *testing.T) {
	const workers, perWorker = 8, 60
	a := New()
	if err := a.SetPools([]Pool{pool("eip", "10.0.0.0/23", isDefault)}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[netip.Addr]ServiceKey{}
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				svc := ServiceKey(fmt.Sprintf("ns/w%d-%d", w, i))
				got, err := a.Allocate(req(string(svc)))
				if err != nil {
					errs <- err
					return
				}
				// Churn: release every third Service again so frees race with allocations.
				if i%3 == 2 {
					a.Release(svc)
					continue
				}
				mu.Lock()
				if prev, dup := seen[got[0].Addr]; dup {
					mu.Unlock()
					errs <- fmt.Errorf("%s given to both %s and %s", got[0].Addr, prev, svc)
					return
				}
				seen[got[0].Addr] = svc
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	st, _ := a.Stats("eip")
	if want := uint64(workers * perWorker * 2 / 3); st.Used != want || len(seen) != int(want) {
		t.Errorf("Used = %d, distinct = %d, want %d", st.Used, len(seen), want)
	}
	for addr, svc := range seen {
		if got := a.Lookup(svc); len(got) != 1 || got[0].Addr != addr {
			t.Errorf("Lookup(%s) = %v, want %s", svc, got, addr)
		}
	}
}

func TestReleaseAddrKeepsOtherAddresses(t *testing.T) {
	a := New()
	if err := a.SetPools([]Pool{{Name: "p", Ranges: RangeSet{mustRange(t, "10.0.0.0/30")}, Default: true}}); err != nil {
		t.Fatal(err)
	}
	x, y := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2")
	if _, err := a.Assign("ns/a", []netip.Addr{x, y}, Sharing{Key: "k"}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Assign("ns/b", []netip.Addr{x}, Sharing{Key: "k"}, []Port{{Protocol: "TCP", Port: 1}}); err != nil {
		t.Fatal(err)
	}
	a.ReleaseAddr("ns/a", x)
	if got := a.Owners(x); !slices.Equal(got, []ServiceKey{"ns/b"}) {
		t.Errorf("owners of %s after releasing ns/a: %v, want [ns/b]", x, got)
	}
	if got := a.Lookup("ns/a"); len(got) != 1 || got[0].Addr != y {
		t.Errorf("ns/a holds %v, want only %s", got, y)
	}
	a.ReleaseAddr("ns/b", x)
	if got := a.Owners(x); got != nil {
		t.Errorf("%s still held by %v", x, got)
	}
	if _, err := a.Assign("ns/c", []netip.Addr{x}, Sharing{}, nil); err != nil {
		t.Errorf("%s not free again: %v", x, err)
	}
	a.ReleaseAddr("ns/zzz", y) // not a holder: no effect
	if got := a.Owners(y); !slices.Equal(got, []ServiceKey{"ns/a"}) {
		t.Errorf("owners of %s: %v", y, got)
	}
}
