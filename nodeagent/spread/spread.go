// Package spread decides which node answers ARP/NDP for each layer-2
// address, so that the addresses of a pool spread over its nodes instead
// of all landing on one pool leader.
//
// It is pure: given the same pool, addresses and candidate nodes, every
// speaker computes the same owner for every address, so the nodes agree
// without writing anything per address. The API cost of layer 2 then
// depends on the number of nodes (each renews one liveness Lease), never
// on the number of addresses.
//
// The owner of an address is chosen by rendezvous (highest random weight)
// hashing: each candidate scores hash(pool, address, node) and the highest
// score wins. When a node joins or leaves, only the addresses it wins or
// held move (about 1/n of them), not a reshuffle of the whole pool, which
// keeps hand-overs (and their gratuitous ARPs) to what the change needs.
// Preferred nodes, when any of them is a candidate, are the only ones
// considered.
//
// The speaker uses it twice: to choose the answering node of each
// address among a pool's candidates (package election's View.Owner), and
// to pick, for an externalTrafficPolicy Local address, the endpoint node
// whose MAC the answer carries.
package spread

import (
	"hash/fnv"
	"net/netip"
	"slices"
)

// Owner returns the candidate that answers for addr in pool, or "" when
// there is no candidate. preferred, when one of them is a candidate,
// restricts the choice to those.
func Owner(pool string, addr netip.Addr, candidates, preferred []string) string {
	pick := candidates
	if len(preferred) > 0 {
		var pc []string
		for _, c := range candidates {
			if slices.Contains(preferred, c) {
				pc = append(pc, c)
			}
		}
		if len(pc) > 0 {
			pick = pc
		}
	}
	best, bestScore := "", uint64(0)
	for _, n := range pick {
		s := score(pool, addr, n)
		// Ties (astronomically rare) go to the smaller name, so the
		// result does not depend on the order of candidates.
		if best == "" || s > bestScore || (s == bestScore && n < best) {
			best, bestScore = n, s
		}
	}
	return best
}

// Assign returns the owner of every address (Owner for each).
func Assign(pool string, addrs []netip.Addr, candidates, preferred []string) map[netip.Addr]string {
	out := make(map[netip.Addr]string, len(addrs))
	for _, a := range addrs {
		out[a] = Owner(pool, a, candidates, preferred)
	}
	return out
}

// score hashes pool, address and node with FNV-1a and a final avalanche
// (splitmix64's), so that nearby addresses and similar node names still
// get independent scores.
func score(pool string, addr netip.Addr, node string) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(pool))
	_, _ = h.Write([]byte{0})
	b := addr.As16()
	_, _ = h.Write(b[:])
	_, _ = h.Write([]byte(node))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}
