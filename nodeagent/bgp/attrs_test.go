package bgp

import (
	"context"
	"encoding/binary"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

func TestInternCanonical(t *testing.T) {
	a := Intern(Attributes{Communities: []uint32{0xFFFFFF01, 65000<<16 | 100, 65000<<16 | 100},
		LargeCommunities: [][3]uint32{{65000, 2, 1}, {65000, 1, 2}}, LocalPref: 200, HasLocalPref: true, Prepend: 2})
	b := Intern(Attributes{Communities: []uint32{65000<<16 | 100, 0xFFFFFF01},
		LargeCommunities: [][3]uint32{{65000, 1, 2}, {65000, 2, 1}}, LocalPref: 200, HasLocalPref: true, Prepend: 2, LinkBandwidthMbps: 25000})
	a = Intern(func() Attributes { x := a.Attributes(); x.LinkBandwidthMbps = 25000; return x }())
	if a != b {
		t.Errorf("equal sets interned differently: %q vs %q", a, b)
	}
	const want = "communities=65000:100,65535:65281 large=65000:1:2,65000:2:1 localpref=200 prepend=2 lb-mbps=25000"
	if a.String() != want {
		t.Errorf("String() = %q, want %q", a, want)
	}
	got := a.Attributes()
	if !slices.Equal(got.Communities, []uint32{65000<<16 | 100, 0xFFFFFF01}) || len(got.LargeCommunities) != 2 ||
		got.LocalPref != 200 || !got.HasLocalPref || got.Prepend != 2 || got.LinkBandwidthMbps != 25000 {
		t.Errorf("round trip = %+v", got)
	}
	if Intern(Attributes{LocalPref: 300}) != (Attrs{}) {
		t.Error("a local preference without HasLocalPref is not an attribute")
	}
	if Intern(Attributes{LinkBandwidthMbps: 1}) == (Attrs{}) {
		t.Error("a link bandwidth is an attribute")
	}
	if Intern(Attributes{HasLocalPref: true}) == (Attrs{}) {
		t.Error("LOCAL_PREF 0 is an attribute")
	}
}

// TestLinkBandwidthEncoding: the community is the transitive two-octet-AS
// link bandwidth (type 0x00, sub-type 0x04) with bytes per second as an
// IEEE float, so a leaf passes it to eBGP peers.
func TestLinkBandwidthEncoding(t *testing.T) {
	b, err := linkBandwidth(1000).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != 0x00 || b[1] != 0x04 || binary.BigEndian.Uint16(b[2:4]) != 23456 {
		t.Errorf("type/sub-type/AS = %#x/%#x/%d, want 0x0/0x4/23456", b[0], b[1], binary.BigEndian.Uint16(b[2:4]))
	}
	if got := math.Float32frombits(binary.BigEndian.Uint32(b[4:8])); got != 125e6 {
		t.Errorf("bandwidth = %v bytes/s, want 125000000 (1000 Mbit/s)", got)
	}
}

func TestDiffReplacesChangedAttributes(t *testing.T) {
	nh := netip.MustParseAddr("192.168.0.3")
	old := []Path{{Prefix: vip, NextHop: nh}}
	changed := []Path{{Prefix: vip, NextHop: nh, Attrs: Intern(Attributes{Prepend: 1})}}
	withdraw, add := diffPaths(old, changed)
	if len(withdraw) != 0 || !slices.Equal(add, changed) {
		t.Errorf("attributes changed: withdraw %v add %v, want only the new path added (it replaces the old)", withdraw, add)
	}
	if w, a := diffPaths(changed, changed); len(w)+len(a) != 0 {
		t.Errorf("unchanged: withdraw %v add %v", w, a)
	}
}

func TestCompactPathsKeepsOnePerNextHop(t *testing.T) {
	nh := netip.MustParseAddr("192.168.0.3")
	x, y := Intern(Attributes{Prepend: 2}), Intern(Attributes{Prepend: 1})
	got := CompactPaths([]Path{{Prefix: vip, NextHop: nh, Attrs: x}, {Prefix: vip, NextHop: nh, Attrs: y}})
	if len(got) != 1 || got[0].Attrs != y {
		t.Errorf("CompactPaths = %v, want the path with %q only", got, y)
	}
}

func TestInvalidAttributesRefused(t *testing.T) {
	for _, a := range []Attributes{{Prepend: MaxPrepend + 1}, {LargeCommunities: [][3]uint32{{MarkerAdmin, 1, 1}}}} {
		p := Path{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"), Attrs: Intern(a)}
		if err := p.validate(); err == nil {
			t.Errorf("path with %q accepted", p.Attrs)
		}
	}
}

// received is one path as a router holds it.
type received struct {
	communities []uint32
	large       []string
	localPref   *uint32
	asPath      []uint32
}

func receivedPaths(t *testing.T, r *router, prefix netip.Prefix) []received {
	t.Helper()
	var out []received
	err := r.srv.ListPath(apiutil.ListPathRequest{TableType: api.TableType_TABLE_TYPE_GLOBAL, Family: familyOf(prefix)},
		func(nlri bgp.NLRI, paths []*apiutil.Path) {
			if nlri.String() != prefix.String() {
				return
			}
			for _, p := range paths {
				var rc received
				for _, a := range p.Attrs {
					switch a := a.(type) {
					case *bgp.PathAttributeCommunities:
						rc.communities = a.Value
					case *bgp.PathAttributeLargeCommunities:
						for _, c := range a.Values {
							rc.large = append(rc.large, c.String())
						}
					case *bgp.PathAttributeLocalPref:
						v := a.Value
						rc.localPref = &v
					case *bgp.PathAttributeAsPath:
						for _, seg := range a.Value {
							rc.asPath = append(rc.asPath, seg.GetAS()...)
						}
					}
				}
				out = append(out, rc)
			}
		})
	if err != nil {
		t.Fatalf("listing paths: %v", err)
	}
	return out
}

func (r received) String() string {
	lp := "none"
	if r.localPref != nil {
		lp = fmt.Sprint(*r.localPref)
	}
	return fmt.Sprintf("communities %v large %v localpref %s aspath %v", r.communities, r.large, lp, r.asPath)
}

// TestPathAttributesReachRouters: communities and large communities reach
// every router; LOCAL_PREF only the iBGP one; the prepend lengthens the
// AS path toward the eBGP router only; the prepend marker reaches none.
// Changing the attributes replaces the paths in place.
func TestPathAttributesReachRouters(t *testing.T) {
	ctx := context.Background()
	ebgp := startRouter(t, "127.0.0.1", true)
	ibgp := startRouterAS(t, "127.0.0.2", freePort(t, "127.0.0.2"), speakerAS, true, "")
	s := newSpeaker(t)
	peers := []Peer{ebgp.peer("ebgp"), ibgp.peer("ibgp")}
	attrs := Intern(Attributes{Communities: []uint32{65000<<16 | 100, 0xFFFFFF01}, LargeCommunities: [][3]uint32{{65000, 1, 2}},
		LocalPref: 250, HasLocalPref: true, Prepend: 2})
	ps := []Path{{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"), Attrs: attrs}}
	if err := s.Apply(ctx, testGlobal, peers, ps); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	check := func(what string, r *router, ok func(received) bool) {
		t.Helper()
		eventually(t, 10*time.Second, what, func() (bool, string) {
			got := receivedPaths(t, r, vip)
			return len(got) == 1 && ok(got[0]), fmt.Sprint(got)
		})
	}
	common := func(rc received) bool {
		return slices.Equal(rc.communities, []uint32{65000<<16 | 100, 0xFFFFFF01}) && slices.Equal(rc.large, []string{"65000:1:2"})
	}
	check("eBGP router: communities, no LOCAL_PREF, AS path 65001 ×3, no marker", ebgp, func(rc received) bool {
		return common(rc) && rc.localPref == nil && slices.Equal(rc.asPath, []uint32{speakerAS, speakerAS, speakerAS})
	})
	check("iBGP router: communities, LOCAL_PREF 250, empty AS path, no marker", ibgp, func(rc received) bool {
		return common(rc) && rc.localPref != nil && *rc.localPref == 250 && len(rc.asPath) == 0
	})

	// New attributes replace the path (re-added, not withdrawn first:
	// TestDiffReplacesChangedAttributes).
	plain := []Path{{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"), Attrs: Intern(Attributes{Communities: []uint32{65000<<16 | 200}})}}
	if err := s.Apply(ctx, testGlobal, peers, plain); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	check("eBGP router after the change: one community, AS path 65001", ebgp, func(rc received) bool {
		return slices.Equal(rc.communities, []uint32{65000<<16 | 200}) && len(rc.large) == 0 && slices.Equal(rc.asPath, []uint32{speakerAS})
	})
	check("iBGP router after the change: LOCAL_PREF back to GoBGP's 100", ibgp, func(rc received) bool {
		return slices.Equal(rc.communities, []uint32{65000<<16 | 200}) && rc.localPref != nil && *rc.localPref == 100 && !strings.Contains(fmt.Sprint(rc.large), "4294967295")
	})
}

// TestPerPeerPrepend: a per-peer count replaces the all-peers one toward
// that peer only; a peer removed and added again gets its statements
// back; a count of 0 for a peer means none toward it; a path denied to a
// peer is withdrawn from it only.
func TestPerPeerPrepend(t *testing.T) {
	ctx := context.Background()
	r1 := startRouter(t, "127.0.0.1", true)
	r2 := startRouterAS(t, "127.0.0.3", freePort(t, "127.0.0.3"), routerAS+1, true, "")
	s := newSpeaker(t)
	peers := []Peer{r1.peer("r1"), r2.peer("r2")}
	with := func(a Attributes) []Path {
		return []Path{{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"), Attrs: Intern(a)}}
	}
	asPath := func(what string, r *router, want ...uint32) {
		t.Helper()
		eventually(t, 10*time.Second, what, func() (bool, string) {
			got := receivedPaths(t, r, vip)
			return len(got) == 1 && slices.Equal(got[0].asPath, want) && len(got[0].large) == 0, fmt.Sprint(got)
		})
	}
	ps := with(Attributes{Prepend: 1, PrependPeers: map[string]uint8{"r2": 3}})
	if err := s.Apply(ctx, testGlobal, peers, ps); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	asPath("r1: the all-peers count", r1, speakerAS, speakerAS)
	asPath("r2: its own count", r2, speakerAS, speakerAS, speakerAS, speakerAS)

	if err := s.Apply(ctx, testGlobal, peers[:1], ps); err != nil {
		t.Fatalf("Apply without r2: %v", err)
	}
	if err := s.Apply(ctx, testGlobal, peers, ps); err != nil {
		t.Fatalf("Apply with r2 again: %v", err)
	}
	asPath("r2 added again: its own count", r2, speakerAS, speakerAS, speakerAS, speakerAS)

	if err := s.Apply(ctx, testGlobal, peers, with(Attributes{Prepend: 2, PrependPeers: map[string]uint8{"r2": 0}})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	asPath("r1: new all-peers count", r1, speakerAS, speakerAS, speakerAS)
	asPath("r2: 0, none", r2, speakerAS)

	// A peer the path must not reach loses it (and only that peer).
	if err := s.Apply(ctx, testGlobal, peers, with(Attributes{DenyPeers: []string{"r2"}})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	eventually(t, 10*time.Second, "r2 withdrawn", func() (bool, string) {
		got := receivedPaths(t, r2, vip)
		return len(got) == 0, fmt.Sprint(got)
	})
	asPath("r1 keeps the path", r1, speakerAS)
	if err := s.Apply(ctx, testGlobal, peers, with(Attributes{})); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	asPath("r2 gets it back", r2, speakerAS)
}

// TestNeighborSettings: OpenELB's neighbor settings reach GoBGP's
// neighbor as set, and the ones with an effect on the wire have it:
// send-community strips what the router must not receive, admin-down
// and passive keep the session from opening.
func TestNeighborSettings(t *testing.T) {
	ctx := context.Background()
	r1 := startRouter(t, "127.0.0.1", true)
	r2 := startRouterAS(t, "127.0.0.3", freePort(t, "127.0.0.3"), routerAS+1, true, "")
	s := newSpeaker(t)
	p1 := r1.peer("r1")
	p1.SendCommunity = SendCommunityNone
	p1.Description = "leaf one"
	p1.RemovePrivateAS = "replace"
	p1.AllowOwnAS = 2
	p1.ReplacePeerAS = true
	p1.TCPMSS = 1400
	p1.NoIPv6 = true
	p2 := r2.peer("r2")
	p2.SendCommunity = SendCommunityExtended
	ps := []Path{{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3"),
		Attrs: Intern(Attributes{Communities: []uint32{65000<<16 | 1}, LargeCommunities: [][3]uint32{{65000, 1, 1}}, Prepend: 1})}}
	if err := s.Apply(ctx, testGlobal, []Peer{p1, p2}, ps); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	for _, r := range []*router{r1, r2} {
		eventually(t, 10*time.Second, "no community attribute at "+r.addr.String(), func() (bool, string) {
			got := receivedPaths(t, r, vip)
			return len(got) == 1 && len(got[0].communities) == 0 && len(got[0].large) == 0 && len(got[0].asPath) == 2, fmt.Sprint(got)
		})
	}
	var conf *api.Peer
	if err := s.srv.ListPeer(ctx, &api.ListPeerRequest{Address: "127.0.0.1"}, func(p *api.Peer) { conf = p }); err != nil || conf == nil {
		t.Fatalf("ListPeer: %v", err)
	}
	c, tr := conf.GetConf(), conf.GetTransport()
	if c.GetDescription() != "leaf one" || c.GetRemovePrivate() != api.RemovePrivate_REMOVE_PRIVATE_REPLACE || c.GetAllowOwnAsn() != 2 ||
		!c.GetReplacePeerAsn() || tr.GetTcpMss() != 1400 || len(conf.GetAfiSafis()) != 1 {
		t.Errorf("GoBGP neighbor = conf %v transport %v afi-safis %d", c, tr, len(conf.GetAfiSafis()))
	}

	// Admin down and passive: the session never opens (the test router
	// is passive too).
	for _, tweak := range []func(*Peer){func(p *Peer) { p.AdminDown = true }, func(p *Peer) { p.Passive = true }} {
		p := r1.peer("r1")
		tweak(&p)
		if err := s.Apply(ctx, testGlobal, []Peer{p}, ps); err != nil {
			t.Fatalf("Apply: %v", err)
		}
		time.Sleep(3 * time.Second)
		states, err := s.States(ctx)
		if err != nil || len(states) != 1 || states[0].State == "established" {
			t.Errorf("%+v: states %+v, %v; want the session not established", p, states, err)
		}
	}
}
