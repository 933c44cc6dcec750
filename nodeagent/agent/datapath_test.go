package agent

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

func TestNodeHealthStates(t *testing.T) {
	refused := errors.New("connection refused")
	steps := []struct {
		err  error
		want string
	}{
		// Never answered: not judged, however long it fails.
		{refused, dataPathUnknown},
		{refused, dataPathUnknown},
		{refused, dataPathUnknown},
		// One pass is enough to start judging.
		{nil, dataPathHealthy},
		// One lost probe is not a flap.
		{refused, dataPathHealthy},
		{nil, dataPathHealthy},
		{refused, dataPathHealthy},
		{refused, dataPathUnhealthy},
		{errors.New("timeout"), dataPathUnhealthy},
		// Back after two passes in a row.
		{nil, dataPathUnhealthy},
		{refused, dataPathUnhealthy},
		{nil, dataPathUnhealthy},
		{nil, dataPathHealthy},
	}
	var h nodeHealth
	now := time.Unix(1000, 0)
	for i, s := range steps {
		now = now.Add(time.Second)
		from, to := h.observe(s.err, now)
		if to != s.want {
			t.Fatalf("step %d (err %v): %s -> %s, want %s", i, s.err, from, to, s.want)
		}
		if (to == dataPathUnhealthy) != (h.cause == refused.Error()) {
			t.Fatalf("step %d: cause %q in state %s; want the failure that made it unhealthy, kept while it is", i, h.cause, to)
		}
	}
}

func TestHealthyRack(t *testing.T) {
	rack := &v1alpha2.LoadBalancerRack{ObjectMeta: metav1.ObjectMeta{Name: "rack-leaf1", Generation: 3}, Spec: v1alpha2.LoadBalancerRackSpec{
		Speakers: []string{"master1"},
		NextHops: []v1alpha2.RackNextHop{{Node: "master1", Addresses: []string{"192.168.0.3"}}, {Node: "worker-p001", Addresses: []string{"192.168.0.4"}}},
	}}
	got, failOpen := healthyRack(rack, map[string]string{"worker-p001": "refused", "elsewhere": "refused"})
	if failOpen || len(got.Spec.NextHops) != 1 || got.Spec.NextHops[0].Node != "master1" || got.Generation != 3 {
		t.Fatalf("one unhealthy next hop: got %+v (failOpen %v)", got, failOpen)
	}
	if len(rack.Spec.NextHops) != 2 {
		t.Fatalf("the cached rack was mutated: %+v", rack.Spec.NextHops)
	}
	if got, failOpen := healthyRack(rack, map[string]string{"worker-p001": "x", "master1": "y"}); !failOpen || got != rack {
		t.Fatalf("every next hop unhealthy must keep them all (fail open): got %+v, failOpen %v", got, failOpen)
	}
	if got, failOpen := healthyRack(rack, nil); failOpen || got != rack {
		t.Fatalf("nothing unhealthy must keep the rack as it is")
	}
	if got, _ := healthyRack(nil, map[string]string{"x": "y"}); got != nil {
		t.Fatalf("no rack stays no rack")
	}
	p := newDataPathProber(DataPathOptions{Port: 10256}, func() {})
	want := map[string]string{"master1": "http://192.168.0.3:10256/healthz", "worker-p001": "http://192.168.0.4:10256/healthz"}
	if got := p.probeTargets("master1", netip.MustParseAddr("192.168.0.3"), rack); !maps.Equal(got, want) {
		t.Fatalf("a rack speaker probes %v, want %v", got, want)
	}
	if got := p.probeTargets("worker-p002", netip.MustParseAddr("192.168.1.2"), rack); len(got) != 1 || got["worker-p002"] == "" {
		t.Fatalf("a node that does not speak for the rack probes only itself, got %v", got)
	}
}

// TestDataPathProber runs the probes against real HTTP servers on loopback
// standing in for two nodes' kube-proxy: one answers 200, then 503, then
// 200 again, then is closed; the other never answers at all (port closed)
// and is never judged.
func TestDataPathProber(t *testing.T) {
	var code atomic.Int32
	code.Store(http.StatusOK)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != DefaultDataPathPath {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.WriteHeader(int(code.Load()))
	}))
	defer srv.Close()
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL := dead.URL + DefaultDataPathPath
	dead.Close()
	changes := make(chan struct{}, 100)
	p := newDataPathProber(DataPathOptions{Port: 1, Interval: 50 * time.Millisecond}, func() { changes <- struct{}{} })
	p.setTargets(map[string]string{"a": srv.URL + DefaultDataPathPath, "never": deadURL}) // before start: kept
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p.start(ctx)
	wait := func(unhealthy bool) {
		t.Helper()
		deadline := time.After(5 * time.Second)
		for {
			_, bad := p.unhealthy()["a"]
			if bad == unhealthy {
				return
			}
			select {
			case <-changes:
			case <-deadline:
				t.Fatalf("node a unhealthy=%v never came (status %+v)", unhealthy, p.status(false))
			}
		}
	}
	time.Sleep(200 * time.Millisecond)
	wait(false)
	code.Store(http.StatusServiceUnavailable)
	wait(true)
	st := p.status(false)
	if st.Probed != 2 || len(st.Unhealthy) != 1 || st.Unhealthy[0].Node != "a" || !strings.Contains(st.Unhealthy[0].Message, "503") {
		t.Fatalf("status %+v: want 2 probed, a unhealthy saying what its check answered", st)
	}
	code.Store(http.StatusOK)
	wait(false)
	srv.Close()
	wait(true)
	if _, bad := p.unhealthy()["never"]; bad {
		t.Fatal("a node whose check never answered must not be judged")
	}
	// Dropping a target forgets it.
	p.setTargets(map[string]string{"never": deadURL})
	if st := p.status(false); st.Probed != 1 || len(st.Unhealthy) != 0 {
		t.Fatalf("after dropping a: %+v", st)
	}
}

func TestDataPathOff(t *testing.T) {
	p := newDataPathProber(DataPathOptions{}, func() {})
	p.start(context.Background())
	p.setTargets(map[string]string{"a": "http://127.0.0.1:1/healthz"})
	if p.enabled() || p.unhealthy() != nil || p.status(false) != nil {
		t.Fatal("with port 0 nothing is probed, judged or reported")
	}
}
