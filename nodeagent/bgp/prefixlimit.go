package bgp

// Prefix limits: what bounds the memory a router can make a speaker use.
//
// The speaker uses nothing routers send: the global import policy rejects
// every received route (installImportReject). But GoBGP v4.8.0 stores what
// an UPDATE carries in the neighbor's Adj-RIB-In before any policy runs
// (peer.handleUpdate hands every path to adjRibIn.Update, those rejected
// for an AS loop included) and keeps it for the life of the session. It
// has no soft-reconfiguration-inbound switch to turn that off, and import
// policies, global or per neighbor (route-server clients), only decide
// what goes on from there. Measured: 650-850 bytes of heap per received
// route, so a router sending a full Internet table (about a million routes)
// would take a speaker far past its memory limit, and the OOM kill would
// withdraw everything it announces, to every router.
//
// The only bound GoBGP offers is a prefix limit per address family
// (AfiSafi PrefixLimits.MaxPrefixes). When an UPDATE takes a family's
// Adj-RIB-In past it, GoBGP sends a NOTIFICATION (Cease, maximum number of
// prefixes reached, RFC 4486), closes the session, which frees that
// Adj-RIB-In, and holds the neighbor in Idle (admin state PFX_CT) until it
// is enabled again. There is no mode that keeps the session and discards
// the excess (the shutdown threshold only logs a warning). So a router that
// sends more than the limit gets none of this speaker's paths while it
// does: on GoBGP v4.8.0 no design both keeps announcing to such a router
// and bounds memory. The speaker's other sessions, hence the rack's other
// routers, keep everything, which an OOM kill would not leave them.
//
// Around it, the speaker:
//   - sets DefaultMaxPrefixes per family well above what a router sends
//     when it merely lacks an export filter: the fabric's own routes, and
//     the Service addresses of the rack's other speakers it may reflect
//     back (rejected for the AS loop, but stored and counted: up to one
//     per Service). 20,000 bounds one family's Adj-RIB-In at about 17 MB;
//   - enables a held-down neighbor again after 30 s, twice as long after
//     each new hold, at most 10 min; a hold more than 10 min after the
//     last retry starts over at 30 s. A router given an
//     export filter is back within the backoff without anyone touching the
//     speaker; one still flooding gets the speaker's paths for the moment
//     the retry lasts;
//   - reports the hold (PeerState.PrefixLimitExceeded) and, while the
//     session is up, how many routes the router sends
//     (PeerState.ReceivedPrefixes), so a router creeping towards the limit
//     shows before it is cut off.
//
// GoBGP checks the limit by counting the Adj-RIB-In on every UPDATE it
// receives, so reaching it costs CPU quadratic in the limit over the
// prefixes per UPDATE: well under a second when the router packs hundreds
// of prefixes per UPDATE (routes sharing their attributes, as an
// unfiltered leaf's mostly do), over a minute of one core at one prefix
// per UPDATE (about 20 s measured for 10,000). The backoff keeps that
// rare; routers should send the speakers nothing at all (README, BGP).

import (
	"context"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// DefaultMaxPrefixes is a peer's MaxPrefixes when it sets none.
const DefaultMaxPrefixes = 20000

// The backoff of the retries of a neighbor held down for its prefix limit.
const (
	prefixLimitRetryMin = 30 * time.Second
	prefixLimitRetryMax = 10 * time.Minute
)

// limitHold is one neighbor's prefix-limit holds.
type limitHold struct {
	holds   int         // since the backoff last started over
	retry   *time.Timer // the pending re-enable; nil when none
	retried time.Time   // when it was last enabled again
}

// pending says whether the neighbor waits for its retry.
func (h *limitHold) pending() bool { return h != nil && h.retry != nil }

// retryDelay is the wait before the retry of the n-th hold (n ≥ 1): first,
// doubling up to most.
func retryDelay(n int, first, most time.Duration) time.Duration {
	d := first
	for i := 1; i < n && d < most; i++ {
		d *= 2
	}
	return min(d, most)
}

// onPrefixLimit handles GoBGP's event of a neighbor of srv held down for
// its prefix limit.
func (s *GoBGP) onPrefixLimit(ctx context.Context, srv *server.BgpServer, addr netip.Addr) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != srv || ctx.Err() != nil {
		return // the instance was stopped or replaced while the event waited
	}
	s.holdForPrefixLimitLocked(addr.Unmap())
}

// holdForPrefixLimitLocked schedules the retry of a configured neighbor
// held down for its prefix limit, unless one is pending.
func (s *GoBGP) holdForPrefixLimitLocked(addr netip.Addr) {
	p, ok := s.peers[addr]
	if !ok {
		return
	}
	h := s.limitHolds[addr]
	if h == nil {
		h = &limitHold{}
		s.limitHolds[addr] = h
	}
	if h.retry != nil {
		return
	}
	if !h.retried.IsZero() && time.Since(h.retried) > s.limitRetryMax {
		h.holds = 0
	}
	h.holds++
	delay := retryDelay(h.holds, s.limitRetryMin, s.limitRetryMax)
	srv := s.srv
	h.retry = time.AfterFunc(delay, func() { s.retryPrefixLimit(srv, addr, h) })
	s.log.Info("BGP peer sent more prefixes of one family than its limit: GoBGP closed the session, and the router gets none of this speaker's paths until a retry finds it within the limit; filter what it exports to the speakers",
		"peer", p.Name, "address", addr, "maxPrefixesPerFamily", p.MaxPrefixes, "retryIn", delay)
}

// retryPrefixLimit enables a held-down neighbor again, unless the
// instance was replaced or the neighbor removed or changed meanwhile (a
// re-added neighbor starts enabled).
func (s *GoBGP) retryPrefixLimit(srv *server.BgpServer, addr netip.Addr, h *limitHold) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != srv || s.limitHolds[addr] != h {
		return
	}
	h.retry, h.retried = nil, time.Now()
	name := s.peers[addr].Name
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.EnablePeer(ctx, &api.EnablePeerRequest{Address: addr.String()}); err != nil {
		s.log.Error(err, "Re-enabling a BGP peer held down for its prefix limit failed; retrying later", "peer", name, "address", addr)
		s.holdForPrefixLimitLocked(addr)
		return
	}
	s.log.Info("Retrying a BGP peer held down for its prefix limit", "peer", name, "address", addr)
}

// releaseLimitHoldLocked forgets a neighbor's holds (it was removed).
func (s *GoBGP) releaseLimitHoldLocked(addr netip.Addr) {
	if h := s.limitHolds[addr]; h != nil && h.retry != nil {
		h.retry.Stop()
	}
	delete(s.limitHolds, addr)
}
