package plugin

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// PoolsInput is everything `pools` reads; RenderPools needs nothing else.
type PoolsInput struct {
	Eips []v1alpha2.Eip
	// Claims are the IPClaims, the complete record of who holds which
	// address (Eip.status.used stops at 1,000 entries).
	Claims []v1alpha2.IPClaim
	// ClaimsListed is false when the IPClaims could not be read (RBAC):
	// the holders then come from each Eip's status.used.
	ClaimsListed bool
}

// conditionReady is the Eip condition that says whether it serves
// allocations.
const conditionReady = "Ready"

// holding is one address in use and the Services holding it.
type holding struct {
	addr     netip.Addr
	ip       string
	services []string // namespace/name, sorted
	key      string   // sharing key, when shared
}

// RenderPools prints one tree per pool, by name: its address, protocol,
// usage out of its size, readiness, then each address in use with the
// Services holding it, the addresses reserved ahead of demand, and the
// conditions worth a look (Unsupported, AddressesOutsideRange...).
// Addresses claimed from no current pool come last.
func RenderPools(in PoolsInput) string {
	eips := slices.Clone(in.Eips)
	slices.SortFunc(eips, func(a, b v1alpha2.Eip) int { return cmp.Compare(a.Name, b.Name) })
	held, reserved := map[string][]holding{}, map[string][]holding{}
	if in.ClaimsListed {
		for _, c := range in.Claims {
			h := holding{ip: c.Spec.Address, key: c.Spec.SharingKey}
			h.addr, _ = netip.ParseAddr(c.Spec.Address)
			for _, o := range c.Spec.Owners {
				h.services = append(h.services, o.Namespace+"/"+o.Name)
			}
			slices.Sort(h.services)
			if len(h.services) == 0 {
				reserved[c.Spec.Pool] = append(reserved[c.Spec.Pool], h)
			} else {
				held[c.Spec.Pool] = append(held[c.Spec.Pool], h)
			}
		}
	} else {
		for _, e := range eips {
			for ip, svcs := range e.Status.Used {
				h := holding{ip: ip, services: strings.Split(svcs, ",")}
				h.addr, _ = netip.ParseAddr(ip)
				slices.Sort(h.services)
				held[e.Name] = append(held[e.Name], h)
			}
		}
	}

	var b strings.Builder
	known := map[string]bool{}
	for i := range eips {
		e := &eips[i]
		known[e.Name] = true
		n := &node{text: poolHeader(e)}
		for _, c := range sortedConditions(e.Status.Conditions) {
			switch {
			case c.Type == conditionReady && c.Status != metav1.ConditionTrue:
				n.add("[%s] %s", c.Reason, c.Message)
			case c.Type != conditionReady && c.Status == metav1.ConditionTrue:
				n.add("[%s] %s", c.Type, c.Message)
			}
		}
		addHoldings(n, held[e.Name], reserved[e.Name])
		if !in.ClaimsListed && len(e.Status.Used) > 0 {
			n.add("holders from the Eip's status.used (IPClaims not readable)")
		}
		n.write(&b)
	}
	var orphans []string
	for pool := range held {
		if !known[pool] {
			orphans = append(orphans, pool)
		}
	}
	for pool := range reserved {
		if !known[pool] && !slices.Contains(orphans, pool) {
			orphans = append(orphans, pool)
		}
	}
	slices.Sort(orphans)
	for _, pool := range orphans {
		n := &node{text: fmt.Sprintf("addresses claimed from pool %s, which does not exist (any more)", orNone(pool))}
		addHoldings(n, held[pool], reserved[pool])
		n.write(&b)
	}
	return b.String()
}

// poolHeader is a pool's line: name, address, protocol, usage, readiness
// and what sets it apart (default pool, disabled, being deleted).
func poolHeader(e *v1alpha2.Eip) string {
	proto := e.EffectiveProtocol()
	if proto == v1alpha2.ProtocolLayer2 && e.Spec.Interface != "" {
		proto += " on " + e.Spec.Interface
	}
	parts := []string{poolRanges(e), proto}
	if e.Status.PoolSize == 0 && e.Status.ObservedGeneration == 0 && len(e.Status.Conditions) == 0 {
		parts = append(parts, "no status yet (is the openelb CCM running?)")
	} else {
		parts = append(parts, fmt.Sprintf("%d/%d used", e.Status.Usage, e.Status.PoolSize))
		ready := "not ready"
		if c := findCondition(e.Status.Conditions, conditionReady); c != nil && c.Status != metav1.ConditionTrue {
			ready += " (" + c.Reason + ")"
		} else if e.Status.Ready {
			ready = "ready"
		}
		parts = append(parts, ready)
	}
	if e.Spec.SkipNetworkAndBroadcast {
		parts = append(parts, "without network and broadcast addresses")
	}
	if e.IsDefault() {
		parts = append(parts, "default pool")
	}
	if e.Spec.Disable {
		parts = append(parts, "disabled")
	}
	if e.DeletionTimestamp != nil {
		parts = append(parts, "being deleted")
	}
	return e.Name + ": " + strings.Join(parts, ", ")
}

// poolRanges is the pool's address and its extra ranges, as written.
func poolRanges(e *v1alpha2.Eip) string {
	var rs []string
	if e.Spec.Address != "" {
		rs = append(rs, string(e.Spec.Address))
	}
	for _, r := range e.Spec.Ranges {
		rs = append(rs, string(r))
	}
	if len(rs) == 0 {
		return "no address"
	}
	return strings.Join(rs, " + ")
}

// addHoldings adds the addresses in use, in address order and aligned,
// then the reserved ones on one line.
func addHoldings(n *node, held, reserved []holding) {
	byAddr := func(a, b holding) int { return cmp.Or(a.addr.Compare(b.addr), cmp.Compare(a.ip, b.ip)) }
	slices.SortFunc(held, byAddr)
	slices.SortFunc(reserved, byAddr)
	width := 0
	for _, h := range held {
		width = max(width, len(h.ip))
	}
	for _, h := range held {
		t := fmt.Sprintf("%-*s  %s", width, h.ip, strings.Join(h.services, ", "))
		if h.key != "" {
			t += fmt.Sprintf(" (shared-ip %s)", h.key)
		}
		n.add("%s", t)
	}
	if len(reserved) > 0 {
		ips := make([]string, len(reserved))
		for i, h := range reserved {
			ips[i] = h.ip
		}
		n.add("reserved ahead of demand: %s", strings.Join(ips, ", "))
	}
}

// findCondition returns the condition of type t, nil when there is none.
func findCondition(cs []metav1.Condition, t string) *metav1.Condition {
	for i := range cs {
		if cs[i].Type == t {
			return &cs[i]
		}
	}
	return nil
}
