package bgp

import (
	"context"
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
// established, without any networking.
type Fake struct {
	mu       sync.Mutex
	calls    []ApplyCall
	global   Global
	peers    map[string]Peer // keyed by address string, like PeerState.Address
	paths    map[Path]struct{}
	states   map[string]string // address -> overridden session state
	applyErr error
	stopped  bool
	graceful bool
}

var _ Speaker = (*Fake)(nil)

func NewFake() *Fake {
	return &Fake{peers: map[string]Peer{}, paths: map[Path]struct{}{}, states: map[string]string{}}
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
	f.peers = map[string]Peer{}
	for _, p := range peers {
		f.peers[p.Address.String()] = p
	}
	f.paths = map[Path]struct{}{}
	for _, p := range paths {
		f.paths[p.normalize()] = struct{}{}
	}
	return nil
}

func (f *Fake) States(context.Context) ([]PeerState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []PeerState
	for addr, p := range f.peers {
		st := PeerState{Name: p.Name, Address: addr, State: "established", AddPathNegotiated: true}
		if s, ok := f.states[addr]; ok {
			st.State = s
			st.AddPathNegotiated = s == "established"
		}
		if st.State == "established" {
			st.AdvertisedPaths = len(f.paths)
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
	return nil
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
	slices.SortFunc(out, comparePaths)
	return out
}

// Stopped reports whether Stop was the last state change, and with which mode.
func (f *Fake) Stopped() (stopped, graceful bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stopped, f.graceful
}
