package bgp

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"maps"
	"math"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const importPolicyName = "openelb-speaker-import"

// GoBGP is the Speaker backed by an embedded GoBGP server.
type GoBGP struct {
	log logr.Logger

	mu     sync.Mutex
	srv    *server.BgpServer // nil until the first Apply and after Stop
	global Global
	peers  map[netip.Addr]Peer
	// paths is what GoBGP holds, sorted by ComparePaths and without
	// duplicates: a slice rather than a set, as a speaker of a rack holds
	// Services × next hops paths (40,000 with 10,000 Services and 4 next
	// hops) and a map of them costs twice the memory. Apply diffs it
	// against the wanted paths in one merge.
	paths []Path
	// nextHopSelf holds the peers in a next-hop-self neighbor-set (see nexthopself.go).
	nextHopSelf map[netip.Addr]bool
	// limitHolds are the neighbors held down for exceeding their prefix
	// limit, and their retries (see prefixlimit.go).
	limitHolds map[netip.Addr]*limitHold
	// peerTags are the configured peers' per-peer prepend tags (attrpolicy.go).
	peerTags  map[netip.Addr]uint32
	stopWatch context.CancelFunc // ends the session watch of srv
	// userPolicy is the admin policy installed in srv (userpolicy.go).
	userPolicy *UserPolicy

	// limitRetryMin and limitRetryMax bound the backoff of the prefix
	// limit retries (constant after NewGoBGP; tests shorten them).
	limitRetryMin, limitRetryMax time.Duration
}

var _ Speaker = (*GoBGP)(nil)

// NewGoBGP returns an idle speaker; the BGP instance starts on the first Apply.
// GoBGP's gRPC API is never enabled: the agent drives the server in-process,
// and an extra management port on every node would only widen the attack surface.
func NewGoBGP(log logr.Logger) *GoBGP {
	return &GoBGP{log: log, limitRetryMin: prefixLimitRetryMin, limitRetryMax: prefixLimitRetryMax}
}

