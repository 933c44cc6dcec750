package agent

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"sync"
	"time"

	apiequality "k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// maxProblemServices is how many affected Services a problem names; it
// counts them all.
const maxProblemServices = 10

// sessionUnconfigured is the session state of a BgpPeer this node should
// use but could not configure (see its problem).
const sessionUnconfigured = "unconfigured"

// speakerReport is what this node writes into its LoadBalancerSpeaker.
type speakerReport struct {
	// NodeUID owns the object, so it goes with the Node; nothing is
	// written while the Node is unknown.
	NodeUID types.UID
	Status  v1alpha2.LoadBalancerSpeakerStatus
}

// reportChanged says whether want differs from the last report written
// (nil: none yet by this process), ignoring LastUpdate, which only says
// when the rest last changed.
func reportChanged(last *speakerReport, want speakerReport) bool {
	if last == nil {
		return true
	}
	a, b := last.Status, want.Status
	a.LastUpdate, b.LastUpdate = metav1.Time{}, metav1.Time{}
	return last.NodeUID != want.NodeUID || !apiequality.Semantic.DeepEqual(a, b)
}

// DefaultCountsInterval spaces the report writes that only update counts.
const DefaultCountsInterval = 10 * time.Second

// withoutCounts clears what moves with the number of Services (prefixes,
// paths, addresses answered, the Services a problem names), so a report
// compared without them shows whether anything else changed.
func withoutCounts(st v1alpha2.LoadBalancerSpeakerStatus) v1alpha2.LoadBalancerSpeakerStatus {
	st = *st.DeepCopy()
	st.LastUpdate = metav1.Time{}
	st.Prefixes, st.Paths = 0, 0
	for i := range st.Sessions {
		st.Sessions[i].AdvertisedPaths = 0
	}
	for i := range st.Layer2 {
		st.Layer2[i].Addresses = 0
		st.Layer2[i].Message = ""
	}
	for i := range st.Problems {
		st.Problems[i].Services, st.Problems[i].ServiceCount = nil, 0
		st.Problems[i].Message = ""
	}
	if st.DataPath != nil {
		st.DataPath.Probed = 0
	}
	return st
}

// countsOnly says whether want differs from last only in counts.
func countsOnly(last *speakerReport, want speakerReport) bool {
	return last != nil && last.NodeUID == want.NodeUID &&
		apiequality.Semantic.DeepEqual(withoutCounts(last.Status), withoutCounts(want.Status))
}

// reportWriter writes the LoadBalancerSpeaker only when the report changed
// since the last write of this process: a speaker at rest makes no API
// request, however many Services it serves. A change of sessions,
// announcing, layer-2 answering or problems is written at once; a change of
// counts alone (a Service added: one more prefix) at most once per
// countsInterval, so a burst of new Services costs each speaker one write
// per interval instead of one per Service (the report loop retries every
// tick, so the counts catch up within the interval). What it wrote is
// remembered in memory only, so after a restart the first report is
// written once.
type reportWriter struct {
	apply          func(context.Context, speakerReport) error
	countsInterval time.Duration // 0: DefaultCountsInterval

	mu        sync.Mutex // one write at a time (the report loop, Shutdown)
	last      *speakerReport
	lastWrite time.Time
}

// write applies want when it changed, stamping LastUpdate; a failed write
// is not remembered, so the next report retries it.
func (w *reportWriter) write(ctx context.Context, want speakerReport, now time.Time) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.writeLocked(ctx, want, now)
}

func (w *reportWriter) writeLocked(ctx context.Context, want speakerReport, now time.Time) (bool, error) {
	if !reportChanged(w.last, want) {
		return false, nil
	}
	if countsOnly(w.last, want) && now.Sub(w.lastWrite) < w.interval() {
		return false, nil
	}
	want.Status.LastUpdate = metav1.NewTime(now.UTC().Truncate(time.Second))
	if err := w.apply(ctx, want); err != nil {
		return true, err
	}
	w.last, w.lastWrite = &want, now
	return true, nil
}

// interval is the spacing of count-only writes.
func (w *reportWriter) interval() time.Duration {
	if w.countsInterval > 0 {
		return w.countsInterval
	}
	return DefaultCountsInterval
}

// update rewrites the last report written with change applied to a copy;
// nothing when none was written yet.
func (w *reportWriter) update(ctx context.Context, now time.Time, change func(*speakerReport)) (bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		return false, nil
	}
	want := speakerReport{NodeUID: w.last.NodeUID, Status: *w.last.Status.DeepCopy()}
	change(&want)
	return w.writeLocked(ctx, want, now)
}

