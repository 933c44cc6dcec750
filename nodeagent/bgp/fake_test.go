package bgp

import (
	"context"
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestFake(t *testing.T) {
	g := Global{AS: 65001, RouterID: netip.MustParseAddr("10.0.0.1")}
	leaf1 := Peer{Name: "leaf1", Address: netip.MustParseAddr("10.1.0.1"), AS: 65002}
	leaf2 := Peer{Name: "leaf2", Address: netip.MustParseAddr("10.1.0.2"), AS: 65002}
	p3 := Path{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.3")}
	p4 := Path{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.4")}
	p5 := Path{Prefix: vip, NextHop: netip.MustParseAddr("192.168.0.5")}
	leaf2BFD := leaf2
	leaf2BFD.BFD = &BFD{}
	leaf2Dup := leaf2
	leaf2Dup.Name, leaf2Dup.AS = "leaf2-copy", 65009
	badTTL := Peer{Name: "bad", Address: netip.MustParseAddr("10.1.0.9"), AS: 65002, EBGPMultihopTTL: 256}
	boom := errors.New("boom")

	type step struct {
		peers     []Peer
		paths     []Path
		applyErr  error
		override  [2]string // address, state
		noAddPath string    // address of a peer without ADD-PATH
		stop      *bool
		wantErr   error
		wantPaths []Path
		wantState []PeerState
	}
	graceful := true
	tests := []struct {
		name      string
		steps     []step
		wantCalls int
	}{
		{
			name: "apply then shrink",
			steps: []step{
				{peers: []Peer{leaf1, leaf2}, paths: []Path{p4, p3, p3}, wantPaths: []Path{p3, p4}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 2, UpdatesSent: 2},
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 2, UpdatesSent: 2},
				}},
				{peers: []Peer{leaf2}, paths: []Path{p4}, wantPaths: []Path{p4}, wantState: []PeerState{
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 3},
				}},
			},
			wantCalls: 2,
		},
		{
			name: "failed apply keeps previous state but is recorded",
			steps: []step{
				{peers: []Peer{leaf1}, paths: []Path{p3}, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 1},
				}},
				{peers: nil, paths: nil, applyErr: boom, wantErr: boom, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 1},
				}},
			},
			wantCalls: 2,
		},
		{
			name: "invalid and duplicate peers are left out, the rest applied",
			steps: []step{
				{peers: []Peer{leaf2Dup, leaf1, leaf2, badTTL}, paths: []Path{p3}, wantErr: ErrInvalidConfig, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 1},
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 1},
				}},
			},
			wantCalls: 1,
		},
		{
			name: "overridden state",
			steps: []step{
				{peers: []Peer{leaf1}, paths: []Path{p3}, override: [2]string{"10.1.0.1", "active"}, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "active"},
				}},
			},
			wantCalls: 1,
		},
		{
			name: "stop clears everything",
			steps: []step{
				{peers: []Peer{leaf1}, paths: []Path{p3}, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 1},
				}},
				{stop: &graceful, wantPaths: []Path{}},
			},
			wantCalls: 1,
		},
		{
			name: "peer without ADD-PATH gets next-hop-self, BFD and changed settings",
			steps: []step{
				{peers: []Peer{leaf1, leaf2BFD}, paths: []Path{p3, p4}, noAddPath: "10.1.0.1", wantPaths: []Path{p3, p4}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", NextHopSelf: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 1, UpdatesSent: 2},
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 2, UpdatesSent: 2, BFDState: "up"},
				}},
				// leaf2 without BFD is a changed neighbor: its counter restarts.
				{peers: []Peer{leaf1, leaf2}, paths: []Path{p3, p5}, override: [2]string{"10.1.0.1", "active"}, wantPaths: []Path{p3, p5}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "active", UpdatesSent: 2},
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, LocalAddress: "10.0.0.1", AdvertisedPaths: 2, UpdatesSent: 2},
				}},
			},
			wantCalls: 2,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			f := NewFake()
			for i, s := range tt.steps {
				if s.override[0] != "" {
					f.SetPeerState(s.override[0], s.override[1])
				}
				if s.noAddPath != "" {
					f.SetPeerAddPath(s.noAddPath, false)
				}
				if s.stop != nil {
					if err := f.Stop(ctx, *s.stop); err != nil {
						t.Fatalf("step %d: Stop: %v", i, err)
					}
					if stopped, gr := f.Stopped(); !stopped || gr != *s.stop {
						t.Errorf("step %d: Stopped() = %v, %v", i, stopped, gr)
					}
				} else {
					f.SetApplyError(s.applyErr)
					if err := f.Apply(ctx, g, s.peers, s.paths); !errors.Is(err, s.wantErr) {
						t.Fatalf("step %d: Apply error = %v, want %v", i, err, s.wantErr)
					}
				}
				if diff := cmp.Diff(s.wantPaths, f.Paths(), cmpopts.EquateComparable(netip.Addr{}, netip.Prefix{})); diff != "" {
					t.Errorf("step %d: paths (-want +got):\n%s", i, diff)
				}
				st, _ := f.States(ctx)
				if diff := cmp.Diff(s.wantState, st, cmpopts.IgnoreFields(PeerState{}, "PrefixLimit")); diff != "" {
					t.Errorf("step %d: states (-want +got):\n%s", i, diff)
				}
				for _, ps := range st {
					if ps.PrefixLimit != DefaultMaxPrefixes {
						t.Errorf("step %d: %s prefix limit %d, want the default %d", i, ps.Name, ps.PrefixLimit, DefaultMaxPrefixes)
					}
				}
			}
			calls := f.Calls()
			if len(calls) != tt.wantCalls {
				t.Errorf("recorded %d calls, want %d", len(calls), tt.wantCalls)
			}
			if len(calls) > 0 && !calls[0].Global.Equal(g) {
				t.Errorf("recorded global %+v, want %+v", calls[0].Global, g)
			}
		})
	}
}