func (s *GoBGP) Apply(ctx context.Context, g Global, peers []Peer, paths []Path) error {
	g = g.withDefaults()
	if err := g.validate(); err != nil {
		return err
	}
	wantPeers, errs := usablePeers(peers)
	wantPaths, err := sortedPaths(paths)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	if s.srv != nil && !s.global.sameInstance(g) {
		s.log.Info("global BGP configuration changed, restarting the BGP instance")
		if err := s.stopLocked(ctx, false); err != nil {
			return fmt.Errorf("restarting BGP instance: %w", err)
		}
	}
	if s.srv == nil {
		if err := s.startLocked(ctx, g); err != nil {
			return err
		}
	}
	s.global = g
	if !samePolicy(s.userPolicy, g.Policy) {
		if err := s.setUserPolicyLocked(ctx, g.Policy); err != nil {
			errs = append(errs, fmt.Errorf("BgpConf spec.policy: %w", err))
		}
	}

	// Withdraw first so a prefix that moved next hops is never advertised
	// with both the stale and the new next hop longer than necessary.
	withdraw, add, replaced := diffPathsReplacing(s.paths, wantPaths)
	excluded := excludedPeersChanged(replaced)
	var failed []Path // withdrawals that failed: still held
	if len(withdraw) > 0 {
		var err error
		if failed, err = s.deletePaths(withdraw); err != nil {
			errs = append(errs, err)
		}
	}

	for addr, old := range s.peers {
		want, ok := wantPeers[addr]
		if ok && want.equal(old) {
			continue
		}
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: addr.String()}); err != nil {
			name := old.Name
			if ok {
				name = want.Name
			}
			errs = append(errs, &PeerError{Name: name, Address: addr, Err: fmt.Errorf("removing the neighbor's previous settings: %w", err)})
			continue
		}
		delete(s.peers, addr)
		s.releaseLimitHoldLocked(addr)
		if err := s.leaveNextHopSelfLocked(ctx, addr); err != nil {
			errs = append(errs, err)
		}
		if err := s.removePeerStatementsLocked(ctx, addr); err != nil {
			errs = append(errs, &PeerError{Name: old.Name, Address: addr, Err: err})
		}
	}
	for _, addr := range sortedKeys(wantPeers) {
		if _, ok := s.peers[addr]; ok {
			continue
		}
		p := wantPeers[addr]
		if err := s.addPeerStatementsLocked(ctx, p); err != nil {
			errs = append(errs, &PeerError{Name: p.Name, Address: addr, Err: err})
			_ = s.removePeerStatementsLocked(ctx, addr)
			continue
		}
		if err := s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: toAPIPeer(p, g)}); err != nil {
			errs = append(errs, &PeerError{Name: p.Name, Address: addr, Err: fmt.Errorf("GoBGP refused the neighbor: %w", err)})
			_ = s.removePeerStatementsLocked(ctx, addr)
			continue
		}
		s.peers[addr] = p
	}

	var notAdded []Path
	if len(add) > 0 {
		var err error
		if notAdded, err = s.addPaths(add); err != nil {
			errs = append(errs, err)
		}
	}
	// A path replaced by one a peer must not receive is not withdrawn from
	// that peer by GoBGP (it only filters what it sends next): a soft reset
	// out re-sends that peer its paths through the export policy, which
	// withdraws what it now rejects. It costs one full re-send to that peer,
	// only when a peer selector's outcome changed.
	for _, name := range excluded {
		for addr, p := range s.peers {
			if p.Name != name {
				continue
			}
			if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true,
				Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
				s.log.V(1).Info("Soft reset out failed (the session is probably down; it gets the right paths when it comes up)", "peer", name, "err", err)
			}
		}
	}
	// What GoBGP holds now: the wanted paths, less those it refused, plus
	// the withdrawals it refused (retried on the next Apply).
	if len(failed) == 0 && len(notAdded) == 0 {
		s.paths = wantPaths
	} else {
		slices.SortFunc(notAdded, ComparePaths) // refused in two passes per batch
		held, _ := diffPaths(wantPaths, notAdded)
		held = append(held, failed...)
		slices.SortFunc(held, ComparePaths)
		s.paths = held
	}
	return errors.Join(errs...)
}

// usablePeers returns the peers Apply configures, normalized and by
// address, and a *PeerError for each other one: invalid, or with the
// address of a peer whose Name sorts first (the same winner whatever the
// order of peers, so every speaker and every Apply picks the same one).
func usablePeers(peers []Peer) (map[netip.Addr]Peer, []error) {
	byName := slices.Clone(peers)
	slices.SortStableFunc(byName, func(a, b Peer) int { return cmp.Compare(a.Name, b.Name) })
	want := make(map[netip.Addr]Peer, len(peers))
	var errs []error
	for _, p := range byName {
		p = p.withDefaults()
		p.Address = p.Address.Unmap()
		if err := p.validate(); err != nil {
			errs = append(errs, &PeerError{Name: p.Name, Address: p.Address, Err: err})
			continue
		}
		if first, dup := want[p.Address]; dup {
			errs = append(errs, &PeerError{Name: p.Name, Address: p.Address,
				Err: errInvalid("address also that of peer %q, which is configured instead", first.Name)})
			continue
		}
		want[p.Address] = p
	}
	return want, errs
}

// sortedPaths validates paths and returns them normalized, sorted by
// ComparePaths and without duplicates. Paths already so (the agent's) are
// returned as they are, not copied: the speaker then holds its 40,000
// paths once, not twice. Apply's callers do not modify a slice they
// passed.
func sortedPaths(paths []Path) ([]Path, error) {
	clean := true
	for i, p := range paths {
		n := p.normalize()
		if err := n.validate(); err != nil {
			return nil, err
		}
		if p != n || (i > 0 && ComparePaths(paths[i-1], p) >= 0) {
			clean = false
		}
	}
	if clean {
		return paths, nil
	}
	out := make([]Path, 0, len(paths))
	for _, p := range paths {
		out = append(out, p.normalize())
	}
	return slices.Clip(CompactPaths(out)), nil
}

