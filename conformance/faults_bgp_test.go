package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// holdTime is the speakers' BGP hold time in the seed lab (its BgpPeers'
// timers): the time a router waits before declaring a silent speaker dead,
// hence the longest a router failure may cost before it is noticed at
// all. A router's own restart must not cost more.
const holdTime = 9 * time.Second

// speakerStartBound is how long a started speaker may take to have its
// routes in the leaf's kernel: its caches sync (about a second), its first
// apply, its session (connect retry 1 s in the seed lab) and the UPDATEs;
// make bench measures 3.25 s for 10,000 Services (README, Scale). 10 s
// leaves room for a loaded 2-core machine.
const speakerStartBound = 10 * time.Second

// leaf1Fault readies a fault of leaf1: the routes of as have settled, and
// leaf2 and the spine must keep them throughout (until the returned func).
func (b *faultLab) leaf1Fault(as []netip.Addr) (unprotect func()) {
	b.settled(as)
	b.fib["leaf2"].protect(as, leaf2Hops)
	b.fib["spine"].protect(as, addrs("10.0.2.2"))
	return b.unprotectAll
}

// TestFaultsBGP is the BGP side failing on the seed-000 lab: a leaf's
// bgpd killed and restarted and its sessions cleared, a speaker in a crash
// loop without and with graceful restart, and a speaker's Node deleted and
// created again.
func TestFaultsBGP(t *testing.T) {
	b := newFaultLab(t)
	history := b.watchAddresses(faultNS)
	const n = 10
	b.burstRange(faultNS, 0, n)
	b.converge("initial Services", n, time.Now(), time.Minute)
	as := b.protectAll()
	b.unprotectAll()
	t.Cleanup(func() { checkHistory(t, history()) })

	t.Run("LeafBgpdKilled", func(t *testing.T) {
		b := b.in(t)
		defer b.leaf1Fault(as)()
		started, err := b.net.RestartDaemon(context.Background(), b.topo.Leaf1, "bgpd")
		if err != nil {
			t.Fatal(err)
		}
		b.leafRecovered(t, "leaf1's bgpd SIGKILLed and restarted", as, started)
	})

	t.Run("ClearBgp", func(t *testing.T) {
		b := b.in(t)
		defer b.leaf1Fault(as)()
		cleared := time.Now()
		if _, err := b.topo.Leaf1.Vtysh(context.Background(), "clear bgp *"); err != nil {
			t.Fatal(err)
		}
		b.leafRecovered(t, "clear bgp * on leaf1", as, cleared)
	})

	t.Run("SpeakerCrashLoop", func(t *testing.T) {
		b := b.in(t)
		b.settled(as)
		b.crashLoop(t, as, false)
	})

	t.Run("SpeakerCrashLoopGracefulRestart", func(t *testing.T) {
		b := b.in(t)
		b.enableGracefulRestart(t, as)
		b.crashLoop(t, as, true)
	})

	t.Run("NodeDeleted", func(t *testing.T) {
		b := b.in(t)
		b.settled(as)
		testNodeDeleted(t, b, as)
	})
}

// settled waits until every router routes the addresses over all their
// next hops: the state a fault starts from.
func (b *faultLab) settled(as []netip.Addr) {
	b.t.Helper()
	b.waitRoutes("before the fault", as, b.routers(), 30*time.Second)
}

// leafRecovered checks leaf1 after a fault of its own that began at since:
// its kernel lost the speakers' routes (the fault took effect), and every
// route is back, at leaf1 and the spine with every next hop, within the
// hold time; leaf2's routes and the spine's path through leaf2 never moved.
func (b *faultLab) leafRecovered(t *testing.T, what string, as []netip.Addr, since time.Time) {
	t.Helper()
	if _, err := b.fib["leaf1"].await(as, 3*time.Second, func(h []netip.Addr) bool { return !slices.Equal(h, leaf1Hops) }); err != nil {
		t.Errorf("%s: leaf1's kernel never lost the speakers' routes: %v", what, err)
	}
	if _, err := b.fib["spine"].await(as, 5*time.Second, func(h []netip.Addr) bool { return !slices.Equal(h, spineHops) }); err != nil {
		t.Errorf("%s: the spine never lost its path through leaf1: %v", what, err)
	}
	back := b.waitRoutes(what, as, b.routers(), 2*holdTime)
	took := max(back.Sub(since), 0)
	t.Logf("recovery: %s: all %d routes back at leaf1 and the spine with every next hop %v after (bound: hold time %v)", what, len(as), took.Round(time.Millisecond), holdTime)
	if took > holdTime {
		t.Errorf("%s: routes back after %v, want within the hold time %v", what, took, holdTime)
	}
	b.checkRoutesKept(what)
	b.checkAlive(what)
}

