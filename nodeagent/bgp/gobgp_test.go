package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
)

const (
	speakerAS = 65001
	routerAS  = 65002
)

var vip = netip.MustParsePrefix("172.22.0.2/32")

func freePort(t *testing.T, host string) uint16 {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatalf("finding a free port: %v", err)
	}
	defer l.Close()
	return uint16(l.Addr().(*net.TCPAddr).Port)
}

type router struct {
	srv  *server.BgpServer
	addr netip.Addr
	port uint16
	as   uint32
}

// startRouter starts a plain GoBGP server standing in for a leaf router:
// it listens on addr and accepts the speaker connecting from 127.0.0.1.
func startRouter(t *testing.T, addr string, addPathReceive bool) *router {
	t.Helper()
	return startRouterWithPassword(t, addr, addPathReceive, "")
}

func startRouterWithPassword(t *testing.T, addr string, addPathReceive bool, password string) *router {
	t.Helper()
	return startRouterAt(t, addr, freePort(t, addr), addPathReceive, password)
}

// startRouterAt starts a router on a given port, so a test can replace a
// router with a differently configured one the speaker reconnects to.
func startRouterAt(t *testing.T, addr string, port uint16, addPathReceive bool, password string) *router {
	t.Helper()
	return startRouterAS(t, addr, port, routerAS, addPathReceive, password)
}

// startRouterAS starts a router of AS as: speakerAS makes it an iBGP peer.
func startRouterAS(t *testing.T, addr string, port uint16, as uint32, addPathReceive bool, password string) *router {
	t.Helper()
	ctx := context.Background()
	srv := server.NewBgpServer()
	go srv.Serve()
	err := srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:             as,
		RouterId:        addr,
		ListenPort:      int32(port),
		ListenAddresses: []string{addr},
	}})
	if err != nil {
		t.Fatalf("starting router: %v", err)
	}
	t.Cleanup(srv.Stop)
	var afs []*api.AfiSafi
	for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
		afs = append(afs, &api.AfiSafi{
			Config:   &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true},
			AddPaths: &api.AddPaths{Config: &api.AddPathsConfig{Receive: addPathReceive}},
		})
	}
	err = srv.AddPeer(ctx, &api.AddPeerRequest{Peer: &api.Peer{
		Conf:      &api.PeerConf{NeighborAddress: "127.0.0.1", PeerAsn: speakerAS, AuthPassword: password},
		Transport: &api.Transport{PassiveMode: true},
		Timers:    &api.Timers{Config: &api.TimersConfig{ConnectRetry: 1, HoldTime: 9, KeepaliveInterval: 3, IdleHoldTimeAfterReset: 1}},
		AfiSafis:  afs,
	}})
	if err != nil {
		t.Fatalf("adding speaker as neighbor of router: %v", err)
	}
	return &router{srv: srv, addr: netip.MustParseAddr(addr), port: port, as: as}
}

func (r *router) peer(name string) Peer {
	return Peer{
		Name:         name,
		Address:      r.addr,
		AS:           r.as,
		Port:         r.port,
		HoldTime:     9 * time.Second,
		Keepalive:    3 * time.Second,
		ConnectRetry: time.Second,
	}
}

// nextHops lists the next hops the server's global RIB holds for prefix.
func nextHops(t *testing.T, srv *server.BgpServer, prefix netip.Prefix) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: familyOf(prefix)},
		func(nlri bgp.NLRI, paths []*apiutil.Path) {
			if nlri.String() != prefix.String() {
				return
			}
			for _, p := range paths {
				for _, a := range p.Attrs {
					switch a := a.(type) {
					case *bgp.PathAttributeNextHop:
						out = append(out, a.Value)
					case *bgp.PathAttributeMpReachNLRI:
						out = append(out, a.Nexthop)
					}
				}
			}
		})
	if err != nil {
		t.Fatalf("listing paths: %v", err)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s: %s", timeout, what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func newSpeaker(t *testing.T) *GoBGP {
	t.Helper()
	s := NewGoBGP(logr.Discard())
	t.Cleanup(func() { _ = s.Stop(context.Background(), false) })
	return s
}

var testGlobal = Global{AS: speakerAS, RouterID: netip.MustParseAddr("10.0.0.1")}

