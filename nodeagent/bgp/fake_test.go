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
	boom := errors.New("boom")

	type step struct {
		peers     []Peer
		paths     []Path
		applyErr  error
		override  [2]string // address, state
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
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 2},
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, AdvertisedPaths: 2},
				}},
				{peers: []Peer{leaf2}, paths: []Path{p4}, wantPaths: []Path{p4}, wantState: []PeerState{
					{Name: "leaf2", Address: "10.1.0.2", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1},
				}},
			},
			wantCalls: 2,
		},
		{
			name: "failed apply keeps previous state but is recorded",
			steps: []step{
				{peers: []Peer{leaf1}, paths: []Path{p3}, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1},
				}},
				{peers: nil, paths: nil, applyErr: boom, wantErr: boom, wantPaths: []Path{p3}, wantState: []PeerState{
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1},
				}},
			},
			wantCalls: 2,
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
					{Name: "leaf1", Address: "10.1.0.1", State: "established", AddPathNegotiated: true, AdvertisedPaths: 1},
				}},
				{stop: &graceful, wantPaths: []Path{}},
			},
			wantCalls: 1,
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
				if diff := cmp.Diff(s.wantState, st); diff != "" {
					t.Errorf("step %d: states (-want +got):\n%s", i, diff)
				}
			}
			calls := f.Calls()
			if len(calls) != tt.wantCalls {
				t.Errorf("recorded %d calls, want %d", len(calls), tt.wantCalls)
			}
			if len(calls) > 0 && calls[0].Global != g {
				t.Errorf("recorded global %+v, want %+v", calls[0].Global, g)
			}
		})
	}
}
