package agent

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	toolscache "k8s.io/client-go/tools/cache"
	fcache "k8s.io/client-go/tools/cache/testing"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// gatedLW lists only once open is closed: an API server not answering yet.
type gatedLW struct {
	toolscache.ListerWatcher
	open chan struct{}
}

func (g gatedLW) List(o metav1.ListOptions) (runtime.Object, error) {
	<-g.open
	return g.ListerWatcher.List(o)
}

func TestRackWatch(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	leaf1 := fcache.NewFakeControllerSource()
	leaf1.Add(rackObj("leaf1", 1, []string{"master1"}, "master1=192.168.0.3"))
	leaf2 := fcache.NewFakeControllerSource()
	gate := make(chan struct{})
	defer func() {
		select {
		case <-gate:
		default:
			close(gate)
		}
	}()
	var started []string
	var changes atomic.Int64
	w := &rackWatch{
		listWatch: func(name string) toolscache.ListerWatcher {
			started = append(started, name)
			switch name {
			case "leaf1":
				return leaf1
			case "leaf2":
				return gatedLW{leaf2, gate}
			}
			t.Fatalf("watch of %q", name)
			return nil
		},
		changed: func() { changes.Add(1) },
	}
	waitRack := func(what string, cond func(r *v1alpha2.LoadBalancerRack, synced bool) bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			r, synced := w.current()
			if cond(r, synced) {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: rack %+v synced %v", what, r, synced)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}

	w.watch(ctx, "leaf1")
	waitRack("leaf1 synced", func(r *v1alpha2.LoadBalancerRack, synced bool) bool {
		return synced && r != nil && r.Spec.Rack == "leaf1" && r.Generation == 1
	})
	waitFor(t, "a kick once synced", 5*time.Second, func() bool { return changes.Load() > 0 })
	before := changes.Load()
	next := rackObj("leaf1", 2, []string{"master1"}, "master1=192.168.0.3", "worker1=192.168.0.4")
	leaf1.Modify(next)
	waitRack("leaf1 updated", func(r *v1alpha2.LoadBalancerRack, _ bool) bool { return r != nil && r.Generation == 2 })
	waitFor(t, "a kick on the update", 5*time.Second, func() bool { return changes.Load() > before })
	w.watch(ctx, "leaf1")
	if len(started) != 1 {
		t.Errorf("same rack name restarted the watch: %v", started)
	}

	// The rack label changed: the new rack is unknown until its watch
	// syncs, then it is what the API server says (here: no object yet).
	w.watch(ctx, "leaf2")
	time.Sleep(100 * time.Millisecond)
	if r, synced := w.current(); synced || r != nil {
		t.Fatalf("before the new watch synced: rack %+v synced %v, want unknown", r, synced)
	}
	before = changes.Load()
	close(gate)
	waitRack("leaf2 synced without an object", func(r *v1alpha2.LoadBalancerRack, synced bool) bool { return synced && r == nil })
	waitFor(t, "a kick once synced (no object, no event)", 5*time.Second, func() bool { return changes.Load() > before })
	leaf2.Add(rackObj("leaf2", 1, []string{"worker-p002"}, "worker-p002=192.168.1.2"))
	waitRack("leaf2 created", func(r *v1alpha2.LoadBalancerRack, _ bool) bool { return r != nil && r.Spec.Rack == "leaf2" })

	// The old watch is gone: its changes no longer show.
	leaf1.Modify(rackObj("leaf1", 3, []string{"master1"}))
	time.Sleep(100 * time.Millisecond)
	if r, _ := w.current(); r == nil || r.Spec.Rack != "leaf2" {
		t.Errorf("after the switch: %+v, want leaf2", r)
	}

	w.close()
	if r, synced := w.current(); synced || r != nil {
		t.Errorf("closed watch: rack %+v synced %v", r, synced)
	}
}

// waitFor polls cond until it holds, failing the test after timeout, and
// returns when it held.
func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Now()
}
