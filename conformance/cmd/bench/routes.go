package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// routeBench measures the BGP data path on the seed-000 lab: real CCM, real
// speakers, FRR leaves and spine, route arrival timed by netlink events in
// the routers' namespaces.
type routeBench struct {
	cp                  *harness.ControlPlane
	cs                  kubernetes.Interface
	lab                 *seedlab.Lab
	leaf1, leaf2, spine *netlab.FIBWatch
	pool                netip.Prefix
	created             int
	served              string // the address ServeNodes answers on
	table
}

type routeRow struct {
	name, value, target string
}

// table is a suite's measurements: each is echoed as it is taken, and all
// are printed together at the end.
type table struct {
	rows []routeRow
}

func (t *table) add(name, value, target string) {
	t.rows = append(t.rows, routeRow{name, value, target})
	fmt.Printf("  %-62s %s\n", name, value)
}

func (t *table) printTable(title string) {
	tw := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\n"+title)
	fmt.Fprintln(tw, "measure\tvalue\ttarget")
	for _, r := range t.rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", r.name, r.value, r.target)
	}
	tw.Flush()
}

const routePool = "172.22.0.0/17"

func runRoutes(ctx context.Context, sizes []int, rounds int) error {
	cp, err := startControlPlane(ctx, true, harness.Options{})
	if err != nil {
		return err
	}
	defer cp.Stop()
	ccm, err := cp.StartCCM("ccm")
	if err != nil {
		return err
	}
	defer ccm.Stop()
	lab, err := seedlab.New(ctx, cp, seedlab.Options{BFD: true})
	if err != nil {
		return err
	}
	defer lab.Close()
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	b := &routeBench{cp: cp, cs: kubernetes.NewForConfigOrDie(cfg), lab: lab, pool: netip.MustParsePrefix(routePool)}
	if err := b.setup(ctx); err != nil {
		return err
	}
	steps := []func(context.Context) error{
		b.ipToFIB,
		func(ctx context.Context) error { return b.withdrawOnSIGTERM(ctx, rounds) },
		func(ctx context.Context) error { return b.bfdDetection(ctx, rounds) },
	}
	for i, n := range sizes {
		steps = append(steps, func(ctx context.Context) error { return b.convergence(ctx, n) })
		if i == 0 {
			steps = append(steps, b.attributeChange, b.weightedSpread, b.drainGap)
		}
	}
	steps = append(steps, b.steady, b.apiServerDown)
	for _, s := range steps {
		if err := s(ctx); err != nil {
			b.print()
			return err
		}
	}
	b.print()
	return nil
}

func (b *routeBench) setup(ctx context.Context) error {
	l := b.lab
	if err := l.RegisterNodes(ctx); err != nil {
		return err
	}
	for _, line := range append(slices.Clone(seedlab.GuideCommands), "kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1") {
		if err := l.Kubectl(ctx, line); err != nil {
			return err
		}
	}
	if err := l.Configure(ctx, routePool); err != nil {
		return err
	}
	if err := b.cp.EnsureNamespace(ctx, "routes", nil); err != nil {
		return err
	}
	var err error
	if b.leaf1, err = l.Net.WatchFIB(l.Topo.Leaf1.NS); err != nil {
		return err
	}
	if b.leaf2, err = l.Net.WatchFIB(l.Topo.Leaf2.NS); err != nil {
		return err
	}
	if b.spine, err = l.Net.WatchFIB(l.Topo.Spine.NS); err != nil {
		return err
	}
	rack1 := []netip.Addr{netip.MustParseAddr("192.168.0.3"), netip.MustParseAddr("192.168.0.4")}
	b.leaf1.Match(func(dst netip.Addr, hops []netip.Addr) bool { return b.pool.Contains(dst) && slices.Equal(hops, rack1) })
	b.leaf2.Match(func(dst netip.Addr, hops []netip.Addr) bool {
		return b.pool.Contains(dst) && slices.Equal(hops, []netip.Addr{netip.MustParseAddr("192.168.1.2")})
	})
	b.spine.Match(func(dst netip.Addr, hops []netip.Addr) bool { return b.pool.Contains(dst) && len(hops) == 2 })
	for _, n := range []string{"master1", "worker-p002"} {
		if _, err := l.StartSpeaker(n, speakerFlags()...); err != nil {
			return err
		}
	}
	if err := waitSession(ctx, l.Topo.Leaf1, "192.168.0.3", true); err != nil {
		return err
	}
	return waitSession(ctx, l.Topo.Leaf2, "192.168.1.2", true)
}

