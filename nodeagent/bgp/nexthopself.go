package bgp

// Next-hop-self fallback for peers without ADD-PATH.
//
// Every advertised path carries a third-party next hop (a node of the rack).
// A router that did not negotiate ADD-PATH receives only GoBGP's best path per
// prefix, i.e. one arbitrary node, and would silently send that node all the
// traffic while the status claimed every node was announced. Such a router
// instead gets exactly one path per prefix whose next hop is the speaker's own
// address on that session, which is the truth: this node forwards it.
//
// GoBGP allows per-peer policies only for route-server clients, so the
// mechanism is a global EXPORT policy with one statement per address family:
//
//	neighbor in openelb-nexthop-self-ipvX AND family is ipvX-unicast
//	  => set next hop self (no route action)
//
// For export, GoBGP evaluates a neighbor condition against the destination
// peer (PolicyOptions.Info), and "self" means that session's local address.
// With no route action, evaluation falls through to the default ACCEPT, so a
// peer that is in no set (every ADD-PATH peer) gets its paths untouched.
//
// A peer joins the set of its session's family when its session reaches
// Established without ADD-PATH for that family. GoBGP has already sent its
// initial UPDATEs by then, so the join is followed by a soft reset out, which
// re-sends the best path through the policy; the peer holds the corrected path
// within milliseconds. Sessions are observed through GoBGP's peer-state
// events rather than at States() time, because States is only called when the
// agent reports status. A peer leaves the set when it re-establishes with
// ADD-PATH (again followed by a soft reset out) or is deleted. Membership is
// kept across a session flap, so a router that comes back unchanged gets
// next-hop-self paths from its first UPDATE on.
//
// Only the family of the session can use next-hop-self: an IPv6 prefix sent
// over an IPv4 session would get an IPv4-mapped next hop that routers cannot
// resolve. A peer lacking ADD-PATH for the other family keeps GoBGP's single
// best path there; its status shows AddPathNegotiated=false for that case.

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const exportPolicyName = "openelb-speaker-export"

// nextHopSelfFamily is the neighbor-set and statement for one address family.
type nextHopSelfFamily struct {
	set string
	// sentinel keeps the set from ever being empty: GoBGP's neighbor
	// condition matches EVERY neighbor when its set is empty, which would
	// turn every ADD-PATH peer into a next-hop-self peer. The unspecified
	// address can never be a neighbor.
	sentinel string
	afi      api.Family_Afi
}

var nextHopSelfFamilies = []nextHopSelfFamily{
	{set: "openelb-nexthop-self-ipv4", sentinel: "0.0.0.0/32", afi: api.Family_AFI_IP},
	{set: "openelb-nexthop-self-ipv6", sentinel: "::/128", afi: api.Family_AFI_IP6},
}

// nextHopSelfSet names the set a peer joins: the family of its address is
// the family of the session, hence of the local address "self" resolves to.
func nextHopSelfSet(peer netip.Addr) string {
	if peer.Is4() {
		return nextHopSelfFamilies[0].set
	}
	return nextHopSelfFamilies[1].set
}

// installExportNextHopSelf creates the (sentinel-only) neighbor-sets and the
// global export policy that rewrites the next hop for their members, then
// carries out the attribute markers (attrpolicy.go).
func installExportNextHopSelf(ctx context.Context, srv *server.BgpServer) error {
	pol := &api.Policy{Name: exportPolicyName}

	for _, f := range nextHopSelfFamilies {
		err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
			Name:        f.set,
			List:        []string{f.sentinel},
		}})
		if err != nil {
			return fmt.Errorf("adding neighbor-set %s: %w", f.set, err)
		}
		pol.Statements = append(pol.Statements, &api.Statement{
			Name: exportPolicyName + "-" + f.set,
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: f.set},
				AfiSafiIn:   []*api.Family{{Afi: f.afi, Safi: api.Family_SAFI_UNICAST}},
			},
			Actions: &api.Actions{Nexthop: &api.NexthopAction{Self: true}},
		})
	}
	attrs, err := attributeStatements(ctx, srv)
	if err != nil {
		return err
	}
	pol.Statements = append(pol.Statements, attrs...)
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("adding export policy: %w", err)
	}
	if err := installPeerPolicy(ctx, srv); err != nil {
		return err
	}
	err = srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: exportAssignment(nil)})
	if err != nil {
		return fmt.Errorf("assigning global export policy: %w", err)
	}
	return nil
}