func paths(nhs ...string) []Path {
	var out []Path
	for _, nh := range nhs {
		out = append(out, Path{Prefix: vip, NextHop: netip.MustParseAddr(nh)})
	}
	return out
}

func addrs(ss ...string) []netip.Addr {
	var out []netip.Addr
	for _, s := range ss {
		out = append(out, netip.MustParseAddr(s))
	}
	return out
}

func waitNextHops(t *testing.T, r *router, want ...string) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("router to hold next hops %v", want), func() (bool, string) {
		got := nextHops(t, r.srv, vip)
		return slices.Equal(got, addrs(want...)), fmt.Sprintf("got %v", got)
	})
}

func waitEstablished(t *testing.T, s *GoBGP, addr netip.Addr) PeerState {
	t.Helper()
	var st PeerState
	eventually(t, 10*time.Second, "session to be established", func() (bool, string) {
		states, err := s.States(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, st = range states {
			if st.Address == addr.String() && st.State == "established" {
				return true, ""
			}
		}
		return false, fmt.Sprintf("states %+v", states)
	})
	return st
}

func TestAddPathAdvertiseAndWithdraw(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	s := newSpeaker(t)
	peers := []Peer{r.peer("leaf1")}

	if err := s.Apply(ctx, testGlobal, peers, paths("192.168.0.3", "192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "192.168.0.3", "192.168.0.4")
	st := waitEstablished(t, s, r.addr)
	if st.Name != "leaf1" || !st.AddPathNegotiated {
		t.Errorf("state = %+v, want name leaf1 and ADD-PATH negotiated", st)
	}
	eventually(t, 5*time.Second, "2 advertised paths in state", func() (bool, string) {
		states, _ := s.States(ctx)
		return len(states) == 1 && states[0].AdvertisedPaths == 2, fmt.Sprintf("%+v", states)
	})

	if err := s.Apply(ctx, testGlobal, peers, paths("192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "192.168.0.4")

	if err := s.Apply(ctx, testGlobal, peers, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r)
}

// peerState polls the speaker until cond holds for the state of the peer at addr.
func peerState(t *testing.T, s *GoBGP, addr netip.Addr, timeout time.Duration, what string, cond func(PeerState) bool) PeerState {
	t.Helper()
	var st PeerState
	eventually(t, timeout, what, func() (bool, string) {
		states, err := s.States(context.Background())
		if err != nil {
			return false, err.Error()
		}
		for _, st = range states {
			if st.Address == addr.String() && cond(st) {
				return true, ""
			}
		}
		return false, fmt.Sprintf("states %+v", states)
	})
	return st
}

// stableNextHops waits for the router to hold exactly want, then checks it
// still does a second later, so a late UPDATE (a second path, a third-party
// next hop) cannot slip through.
func stableNextHops(t *testing.T, r *router, want ...string) {
	t.Helper()
	waitNextHops(t, r, want...)
	time.Sleep(time.Second)
	if got := nextHops(t, r.srv, vip); !slices.Equal(got, addrs(want...)) {
		t.Fatalf("router %s holds %v a second later, want %v", r.addr, got, want)
	}
}

// nextHopSelfMembers lists the speaker's next-hop-self neighbor-set for
// IPv4 sessions, without the sentinel.
func nextHopSelfMembers(t *testing.T, s *GoBGP) []string {
	t.Helper()
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	var out []string
	err := srv.ListDefinedSet(context.Background(), &api.ListDefinedSetRequest{
		DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nextHopSelfFamilies[0].set,
	}, func(d *api.DefinedSet) {
		for _, e := range d.GetList() {
			if e != nextHopSelfFamilies[0].sentinel {
				out = append(out, e)
			}
		}
	})
	if err != nil {
		t.Fatalf("listing neighbor-set: %v", err)
	}
	return out
}

// A router without ADD-PATH receive gets one path per prefix via the speaker,
// while an ADD-PATH router of the same speaker keeps every node's next hop.
func TestNextHopSelfWithoutAddPath(t *testing.T) {
	ctx := context.Background()
	plain := startRouter(t, "127.0.0.2", false)
	multi := startRouter(t, "127.0.0.3", true)
	s := newSpeaker(t)
	peers := []Peer{plain.peer("plain"), multi.peer("multi")}
	const self = "127.0.0.1" // the speaker's address on both sessions

	// The ADD-PATH router alone first: an export policy whose next-hop-self
	// set has no members must leave its paths alone.
	if err := s.Apply(ctx, testGlobal, peers[1:], paths("192.168.0.3", "192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	stableNextHops(t, multi, "192.168.0.3", "192.168.0.4")

	if err := s.Apply(ctx, testGlobal, peers, paths("192.168.0.3", "192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitEstablished(t, s, plain.addr)
	// waitEstablished polls every 100ms, so this bounds the correction to
	// about a second after the session came up.
	eventually(t, 1500*time.Millisecond, "plain router to hold one path via the speaker", func() (bool, string) {
		got := nextHops(t, plain.srv, vip)
		return slices.Equal(got, addrs(self)), fmt.Sprintf("got %v", got)
	})
	stableNextHops(t, plain, self)
	stableNextHops(t, multi, "192.168.0.3", "192.168.0.4")

	st := peerState(t, s, plain.addr, 5*time.Second, "plain peer served with next-hop-self", func(st PeerState) bool { return st.NextHopSelf })
	if st.AddPathNegotiated || st.LocalAddress != self || st.Name != "plain" {
		t.Errorf("plain state = %+v, want AddPathNegotiated false, LocalAddress %s", st, self)
	}
	stMulti := waitEstablished(t, s, multi.addr)
	if !stMulti.AddPathNegotiated || stMulti.NextHopSelf || stMulti.LocalAddress != self {
		t.Errorf("multi state = %+v, want ADD-PATH, no next-hop-self, LocalAddress %s", stMulti, self)
	}
	if got := nextHopSelfMembers(t, s); !slices.Equal(got, []string{"127.0.0.2/32"}) {
		t.Errorf("next-hop-self set = %v, want only the plain router", got)
	}
	sent := map[string]uint64{plain.addr.String(): st.UpdatesSent, multi.addr.String(): stMulti.UpdatesSent}
	for addr, n := range sent {
		if n == 0 {
			t.Errorf("UpdatesSent to %s = 0 after advertising", addr)
		}
	}

	// Next hops come and go (either may have been GoBGP's best path): the
	// plain router must keep exactly one path via the speaker throughout.
	for _, step := range [][]string{
		{"192.168.0.4", "192.168.0.5"},
		{"192.168.0.5"},
		{"192.168.0.3", "192.168.0.5", "192.168.0.6"},
	} {
		if err := s.Apply(ctx, testGlobal, peers, paths(step...)); err != nil {
			t.Fatalf("Apply %v: %v", step, err)
		}
		waitNextHops(t, multi, step...)
		stableNextHops(t, plain, self)
	}
	if err := s.Apply(ctx, testGlobal, peers, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, multi)
	waitNextHops(t, plain)

	states, err := s.States(ctx)
	if err != nil {
		t.Fatalf("States: %v", err)
	}
	for _, st := range states {
		if st.UpdatesSent <= sent[st.Address] {
			t.Errorf("UpdatesSent to %s did not grow: %d, before %d", st.Address, st.UpdatesSent, sent[st.Address])
		}
	}

	// Deleting the neighbor removes it from the set, and the emptied set
	// still leaves the ADD-PATH router alone.
	if err := s.Apply(ctx, testGlobal, peers[1:], paths("192.168.0.3", "192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if got := nextHopSelfMembers(t, s); len(got) != 0 {
		t.Errorf("next-hop-self set = %v after deleting the plain router, want empty", got)
	}
	stableNextHops(t, multi, "192.168.0.3", "192.168.0.4")
}

// A router that re-establishes with ADD-PATH (same address and port, new
// capabilities) leaves next-hop-self and gets every next hop again.
func TestNextHopSelfLeftWhenAddPathNegotiated(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.2", false)
	s := newSpeaker(t)
	peers := []Peer{r.peer("leaf1")}
	if err := s.Apply(ctx, testGlobal, peers, paths("192.168.0.3", "192.168.0.4")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "127.0.0.1")
	peerState(t, s, r.addr, 5*time.Second, "next-hop-self", func(st PeerState) bool { return st.NextHopSelf })

	r.srv.Stop()
	r2 := startRouterAt(t, r.addr.String(), r.port, true, "")
	stableNextHops(t, r2, "192.168.0.3", "192.168.0.4")
	st := peerState(t, s, r.addr, 5*time.Second, "ADD-PATH without next-hop-self", func(st PeerState) bool {
		return st.State == "established" && st.AddPathNegotiated && !st.NextHopSelf
	})
	if st.LocalAddress != "127.0.0.1" {
		t.Errorf("LocalAddress = %q", st.LocalAddress)
	}
	if got := nextHopSelfMembers(t, s); len(got) != 0 {
		t.Errorf("next-hop-self set = %v, want empty", got)
	}
}

func TestRoutesFromPeersAreRejected(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	s := newSpeaker(t)
	if err := s.Apply(ctx, testGlobal, []Peer{r.peer("leaf1")}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitEstablished(t, s, r.addr)

	foreign := netip.MustParsePrefix("10.99.0.0/24")
	nlri, _ := bgp.NewIPAddrPrefix(foreign)
	nh, _ := bgp.NewPathAttributeNextHop(netip.MustParseAddr("127.0.0.1"))
	_, err := r.srv.AddPath(apiutil.AddPathRequest{Paths: []*apiutil.Path{{
		Family: bgp.RF_IPv4_UC, Nlri: nlri,
		Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nh},
	}}})
	if err != nil {
		t.Fatalf("router AddPath: %v", err)
	}

	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	// The route must have reached the speaker (Adj-RIB-In), otherwise the
	// absence from the RIB below would prove nothing.
	eventually(t, 10*time.Second, "foreign route in speaker's Adj-RIB-In", func() (bool, string) {
		found := false
		err := srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_ADJ_IN, Name: r.addr.String(), Family: bgp.RF_IPv4_UC},
			func(n bgp.NLRI, _ []*apiutil.Path) { found = found || n.String() == foreign.String() })
		return err == nil && found, fmt.Sprint(err)
	})
	if got := nextHops(t, srv, foreign); len(got) != 0 {
		t.Errorf("speaker RIB accepted a route from a peer: %v", got)
	}
	if got := nextHops(t, srv, vip); !slices.Equal(got, addrs("192.168.0.3")) {
		t.Errorf("speaker RIB lost its own path: %v", got)
	}
}

func TestStopWithdraws(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	s := newSpeaker(t)
	if err := s.Apply(ctx, testGlobal, []Peer{r.peer("leaf1")}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "192.168.0.3")
	if err := s.Stop(ctx, false); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	waitNextHops(t, r)
	if st, err := s.States(ctx); err != nil || len(st) != 0 {
		t.Errorf("States after Stop = %v, %v; want none", st, err)
	}
}

func TestIPv6Path(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	s := newSpeaker(t)
	p6 := netip.MustParsePrefix("2001:db8::2/128")
	ps := []Path{
		{Prefix: p6, NextHop: netip.MustParseAddr("fd00::3")},
		{Prefix: p6, NextHop: netip.MustParseAddr("fd00::4")},
	}
	if err := s.Apply(ctx, testGlobal, []Peer{r.peer("leaf1")}, ps); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	eventually(t, 10*time.Second, "both IPv6 paths at the router", func() (bool, string) {
		got := nextHops(t, r.srv, p6)
		return slices.Equal(got, addrs("fd00::3", "fd00::4")), fmt.Sprintf("got %v", got)
	})
	if st := waitEstablished(t, s, r.addr); !st.AddPathNegotiated {
		t.Errorf("AddPathNegotiated = false for IPv6 paths")
	}
}

// routerUptime returns when the router's session with the speaker came up.
func routerUptime(t *testing.T, r *router) time.Time {
	t.Helper()
	var up time.Time
	err := r.srv.ListPeer(context.Background(), &api.ListPeerRequest{}, func(p *api.Peer) {
		if p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED {
			up = p.GetTimers().GetState().GetUptime().AsTime()
		}
	})
	if err != nil {
		t.Fatalf("router ListPeer: %v", err)
	}
	return up
}

func TestChangedPeerResetsOnlyThatPeer(t *testing.T) {
	ctx := context.Background()
	r1 := startRouter(t, "127.0.0.1", true)
	r2 := startRouter(t, "127.0.0.2", true)
	s := newSpeaker(t)
	p1, p2 := r1.peer("leaf1"), r2.peer("leaf2")
	if err := s.Apply(ctx, testGlobal, []Peer{p1, p2}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r1, "192.168.0.3")
	waitNextHops(t, r2, "192.168.0.3")
	up1, up2 := routerUptime(t, r1), routerUptime(t, r2)

	p2.HoldTime = 12 * time.Second
	if err := s.Apply(ctx, testGlobal, []Peer{p1, p2}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	eventually(t, 10*time.Second, "leaf2 session to be re-established", func() (bool, string) {
		u := routerUptime(t, r2)
		return u.After(up2), fmt.Sprintf("uptime %v, before %v", u, up2)
	})
	waitNextHops(t, r2, "192.168.0.3")
	if u := routerUptime(t, r1); !u.Equal(up1) {
		t.Errorf("leaf1 session was reset (up since %v, before %v)", u, up1)
	}
}

// Under -race this test reports a race inside GoBGP: StartBgp writes the
// package-level table.SelectionOptions/UseMultiplePaths that every BgpServer
// in the process reads. It only arises with two servers in one process (the
// test's router); the speaker stops its old instance before starting a new one.
func TestChangedGlobalRestartsInstance(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	s := newSpeaker(t)
	peers := []Peer{r.peer("leaf1")}
	if err := s.Apply(ctx, testGlobal, peers, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "192.168.0.3")
	up := routerUptime(t, r)

	g := testGlobal
	g.RouterID = netip.MustParseAddr("10.0.0.9")
	if err := s.Apply(ctx, g, peers, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	eventually(t, 10*time.Second, "session re-established with the new router ID", func() (bool, string) {
		var id string
		_ = r.srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) {
			if p.GetState().GetSessionState() == api.PeerState_SESSION_STATE_ESTABLISHED {
				id = p.GetState().GetRouterId()
			}
		})
		return id == "10.0.0.9" && routerUptime(t, r).After(up), "router id " + id
	})
	waitNextHops(t, r, "192.168.0.3")
}

func TestInvalidConfig(t *testing.T) {
	s := newSpeaker(t)
	ctx := context.Background()
	for name, tc := range map[string]struct {
		g     Global
		peers []Peer
		paths []Path
	}{
		"no AS":          {g: Global{RouterID: netip.MustParseAddr("10.0.0.1")}},
		"IPv6 router ID": {g: Global{AS: 1, RouterID: netip.MustParseAddr("fd00::1")}},
		"mixed families": {g: testGlobal, paths: []Path{{Prefix: vip, NextHop: netip.MustParseAddr("fd00::1")}}},
		"default route":  {g: testGlobal, paths: []Path{{Prefix: netip.MustParsePrefix("0.0.0.0/0"), NextHop: netip.MustParseAddr("192.168.0.3")}}},
		"prepend > 10":   {g: testGlobal, paths: []Path{{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"), Attrs: Intern(Attributes{Prepend: 11})}}},
	} {
		if err := s.Apply(ctx, tc.g, tc.peers, tc.paths); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: Apply error = %v, want ErrInvalidConfig", name, err)
		}
	}
}

// TCP MD5 (TCP_MD5SIG) needs no privileges on Linux, so this runs unprivileged.
func TestPassword(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name        string
		speaker     string
		establishes bool
	}{
		{"match", "s3cret", true},
		{"mismatch", "wrong", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := startRouterWithPassword(t, "127.0.0.1", true, "s3cret")
			s := newSpeaker(t)
			p := r.peer("leaf1")
			p.Password = tc.speaker
			if err := s.Apply(ctx, testGlobal, []Peer{p}, paths("192.168.0.3")); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if tc.establishes {
				waitEstablished(t, s, r.addr)
				return
			}
			deadline := time.Now().Add(4 * time.Second)
			for time.Now().Before(deadline) {
				if !routerUptime(t, r).IsZero() {
					t.Fatal("session established despite password mismatch")
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	}
}

func TestToAPIPeerBFD(t *testing.T) {
	base := Peer{Name: "leaf1", Address: netip.MustParseAddr("10.1.0.1"), AS: routerAS}
	for _, tc := range []struct {
		name string
		bfd  *BFD
		want *api.BfdPeerConfig
	}{
		{"off", nil, nil},
		{"defaults", &BFD{}, &api.BfdPeerConfig{Enabled: true}},
		{"timers", &BFD{DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 300 * time.Millisecond, DetectMultiplier: 5},
			&api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 50000, RequiredMinimumReceive: 300000, DetectionMultiplier: 5}},
		// Rounded up: 0 would mean GoBGP's 1s default.
		{"sub-microsecond", &BFD{DesiredMinTx: 500 * time.Nanosecond, RequiredMinRx: 1500 * time.Nanosecond},
			&api.BfdPeerConfig{Enabled: true, DesiredMinimumTxInterval: 1, RequiredMinimumReceive: 2}},
	} {
		p := base
		p.BFD = tc.bfd
		got := toAPIPeer(p.withDefaults(), testGlobal).GetBfd()
		if (got == nil) != (tc.want == nil) || got != nil && !sameBFD(got, tc.want) {
			t.Errorf("%s: Bfd = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func sameBFD(a, b *api.BfdPeerConfig) bool {
	return a.GetEnabled() == b.GetEnabled() && a.GetPort() == b.GetPort() &&
		a.GetDesiredMinimumTxInterval() == b.GetDesiredMinimumTxInterval() &&
		a.GetRequiredMinimumReceive() == b.GetRequiredMinimumReceive() &&
		a.GetDetectionMultiplier() == b.GetDetectionMultiplier()
}

func TestInvalidBFD(t *testing.T) {
	s := newSpeaker(t)
	for name, b := range map[string]BFD{
		"multiplier":        {DetectMultiplier: 256},
		"negative interval": {DesiredMinTx: -time.Millisecond},
		"huge interval":     {RequiredMinRx: 2 * time.Hour},
	} {
		p := Peer{Name: name, Address: netip.MustParseAddr("127.0.0.9"), AS: routerAS, BFD: &b}
		err := s.Apply(context.Background(), testGlobal, []Peer{p}, nil)
		if peers, rest := SplitPeerErrors(err); len(peers) != 1 || peers[0].Name != name || !errors.Is(peers[0], ErrInvalidConfig) || rest != nil {
			t.Errorf("%s: Apply error = %v, want a PeerError of ErrInvalidConfig", name, err)
		}
	}
}

// GoBGP takes the BFD settings for the neighbor (with its port default), and
// BFDState is reported for a BFD neighbor only. Whether the session comes up
// is TestBFDUpAndFastDetection's business.
func TestBFDConfig(t *testing.T) {
	ctx := context.Background()
	withBFD := startRouter(t, "127.0.0.2", true)
	without := startRouter(t, "127.0.0.3", true)
	s := newSpeaker(t)
	p := withBFD.peer("bfd")
	p.BFD = &BFD{DesiredMinTx: 50 * time.Millisecond, RequiredMinRx: 200 * time.Millisecond, DetectMultiplier: 5}
	if err := s.Apply(ctx, testGlobal, []Peer{p, without.peer("plain")}, nil); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	s.mu.Lock()
	srv := s.srv
	s.mu.Unlock()
	got := map[string]*api.BfdPeerConfig{}
	err := srv.ListPeer(ctx, &api.ListPeerRequest{}, func(p *api.Peer) { got[p.GetConf().GetNeighborAddress()] = p.GetBfd() })
	if err != nil {
		t.Fatalf("ListPeer: %v", err)
	}
	want := &api.BfdPeerConfig{Enabled: true, Port: server.BfdServerPort, DesiredMinimumTxInterval: 50000, RequiredMinimumReceive: 200000, DetectionMultiplier: 5}
	if b := got["127.0.0.2"]; !sameBFD(b, want) {
		t.Errorf("BFD neighbor config = %v, want %v", b, want)
	}
	if b := got["127.0.0.3"]; b.GetEnabled() {
		t.Errorf("BFD enabled for a neighbor without BFD: %v", b)
	}
	states, err := s.States(ctx)
	if err != nil {
		t.Fatalf("States: %v", err)
	}
	for _, st := range states {
		switch st.Name {
		case "bfd":
			if !slices.Contains([]string{"down", "init", "up"}, st.BFDState) {
				t.Errorf("BFDState of the BFD peer = %q", st.BFDState)
			}
		case "plain":
			if st.BFDState != "" {
				t.Errorf("BFDState of a peer without BFD = %q, want empty", st.BFDState)
			}
		}
	}
}