// waitSession waits until the router's session with addr is (up) or is
// not (!up) established.
func waitSession(ctx context.Context, r *netlab.FRR, addr string, up bool) error {
	return wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		nb, err := r.Neighbors(ctx)
		if err != nil {
			return false, nil
		}
		return (nb[addr].State == "Established") == up, nil
	})
}

func wantCount(n int) func(int) bool  { return func(c int) bool { return c >= n } }
func wantAtMost(n int) func(int) bool { return func(c int) bool { return c <= n } }

// ipToFIB creates Services one at a time and times create → ECMP route in
// leaf1's and the spine's kernel.
func (b *routeBench) ipToFIB(ctx context.Context) error {
	fmt.Println("\nroutes: create → route in the routers' kernels, 100 Services one at a time")
	w := newWatcher(b.cs)
	defer w.stop()
	var leaf, spine, ip []time.Duration
	for i := range 100 {
		t0 := time.Now()
		name := fmt.Sprintf("r-%d", b.created)
		if _, err := b.cs.CoreV1().Services("routes").Create(ctx, newService("routes", name), metav1.CreateOptions{}); err != nil {
			return err
		}
		b.created++
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		t1, err := b.leaf1.WaitCount(c, wantCount(i+1))
		if err == nil {
			var t2 time.Time
			t2, err = b.spine.WaitCount(c, wantCount(i+1))
			spine = append(spine, t2.Sub(t0))
		}
		cancel()
		if err != nil {
			return fmt.Errorf("Service %d: %w", i, err)
		}
		leaf = append(leaf, t1.Sub(t0))
		if at, ok := w.seen("routes/" + name); ok {
			ip = append(ip, at.Sub(t0))
		}
	}
	l, s, a := summarize("", leaf), summarize("", spine), summarize("", ip)
	b.add("create → IP in Service status, p50 / p99", ms(a.p50)+" / "+ms(a.p99), "")
	b.add("create → ECMP route in leaf1 FIB, p50 / p99", ms(l.p50)+" / "+ms(l.p99), "p99 ≤ 150 ms")
	b.add("create → ECMP route in spine FIB, p50 / p99", ms(s.p50)+" / "+ms(s.p99), "")
	return nil
}

func (b *routeBench) restartSpeaker(ctx context.Context, node string, want int) error {
	if _, err := b.lab.StartSpeaker(node, speakerFlags()...); err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	_, err := b.leaf1.WaitCount(c, wantCount(want))
	return err
}

// withdrawOnSIGTERM stops master1's speaker (no graceful restart
// configured) and times SIGTERM → every route gone from leaf1's rack.
func (b *routeBench) withdrawOnSIGTERM(ctx context.Context, rounds int) error {
	fmt.Printf("\nroutes: SIGTERM of master1's speaker → its %d routes withdrawn at leaf1, %d rounds\n", b.created, rounds)
	var lat []time.Duration
	for range rounds {
		p := b.lab.Speakers["master1"]
		t0 := time.Now()
		if err := p.Signal(syscall.SIGTERM); err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		t1, err := b.leaf1.WaitCount(c, wantAtMost(0))
		cancel()
		if err != nil {
			return err
		}
		lat = append(lat, t1.Sub(t0))
		if err := p.Wait(10 * time.Second); err != nil {
			return err
		}
		if err := b.restartSpeaker(ctx, "master1", b.created); err != nil {
			return err
		}
	}
	r := summarize("", lat)
	b.add(fmt.Sprintf("SIGTERM → %d routes withdrawn at leaf1, p50 / p99", b.created), ms(r.p50)+" / "+ms(r.p99), "≤ 100 ms")
	return nil
}