// excludedPeersChanged lists the peers (by name) that the replaced
// paths' attributes (old, new pairs: diffPathsReplacing) stop or start
// excluding (DenyPeers).
func excludedPeersChanged(replaced map[[2]Attrs]bool) []string {
	changed := map[string]bool{}
	for pair := range replaced {
		a, b := pair[0].Attributes().DenyPeers, pair[1].Attributes().DenyPeers
		for _, n := range a {
			changed[n] = changed[n] || !slices.Contains(b, n)
		}
		for _, n := range b {
			changed[n] = changed[n] || !slices.Contains(a, n)
		}
	}
	maps.DeleteFunc(changed, func(_ string, c bool) bool { return !c })
	return slices.Sorted(maps.Keys(changed))
}

// CompactPaths sorts paths by ComparePaths and keeps one path per prefix
// and next hop: of paths that differ only in their attributes, the one
// whose attributes sort first (by their text form), so every speaker and
// every Apply picks the same. It works in place.
func CompactPaths(paths []Path) []Path {
	slices.SortFunc(paths, func(a, b Path) int {
		if c := ComparePaths(a, b); c != 0 {
			return c
		}
		return compareAttrs(a.Attrs, b.Attrs)
	})
	return slices.CompactFunc(paths, func(a, b Path) bool { return ComparePaths(a, b) == 0 })
}

// diffPaths merges two sorted, duplicate-free path lists: what only have
// holds (to withdraw) and what only want holds (to add). A path of both
// whose attributes changed is only in onlyWant: re-adding it replaces the
// old one (same prefix, next hop and path identifier), so the router sees
// one UPDATE and never a withdrawal in between.
func diffPaths(have, want []Path) (onlyHave, onlyWant []Path) {
	onlyHave, onlyWant, _ = diffPathsReplacing(have, want)
	return onlyHave, onlyWant
}

// diffPathsReplacing is diffPaths that also returns the distinct (old,
// new) attributes of the paths of both lists whose attributes changed.
func diffPathsReplacing(have, want []Path) (onlyHave, onlyWant []Path, replaced map[[2]Attrs]bool) {
	i, j := 0, 0
	for i < len(have) && j < len(want) {
		switch c := ComparePaths(have[i], want[j]); {
		case c < 0:
			onlyHave = append(onlyHave, have[i])
			i++
		case c > 0:
			onlyWant = append(onlyWant, want[j])
			j++
		default:
			if have[i].Attrs != want[j].Attrs {
				onlyWant = append(onlyWant, want[j])
				if replaced == nil {
					replaced = map[[2]Attrs]bool{}
				}
				replaced[[2]Attrs{have[i].Attrs, want[j].Attrs}] = true
			}
			i++
			j++
		}
	}
	onlyHave = append(onlyHave, have[i:]...)
	onlyWant = append(onlyWant, want[j:]...)
	return onlyHave, onlyWant, replaced
}

