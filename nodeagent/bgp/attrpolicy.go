package bgp

// AS-path prepend by export policy.
//
// Per peer. A path a peer must not receive (Attributes.DenyPeers: a peer
// selector) carries MarkerAdmin:markerDeny:T, and the first statement of
// that peer rejects it. A prepend toward one peer (Attributes.PrependPeers) is the
// marker MarkerAdmin:markerPeerBase+N:T, T a hash of the peer's name. For
// each configured peer the speaker adds, before the neighbor itself, a
// neighbor-set holding its address and one statement per N (0..MaxPrepend)
// to a policy evaluated before the export policy: "neighbor is this peer
// and the path carries MarkerAdmin:markerPeerBase+N:T" prepends N times and
// removes the all-peers marker, so the all-peers statement does not apply
// on top. They go when the neighbor goes. Two peer names with the same
// hash cannot both have per-peer prepends: the second is refused (a
// PeerError), never confused with the first.
//
// A path's communities, large communities and LOCAL_PREF are attributes of
// the path itself. A prepend is not: the AS path of a locally originated
// path is empty, GoBGP prepends the speaker's AS toward eBGP peers only,
// and an iBGP router must never see its own AS in a path (it would drop
// the route as a loop). So the path carries a marker, the large community
// MarkerAdmin:markerPrepend:N, and the global export policy (evaluated
// per peer, after GoBGP has prepended the speaker's AS for eBGP peers) has
// one statement per N that prepends the leftmost AS N more times: toward
// an eBGP peer that is the speaker's AS; toward an iBGP peer the AS path is
// empty and GoBGP's "last-as" prepend leaves it so. A last statement strips
// every marker, so no router ever receives one. All of it is installed once
// with the instance: nothing to update when attributes change.

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"strconv"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
)

// MarkerAdmin is the large-community global administrator of the speaker's
// markers (4294967295, a reserved AS number, RFC 7300): never a real
// network's, and never sent.
const MarkerAdmin = math.MaxUint32

// markerPrepend is the first local part of a prepend marker; the second is
// the count.
const markerPrepend = 1

// markerPeerBase+N is the first local part of a per-peer prepend marker
// (N times); the second is the peer's tag.
const markerPeerBase = 100

// markerDeny is the first local part of a "not to this peer" marker; the
// second is the peer's tag.
const markerDeny = 200

func denyMarker(name string) [3]uint32 { return [3]uint32{MarkerAdmin, markerDeny, peerTag(name)} }

// peerPolicyName is the policy of the per-peer statements, assigned
// before exportPolicyName.
const peerPolicyName = "openelb-speaker-peers"

// peerTag identifies a peer by name in markers.
func peerTag(name string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	return h.Sum32()
}

func peerPrependMarker(name string, n uint8) [3]uint32 {
	return [3]uint32{MarkerAdmin, markerPeerBase + uint32(n), peerTag(name)}
}

func peerSetName(tag uint32) string { return fmt.Sprintf("openelb-peer-%08x", tag) }

func peerDenySetName(tag uint32) string { return fmt.Sprintf("openelb-peer-%08x-deny", tag) }

func peerCountSetName(tag uint32, n int) string { return fmt.Sprintf("openelb-peer-%08x-%d", tag, n) }

// peerStatementName names the statement for prepending n times toward the
// peer of tag.
func peerStatementName(tag uint32, n int) string {
	return peerPolicyName + "-" + peerCountSetName(tag, n)
}

// peerLastPolicyName is the policy of the per-peer statements that run
// after the export policy (SendCommunity: they strip community attributes,
// which must wait until the markers have been carried out).
const peerLastPolicyName = "openelb-speaker-peers-last"

// installPeerPolicy creates the (sentinel-only) per-peer policies; peers
// add their statements to them.
func installPeerPolicy(ctx context.Context, srv *server.BgpServer) error {
	// A policy is never empty: a statement that matches nothing (the
	// unspecified address is never a neighbor) keeps it valid.
	if err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: peerPolicyName + "-none", List: []string{"0.0.0.0/32"},
	}}); err != nil {
		return fmt.Errorf("adding neighbor-set %s-none: %w", peerPolicyName, err)
	}
	for _, name := range []string{peerPolicyName, peerLastPolicyName} {
		pol := &api.Policy{Name: name, Statements: []*api.Statement{{
			Name:       name + "-none",
			Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: peerPolicyName + "-none"}},
		}}}
		if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return fmt.Errorf("adding policy %s: %w", name, err)
		}
	}
	return nil
}