// bfdDetection takes master1's link down (a dead node) and times link
// down → leaf1 no longer routes to the rack through it.
func (b *routeBench) bfdDetection(ctx context.Context, rounds int) error {
	fmt.Printf("\nroutes: master1's link down → leaf1 drops its paths (BFD 100 ms × 3; hold time 9 s), %d rounds\n", rounds)
	n := b.lab.Topo.Node("master1")
	var lat []time.Duration
	for range rounds {
		if err := b.waitBFDUp(ctx); err != nil {
			return err
		}
		t0 := time.Now()
		if err := b.lab.Net.IP(n.NS, "link", "set", "eth0", "down"); err != nil {
			return err
		}
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		t1, err := b.leaf1.WaitCount(c, wantAtMost(0))
		cancel()
		if err != nil {
			return err
		}
		lat = append(lat, t1.Sub(t0))
		if err := b.lab.Net.IP(n.NS, "link", "set", "eth0", "up"); err != nil {
			return err
		}
		if err := b.lab.Net.IP(n.NS, "route", "replace", "default", "via", netlab.Leaf1Addr); err != nil {
			return err
		}
		c, cancel = context.WithTimeout(ctx, 2*time.Minute)
		_, err = b.leaf1.WaitCount(c, wantCount(b.created))
		cancel()
		if err != nil {
			return fmt.Errorf("after link up: %w", err)
		}
	}
	r := summarize("", lat)
	b.add("node failure → leaf1 drops its paths (BFD), p50 / p99", ms(r.p50)+" / "+ms(r.p99), "≤ 1 s")
	return nil
}

func (b *routeBench) waitBFDUp(ctx context.Context) error {
	return wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		status, _ := b.lab.Topo.Leaf1.BFDStatus(ctx, "192.168.0.3")
		return status == "up", nil
	})
}

// convergence grows the cluster to n Services with master1's speaker
// stopped (worker-p002's keeps announcing to leaf2), then times speaker
// start → all n routes in leaf1's kernel.
func (b *routeBench) convergence(ctx context.Context, n int) error {
	if n <= b.created {
		return nil
	}
	fmt.Printf("\nroutes: %d Services\n", n)
	p := b.lab.Speakers["master1"]
	if err := p.Stop(10 * time.Second); err != nil {
		return err
	}
	first, last, err := b.createBurst(ctx, n-b.created)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Minute)
	t2, err := b.leaf2.WaitCount(c, wantCount(n))
	cancel()
	if err != nil {
		return fmt.Errorf("leaf2 routes: %w", err)
	}
	b.add(fmt.Sprintf("burst of %d creates took", n-b.created), ms(last.Sub(first)), "")
	b.add(fmt.Sprintf("last create → all %d routes in leaf2 FIB", n), ms(t2.Sub(last)), "")
	b.created = n

	start := func() error {
		_, err := b.lab.StartSpeaker("master1", speakerFlags()...)
		return err
	}
	toRoutes, fromSession, err := timeSpeakerStart(ctx, start, b.lab.Topo.Leaf1, "192.168.0.3", b.leaf1, n)
	if err != nil {
		return fmt.Errorf("leaf1 routes: %w", err)
	}
	b.add(fmt.Sprintf("speaker start → %d ECMP routes in leaf1 FIB", n), ms(toRoutes), map[bool]string{true: "10,000 routes ≤ 3 s"}[n >= 10000])
	if fromSession > 0 {
		b.add(fmt.Sprintf("  of which session established → %d routes", n), ms(fromSession), "")
	}
	return nil
}

// attributeChange sets a community on the pool and times the patch → every
// Service's route at leaf1 carrying it (one plan rewrite per Service by
// the CCM, then one UPDATE per path from the speaker).
func (b *routeBench) attributeChange(ctx context.Context) error {
	fmt.Printf("\nroutes: community 65000:999 set on the pool of %d Services\n", b.created)
	patch := []byte(`{"spec":{"bgp":{"communities":["65000:999"]}}}`)
	t0 := time.Now()
	if err := b.lab.CRD.Patch(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "eip-sample-pool"}}, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return err
	}
	var n int
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Minute, true, func(ctx context.Context) (bool, error) {
		var out struct {
			Routes map[string]json.RawMessage `json:"routes"`
		}
		if err := b.lab.Topo.Leaf1.JSON(ctx, "show bgp ipv4 unicast community 65000:999 json", &out); err != nil {
			return false, nil
		}
		n = len(out.Routes)
		return n >= b.created, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d routes at leaf1 carry the community: %w", n, b.created, err)
	}
	b.add(fmt.Sprintf("Eip community changed → all %d routes carry it at leaf1", b.created), ms(time.Since(t0)), "")
	return nil
}