// crashLoop SIGKILLs worker-p002's speaker (leaf2's only one) ten times,
// as a crash-looping pod: in odd rounds once it serves again, in even ones
// half a second after it started (a crash during start-up). Without
// graceful restart leaf2 withdraws its paths at each crash and gets them
// back after each start; with it, leaf2 keeps them (stale) throughout.
// Either way leaf1's routes never move, and at the end every route is
// there with every next hop.
func (b *faultLab) crashLoop(t *testing.T, as []netip.Addr, gr bool) {
	t.Helper()
	const node, rounds = "worker-p002", 10
	// A crashed process's sockets are closed by the kernel at once
	// (FIN/RST): leaf2 drops the session and its paths as soon as it
	// reads that, with no timer involved.
	const withdrawBound = 3 * time.Second
	hop := netip.MustParseAddr("192.168.1.2")
	b.fib["leaf1"].protect(as, leaf1Hops)
	b.fib["spine"].protect(as, addrs("10.0.1.2"))
	if gr {
		b.fib["leaf2"].protect(as, leaf2Hops)
		b.fib["spine"].protect(as, spineHops)
	}
	defer b.unprotectAll()
	mode := "without graceful restart"
	if gr {
		mode = "with graceful restart"
	}
	started := time.Now()
	var withdrawals, returns []time.Duration
	for round := 1; round <= rounds; round++ {
		p := b.s.Speakers[node]
		if round%2 == 1 {
			// Back after the start: the routes (without graceful
			// restart), or the stale paths refreshed (with it).
			var back time.Time
			if gr {
				b.waitStale(t, fmt.Sprintf("%s, round %d: refreshed after start", mode, round), as, false)
				back = time.Now()
			} else {
				back = b.fib["leaf2"].wait(t, fmt.Sprintf("%s, round %d: back after start", mode, round), as, speakerStartBound+5*time.Second,
					func(h []netip.Addr) bool { return slices.Equal(h, leaf2Hops) }, "next hop "+hop.String())
			}
			if round > 1 {
				took := max(back.Sub(started), 0)
				returns = append(returns, took)
				if took > speakerStartBound {
					t.Errorf("%s, round %d: routes back %v after the start, bound %v", mode, round, took, speakerStartBound)
				}
			}
		} else {
			time.Sleep(time.Until(started.Add(500 * time.Millisecond)))
		}
		killed := time.Now()
		if err := p.Kill(); err != nil {
			t.Fatal(err)
		}
		switch {
		case gr && round == 1:
			b.waitStale(t, "leaf2 keeps worker-p002's paths as stale", as, true)
			time.Sleep(time.Second)
		case gr:
			time.Sleep(time.Second)
		case round%2 == 1:
			gone := b.fib["leaf2"].wait(t, fmt.Sprintf("%s, round %d: withdrawn while down", mode, round), as, withdrawBound+5*time.Second,
				func(h []netip.Addr) bool { return !slices.Contains(h, hop) }, "no next hop "+hop.String())
			took := max(gone.Sub(killed), 0)
			withdrawals = append(withdrawals, took)
			if took > withdrawBound {
				t.Errorf("%s, round %d: leaf2 withdrew %v after the SIGKILL, bound %v", mode, round, took, withdrawBound)
			}
			time.Sleep(time.Second)
		default:
			time.Sleep(time.Second)
			for _, a := range as {
				if h := b.fib["leaf2"].hopsOf(a); slices.Contains(h, hop) {
					t.Errorf("%s, round %d: leaf2 routes %s over the crashed speaker (%v)", mode, round, a, h)
				}
			}
		}
		if _, err := b.s.StartSpeaker(node, "--v=2"); err != nil {
			t.Fatal(err)
		}
		started = time.Now()
	}
	back := b.waitRoutes(mode+": after the crash loop", as, b.routers(), speakerStartBound+5*time.Second)
	if gr {
		b.waitStale(t, "graceful restart completed", as, false)
		back = time.Now()
	}
	final := max(back.Sub(started), 0)
	if gr {
		t.Logf("recovery: speaker crash loop %s (%d SIGKILLs): leaf2 kept every path (stale) throughout, the kernel routes never moved; paths refreshed %s after a start, and %v after the last start",
			mode, rounds, durations(returns), final.Round(time.Millisecond))
	} else {
		t.Logf("recovery: speaker crash loop %s (%d SIGKILLs): withdrawn at leaf2 %s after a crash, back %s after a start; every route back %v after the last start",
			mode, rounds, durations(withdrawals), durations(returns), final.Round(time.Millisecond))
	}
	if final > speakerStartBound {
		t.Errorf("%s: every route back %v after the last start, bound %v", mode, final, speakerStartBound)
	}
	b.checkRoutesKept("speaker crash loop " + mode)
	b.checkAlive("speaker crash loop " + mode)
}