// sendCommunityStatement strips what p must not receive (nil: nothing).
func sendCommunityStatement(p Peer, tag uint32) *api.Statement {
	all := []string{".*"}
	ext := []string{"rt:.*", "soo:.*", "encap:.*", "lb:.*"}
	var a api.Actions
	switch p.SendCommunity {
	case SendCommunityStandard:
		a.ExtCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: ext}
	case SendCommunityExtended:
		a.Community = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: all}
		a.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: all}
	case SendCommunityNone:
		a.Community = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: all}
		a.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: all}
		a.ExtCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: ext}
	default:
		return nil
	}
	return &api.Statement{
		Name:       sendCommunityStatementName(tag),
		Conditions: &api.Conditions{NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: peerSetName(tag)}},
		Actions:    &a,
	}
}

func sendCommunityStatementName(tag uint32) string {
	return peerLastPolicyName + fmt.Sprintf("-%08x-send-community", tag)
}

// markerText is a large community in GoBGP's text form.
func markerText(m [3]uint32) string { return fmt.Sprintf("%d:%d:%d", m[0], m[1], m[2]) }

// addLargeSet defines a large-community set of one entry (a community or
// a regular expression).
func addLargeSet(ctx context.Context, srv *server.BgpServer, name, entry string) error {
	err := srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY, Name: name, List: []string{entry},
	}})
	if err != nil {
		return fmt.Errorf("adding large-community-set %s: %w", name, err)
	}
	return nil
}

// peerStatementNames are the statements of the peer of tag in
// peerPolicyName, and its large-community sets.
func peerStatementNames(tag uint32) (statements, sets []string) {
	statements = []string{peerPolicyName + "-" + peerDenySetName(tag)}
	sets = []string{peerDenySetName(tag)}
	for n := 0; n <= MaxPrepend; n++ {
		statements = append(statements, peerStatementName(tag, n))
		sets = append(sets, peerCountSetName(tag, n))
	}
	return statements, sets
}

// addPeerStatementsLocked installs the per-peer statements of p (before p
// is added as a neighbor, so its first UPDATE already goes through them).
func (s *GoBGP) addPeerStatementsLocked(ctx context.Context, p Peer) error {
	tag := peerTag(p.Name)
	for addr, other := range s.peerTags {
		if other == tag && addr != p.Address {
			return fmt.Errorf("per-peer export statements: the name %q hashes like that of the peer at %s; rename one of them", p.Name, addr)
		}
	}
	if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: peerSetName(tag), List: []string{netip.PrefixFrom(p.Address, p.Address.BitLen()).String()},
	}}); err != nil {
		return fmt.Errorf("adding neighbor-set %s: %w", peerSetName(tag), err)
	}
	statement := func(name, set string, actions *api.Actions) *api.Statement {
		return &api.Statement{Name: name, Actions: actions, Conditions: &api.Conditions{
			NeighborSet:       &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: peerSetName(tag)},
			LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: set},
		}}
	}
	// First: paths this peer must not receive (a peer selector).
	if err := addLargeSet(ctx, s.srv, peerDenySetName(tag), markerText(denyMarker(p.Name))); err != nil {
		return err
	}
	pol := &api.Policy{Name: peerPolicyName, Statements: []*api.Statement{statement(peerPolicyName+"-"+peerDenySetName(tag),
		peerDenySetName(tag), &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_REJECT})}}
	removeAll := fmt.Sprintf(`^%d:%d:[0-9]+$`, uint32(MarkerAdmin), markerPrepend)
	for n := 0; n <= MaxPrepend; n++ {
		if err := addLargeSet(ctx, s.srv, peerCountSetName(tag, n), markerText(peerPrependMarker(p.Name, uint8(n)))); err != nil {
			return err
		}
		actions := &api.Actions{LargeCommunity: &api.CommunityAction{Type: api.CommunityAction_TYPE_REMOVE, Communities: []string{removeAll}}}
		if n > 0 {
			actions.AsPrepend = &api.AsPrependAction{UseLeftMost: true, Repeat: uint32(n)}
		}
		pol.Statements = append(pol.Statements, statement(peerStatementName(tag, n), peerCountSetName(tag, n), actions))
	}
	if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("adding the per-peer statements of %s: %w", p.Name, err)
	}
	s.peerTags[p.Address] = tag
	if st := sendCommunityStatement(p, tag); st != nil {
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: &api.Policy{Name: peerLastPolicyName, Statements: []*api.Statement{st}}}); err != nil {
			return fmt.Errorf("adding the send-community statement of %s: %w", p.Name, err)
		}
	}
	return nil
}