func (s *GoBGP) startLocked(ctx context.Context, g Global) error {
	srv := server.NewBgpServer(server.LoggerOption(slog.New(logr.ToSlogHandler(s.log.WithName("gobgp"))), nil))
	go srv.Serve()

	port := g.ListenPort
	if port == 0 {
		// GoBGP reads 0 as "use 179"; -1 is its way of saying no listener.
		port = -1
	}
	req := &api.StartBgpRequest{Global: &api.Global{
		Asn:        g.AS,
		RouterId:   g.RouterID.String(),
		ListenPort: port,
		Families:   ribFamilies,
	}}
	for _, a := range g.ListenAddresses {
		req.Global.ListenAddresses = append(req.Global.ListenAddresses, a.String())
	}
	if g.GracefulRestart {
		req.Global.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: g.RestartTime,
			HelperOnly: g.GRHelperOnly, NotificationEnabled: g.GRNotification, DeferralTime: g.GRDeferralTime}
	}
	if err := srv.StartBgp(ctx, req); err != nil {
		srv.Stop()
		return fmt.Errorf("starting BGP instance: %w", err)
	}
	if err := installPolicies(ctx, srv); err != nil {
		srv.Stop()
		return err
	}
	// Watching before any neighbor exists means no Established event can be missed.
	stopWatch, err := s.watchSessions(srv)
	if err != nil {
		srv.Stop()
		return err
	}
	s.srv = srv
	s.stopWatch = stopWatch
	s.global = g
	s.peers = map[netip.Addr]Peer{}
	s.paths = nil
	s.nextHopSelf = map[netip.Addr]bool{}
	s.limitHolds = map[netip.Addr]*limitHold{}
	s.peerTags = map[netip.Addr]uint32{}
	s.userPolicy = nil
	return nil
}

// ribFamilies are the address families of GoBGP's RIBs: the unicast ones
// the speaker advertises. Left empty, GoBGP builds a RIB for every family
// it knows (EVPN, flowspec, VPN...), twice (global and route-server), each
// of 2,048 shards: about 11 MB of a speaker's heap for tables that stay
// empty.
var ribFamilies = []uint32{
	uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV4_UNICAST]),
	uint32(oc.AfiSafiTypeToIntMap[oc.AFI_SAFI_TYPE_IPV6_UNICAST]),
}

func installPolicies(ctx context.Context, srv *server.BgpServer) error {
	if err := installImportReject(ctx, srv); err != nil {
		return err
	}
	return installExportNextHopSelf(ctx, srv)
}

// installImportReject makes the speaker deaf: routers send it full tables,
// which would only cost memory and could never be used (the agent does not
// program the kernel). GoBGP runs locally originated paths through the global
// import policy too, so those must be explicitly accepted.
func installImportReject(ctx context.Context, srv *server.BgpServer) error {
	pol := &api.Policy{
		Name: importPolicyName,
		Statements: []*api.Statement{{
			Name:       importPolicyName + "-accept-local",
			Conditions: &api.Conditions{RouteType: api.Conditions_ROUTE_TYPE_LOCAL},
			Actions:    &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		}},
	}
	if err := srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
		return fmt.Errorf("adding import policy: %w", err)
	}
	err := srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: &api.PolicyAssignment{
		Direction:     api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		Policies:      []*api.Policy{{Name: importPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}})
	if err != nil {
		return fmt.Errorf("assigning global import policy: %w", err)
	}
	return nil
}

func (s *GoBGP) Stop(ctx context.Context, graceful bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopLocked(ctx, graceful)
}

func (s *GoBGP) stopLocked(ctx context.Context, graceful bool) error {
	if s.srv == nil {
		return nil
	}
	srv := s.srv
	// The watch callback checks s.srv under s.mu, so after this point it
	// never touches the old instance.
	s.stopWatch()
	for addr := range s.limitHolds {
		s.releaseLimitHoldLocked(addr)
	}
	s.srv, s.peers, s.paths, s.nextHopSelf, s.limitHolds, s.peerTags, s.stopWatch = nil, nil, nil, nil, nil, nil, nil
	if graceful {
		// StopBgp skips the NOTIFICATION only for neighbors that negotiated
		// graceful restart; the others drop the routes, which is correct
		// since they would not keep them as stale anyway. srv.Stop() is not
		// used because it would tear the sessions down non-gracefully first.
		if err := srv.StopBgp(ctx, &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
			return fmt.Errorf("stopping BGP instance gracefully: %w", err)
		}
		return nil
	}
	// Explicit withdrawals make routers drop the paths even if they run
	// graceful restart helper mode for this session.
	if err := srv.DeletePath(apiutil.DeletePathRequest{DeleteAll: true}); err != nil {
		s.log.Error(err, "withdrawing all paths before stop")
	}
	srv.Stop()
	return nil
}