// durations formats a list of durations (min–max, or "-").
func durations(ds []time.Duration) string {
	if len(ds) == 0 {
		return "-"
	}
	lo, hi := slices.Min(ds), slices.Max(ds)
	return fmt.Sprintf("%v–%v (%d rounds)", lo.Round(time.Millisecond), hi.Round(time.Millisecond), len(ds))
}

// hopsOf is the route's current next hops (nil: no route).
func (g *fibGuard) hopsOf(a netip.Addr) []netip.Addr {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Clone(g.routes[a])
}

// waitStale waits until leaf2's path from worker-p002 for every address
// is (stale) or is no longer (!stale) marked stale in its BGP table.
func (b *faultLab) waitStale(t *testing.T, what string, as []netip.Addr, stale bool) {
	t.Helper()
	var bad []string
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		bad = bad[:0]
		for _, a := range as {
			var out struct {
				Paths []struct {
					Stale bool `json:"stale"`
					Peer  struct {
						PeerID string `json:"peerId"`
					} `json:"peer"`
				} `json:"paths"`
			}
			if err := b.topo.Leaf2.JSON(ctx, fmt.Sprintf("show bgp ipv4 unicast %s/32 json", a), &out); err != nil {
				return false, nil
			}
			found := false
			for _, p := range out.Paths {
				if p.Peer.PeerID == "192.168.1.2" {
					found = true
					if p.Stale != stale {
						bad = append(bad, fmt.Sprintf("%s stale=%v", a, p.Stale))
					}
				}
			}
			if !found {
				bad = append(bad, fmt.Sprintf("%s: no path from 192.168.1.2", a))
			}
		}
		return len(bad) == 0, nil
	})
	if err != nil {
		t.Fatalf("%s: leaf2's paths from worker-p002 not stale=%v: %s", what, stale, strings.Join(bad, "; "))
	}
}

// enableGracefulRestart turns graceful restart on in the BgpConf (60 s
// restart time) and leaf2's BgpPeer, and waits until worker-p002's new
// session (the BGP instance restarts for it) carries every route again.
func (b *faultLab) enableGracefulRestart(t *testing.T, as []netip.Addr) {
	t.Helper()
	b.setGracefulRestart(t, as, true, map[string]string{"leaf2": "192.168.1.2"})
}

// setGracefulRestart turns graceful restart on (60 s restart time) or off
// in the BgpConf and in the BgpPeers named after the routers of sessions,
// and waits until each of those routers sees its speaker's session (router
// name → speaker address) in the new mode and every route of as is back.
func (b *faultLab) setGracefulRestart(t *testing.T, as []netip.Addr, on bool, sessions map[string]string) {
	t.Helper()
	ctx := context.Background()
	var gr *v1alpha2.GracefulRestart
	if on {
		gr = &v1alpha2.GracefulRestart{Enabled: true, RestartTime: 60}
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var conf v1alpha2.BgpConf
		if err := b.crd.Get(ctx, client.ObjectKey{Name: "default"}, &conf); err != nil {
			return err
		}
		conf.Spec.GracefulRestart = gr
		return b.crd.Update(ctx, &conf)
	})
	if err != nil {
		t.Fatal(err)
	}
	for router, speaker := range sessions {
		err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
			var peer v1alpha2.BgpPeer
			if err := b.crd.Get(ctx, client.ObjectKey{Name: router}, &peer); err != nil {
				return err
			}
			peer.Spec.GracefulRestart = nil
			if on {
				peer.Spec.GracefulRestart = &v1alpha2.GracefulRestart{Enabled: true}
			}
			return b.crd.Update(ctx, &peer)
		})
		if err != nil {
			t.Fatal(err)
		}
		r := b.topo.Router(router)
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
			var out map[string]struct {
				State string `json:"bgpState"`
				GR    struct {
					Remote string `json:"remoteGrMode"`
				} `json:"gracefulRestartInfo"`
			}
			if err := r.JSON(ctx, "show bgp neighbors "+speaker+" json", &out); err != nil {
				return false, nil
			}
			return out[speaker].State == "Established" && (out[speaker].GR.Remote == "Restart") == on, nil
		})
		if err != nil {
			out, _ := r.Vtysh(ctx, "show bgp neighbors "+speaker+" graceful-restart")
			t.Fatalf("%s never saw %s's session with graceful restart %v:\n%s", router, speaker, on, out)
		}
	}
	b.waitRoutes(fmt.Sprintf("graceful restart %v", on), as, b.routers(), 30*time.Second)
}