// removePeerStatementsLocked removes what addPeerStatementsLocked
// installed for the peer at addr (after the neighbor is gone).
func (s *GoBGP) removePeerStatementsLocked(ctx context.Context, addr netip.Addr) error {
	tag, ok := s.peerTags[addr]
	if !ok {
		return nil
	}
	statements, sets := peerStatementNames(tag)
	var errs []error
	// Out of their policies (the send-community statement is removed
	// whether or not the peer had one: that changes nothing), then gone:
	// GoBGP keeps a statement removed from a policy, and the peer may come
	// back.
	for policy, names := range map[string][]string{peerPolicyName: statements, peerLastPolicyName: {sendCommunityStatementName(tag)}} {
		pol := &api.Policy{Name: policy}
		for _, n := range names {
			pol.Statements = append(pol.Statements, &api.Statement{Name: n})
		}
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: pol}); err != nil {
			errs = append(errs, fmt.Errorf("removing the per-peer statements of %s from %s: %w", addr, policy, err))
		}
		for _, n := range names {
			_ = s.srv.DeleteStatement(ctx, &api.DeleteStatementRequest{Statement: &api.Statement{Name: n}, All: true})
		}
	}
	for _, set := range sets {
		if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_LARGE_COMMUNITY, Name: set}, All: true}); err != nil {
			errs = append(errs, err)
		}
	}
	if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: &api.DefinedSet{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: peerSetName(tag)}, All: true}); err != nil {
		errs = append(errs, err)
	}
	delete(s.peerTags, addr)
	return errors.Join(errs...)
}

func prependMarker(n uint8) [3]uint32 { return [3]uint32{MarkerAdmin, markerPrepend, uint32(n)} }

const markerSetName = "openelb-markers"

func prependSetName(n int) string { return "openelb-prepend-" + strconv.Itoa(n) }

// attributeStatements creates the marker sets and returns the export
// statements that carry out the markers, in order.
func attributeStatements(ctx context.Context, srv *server.BgpServer) ([]*api.Statement, error) {
	var out []*api.Statement
	for n := 1; n <= MaxPrepend; n++ {
		if err := addLargeSet(ctx, srv, prependSetName(n), markerText(prependMarker(uint8(n)))); err != nil {
			return nil, err
		}
		out = append(out, &api.Statement{
			Name:       exportPolicyName + "-" + prependSetName(n),
			Conditions: &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: prependSetName(n)}},
			Actions:    &api.Actions{AsPrepend: &api.AsPrependAction{UseLeftMost: true, Repeat: uint32(n)}},
		})
	}
	// Conditioned on carrying a marker, so unmarked paths are not copied
	// for every peer (an action clones the path it changes).
	markers := fmt.Sprintf(`^%d:[0-9]+:[0-9]+$`, uint32(MarkerAdmin))
	if err := addLargeSet(ctx, srv, markerSetName, markers); err != nil {
		return nil, err
	}
	out = append(out, &api.Statement{
		Name:       exportPolicyName + "-strip-markers",
		Conditions: &api.Conditions{LargeCommunitySet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: markerSetName}},
		Actions: &api.Actions{LargeCommunity: &api.CommunityAction{
			Type:        api.CommunityAction_TYPE_REMOVE,
			Communities: []string{markers},
		}},
	})
	return out, nil
}
