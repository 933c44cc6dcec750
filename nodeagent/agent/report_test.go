package agent

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// TestReportWriter: a report is applied once when it changed, and not at
// all when it did not (a speaker at rest makes no API request).
func TestReportWriter(t *testing.T) {
	var applied []speakerReport
	var fail error
	w := &reportWriter{apply: func(_ context.Context, r speakerReport) error {
		if fail != nil {
			return fail
		}
		applied = append(applied, r)
		return nil
	}}
	ctx := context.Background()
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 600, time.UTC)
	base := speakerReport{NodeUID: "uid-1", Status: v1alpha2.LoadBalancerSpeakerStatus{
		Rack: "leaf1", Announcing: true, Prefixes: 1, Paths: 2,
		Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf1", State: "established", LastTransitionTime: &metav1.Time{Time: t0}}},
	}}
	write := func(what string, r speakerReport, at time.Time, wantWrites int) {
		t.Helper()
		before := len(applied)
		if _, err := w.write(ctx, r, at); err != nil && fail == nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := len(applied) - before; got != wantWrites {
			t.Errorf("%s: %d apply(s), want %d", what, got, wantWrites)
		}
	}
	write("first report after a start", base, t0, 1)
	if got := applied[0].Status.LastUpdate.Time; !got.Equal(t0.Truncate(time.Second)) {
		t.Errorf("LastUpdate %v, want %v", got, t0.Truncate(time.Second))
	}
	write("same report later", base, t0.Add(time.Minute), 0)

	// Semantically equal: a time in another location, nil vs empty lists.
	same := speakerReport{NodeUID: base.NodeUID, Status: *base.Status.DeepCopy()}
	same.Status.Sessions[0].LastTransitionTime = &metav1.Time{Time: t0.In(time.FixedZone("x", 3600))}
	same.Status.Problems = []v1alpha2.SpeakerProblem{}
	write("same report, equal times and empty lists", same, t0.Add(2*time.Minute), 0)

	changed := speakerReport{NodeUID: base.NodeUID, Status: *base.Status.DeepCopy()}
	changed.Status.Sessions[0].State = "active"
	write("a session went down", changed, t0.Add(3*time.Minute), 1)

	// Counts alone (new Services) are written at most once per interval;
	// anything else at once.
	t1 := t0.Add(3 * time.Minute)
	counts := func(prefixes int32) speakerReport {
		r := speakerReport{NodeUID: base.NodeUID, Status: *changed.Status.DeepCopy()}
		r.Status.Prefixes, r.Status.Paths = prefixes, 2*prefixes
		r.Status.Sessions[0].AdvertisedPaths = 2 * prefixes
		return r
	}
	write("one more Service right after a write", counts(2), t1.Add(time.Second), 0)
	write("another, still within the interval", counts(3), t1.Add(5*time.Second), 0)
	write("counts once the interval has passed", counts(3), t1.Add(DefaultCountsInterval), 1)
	if got := applied[len(applied)-1].Status.Prefixes; got != 3 {
		t.Errorf("counts written: %d prefixes, want 3", got)
	}
	sessionBack := counts(4)
	sessionBack.Status.Sessions[0].State = "established"
	write("a session change within the interval carries the counts along", sessionBack, t1.Add(DefaultCountsInterval+time.Second), 1)
	changed = sessionBack
	write("and stays down", changed, t0.Add(4*time.Minute), 0)

	owner := changed
	owner.NodeUID = "uid-2"
	write("the Node was recreated", owner, t0.Add(5*time.Minute), 1)

	fail = errors.New("API server unreachable")
	retry := owner
	retry.Status = *owner.Status.DeepCopy()
	retry.Status.Paths = 4
	write("a failed write", retry, t0.Add(6*time.Minute), 0)
	fail = nil
	write("is retried", retry, t0.Add(7*time.Minute), 1)
	write("until it succeeded", retry, t0.Add(8*time.Minute), 0)

	// Shutdown: the layer-2 entries say Stopped, once.
	stopped := []v1alpha2.SpeakerLayer2{{Pool: "l2", MAC: "02:00:00:00:50:11", Reason: ReasonStopped, Message: "the speaker stopped"}}
	before := len(applied)
	for range 2 {
		if _, err := w.update(ctx, t0.Add(9*time.Minute), func(r *speakerReport) { stoppedLayer2(r, stopped) }); err != nil {
			t.Fatal(err)
		}
	}
	if got := len(applied) - before; got != 1 {
		t.Fatalf("stopping: %d apply(s), want 1", got)
	}
	if got := applied[len(applied)-1].Status; got.Paths != 4 || got.Layer2[0].Reason != ReasonStopped {
		t.Errorf("stopped report %+v, want the last one with layer 2 stopped", got)
	}
	if (&reportWriter{apply: w.apply}).update(ctx, t0, func(*speakerReport) {}); len(applied)-before != 1 {
		t.Errorf("update without a report written must not write")
	}
}