func (s *GoBGP) States(ctx context.Context) ([]PeerState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		return nil, nil
	}
	families := map[bgp.Family]bool{}
	for _, p := range s.paths {
		families[familyOf(p.Prefix)] = true
	}
	var out []PeerState
	err := s.srv.ListPeer(ctx, &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr := p.GetConf().GetNeighborAddress()
		st := PeerState{Address: addr}
		a, _ := netip.ParseAddr(addr)
		st.Name = s.peers[a].Name
		state := p.GetState().GetSessionState()
		st.State = strings.ToLower(strings.TrimPrefix(state.String(), "SESSION_STATE_"))
		if state == api.PeerState_SESSION_STATE_ESTABLISHED {
			if up := p.GetTimers().GetState().GetUptime(); up != nil {
				st.Uptime = time.Since(up.AsTime()).Round(time.Second)
			}
			st.AddPathNegotiated = addPathSendNegotiated(p.GetState().GetRemoteCap(), families)
			if local, err := netip.ParseAddr(p.GetTransport().GetLocalAddress()); err == nil {
				st.LocalAddress = local.String()
			}
		}
		// Kept while the session is down: the peer stays in the
		// next-hop-self set until it comes back with ADD-PATH.
		st.NextHopSelf = s.nextHopSelf[a]
		for _, af := range p.GetAfiSafis() {
			st.AdvertisedPaths += int(af.GetState().GetAdvertised())
		}
		st.UpdatesSent = p.GetState().GetMessages().GetSent().GetUpdate()
		st.BFDState = bfdState(s.peers[a].BFD != nil, p.GetState().GetBfdState().GetSessionState())
		for _, af := range p.GetAfiSafis() {
			st.ReceivedPrefixes += int(af.GetState().GetReceived())
		}
		st.PrefixLimit = s.peers[a].MaxPrefixes
		st.PrefixLimitExceeded = p.GetState().GetAdminState() == api.PeerState_ADMIN_STATE_PFX_CT || s.limitHolds[a].pending()
		out = append(out, st)
	})
	if err != nil {
		return nil, fmt.Errorf("listing neighbors: %w", err)
	}
	slices.SortFunc(out, func(a, b PeerState) int { return cmp.Compare(a.Address, b.Address) })
	return out, nil
}

// bfdState maps GoBGP's BFD session state to PeerState.BFDState. GoBGP
// registers the BFD session asynchronously, so a configured session it does
// not report yet is "down" rather than "" (off).
func bfdState(configured bool, st api.BfdSessionState) string {
	if !configured {
		return ""
	}
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admin-down"
	default:
		return "down"
	}
}

// addPathSendNegotiated reports whether the peer is willing to receive
// multiple paths for every family we advertise (IPv4 unicast when we
// advertise nothing yet, since that is what matters first).
func addPathSendNegotiated(remote []*api.Capability, families map[bgp.Family]bool) bool {
	if len(families) == 0 {
		families = map[bgp.Family]bool{bgp.RF_IPv4_UC: true}
	}
	accepts := map[bgp.Family]bool{}
	for _, c := range remote {
		for _, t := range c.GetAddPath().GetTuples() {
			m := t.GetMode()
			if m == api.AddPathCapabilityTuple_MODE_RECEIVE || m == api.AddPathCapabilityTuple_MODE_BOTH {
				f := t.GetFamily()
				accepts[bgp.NewFamily(uint16(f.GetAfi()), uint8(f.GetSafi()))] = true
			}
		}
	}
	for f := range families {
		if !accepts[f] {
			return false
		}
	}
	return true
}

// pathBatch bounds the paths handed to GoBGP in one call: one call is
// one turn of its management loop (and one UPDATE burst to the peers), so
// 40,000 paths go in 40 turns instead of 40,000, while a session event
// still gets a turn between batches.
const pathBatch = 1000