// watchSessions re-evaluates next-hop-self membership whenever a session of
// srv reaches Established, and schedules the retry of a neighbor GoBGP
// holds down for its prefix limit. GoBGP queues events for a watcher without bound, so
// the callback taking s.mu never stalls the BGP server. The returned function
// stops the watch.
func (s *GoBGP) watchSessions(srv *server.BgpServer) (context.CancelFunc, error) {
	ctx, cancel := context.WithCancel(context.Background())
	err := srv.WatchEvent(ctx, server.WatchEventMessageCallbacks{
		OnPeerUpdate: func(ev *apiutil.WatchEventMessage_PeerEvent, _ time.Time) {
			if ev.Type != apiutil.PEER_EVENT_STATE {
				return
			}
			switch {
			case ev.Peer.State.SessionState == bgp.BGP_FSM_ESTABLISHED:
				s.onEstablished(ctx, srv)
			case ev.Peer.State.AdminState == api.PeerState_ADMIN_STATE_PFX_CT:
				s.onPrefixLimit(ctx, srv, ev.Peer.State.NeighborAddress)
			}
		},
	}, server.WatchPeer())
	if err != nil {
		cancel()
		return nil, fmt.Errorf("watching BGP sessions: %w", err)
	}
	return cancel, nil
}

func (s *GoBGP) onEstablished(ctx context.Context, srv *server.BgpServer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != srv || ctx.Err() != nil {
		return // the instance was stopped or replaced while the event waited
	}
	if err := s.syncNextHopSelfLocked(ctx); err != nil {
		s.log.Error(err, "updating next-hop-self peers")
	}
}

// syncNextHopSelfLocked brings set membership in line with every established
// session. It reads the sessions afresh instead of trusting the event, which
// may be stale by the time the lock is taken (the session may have flapped or
// the peer been deleted); reading all of them keeps it idempotent.
func (s *GoBGP) syncNextHopSelfLocked(ctx context.Context) error {
	var changed []netip.Addr
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil || p.GetState().GetSessionState() != api.PeerState_SESSION_STATE_ESTABLISHED {
			return
		}
		if needsNextHopSelf(addr, p.GetState().GetRemoteCap()) != s.nextHopSelf[addr] {
			changed = append(changed, addr)
		}
	})
	if err != nil {
		return fmt.Errorf("listing neighbors: %w", err)
	}
	var errs []error
	for _, addr := range changed {
		join := !s.nextHopSelf[addr]
		if err := s.setNextHopSelfLocked(ctx, addr, join); err != nil {
			errs = append(errs, err)
			continue
		}
		s.log.Info("Next-hop-self changed for a BGP peer", "peer", s.peers[addr].Name, "address", addr,
			"nextHopSelf", join, "addPathNegotiated", !join)
		// Replace what the peer received under the old membership.
		err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{
			Address:   addr.String(),
			Soft:      true,
			Direction: api.ResetPeerRequest_DIRECTION_OUT,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("re-sending paths to %s: %w", addr, err))
		}
	}
	return errors.Join(errs...)
}

// needsNextHopSelf reports whether the peer lacks ADD-PATH for the family of
// its session (see the file comment for why only that family).
func needsNextHopSelf(peer netip.Addr, remote []*api.Capability) bool {
	return !addPathSendNegotiated(remote, map[bgp.Family]bool{addrFamily(peer): true})
}

// setNextHopSelfLocked adds the peer to, or removes it from, its family's
// set. Membership changes modify the set in place (append / remove) on
// purpose: GoBGP's AddDefinedSet with Replace swaps in a new set object while
// the policy statement keeps pointing at the old one, so a replace would
// silently have no effect.
func (s *GoBGP) setNextHopSelfLocked(ctx context.Context, peer netip.Addr, join bool) error {
	set := &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR,
		Name:        nextHopSelfSet(peer),
		List:        []string{netip.PrefixFrom(peer, peer.BitLen()).String()},
	}
	if join {
		if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set}); err != nil {
			return fmt.Errorf("adding %s to next-hop-self peers: %w", peer, err)
		}
		s.nextHopSelf[peer] = true
		return nil
	}
	if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: set}); err != nil {
		return fmt.Errorf("removing %s from next-hop-self peers: %w", peer, err)
	}
	delete(s.nextHopSelf, peer)
	return nil
}

// leaveNextHopSelfLocked forgets a deleted neighbor, so that a router later
// configured at the same address starts from a clean slate.
func (s *GoBGP) leaveNextHopSelfLocked(ctx context.Context, peer netip.Addr) error {
	if !s.nextHopSelf[peer] {
		return nil
	}
	return s.setNextHopSelfLocked(ctx, peer, false)
}
