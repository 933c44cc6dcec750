package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"k8s.io/component-base/metrics/legacyregistry"
)

// TestHealth walks the probes through a speaker's life: started, caches
// failing to sync, synced, applying, failing to apply, hung.
func TestHealth(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	h := newHealth()
	type want struct{ live, ready string } // "" passes, else a substring of the error
	check := func(step string, now time.Time, applied, layer2 bool, w want) {
		t.Helper()
		for _, c := range []struct {
			probe string
			err   error
			want  string
		}{
			{"liveness", h.liveness(now), w.live},
			{"readiness", h.readiness(now, applied, layer2), w.ready},
		} {
			switch {
			case c.want == "" && c.err != nil:
				t.Errorf("%s: %s failed: %v", step, c.probe, c.err)
			case c.want != "" && c.err == nil:
				t.Errorf("%s: %s passed, want an error with %q", step, c.probe, c.want)
			case c.want != "" && !strings.Contains(c.err.Error(), c.want):
				t.Errorf("%s: %s error %q lacks %q", step, c.probe, c.err, c.want)
			}
		}
	}

	check("before Run", at(0), false, false, want{ready: "not started"})
	h.syncStarted(at(0))
	check("syncing", at(time.Second), false, false, want{ready: "caches not synced after 1s"})
	// An object that does not decode: every list of its kind fails. The
	// API server's trouble is never a liveness failure.
	h.mu.Lock()
	h.watchErrs["v1alpha2.BgpPeer"] = timedError{err: errors.New("json: cannot unmarshal number -1"), at: at(2 * time.Second)}
	h.mu.Unlock()
	check("a kind fails to list", at(10*time.Minute), false, false,
		want{ready: "v1alpha2.BgpPeer (9m58s ago): json: cannot unmarshal number -1"})
	h.syncEnded()
	check("synced, nothing applied", at(10*time.Minute), false, false, want{ready: "desired state not applied yet"})

	// The first reconcile only waited for the rack object.
	h.reconcileStarted(at(10 * time.Minute))
	h.reconcileEnded(at(10*time.Minute), errors.New("waiting for LoadBalancerRack rack-leaf1 to be listed"))
	check("waiting for the rack", at(10*time.Minute), false, false, want{ready: "not applied yet: waiting for LoadBalancerRack rack-leaf1"})
	h.reconcileStarted(at(11 * time.Minute))
	h.reconcileEnded(at(11*time.Minute), nil)
	check("applied, layer 2 not yet", at(11*time.Minute), true, false, want{ready: "layer 2 not reconciled yet"})
	check("ready", at(11*time.Minute), true, true, want{})

	// Failures within the grace keep it ready; past it, not ready, but
	// alive: a restart would not fix them.
	h.reconcileStarted(at(12 * time.Minute))
	h.reconcileEnded(at(12*time.Minute), errors.New("applying to the BGP speaker: refused"))
	h.reconcileStarted(at(12*time.Minute + 20*time.Second))
	h.reconcileEnded(at(12*time.Minute+20*time.Second), errors.New("applying to the BGP speaker: refused again"))
	check("failing within the grace", at(12*time.Minute+readyFailureGrace), true, true, want{})
	check("failing past the grace", at(12*time.Minute+readyFailureGrace+time.Second), true, true,
		want{ready: "reconciles failing for 31s: applying to the BGP speaker: refused again"})
	h.reconcileStarted(at(13 * time.Minute))
	h.reconcileEnded(at(13*time.Minute), nil)
	check("recovered", at(13*time.Minute), true, true, want{})

	// A reconcile that never returns: hung, the one thing a restart cures.
	h.reconcileStarted(at(20 * time.Minute))
	check("long reconcile", at(20*time.Minute+stuckAfter), true, true, want{})
	check("hung reconcile", at(20*time.Minute+stuckAfter+time.Second), true, true, want{live: "the agent is hung"})
	h.reconcileEnded(at(24*time.Minute), nil)
	check("unhung", at(24*time.Minute), true, true, want{})
}

// TestReadyMetric checks that openelb_speaker_ready follows the check
// ServeReadyMetric was given, read at scrape time.
func TestReadyMetric(t *testing.T) {
	RegisterMetrics()
	scrape := func() float64 {
		t.Helper()
		mfs, err := legacyregistry.DefaultGatherer.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "openelb_speaker_ready" {
				return mf.GetMetric()[0].GetGauge().GetValue()
			}
		}
		t.Fatal("no openelb_speaker_ready on /metrics")
		return -1
	}
	var failing error = errors.New("caches not synced")
	ServeReadyMetric(func() error { return failing })
	if v := scrape(); v != 0 {
		t.Errorf("openelb_speaker_ready = %v while the check fails, want 0", v)
	}
	failing = nil
	if v := scrape(); v != 1 {
		t.Errorf("openelb_speaker_ready = %v while the check passes, want 1", v)
	}
}
