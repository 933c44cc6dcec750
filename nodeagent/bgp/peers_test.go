package bgp

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr/funcr"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// peerErrorNames returns the names of the peers an Apply error left out,
// sorted, and fails the test on any other failure.
func peerErrorNames(t *testing.T, err error) map[string]*PeerError {
	t.Helper()
	peers, rest := SplitPeerErrors(err)
	if rest != nil {
		t.Fatalf("Apply failed beyond its peers: %v", rest)
	}
	out := map[string]*PeerError{}
	for _, p := range peers {
		out[p.Name] = p
	}
	return out
}

// TestBadPeerIsLeftOut: peers GoBGP would refuse, truncate or never
// connect with, a duplicate address, and one GoBGP itself refuses are each
// left out with their own error, while the good peer is configured and
// path changes keep reaching it; fixing a peer configures it.
func TestBadPeerIsLeftOut(t *testing.T) {
	ctx := context.Background()
	r1 := startRouter(t, "127.0.0.1", true)
	r2 := startRouter(t, "127.0.0.2", true)
	s := newSpeaker(t)

	good := r1.peer("leaf1")
	dup := r1.peer("leaf1-copy") // same address; "leaf1" sorts first
	dup.AS = routerAS + 7
	ttl := r2.peer("ttl")
	ttl.EBGPMultihopTTL = 300
	bfd := r2.peer("bfd")
	bfd.Address = netip.MustParseAddr("127.0.0.3")
	bfd.BFD = &BFD{DetectMultiplier: 256}
	sendMax := r2.peer("sendmax")
	sendMax.Address, sendMax.AddPathSendMax = netip.MustParseAddr("127.0.0.4"), 300
	password := r2.peer("password")
	password.Address, password.Password = netip.MustParseAddr("127.0.0.5"), strings.Repeat("p", 81)
	// Valid for the speaker; GoBGP refuses it (no such interface).
	zone := r2.peer("zone")
	zone.Address = netip.MustParseAddr("fe80::1%openelb-none0")
	bad := []Peer{dup, ttl, bfd, sendMax, password, zone}

	err := s.Apply(ctx, testGlobal, append(slices.Clone(bad), good), paths("192.168.0.3"))
	left := peerErrorNames(t, err)
	for _, p := range bad {
		e, ok := left[p.Name]
		if !ok {
			t.Errorf("peer %s was not reported (errors: %v)", p.Name, err)
			continue
		}
		if invalid := errors.Is(e, ErrInvalidConfig); invalid == (p.Name == "zone") {
			t.Errorf("peer %s: %v: ErrInvalidConfig %v, want it for all but GoBGP's own refusal", p.Name, e, invalid)
		}
	}
	if len(left) != len(bad) {
		t.Errorf("left out %v, want only the %d bad peers", left, len(bad))
	}
	if e := left["leaf1-copy"]; e != nil && !strings.Contains(e.Error(), `also that of peer "leaf1"`) {
		t.Errorf("duplicate: %v, want it to name the peer kept", e)
	}
	waitNextHops(t, r1, "192.168.0.3")
	if st := waitEstablished(t, s, r1.addr); st.Name != "leaf1" {
		t.Errorf("session to %s is peer %q, want leaf1", r1.addr, st.Name)
	}

	// Not frozen: path changes still reach the good router.
	left = peerErrorNames(t, s.Apply(ctx, testGlobal, append(slices.Clone(bad), good), paths("192.168.0.4", "192.168.0.5")))
	if len(left) != len(bad) {
		t.Errorf("second Apply left out %v, want the same %d peers", left, len(bad))
	}
	waitNextHops(t, r1, "192.168.0.4", "192.168.0.5")

	// Fixed, the peer is configured; the others stay out.
	ttl.EBGPMultihopTTL = 2
	bad[1] = ttl
	left = peerErrorNames(t, s.Apply(ctx, testGlobal, append(slices.Clone(bad), good), paths("192.168.0.4", "192.168.0.5")))
	if _, ok := left["ttl"]; ok || len(left) != len(bad)-1 {
		t.Errorf("after the fix left out %v, want all but ttl", left)
	}
	waitNextHops(t, r2, "192.168.0.4", "192.168.0.5")
	waitNextHops(t, r1, "192.168.0.4", "192.168.0.5")
}

func TestSplitPeerErrors(t *testing.T) {
	pe := &PeerError{Name: "a", Err: errInvalid("x")}
	other := errors.New("advertising failed")
	peers, rest := SplitPeerErrors(errors.Join(pe, errors.Join(other, &PeerError{Name: "b", Err: other})))
	if len(peers) != 2 || peers[0].Name != "a" || peers[1].Name != "b" || !errors.Is(rest, other) || strings.Contains(rest.Error(), "peer") {
		t.Errorf("peers %v, rest %v", peers, rest)
	}
	if peers, rest := SplitPeerErrors(nil); peers != nil || rest != nil {
		t.Errorf("nil: %v, %v", peers, rest)
	}
	// A wrapped PeerError is not a peer's alone: Apply never wraps them.
	if peers, rest := SplitPeerErrors(fmt.Errorf("context: %w", pe)); len(peers) != 0 || rest == nil {
		t.Errorf("wrapped: %v, %v", peers, rest)
	}
}

func TestRetryDelay(t *testing.T) {
	var got []time.Duration
	for n := 1; n <= 7; n++ {
		got = append(got, retryDelay(n, prefixLimitRetryMin, prefixLimitRetryMax))
	}
	want := []time.Duration{30 * time.Second, time.Minute, 2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 10 * time.Minute, 10 * time.Minute}
	if !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
}