// addPaths advertises paths (sorted: GoBGP then hands out its on-the-wire
// path identifiers in the same order after a restart) and returns those
// GoBGP refused.
func (s *GoBGP) addPaths(paths []Path) ([]Path, error) {
	var errs []error
	var refused []Path
	for chunk := range slices.Chunk(paths, pathBatch) {
		req := apiutil.AddPathRequest{Paths: make([]*apiutil.Path, 0, len(chunk))}
		var built []Path
		for _, p := range chunk {
			ap, err := toAPIUtilPath(p)
			if err != nil {
				errs = append(errs, fmt.Errorf("advertising %s via %s: %w", p.Prefix, p.NextHop, err))
				refused = append(refused, p)
				continue
			}
			req.Paths = append(req.Paths, ap)
			built = append(built, p)
		}
		if len(built) == 0 {
			continue
		}
		// GoBGP reports each refused path in its response and returns the
		// last such error; an error with no refused path is the call's own
		// (the server stopping), which refuses them all.
		resps, err := s.srv.AddPath(req)
		whole := err != nil && !slices.ContainsFunc(resps, func(r apiutil.AddPathResponse) bool { return r.Error != nil })
		for i, p := range built {
			var perr error
			switch {
			case whole:
				perr = err
			case i < len(resps):
				perr = resps[i].Error
			}
			if perr != nil {
				errs = append(errs, fmt.Errorf("advertising %s via %s: %w", p.Prefix, p.NextHop, perr))
				refused = append(refused, p)
			}
		}
	}
	return refused, errors.Join(errs...)
}

// deletePaths withdraws paths in batches and returns those still held.
// GoBGP refuses a whole batch for one bad path, so a refused batch is
// retried path by path to withdraw all the others.
func (s *GoBGP) deletePaths(paths []Path) ([]Path, error) {
	var errs []error
	var held []Path
	del := func(ps []Path) error {
		req := apiutil.DeletePathRequest{Paths: make([]*apiutil.Path, 0, len(ps))}
		for _, p := range ps {
			ap, err := toAPIUtilPath(p)
			if err != nil {
				return err
			}
			req.Paths = append(req.Paths, ap)
		}
		return s.srv.DeletePath(req)
	}
	for chunk := range slices.Chunk(paths, pathBatch) {
		if del(chunk) == nil {
			continue
		}
		for _, p := range chunk {
			if err := del([]Path{p}); err != nil {
				errs = append(errs, fmt.Errorf("withdrawing %s via %s: %w", p.Prefix, p.NextHop, err))
				held = append(held, p)
			}
		}
	}
	return held, errors.Join(errs...)
}

// pathID keys a path inside GoBGP's RIB: local paths with the same prefix
// and the same identifier replace each other, so each next hop needs its own.
// A hash (not a counter) keeps it identical across agent restarts.
func pathID(p Path) uint32 {
	h := fnv.New32a()
	b, _ := p.Prefix.MarshalBinary()
	h.Write(b)
	b, _ = p.NextHop.MarshalBinary()
	h.Write(b)
	if id := h.Sum32(); id != 0 {
		return id
	}
	return 1
}

func familyOf(p netip.Prefix) bgp.Family {
	return addrFamily(p.Addr())
}

func addrFamily(a netip.Addr) bgp.Family {
	if a.Is4() {
		return bgp.RF_IPv4_UC
	}
	return bgp.RF_IPv6_UC
}

