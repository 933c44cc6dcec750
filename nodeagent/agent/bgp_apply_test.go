package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// TestApplyBGPLeavesOutOnlyTheRefusedPeer: a peer the speaker refuses is
// returned for its BgpPeer's problem, not as a failure to retry, and the
// other peer and the paths are applied.
func TestApplyBGPLeavesOutOnlyTheRefusedPeer(t *testing.T) {
	fake := bgp.NewFake()
	a := &Agent{opts: Options{Speaker: fake}}
	good := bgp.Peer{Name: "leaf1", Address: netip.MustParseAddr("192.168.0.2"), AS: 65001}
	badTTL := good
	badTTL.Name, badTTL.Address, badTTL.EBGPMultihopTTL = "leaf9", netip.MustParseAddr("192.168.9.9"), 300
	dup := good
	dup.Name, dup.AS = "leaf1-copy", 65009
	st := State{Enabled: true, Global: bgp.Global{AS: 65000, RouterID: netip.MustParseAddr("192.168.0.3")},
		Peers: []bgp.Peer{dup, badTTL, good},
		Paths: []bgp.Path{path("172.22.0.2/32", "192.168.0.3")}}
	refused, err := a.applyBGP(context.Background(), st)
	if err != nil {
		t.Fatalf("applyBGP: %v, want the refused peers only", err)
	}
	var names []string
	for _, r := range refused {
		names = append(names, r.Name)
	}
	if fmt.Sprint(names) != "[leaf1-copy leaf9]" {
		t.Errorf("refused %v, want [leaf1-copy leaf9]", names)
	}
	states, _ := fake.States(context.Background())
	if len(states) != 1 || states[0].Name != "leaf1" {
		t.Errorf("configured peers %+v, want leaf1 only (its name sorts first)", states)
	}
	if len(fake.Paths()) != 1 {
		t.Errorf("paths %v, want the one path applied", fake.Paths())
	}

	calls := 0
	services := func() []string { calls++; return []string{"default/nginx"} }
	problems := refusedProblems(append(refused, &bgp.PeerError{Name: "leaf7", Address: netip.MustParseAddr("fe80::1%x"), Err: errors.New("GoBGP refused the neighbor: no such interface")}), services)
	if calls != 1 || len(problems) != 3 {
		t.Fatalf("problems %+v (services listed %d times), want 3 listing the Services once", problems, calls)
	}
	for i, want := range []struct{ object, reason, msg string }{
		{"BgpPeer/leaf1-copy", ReasonInvalidBgpPeer, `neighbor 192.168.0.2 not configured: invalid BGP configuration: address also that of peer "leaf1"`},
		{"BgpPeer/leaf9", ReasonInvalidBgpPeer, "neighbor 192.168.9.9 not configured: invalid BGP configuration: multihop TTL 300 > 255"},
		{"BgpPeer/leaf7", ReasonBgpPeerRefused, "neighbor fe80::1%x not configured: GoBGP refused the neighbor: no such interface"},
	} {
		p := problems[i]
		if p.Object != want.object || p.Reason != want.reason || !strings.HasPrefix(p.Message, want.msg) || len(p.Services) != 1 {
			t.Errorf("problem %d: %+v, want %s %s %q...", i, p, want.object, want.reason, want.msg)
		}
	}
	if refusedProblems(nil, services) != nil || calls != 1 {
		t.Errorf("no refused peer: no problem, and no Service listed")
	}
}

// TestPrefixLimitReported: a session held down for its prefix limit is a
// problem of the speaker's report and the message of its BgpPeer entry.
func TestPrefixLimitReported(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	held := bgp.PeerState{Name: "leaf1", Address: "192.168.0.2", State: "idle", PrefixLimit: 20000, PrefixLimitExceeded: true}
	fine := bgp.PeerState{Name: "leaf2", Address: "192.168.1.1", State: "established", PrefixLimit: 20000, ReceivedPrefixes: 120}
	got := buildStatus(reportInput{state: State{Enabled: true}, sessions: []bgp.PeerState{held, fine}}, sessionClock{}, t0)
	if len(got.Problems) != 1 {
		t.Fatalf("problems %+v, want one for leaf1", got.Problems)
	}
	p := got.Problems[0]
	if p.Object != "BgpPeer/leaf1" || p.Reason != ReasonPrefixLimitExceeded ||
		!strings.Contains(p.Message, "the router at 192.168.0.2 sent more than 20000 prefixes of one address family") {
		t.Errorf("problem %+v", p)
	}
	if msg := prefixLimitMessage(held); msg != p.Message {
		t.Errorf("BgpPeer entry message %q, want the problem's", msg)
	}
	if msg := prefixLimitMessage(fine); msg != "" {
		t.Errorf("a session within its limit has message %q", msg)
	}
}