// timeSpeakerStart starts a speaker and times start → n routes matching in
// fib, and the router's session with the speaker at addr established →
// those routes (0 when the session came up after them).
func timeSpeakerStart(ctx context.Context, start func() error, r *netlab.FRR, addr string, fib *netlab.FIBWatch, n int) (toRoutes, fromSession time.Duration, err error) {
	t0 := time.Now()
	var established atomic.Int64
	go func() {
		if waitSession(ctx, r, addr, true) == nil {
			established.Store(time.Now().UnixNano())
		}
	}()
	if err := start(); err != nil {
		return 0, 0, err
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Minute)
	t1, err := fib.WaitCount(c, wantCount(n))
	cancel()
	if err != nil {
		return 0, 0, err
	}
	if e := established.Load(); e > 0 && e < t1.UnixNano() {
		fromSession = t1.Sub(time.Unix(0, e))
	}
	return t1.Sub(t0), fromSession, nil
}

func (b *routeBench) createBurst(ctx context.Context, count int) (first, last time.Time, err error) {
	start := b.created
	first = time.Now()
	err = inParallel(16, count, func(i int) error {
		_, err := b.cs.CoreV1().Services("routes").Create(ctx, newService("routes", fmt.Sprintf("r-%d", start+i)), metav1.CreateOptions{})
		return err
	})
	return first, time.Now(), err
}

// steady samples the speaker's memory and API requests with every route
// in place and nothing changing.
func (b *routeBench) steady(ctx context.Context) error {
	fmt.Printf("\nroutes: steady state with %d Services\n", b.created)
	// The plan statuses of the last change are written at the speaker's
	// QPS after the routes; wait until two quiet windows in a row.
	p := b.lab.Speakers["master1"]
	start := time.Now()
	last, err := b.lab.SpeakerRequests(ctx, "master1")
	if err != nil {
		return err
	}
	for quiet := 0; quiet < 2 && time.Since(start) < 20*time.Minute; {
		time.Sleep(5 * time.Second)
		cur, err := b.lab.SpeakerRequests(ctx, "master1")
		if err != nil {
			return err
		}
		if cur == last {
			quiet++
		} else {
			quiet = 0
		}
		last = cur
	}
	b.add("speaker status writes settled after", time.Since(start).Round(time.Second).String(), "")
	const window = 30 * time.Second
	time.Sleep(window)
	after, err := b.lab.SpeakerRequests(ctx, "master1")
	if err != nil {
		return err
	}
	b.add("speaker RSS (master1)", fmt.Sprintf("%.0f MiB", rssMiB(p.Pid())), "≤ 60 MB")
	b.add("speaker API requests/s at rest, over 30 s", fmt.Sprintf("%.2f", (after-last)/window.Seconds()), "≤ 0.5")
	return nil
}

// apiServerDown cuts the management network for 60 s: the speakers keep
// advertising what they last knew.
func (b *routeBench) apiServerDown(ctx context.Context) error {
	fmt.Println("\nroutes: API server unreachable for 60 s")
	b.lab.Topo.Forwarder.Down()
	fewest := b.leaf1.Count()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		fewest = min(fewest, b.leaf1.Count())
		time.Sleep(100 * time.Millisecond)
	}
	b.lab.Topo.Forwarder.Up()
	b.add("API server down 60 s: fewest leaf1 routes seen", fmt.Sprintf("%d of %d", fewest, b.created), "nothing withdrawn")
	return nil
}

func (b *routeBench) print() {
	b.printTable("BGP data path (seed-000 lab: FRR 8.4 leaves and spine, real speakers, route times from netlink events)")
}

// speakerFlags are extra speaker flags for diagnosis (BENCH_SPEAKER_FLAGS).
func speakerFlags() []string { return strings.Fields(os.Getenv("BENCH_SPEAKER_FLAGS")) }