func toAPIUtilPath(p Path) (*apiutil.Path, error) {
	nlri, err := bgp.NewIPAddrPrefix(p.Prefix)
	if err != nil {
		return nil, fmt.Errorf("building NLRI: %w", err)
	}
	fam := familyOf(p.Prefix)
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	if fam == bgp.RF_IPv4_UC {
		nh, err := bgp.NewPathAttributeNextHop(p.NextHop)
		if err != nil {
			return nil, fmt.Errorf("building next hop: %w", err)
		}
		attrs = append(attrs, nh)
	} else {
		mp, err := bgp.NewPathAttributeMpReachNLRI(fam, []bgp.PathNLRI{{NLRI: nlri}}, p.NextHop)
		if err != nil {
			return nil, fmt.Errorf("building MP_REACH_NLRI: %w", err)
		}
		attrs = append(attrs, mp)
	}
	attrs = append(attrs, optionalAttrs(p.Attrs.Attributes())...)
	return &apiutil.Path{Family: fam, Nlri: nlri, Attrs: attrs, RemoteID: pathID(p)}, nil
}

// optionalAttrs are the path attributes of a, the prepend as its marker
// (attrpolicy.go).
func optionalAttrs(a Attributes) []bgp.PathAttributeInterface {
	var out []bgp.PathAttributeInterface
	if len(a.Communities) > 0 {
		out = append(out, bgp.NewPathAttributeCommunities(a.Communities))
	}
	large := make([]*bgp.LargeCommunity, 0, len(a.LargeCommunities)+1)
	for _, c := range a.LargeCommunities {
		large = append(large, bgp.NewLargeCommunity(c[0], c[1], c[2]))
	}
	if a.Prepend > 0 {
		m := prependMarker(a.Prepend)
		large = append(large, bgp.NewLargeCommunity(m[0], m[1], m[2]))
	}
	for _, name := range slices.Sorted(maps.Keys(a.PrependPeers)) {
		m := peerPrependMarker(name, a.PrependPeers[name])
		large = append(large, bgp.NewLargeCommunity(m[0], m[1], m[2]))
	}
	for _, name := range a.DenyPeers {
		m := denyMarker(name)
		large = append(large, bgp.NewLargeCommunity(m[0], m[1], m[2]))
	}
	if len(large) > 0 {
		out = append(out, bgp.NewPathAttributeLargeCommunities(large))
	}
	if a.HasLocalPref {
		out = append(out, bgp.NewPathAttributeLocalPref(a.LocalPref))
	}
	if a.LinkBandwidthMbps > 0 {
		out = append(out, bgp.NewPathAttributeExtendedCommunities([]bgp.ExtendedCommunityInterface{linkBandwidth(a.LinkBandwidthMbps)}))
	}
	return out
}

// linkBandwidth is the link-bandwidth extended community of mbps Mbit/s.
// It is sent transitive (type 0x00, sub-type 0x04) rather than as GoBGP's
// non-transitive LinkBandwidthExtended (type 0x40): routers do not pass
// non-transitive extended communities to eBGP peers, and the leaf must
// pass the rack's bandwidth on to the spine unchanged. The global
// administrator is AS_TRANS: the value does not depend on the speaker's
// AS, so paths of every speaker of a rack carry the same community.
func linkBandwidth(mbps uint64) bgp.ExtendedCommunityInterface {
	bytesPerSecond := float32(float64(mbps) * 1e6 / 8)
	return bgp.NewTwoOctetAsSpecificExtended(bgp.EC_SUBTYPE_LINK_BANDWIDTH, asTrans, math.Float32bits(bytesPerSecond), true)
}

// asTrans is AS_TRANS (RFC 6793).
const asTrans = 23456

func seconds(d time.Duration) uint64 {
	return uint64(math.Ceil(d.Seconds()))
}

// microseconds rounds up, so a sub-microsecond interval does not become 0,
// which GoBGP would read as "default" (1 s). validate bounds d.
func microseconds(d time.Duration) uint32 {
	return uint32((d + time.Microsecond - 1) / time.Microsecond)
}