func TestBuildStatus(t *testing.T) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	services := make([]string, 12)
	for i := range services {
		services[i] = fmt.Sprintf("ns/svc%02d", i)
	}
	st := State{Enabled: true, Announcing: true, Rack: "leaf1", RackGeneration: 7, Prefixes: 1,
		Global: bgp.Global{AS: 50000, RouterID: netip.MustParseAddr("192.168.0.3")},
		Paths:  []bgp.Path{path("172.22.0.2/32", "192.168.0.3"), path("172.22.0.2/32", "192.168.0.4")}}
	in := reportInput{
		state: st,
		problems: []Problem{
			{Object: "BgpPeer/nosecret", Reason: ReasonInvalidBgpPeer, Message: "password Secret missing", Services: services},
		},
		sessions: []bgp.PeerState{
			{Name: "leaf1b", Address: "192.168.0.9", State: "active"},
			{Name: "leaf1", Address: "192.168.0.2", State: "established", AddPathNegotiated: true, AdvertisedPaths: 2, BFDState: "up"},
		},
		layer2:  []v1alpha2.SpeakerLayer2{{Pool: "l2", Interface: "eth0", MAC: "02:00:00:00:50:11", Reason: ReasonStandby}},
		l2probs: []Problem{{Object: "Eip/l2", Reason: ReasonOutsideSubnet, Message: "outside", Services: []string{"ns/b", "ns/a"}}},
	}
	clock := sessionClock{}
	got := buildStatus(in, clock, t0)
	at := func(t time.Time) *metav1.Time { return &metav1.Time{Time: t} }
	want := v1alpha2.LoadBalancerSpeakerStatus{
		Rack: "leaf1", Announcing: true, AS: 50000, RouterID: "192.168.0.3", Prefixes: 1, Paths: 2,
		SessionsEstablished: 1,
		Sessions: []v1alpha2.SpeakerSession{
			{Peer: "leaf1", Address: "192.168.0.2", State: "established", AddPathNegotiated: true, AdvertisedPaths: 2, BfdState: "up", LastTransitionTime: at(t0)},
			{Peer: "leaf1b", Address: "192.168.0.9", State: "active", LastTransitionTime: at(t0)},
			{Peer: "nosecret", State: sessionUnconfigured, LastTransitionTime: at(t0)},
		},
		Layer2: in.layer2,
		Problems: []v1alpha2.SpeakerProblem{
			{Object: "BgpPeer/nosecret", Reason: ReasonInvalidBgpPeer, Message: "password Secret missing", Services: services[:10], ServiceCount: 12},
			{Object: "Eip/l2", Reason: ReasonOutsideSubnet, Message: "outside", Services: []string{"ns/b", "ns/a"}, ServiceCount: 2},
		},
		ObservedRackGeneration: 7,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}

	// Later: a transition time moves only with its session's state.
	t1 := t0.Add(time.Minute)
	in.sessions[0].State = "established"
	in.problems = nil
	got = buildStatus(in, clock, t1)
	if len(got.Sessions) != 2 || !got.Sessions[0].LastTransitionTime.Equal(at(t0)) || !got.Sessions[1].LastTransitionTime.Equal(at(t1)) {
		t.Errorf("sessions %+v: leaf1 since %v, leaf1b since %v", got.Sessions, t0, t1)
	}
	if got.SessionsEstablished != 2 {
		t.Errorf("sessionsEstablished %d, want 2", got.SessionsEstablished)
	}
	if _, ok := clock["nosecret"]; ok {
		t.Errorf("a peer gone stays in the clock")
	}

	// Disabled: no AS, router ID nor announcing.
	got = buildStatus(reportInput{state: State{Rack: "leaf1", Announcing: true}}, sessionClock{}, t0)
	if got.Announcing || got.AS != 0 || got.RouterID != "" {
		t.Errorf("disabled speaker reports %+v", got)
	}
}