// originate makes the router announce (or withdraw) n host routes
// 10.99.x.y/32 from the first one.
func originate(t *testing.T, r *router, first, n int, withdraw bool) {
	t.Helper()
	req := make([]*apiutil.Path, 0, n)
	for i := first; i < first+n; i++ {
		nlri, _ := bgp.NewIPAddrPrefix(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, byte(i >> 8), byte(i)}), 32))
		nh, _ := bgp.NewPathAttributeNextHop(r.addr)
		req = append(req, &apiutil.Path{Family: bgp.RF_IPv4_UC, Nlri: nlri,
			Attrs: []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(0), nh}})
	}
	var err error
	if withdraw {
		err = r.srv.DeletePath(apiutil.DeletePathRequest{Paths: req})
	} else {
		_, err = r.srv.AddPath(apiutil.AddPathRequest{Paths: req})
	}
	if err != nil {
		t.Fatalf("router paths: %v", err)
	}
}

// logLines records what a logger logs.
type logLines struct {
	mu    sync.Mutex
	lines []string
}

func (l *logLines) add(prefix, args string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, args)
}

func (l *logLines) find(all ...string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.ContainsFunc(l.lines, func(line string) bool {
		for _, s := range all {
			if !strings.Contains(line, s) {
				return false
			}
		}
		return true
	})
}

// TestPrefixLimit: a router sending more prefixes than the peer's limit
// gets its session closed and held down (reported, logged), the speaker
// retries with a growing backoff, and once the router sends less the
// session is back, with the speaker's paths at the router again.
func TestPrefixLimit(t *testing.T) {
	ctx := context.Background()
	r := startRouter(t, "127.0.0.1", true)
	logs := &logLines{}
	s := NewGoBGP(funcr.New(logs.add, funcr.Options{}))
	s.limitRetryMin, s.limitRetryMax = 2*time.Second, 8*time.Second
	t.Cleanup(func() { _ = s.Stop(context.Background(), false) })
	p := r.peer("leaf1")
	p.MaxPrefixes = 100

	originate(t, r, 0, 60, false)
	if err := s.Apply(ctx, testGlobal, []Peer{p}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	waitNextHops(t, r, "192.168.0.3")
	st := peerState(t, s, r.addr, 10*time.Second, "60 prefixes received", func(st PeerState) bool { return st.ReceivedPrefixes == 60 })
	if st.PrefixLimitExceeded || st.PrefixLimit != 100 || st.State != "established" {
		t.Errorf("within the limit: %+v", st)
	}

	// Over the limit: closed and held; the router loses the speaker's paths.
	originate(t, r, 60, 90, false)
	st = peerState(t, s, r.addr, 10*time.Second, "held down for the prefix limit", func(st PeerState) bool { return st.PrefixLimitExceeded })
	if st.State == "established" || st.ReceivedPrefixes != 0 {
		t.Errorf("held down: %+v, want the session closed and its routes dropped", st)
	}
	waitNextHops(t, r)
	eventually(t, 5*time.Second, "the hold logged with the peer's name", func() (bool, string) {
		return logs.find("sent more prefixes of one family than its limit", `"peer"="leaf1"`, `"maxPrefixesPerFamily"=100`), ""
	})

	// The retry finds it still over: held again, with twice the wait.
	eventually(t, 15*time.Second, "the second hold", func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		h := s.limitHolds[r.addr]
		return h != nil && h.holds == 2 && h.retry != nil, fmt.Sprintf("%+v", h)
	})
	if !logs.find("Retrying a BGP peer held down for its prefix limit", `"peer"="leaf1"`) || !logs.find(`"retryIn"="4s"`) {
		t.Errorf("retry and doubled backoff not logged: %v", logs.lines)
	}

	// The router sends less (an export filter): the next retry brings the
	// session back, and the speaker's paths with it.
	originate(t, r, 50, 100, true)
	st = peerState(t, s, r.addr, 20*time.Second, "back within the limit", func(st PeerState) bool {
		return st.State == "established" && st.ReceivedPrefixes == 50
	})
	if st.PrefixLimitExceeded {
		t.Errorf("back: %+v, want no longer exceeded", st)
	}
	waitNextHops(t, r, "192.168.0.3")

	// A changed peer starts afresh: its hold goes with the old neighbor.
	p.MaxPrefixes = 40
	if err := s.Apply(ctx, testGlobal, []Peer{p}, paths("192.168.0.3")); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	peerState(t, s, r.addr, 10*time.Second, "held with the lower limit", func(st PeerState) bool { return st.PrefixLimitExceeded && st.PrefixLimit == 40 })
	eventually(t, 5*time.Second, "a first hold of the new neighbor (the backoff starts over)", func() (bool, string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		h := s.limitHolds[r.addr]
		return h != nil && h.retry != nil && h.holds == 1, fmt.Sprintf("%+v", h)
	})
}

// toAPIPeer sets the limit on both families, without a shutdown threshold.
func TestToAPIPeerPrefixLimit(t *testing.T) {
	got := toAPIPeer(Peer{Address: netip.MustParseAddr("10.1.0.1"), AS: routerAS}.withDefaults(), testGlobal)
	if len(got.AfiSafis) != 2 {
		t.Fatalf("families %v", got.AfiSafis)
	}
	for _, af := range got.AfiSafis {
		l := af.GetPrefixLimits()
		if l.GetMaxPrefixes() != DefaultMaxPrefixes || l.GetShutdownThresholdPct() != 0 || l.GetFamily().GetAfi() != af.GetConfig().GetFamily().GetAfi() {
			t.Errorf("%v: prefix limit %v, want %d", af.GetConfig().GetFamily(), l, DefaultMaxPrefixes)
		}
	}
}