func toAPIPeer(p Peer, g Global) *api.Peer {
	retry := seconds(p.ConnectRetry)
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborAddress: p.Address.String(),
			PeerAsn:         p.AS,
			LocalAsn:        p.LocalAS,
			AuthPassword:    p.Password,
			Description:     cmp.Or(p.Description, p.Name),
			AllowOwnAsn:     uint32(p.AllowOwnAS),
			ReplacePeerAsn:  p.ReplacePeerAS,
			AdminDown:       p.AdminDown,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			ConnectRetry:      retry,
			HoldTime:          seconds(p.HoldTime),
			KeepaliveInterval: seconds(p.Keepalive),
			// GoBGP waits 30s in Idle after a reset it sent itself (a
			// hold timer expiry, a prefix limit) by default; tying that
			// to the connect retry keeps such recovery as fast as the
			// operator asked for. After a session the router ended (a
			// NOTIFICATION, a closed connection) GoBGP v4.8.0 waits a
			// fixed 5s whatever this says: a restarted leaf gets its
			// routes back about 7s later (TestFaultsBGP).
			IdleHoldTimeAfterReset: retry,
		}},
		Transport: &api.Transport{RemotePort: uint32(p.Port), PassiveMode: p.Passive, TcpMss: uint32(p.TCPMSS)},
	}
	switch p.RemovePrivateAS {
	case "all":
		out.Conf.RemovePrivate = api.RemovePrivate_REMOVE_PRIVATE_ALL
	case "replace":
		out.Conf.RemovePrivate = api.RemovePrivate_REMOVE_PRIVATE_REPLACE
	}
	if p.EBGPMultihopTTL > 0 {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: p.EBGPMultihopTTL}
	}
	gr := p.GracefulRestart && g.GracefulRestart
	if gr {
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: cmp.Or(p.GRRestartTime, g.RestartTime),
			HelperOnly: p.GRHelperOnly || g.GRHelperOnly, NotificationEnabled: p.GRNotification || g.GRNotification,
			LonglivedEnabled: p.GRLongLived}
	}
	if p.BFD != nil {
		// GoBGP takes the intervals in microseconds, as on the wire; it
		// applies its defaults to zero values and keeps Port (the router's
		// UDP port) at 3784, RFC 5881's single-hop port.
		out.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: microseconds(p.BFD.DesiredMinTx),
			RequiredMinimumReceive:   microseconds(p.BFD.RequiredMinRx),
			DetectionMultiplier:      p.BFD.DetectMultiplier,
		}
	}
	var families []*api.Family
	if !p.NoIPv4 {
		families = append(families, &api.Family{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST})
	}
	if !p.NoIPv6 {
		families = append(families, &api.Family{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST})
	}
	for _, f := range families {
		af := &api.AfiSafi{
			Config:   &api.AfiSafiConfig{Family: f, Enabled: true},
			AddPaths: &api.AddPaths{Config: &api.AddPathsConfig{SendMax: p.AddPathSendMax}},
			// No shutdown threshold: in GoBGP it only logs a warning;
			// the speaker reports ReceivedPrefixes instead.
			PrefixLimits: &api.PrefixLimit{Family: f, MaxPrefixes: p.MaxPrefixes},
		}
		if gr {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
			if p.GRLongLived {
				af.LongLivedGracefulRestart = &api.LongLivedGracefulRestart{Config: &api.LongLivedGracefulRestartConfig{
					Enabled: true, RestartTime: p.GRStaleRoutesTime}}
			}
		}
		out.AfiSafis = append(out.AfiSafis, af)
	}
	return out
}

// ComparePaths orders paths by prefix, then next hop: the order Apply keeps
// its paths in, and in which a caller that passes them already sorted
// spares it a copy.
func ComparePaths(a, b Path) int {
	if c := a.Prefix.Addr().Compare(b.Prefix.Addr()); c != 0 {
		return c
	}
	if c := cmp.Compare(a.Prefix.Bits(), b.Prefix.Bits()); c != 0 {
		return c
	}
	return a.NextHop.Compare(b.NextHop)
}

func sortedKeys[V any](m map[netip.Addr]V) []netip.Addr {
	keys := make([]netip.Addr, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, netip.Addr.Compare)
	return keys
}