// sessionClock remembers since when each session is in its state, so
// lastTransitionTime moves only when the state does.
type sessionClock map[string]sessionSeen

type sessionSeen struct {
	state string
	since metav1.Time
}

// since returns when the peer's session entered state, now if it just did.
func (c sessionClock) since(peer, state string, now time.Time) *metav1.Time {
	s, ok := c[peer]
	if !ok || s.state != state {
		s = sessionSeen{state: state, since: metav1.NewTime(now.UTC().Truncate(time.Second))}
		c[peer] = s
	}
	t := s.since
	return &t
}

// reportInput is what one report is built from.
type reportInput struct {
	state    State           // last applied
	problems []Problem       // of the last BGP reconcile
	sessions []bgp.PeerState // from the speaker
	layer2   []v1alpha2.SpeakerLayer2
	l2probs  []Problem
	dataPath *v1alpha2.SpeakerDataPath
}

// buildStatus assembles the LoadBalancerSpeaker status (without
// LastUpdate). It reads no clock but the sessions' transitions.
func buildStatus(in reportInput, clock sessionClock, now time.Time) v1alpha2.LoadBalancerSpeakerStatus {
	st := in.state
	out := v1alpha2.LoadBalancerSpeakerStatus{
		Rack:                   st.Rack,
		Announcing:             st.Enabled && st.Announcing,
		Prefixes:               int32(st.Prefixes),
		Paths:                  int32(len(st.Paths)),
		ObservedRackGeneration: st.RackGeneration,
		Layer2:                 in.layer2,
		DataPath:               in.dataPath,
	}
	if st.Enabled {
		out.AS, out.RouterID = st.Global.AS, st.Global.RouterID.String()
	}
	seen := map[string]bool{}
	for _, s := range in.sessions {
		seen[s.Name] = true
		out.Sessions = append(out.Sessions, v1alpha2.SpeakerSession{
			Peer: s.Name, Address: s.Address, State: s.State,
			AddPathNegotiated: s.AddPathNegotiated, NextHopSelf: s.NextHopSelf,
			AdvertisedPaths: int32(s.AdvertisedPaths), BfdState: s.BFDState,
			LastTransitionTime: clock.since(s.Name, s.State, now),
		})
		if s.State == "established" {
			out.SessionsEstablished++
		}
	}
	// Peers this node should use but could not configure say so.
	for _, p := range in.problems {
		if name, ok := strings.CutPrefix(p.Object, "BgpPeer/"); ok && !seen[name] {
			seen[name] = true
			out.Sessions = append(out.Sessions, v1alpha2.SpeakerSession{Peer: name, State: sessionUnconfigured,
				LastTransitionTime: clock.since(name, sessionUnconfigured, now)})
		}
	}
	for peer := range clock {
		if !seen[peer] {
			delete(clock, peer)
		}
	}
	slices.SortFunc(out.Sessions, func(a, b v1alpha2.SpeakerSession) int { return cmp.Compare(a.Peer, b.Peer) })
	out.Problems = speakerProblems(slices.Concat(in.problems, sessionProblems(in.sessions), in.l2probs))
	return out
}

// speakerProblems turns problems into the report's, sorted, each naming
// its first affected Services and counting all of them.
func speakerProblems(ps []Problem) []v1alpha2.SpeakerProblem {
	if len(ps) == 0 {
		return nil
	}
	out := make([]v1alpha2.SpeakerProblem, len(ps))
	for i, p := range ps {
		out[i] = v1alpha2.SpeakerProblem{Object: p.Object, Reason: p.Reason, Message: p.Message,
			Services: slices.Clone(p.Services[:min(len(p.Services), maxProblemServices)]), ServiceCount: int32(len(p.Services))}
	}
	slices.SortFunc(out, func(a, b v1alpha2.SpeakerProblem) int {
		return cmp.Or(cmp.Compare(a.Object, b.Object), cmp.Compare(a.Reason, b.Reason), cmp.Compare(a.Message, b.Message))
	})
	return out
}

// stoppedLayer2 is the report once layer 2 stopped: its entries (all
// Stopped) replace the last ones, and its problems go.
func stoppedLayer2(r *speakerReport, layer2 []v1alpha2.SpeakerLayer2) {
	r.Status.Layer2 = layer2
	r.Status.Problems = slices.DeleteFunc(r.Status.Problems, func(p v1alpha2.SpeakerProblem) bool {
		return strings.HasPrefix(p.Object, "Eip/")
	})
}
