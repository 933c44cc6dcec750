package bgp

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
)

// ApplyCall is one recorded Fake.Apply invocation.
type ApplyCall struct {
	Global Global
	Peers  []Peer
	Paths  []Path
}

// Fake is a map-backed Speaker for unit tests of the agent: it keeps the
// desired state like the real speaker would and reports every peer as
// established with ADD-PATH, without any networking. It models what the
// status depends on:
//   - invalid peers, and peers with the address of one whose Name sorts
//     first, are left out with a *PeerError, the rest applied, as GoBGP does;
//   - a peer set to lack ADD-PATH (SetPeerAddPath) is served with
//     next-hop-self while established, like the GoBGP speaker does;
//   - LocalAddress is the router ID (a fake has no sockets, and the agent
//     uses the node address as router ID);
//   - UpdatesSent grows by one per path added or withdrawn while the peer is
//     established (initially one per path), and restarts from 0 when the
//     peer's settings change, as GoBGP's counter does when the neighbor is
//     re-added;
//   - BFDState is "up" for an established peer with BFD, "down" otherwise.
type Fake struct {
	mu        sync.Mutex
	calls     []ApplyCall
	global    Global
	peers     map[string]Peer // keyed by address string, like PeerState.Address
	paths     map[Path]struct{}
	states    map[string]string // address -> overridden session state
	noAddPath map[string]bool   // address -> the peer did not negotiate ADD-PATH
	updates   map[string]uint64 // address -> UPDATE messages sent
	applyErr  error
	stopped   bool
	graceful  bool
}

var _ Speaker = (*Fake)(nil)

func NewFake() *Fake {
	return &Fake{
		peers: map[string]Peer{}, paths: map[Path]struct{}{}, states: map[string]string{},
		noAddPath: map[string]bool{}, updates: map[string]uint64{},
	}
}

// SetPeerAddPath sets whether the peer at address negotiates ADD-PATH
// (the default); without it the peer is reported with next-hop-self.
func (f *Fake) SetPeerAddPath(address string, negotiated bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if negotiated {
		delete(f.noAddPath, address)
		return
	}
	f.noAddPath[address] = true
}

// SetApplyError makes subsequent Apply calls fail with err (nil clears it),
// so the agent's retry handling can be tested. Failed calls are still recorded.
func (f *Fake) SetApplyError(err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.applyErr = err
}

// SetPeerState overrides the session state reported for address ("" clears it).
func (f *Fake) SetPeerState(address, state string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if state == "" {
		delete(f.states, address)
		return
	}
	f.states[address] = state
}

func (f *Fake) Apply(_ context.Context, g Global, peers []Peer, paths []Path) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, ApplyCall{Global: g, Peers: slices.Clone(peers), Paths: slices.Clone(paths)})
	if f.applyErr != nil {
		return f.applyErr
	}
	f.stopped = false
	f.global = g
	oldPeers, oldPaths := f.peers, f.paths
	f.paths = map[Path]struct{}{}
	for _, p := range paths {
		f.paths[p.normalize()] = struct{}{}
	}
	changed := pathChanges(oldPaths, f.paths)
	f.peers = map[string]Peer{}
	usable, errs := usablePeers(peers)
	for _, p := range usable {
		addr := p.Address.String()
		f.peers[addr] = p
		sent := changed
		if old, ok := oldPeers[addr]; !ok || !old.equal(p) {
			f.updates[addr], sent = 0, len(f.paths)
		}
		if f.establishedLocked(addr) {
			f.updates[addr] += uint64(sent)
		}
	}
	for addr := range f.updates {
		if _, ok := f.peers[addr]; !ok {
			delete(f.updates, addr)
		}
	}
	return errors.Join(errs...)
}

// pathChanges counts the paths in only one of the two sets.
func pathChanges(a, b map[Path]struct{}) int {
	n := 0
	for p := range a {
		if _, ok := b[p]; !ok {
			n++
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			n++
		}
	}
	return n
}

func (f *Fake) establishedLocked(addr string) bool {
	s, ok := f.states[addr]
	return !ok || s == "established"
}

func (f *Fake) States(context.Context) ([]PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []PeerState
	for addr, p := range f.peers {
		st := PeerState{Name: p.Name, Address: addr, State: "established", UpdatesSent: f.updates[addr], PrefixLimit: p.MaxPrefixes}
		if s, ok := f.states[addr]; ok {
			st.State = s
		}
		if p.BFD != nil {
			st.BFDState = "down"
		}
		if st.State == "established" {
			st.AddPathNegotiated = !f.noAddPath[addr]
			st.NextHopSelf = f.noAddPath[addr]
			st.AdvertisedPaths = len(f.paths)
			if st.NextHopSelf {
				st.AdvertisedPaths = countPrefixes(f.paths)
			}
			if f.global.RouterID.IsValid() {
				st.LocalAddress = f.global.RouterID.String()
			}
			if p.BFD != nil {
				st.BFDState = "up"
			}
		}
		out = append(out, st)
	}
	slices.SortFunc(out, func(a, b PeerState) int { return strings.Compare(a.Address, b.Address) })
	return out, nil
}

func (f *Fake) Stop(_ context.Context, graceful bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.stopped, f.graceful = true, graceful
	f.peers = map[string]Peer{}
	f.paths = map[Path]struct{}{}
	f.updates = map[string]uint64{}
	return nil
}

// countPrefixes is what a next-hop-self peer is sent: one path per prefix.
func countPrefixes(paths map[Path]struct{}) int {
	prefixes := map[netip.Prefix]bool{}
	for p := range paths {
		prefixes[p.Prefix] = true
	}
	return len(prefixes)
}

// Calls returns every Apply call so far, oldest first.
func (f *Fake) Calls() []ApplyCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// Global returns the last successfully applied global config.
func (f *Fake) Global() Global {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.global
}

// Paths returns the currently advertised paths, sorted and de-duplicated.
func (f *Fake) Paths() []Path {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]Path, 0, len(f.paths))
	for p := range f.paths {
		out = append(out, p)
	}
	slices.SortFunc(out, ComparePaths)
	return out
}

// Stopped reports whether Stop was the last state change, and with which mode.
func (f *Fake) Stopped() (stopped, graceful bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped, f.graceful
}