// testNodeDeleted deletes master1's Node: its speaker keeps running, its
// LoadBalancerSpeaker (owned by the Node) goes and stays gone, its routes
// are withdrawn from leaf1 (it is no longer a member of rack leaf1), and
// nothing under leaf2 moves. The Node created again, all comes back.
func testNodeDeleted(t *testing.T, b *faultLab, as []netip.Addr) {
	ctx := context.Background()
	const node = "master1"
	b.fib["leaf2"].protect(as, leaf2Hops)
	b.fib["spine"].protect(as, addrs("10.0.2.2"))
	defer b.unprotectAll()
	var sp v1alpha2.LoadBalancerSpeaker
	if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
		t.Fatalf("LoadBalancerSpeaker %s before the delete: %v", node, err)
	}
	oldUID := sp.UID
	// how says whether the report left is the one the Node owned or a
	// new one written after the garbage collector deleted that.
	how := func() string {
		if sp.UID == oldUID {
			return "the same object, its owner reference removed"
		}
		return "written again after the garbage collector deleted it"
	}
	deleted := time.Now()
	if err := b.cs.CoreV1().Nodes().Delete(ctx, node, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// The speaker sees the delete through its watch (milliseconds) and
	// closes its sessions, which leaf1 reads at once.
	const withdrawBound = 5 * time.Second
	gone := b.fib["leaf1"].wait(t, "Node deleted: master1's routes withdrawn", as, withdrawBound+5*time.Second, func(h []netip.Addr) bool {
		return !slices.ContainsFunc(h, func(a netip.Addr) bool { return slices.Contains(leaf1Hops, a) })
	}, "no next hop in rack leaf1")
	withdrawn := max(gone.Sub(deleted), 0)
	if withdrawn > withdrawBound {
		t.Errorf("Node deleted: leaf1 withdrew master1's routes %v after, bound %v", withdrawn, withdrawBound)
	}
	// The garbage collector deletes the LoadBalancerSpeaker the Node
	// owned; it must stay gone while the Node is.
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("LoadBalancerSpeaker %s still exists 30 s after its Node was deleted (%s): ownerReferences %+v", node, how(), sp.OwnerReferences)
	}
	time.Sleep(5 * time.Second)
	if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err == nil {
		t.Errorf("LoadBalancerSpeaker %s exists without its Node (%s): ownerReferences %+v, status %+v", node, how(), sp.OwnerReferences, sp.Status)
	}
	p := b.s.Speakers[node]
	if p.Exited() {
		t.Fatalf("the speaker of %s exited after its Node was deleted:\n%s", node, p.LogTail(30))
	}
	if log := p.Log(); strings.Contains(log, "panic") {
		t.Errorf("the speaker of %s panicked:\n%s", node, p.LogTail(30))
	}

	recreated := time.Now()
	nd, err := b.cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node, Labels: map[string]string{
		v1alpha2.LabelSpeaker: v1alpha2.LabelSpeakerValue, v1alpha2.LabelRack: "leaf1",
	}}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.s.SetNodeReady(ctx, node, true); err != nil {
		t.Fatal(err)
	}
	back := b.waitRoutes("Node created again", as, b.routers(), speakerStartBound+5*time.Second)
	took := max(back.Sub(recreated), 0)
	if took > speakerStartBound {
		t.Errorf("Node created again: routes back after %v, bound %v", took, speakerStartBound)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := b.crd.Get(ctx, client.ObjectKey{Name: node}, &sp); err != nil {
			return false, nil
		}
		return len(sp.OwnerReferences) == 1 && sp.OwnerReferences[0].UID == nd.UID && sp.Status.Announcing, nil
	})
	if err != nil {
		t.Errorf("LoadBalancerSpeaker %s after the Node came back: ownerReferences %+v (Node UID %s), announcing %v", node, sp.OwnerReferences, nd.UID, sp.Status.Announcing)
	}
	t.Logf("recovery: Node %s deleted: its routes withdrawn from leaf1 %v after (bound %v); Node created again: routes back %v after (bound %v)",
		node, withdrawn.Round(time.Millisecond), withdrawBound, took.Round(time.Millisecond), speakerStartBound)
	b.checkRoutesKept("Node deleted")
	b.checkAlive("Node deleted")
	b.assertNoDuplicates()
	b.checkClaims(faultNS, b.allAddrs())
}
