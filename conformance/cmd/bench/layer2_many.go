package main

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// The 1,000-address part of the layer-2 bench: one pool whose addresses
// the speakers spread over the three nodes (rendezvous hash), its Lease
// writes at rest, and failover of one node's share.
const (
	// l2Many is how many Services (addresses) the spread pool serves.
	l2Many = 1000
	// l2ManyRounds is how many failovers of each kind are timed with them.
	l2ManyRounds = 3
	// l2Sample is how many of a stopped node's addresses the client probes
	// every l2ProbeEvery during a failover.
	l2Sample = 50
	// l2SteadyWindow is how long Lease writes are counted at rest.
	l2SteadyWindow = 20 * time.Second

	// l2FirstProbed is how many of the spread pool's first addresses the
	// client probes while the pool appears.
	l2FirstProbed = 20

	l2ManyPool = "l2spread"
	l2ManyNS   = "spread"
	// l2ManyRange holds 1,007 addresses of l2ManySubnet, clear of the
	// client's and nodes' own addresses in it.
	l2ManyRange = "192.168.52.16-192.168.55.254"
)

// l2ManySubnet is a second subnet on the segment, since its own /24 holds
// too few addresses: the client and every node get an address in it on
// their segment interface, so the nodes may answer for the pool.
var l2ManySubnet = netip.MustParsePrefix("192.168.52.0/22")

// l2ManyRoundResult is one failover of a node's share of the addresses.
type l2ManyRoundResult struct {
	victim string
	moved  int
	// claim and gap, by sampled address: signal → first reply from
	// another node; last reply from the stopped node → that reply;
	// fromLease: the stopped node's last Lease renewal (unplanned) or
	// its release (planned) → that reply.
	claim, gap, fromLease []time.Duration
	// release: signal → the Lease released (planned).
	release time.Duration
	// all: signal → the surviving speakers answer for every address.
	all time.Duration
	// restored: speaker restarted → the spread is back as before.
	restored time.Duration
	// split: (probe round, address) pairs answered by two MACs;
	// conflicts: ARP conflicts the surviving speakers counted.
	split     int
	conflicts float64
	// unowned: moved addresses not answered by exactly one surviving
	// node afterwards; shuffled: addresses of a surviving node that moved.
	unowned, shuffled int
	// to: where the moved addresses went, by node.
	to map[string]int
}

// addManySubnet gives the client and every node an address in
// l2ManySubnet (.2 for the client, the node's own last byte for a node).
func (b *l2Bench) addManySubnet() error {
	base := l2ManySubnet.Addr().As4()
	at := func(last byte) string {
		a := base
		a[3] = last
		return netip.PrefixFrom(netip.AddrFrom4(a), l2ManySubnet.Bits()).String()
	}
	if err := b.net.Addr(b.seg.Client, netlab.L2Interface, at(2)); err != nil {
		return fmt.Errorf("adding %s to the client: %w", l2ManySubnet, err)
	}
	for _, n := range b.seg.Nodes {
		if err := b.net.Addr(n.NS, netlab.L2Interface, at(n.IP4.As4()[3])); err != nil {
			return fmt.Errorf("adding %s to %s: %w", l2ManySubnet, n.Name, err)
		}
	}
	return nil
}

// runMany measures the Lease writes with one Service, creates n Services
// in the spread pool, and measures the spread, the Lease writes and the
// failovers with them.
func (b *l2Bench) runMany(ctx context.Context, n int) error {
	one, err := b.leaseWrites(ctx, l2Pool, 1)
	if err != nil {
		return err
	}
	if b.probe, err = newARPProbe(b.seg); err != nil {
		return err
	}
	defer b.probe.Close()
	b.manyN = n
	fmt.Printf("\nlayer2: %d Services in pool %s (%s)\n", n, l2ManyPool, l2ManyRange)
	if err := b.createMany(ctx, n); err != nil {
		return err
	}
	if err := b.spread(ctx); err != nil {
		return err
	}
	many, err := b.leaseWrites(ctx, l2ManyPool, n)
	if err != nil {
		return err
	}
	b.addLeaseRows(one, many)
	for _, planned := range []bool{false, true} {
		if err := b.failoverMany(ctx, planned); err != nil {
			return err
		}
	}
	return nil
}

// createMany creates the spread pool and n Services in it with 16
// concurrent clients, and waits until every one has its address and the
// speakers answer for all of them.
func (b *l2Bench) createMany(ctx context.Context, n int) error {
	if err := b.crd.Create(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: l2ManyPool},
		Spec: v1alpha2.EipSpec{Address: l2ManyRange, Protocol: v1alpha2.ProtocolLayer2, Interface: netlab.L2Interface}}); err != nil {
		return fmt.Errorf("creating Eip %s: %w", l2ManyPool, err)
	}
	if _, err := b.cs.CoreV1().Namespaces().Create(ctx, &v1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: l2ManyNS}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating namespace %s: %w", l2ManyNS, err)
	}
	// The pool's first addresses, probed from before the first create:
	// every node becomes a candidate of the new pool at once.
	first := make([]netip.Addr, 0, l2FirstProbed)
	for ip := netip.MustParseAddr(strings.Split(l2ManyRange, "-")[0]); len(first) < cap(first); ip = ip.Next() {
		first = append(first, ip)
	}
	nodes := b.nodeNames()
	conflicts0 := b.conflicts(nodes)
	b.probe.startLoop(first, l2ProbeEvery)
	defer b.probe.stopLoop()
	begin := time.Now()
	err := inParallel(16, n, func(i int) error {
		svc := newService(l2ManyNS, fmt.Sprintf("s-%d", i))
		svc.Annotations = map[string]string{v1alpha2.AnnotationEip: l2ManyPool}
		var err error
		for range 5 { // a create that times out on a loaded machine may have landed
			_, err = b.cs.CoreV1().Services(l2ManyNS).Create(ctx, svc, metav1.CreateOptions{})
			if err == nil || apierrors.IsAlreadyExists(err) || ctx.Err() != nil {
				return ctx.Err()
			}
			time.Sleep(time.Second)
		}
		return fmt.Errorf("creating Service %s/%s: %w", l2ManyNS, svc.Name, err)
	})
	if err != nil {
		return err
	}
	created := time.Now()
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 5*time.Minute, true, func(ctx context.Context) (bool, error) {
		ips, err := b.manyAddresses(ctx)
		if err != nil || len(ips) < n {
			return false, nil
		}
		b.manyIPs = ips
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("%d of %d Services in %s have an address: %w", len(b.manyIPs), n, l2ManyNS, err)
	}
	addressed := time.Now()
	if _, err := b.settleAfterRestart(ctx, l2ManyPool, n, nil, fmt.Sprintf("creating %d Services", n)); err != nil {
		return err
	}
	answered := time.Now()
	b.probe.stopLoop()
	split := b.probe.splitRounds(begin, answered)
	conflicts := b.conflicts(nodes) - conflicts0
	b.many.add(fmt.Sprintf("%d Services created (16 clients)", n), dur(created.Sub(begin)), "-")
	b.many.add("first create → every Service has its IP", dur(addressed.Sub(begin)), "-")
	b.many.add("every IP → the speakers answer for all of them", dur(answered.Sub(addressed)), "-")
	b.many.add(fmt.Sprintf("new pool: probe rounds answered by two MACs (first %d addresses) / ARP conflicts the speakers counted", l2FirstProbed),
		fmt.Sprintf("%d / %.0f", split, conflicts), "0 / 0")
	return nil
}

// manyAddresses lists the addresses of the spread pool's Services, sorted.
func (b *l2Bench) manyAddresses(ctx context.Context) ([]netip.Addr, error) {
	list, err := b.cs.CoreV1().Services(l2ManyNS).List(ctx, metav1.ListOptions{ResourceVersion: "0"})
	if err != nil {
		return nil, fmt.Errorf("listing the Services of %s: %w", l2ManyNS, err)
	}
	var out []netip.Addr
	for _, s := range list.Items {
		if len(s.Status.LoadBalancer.Ingress) == 0 {
			continue
		}
		ip, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		if err != nil {
			return nil, fmt.Errorf("Service %s/%s: %w", s.Namespace, s.Name, err)
		}
		out = append(out, ip)
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return slices.Compact(out), nil
}

// spread reports how the addresses spread over the nodes, as each speaker
// counts them (metric and LoadBalancerSpeaker status) and as the client
// sees them (one ARP request per address), and keeps it as the spread
// every later round must come back to.
func (b *l2Bench) spread(ctx context.Context) error {
	s, err := b.waitSettled(ctx, l2ManyPool, b.manyN, nil, time.Minute)
	if err != nil {
		return err
	}
	b.spreadWant = s.answered
	seen, err := b.probe.sweep(ctx, b.manyIPs)
	if err != nil {
		return err
	}
	client := map[string]int{}
	unanswered, double := 0, 0
	for _, ip := range b.manyIPs {
		switch macs := seen[ip]; len(macs) {
		case 0:
			unanswered++
		case 1:
			client[b.nodeOfMAC(macs[0])]++
		default:
			double++
		}
	}
	status, err := b.statusSpread(ctx)
	if err != nil {
		return err
	}
	lo, hi := b.manyN, 0
	for _, v := range s.answered {
		lo, hi = min(lo, v), max(hi, v)
	}
	ratio := "∞"
	if lo > 0 {
		ratio = fmt.Sprintf("%.2f", float64(hi)/float64(lo))
	}
	share := b.manyN / len(b.seg.Nodes)
	b.many.add("addresses per node (openelb_layer2_answered_addresses)", b.perNode(s.answered), fmt.Sprintf("≈ %d each", share))
	b.many.add("addresses per node (LoadBalancerSpeaker status.layer2)", b.perNode(status), "the same")
	b.many.add("addresses per node (client: MAC answering each address)", b.perNode(client), "the same")
	b.many.add("addresses per node: max / min / max÷min", fmt.Sprintf("%d / %d / %s", hi, lo, ratio), "close to 1")
	b.many.add("sum over the nodes (metric / status / client)", fmt.Sprintf("%d / %d / %d", s.total(), sum(status), sum(client)), fmt.Sprint(b.manyN))
	b.many.add("client: addresses unanswered / answered by two MACs", fmt.Sprintf("%d / %d", unanswered, double), "0 / 0")
	return nil
}

// statusSpread waits (count-only status writes come every 10 s) until the
// speakers' LoadBalancerSpeaker status counts every address of the spread
// pool, and returns the counts by node (what it last read, on timeout).
func (b *l2Bench) statusSpread(ctx context.Context) (map[string]int, error) {
	out := map[string]int{}
	err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		var list v1alpha2.LoadBalancerSpeakerList
		if err := b.crd.List(ctx, &list); err != nil {
			return false, nil
		}
		out = map[string]int{}
		for _, sp := range list.Items {
			for _, e := range sp.Status.Layer2 {
				if e.Pool == l2ManyPool {
					out[sp.Name] = int(e.Addresses)
				}
			}
		}
		return maps.Equal(out, b.spreadWant), nil
	})
	if err != nil && ctx.Err() != nil {
		return nil, fmt.Errorf("reading LoadBalancerSpeaker status: %w", err)
	}
	return out, nil
}

// l2Writes is the Lease writes counted over a window at rest.
type l2Writes struct {
	seconds float64
	// api: every Lease write the API server took (every client); own:
	// each speaker's openelb_layer2_lease_writes_total, by node.
	api   float64
	own   map[string]float64
	moves float64 // openelb_layer2_address_moves_total of pool, all nodes
}

// leaseWrites counts the Lease writes at rest over l2SteadyWindow, with
// pool settled on n addresses.
func (b *l2Bench) leaseWrites(ctx context.Context, pool string, n int) (l2Writes, error) {
	want := map[string]int(nil)
	if pool == l2ManyPool {
		want = b.spreadWant
	}
	if _, err := b.waitSettled(ctx, pool, n, want, time.Minute); err != nil {
		return l2Writes{}, err
	}
	nodes := b.nodeNames()
	read := func() (map[string]float64, map[string]float64, float64, error) {
		api, err := harness.APIWrites(ctx, b.cs)
		if err != nil {
			return nil, nil, 0, err
		}
		own := map[string]float64{}
		moves := 0.0
		for _, node := range nodes {
			m, err := b.speakerMetrics(node)
			if err != nil {
				return nil, nil, 0, err
			}
			own[node] = m["openelb_layer2_lease_writes_total"]
			moves += m[fmt.Sprintf(`openelb_layer2_address_moves_total{pool=%q}`, pool)]
		}
		return api, own, moves, nil
	}
	api0, own0, moves0, err := read()
	if err != nil {
		return l2Writes{}, err
	}
	t0 := time.Now()
	if err := pause(ctx, l2SteadyWindow); err != nil {
		return l2Writes{}, err
	}
	api1, own1, moves1, err := read()
	if err != nil {
		return l2Writes{}, err
	}
	w := l2Writes{seconds: time.Since(t0).Seconds(), own: map[string]float64{}, moves: moves1 - moves0}
	w.api = harness.TotalWrites(harness.WritesDelta(api0, api1, "leases"))
	for _, node := range nodes {
		w.own[node] = own1[node] - own0[node]
	}
	return w, nil
}

// addLeaseRows reports the Lease writes at rest with 1 Service and with
// the spread pool's addresses.
func (b *l2Bench) addLeaseRows(one, many l2Writes) {
	rate := func(w l2Writes, v float64) string { return fmt.Sprintf("%.2f/s", v/w.seconds) }
	ownTotal := func(w l2Writes) float64 { return sumF(w.own) }
	perNode := func(w l2Writes) string {
		var parts []string
		for _, n := range b.nodeNames() {
			parts = append(parts, fmt.Sprintf("%s %.2f/s", n, w.own[n]/w.seconds))
		}
		return strings.Join(parts, ", ")
	}
	window := fmt.Sprintf("%.0f s at rest", many.seconds)
	b.many.add(fmt.Sprintf("Lease writes at the API server, %d addresses (%s)", b.manyN, window), rate(many, many.api), "≈ 6/s + leader elections")
	b.many.add(fmt.Sprintf("  of which the speakers' (openelb_layer2_lease_writes_total)"), rate(many, ownTotal(many)), "≈ 6/s (3 nodes × 2/s)")
	b.many.add("  per speaker", perNode(many), "2/s each")
	b.many.add("  others (leader elections, API server identity)", rate(many, many.api-ownTotal(many)), "-")
	b.many.add("Lease writes at the API server, 1 Service (same window)", rate(one, one.api), "the same")
	b.many.add("  of which the speakers'", rate(one, ownTotal(one)), "the same")
	b.many.add(fmt.Sprintf("addresses moved during the windows (%d / 1 address)", b.manyN), fmt.Sprintf("%.0f / %.0f", many.moves, one.moves), "0 / 0")
}

// failoverMany stops, l2ManyRounds times, a node's speaker (SIGKILL or
// SIGTERM; a different node each round) while the client probes a sample
// of its addresses, and times their moves to the other nodes.
func (b *l2Bench) failoverMany(ctx context.Context, planned bool) error {
	sig, sigName, kind, target := syscall.SIGKILL, "SIGKILL", "unplanned", "≤ 3 s"
	if planned {
		sig, sigName, kind, target = syscall.SIGTERM, "SIGTERM", "planned", "≤ 300 ms"
	}
	fmt.Printf("\nlayer2: %s failover with %d addresses (%s of a speaker, a different node each round)\n", kind, b.manyN, sigName)
	var rounds []l2ManyRoundResult
	for i := range l2ManyRounds {
		victim := b.seg.Nodes[i%len(b.seg.Nodes)].Name
		r, err := b.manyRound(ctx, fmt.Sprintf("%s failover with %d addresses, round %d", kind, b.manyN, i+1), victim, sig, planned)
		if err != nil {
			return fmt.Errorf("%s round %d (%s): %w", kind, i+1, victim, err)
		}
		c, g, f := summarize("", slices.Clone(r.claim)), summarize("", slices.Clone(r.gap)), summarize("", slices.Clone(r.fromLease))
		var to []string
		for _, n := range slices.Sorted(maps.Keys(r.to)) {
			to = append(to, fmt.Sprintf("%s %d", n, r.to[n]))
		}
		rel := ""
		if planned {
			rel = fmt.Sprintf("Lease released after %s; ", ms(r.release))
		}
		fmt.Printf("  round %d: %s, %d addresses → %s; %ssample of %d: answered elsewhere after p50 %s / max %s (%s after the Lease's %s), gap p50 %s / max %s; all answered after %s; restart → spread restored %s\n",
			i+1, victim, r.moved, strings.Join(to, ", "), rel, len(r.claim), ms(c.p50), ms(c.max), ms(f.p50), leaseEvent(planned), ms(g.p50), ms(g.max), ms(r.all), dur(r.restored))
		rounds = append(rounds, r)
	}
	var claim, gap, fromLease []time.Duration
	var all, restored, moved, release []string
	split, unowned, shuffled, conflicts := 0, 0, 0, 0.0
	for _, r := range rounds {
		claim, gap, fromLease = append(claim, r.claim...), append(gap, r.gap...), append(fromLease, r.fromLease...)
		all, restored = append(all, ms(r.all)), append(restored, dur(r.restored))
		moved, release = append(moved, fmt.Sprint(r.moved)), append(release, ms(r.release))
		split, unowned, shuffled, conflicts = split+r.split, unowned+r.unowned, shuffled+r.shuffled, conflicts+r.conflicts
	}
	c, g, f := summarize("", claim), summarize("", gap), summarize("", fromLease)
	b.many.add(fmt.Sprintf("%s failover: signal → sampled address answered by another node, p50 / p99", kind), ms(c.p50)+" / "+ms(c.p99), target)
	b.many.add(fmt.Sprintf("%s failover: client without an answer (sample), p50 / p99", kind), ms(g.p50)+" / "+ms(g.p99), target)
	if planned {
		b.many.add("planned failover: signal → Lease released (watch), by round", strings.Join(release, ", "), "-")
		b.many.add("planned failover: Lease released → sampled address answered elsewhere, p50 / p99", ms(f.p50)+" / "+ms(f.p99), "a few round trips")
	} else {
		b.many.add("unplanned failover: last Lease renewal (watch) → sampled address answered elsewhere, p50 / p99", ms(f.p50)+" / "+ms(f.p99), "≈ 2 s + a few round trips")
	}
	b.many.add(fmt.Sprintf("%s failover: signal → all of the node's addresses (%s) answered again (speakers' metric), by round", kind, strings.Join(moved, ", ")), strings.Join(all, ", "), target)
	b.many.add(fmt.Sprintf("%s failover: probe rounds answered by two MACs / ARP conflicts the survivors counted", kind), fmt.Sprintf("%d / %.0f", split, conflicts), "0 / 0")
	b.many.add(fmt.Sprintf("%s failover: moved addresses then not answered by one survivor / survivors' addresses moved", kind), fmt.Sprintf("%d / %d", unowned, shuffled), "0 / 0")
	b.many.add(fmt.Sprintf("%s failover: speaker restart → spread restored, by round", kind), strings.Join(restored, ", "), "-")
	return nil
}

// manyRound is one failover of victim's share: the client finds the
// addresses victim answers (one request each), probes a sample of them
// every l2ProbeEvery, signals the speaker, and waits until the sample is
// answered elsewhere and the surviving speakers answer for every address;
// then checks, from the client, who answers what, and restarts the speaker.
func (b *l2Bench) manyRound(ctx context.Context, round, victim string, sig syscall.Signal, planned bool) (l2ManyRoundResult, error) {
	r := l2ManyRoundResult{victim: victim, to: map[string]int{}}
	if _, err := b.waitSettled(ctx, l2ManyPool, b.manyN, b.spreadWant, 2*time.Minute); err != nil {
		return r, err
	}
	before, err := b.sweepSettled(ctx)
	if err != nil {
		return r, err
	}
	vmac := b.seg.Node(victim).MAC.String()
	var moved []netip.Addr
	for _, ip := range b.manyIPs {
		if before[ip][0] == vmac {
			moved = append(moved, ip)
		}
	}
	r.moved = len(moved)
	if r.moved != b.spreadWant[victim] {
		return r, fmt.Errorf("the client sees %s answering %d addresses, its speaker says %d", victim, r.moved, b.spreadWant[victim])
	}
	sample := sampleOf(moved, l2Sample)
	var survivors []string
	for _, n := range b.nodeNames() {
		if n != victim {
			survivors = append(survivors, n)
		}
	}

	conflicts0 := b.conflicts(survivors)
	b.probe.startLoop(sample, l2ProbeEvery)
	defer b.probe.stopLoop()
	if err := pause(ctx, 5*l2ProbeEvery); err != nil {
		return r, err
	}
	t0 := time.Now()
	if err := b.speakers[victim].Signal(sig); err != nil {
		return r, fmt.Errorf("signalling the speaker of %s: %w", victim, err)
	}
	// Every address answered again, as the surviving speakers count them.
	var last l2PoolState
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		last = b.poolState(survivors, l2ManyPool)
		return last.total() == b.manyN, nil
	})
	if err != nil {
		return r, fmt.Errorf("the surviving speakers answer for %v of %d addresses: %w", last.answered, b.manyN, err)
	}
	r.all = time.Since(t0)
	ref, err := b.leaseRef(ctx, victim, t0, time.Now(), planned)
	if err != nil {
		return r, err
	}
	slow := 2500 * time.Millisecond // after the last renewal: Duration + a few round trips
	if planned {
		r.release = ref.Sub(t0)
		slow = 300 * time.Millisecond // after the signal
	}
	if took := r.all + t0.Sub(ref); (planned && r.all > slow) || (!planned && took > slow) {
		b.note("%s: %s's addresses answered again only %s after the signal; Lease writes from its %s (node, time from it, view of %s): %s",
			round, victim, ms(r.all), leaseEvent(planned), l2ManyPool, b.leases.timeline(l2ManyPool, ref, ref.Add(-time.Second), time.Now()))
	}
	// Every sampled address answered by another node, at the client.
	firstNew := map[netip.Addr]arpAnswer{}
	err = wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, 15*time.Second, true, func(context.Context) (bool, error) {
		now := time.Now()
		for _, ip := range sample {
			if _, ok := firstNew[ip]; ok {
				continue
			}
			for _, a := range b.probe.answers(ip, t0, now) {
				if !a.Gratuitous && a.MAC != vmac {
					firstNew[ip] = a
					break
				}
			}
		}
		return len(firstNew) == len(sample), nil
	})
	if err != nil {
		return r, fmt.Errorf("%d of the %d sampled addresses answered by another node: %w", len(firstNew), len(sample), err)
	}
	if err := pause(ctx, 4*l2ProbeEvery); err != nil {
		return r, err
	}
	end := time.Now()
	b.probe.stopLoop()
	for _, ip := range sample {
		n := firstNew[ip]
		lastOld := time.Time{}
		for _, a := range b.probe.answers(ip, t0.Add(-time.Second), n.At) {
			if !a.Gratuitous && a.MAC == vmac {
				lastOld = a.At
			}
		}
		if lastOld.IsZero() {
			return r, fmt.Errorf("the client saw no reply from %s for %s before the failover", victim, ip)
		}
		r.claim = append(r.claim, n.At.Sub(t0))
		r.gap = append(r.gap, n.At.Sub(lastOld))
		r.fromLease = append(r.fromLease, n.At.Sub(ref))
	}
	r.split = b.probe.splitRounds(t0.Add(-time.Second), end)
	r.conflicts = b.conflicts(survivors) - conflicts0

	// Who answers what now, from the client.
	after, err := b.probe.sweep(ctx, b.manyIPs)
	if err != nil {
		return r, err
	}
	for _, ip := range b.manyIPs {
		macs := after[ip]
		if before[ip][0] == vmac {
			if len(macs) != 1 || macs[0] == vmac {
				r.unowned++
				continue
			}
			r.to[b.nodeOfMAC(macs[0])]++
		} else if !slices.Equal(macs, before[ip]) {
			r.shuffled++
		}
	}

	if err := b.restartSpeaker(victim); err != nil {
		return r, err
	}
	if r.restored, err = b.settleAfterRestart(ctx, l2ManyPool, b.manyN, b.spreadWant, round); err != nil {
		return r, err
	}
	b.probe.forget(time.Now())
	b.leases.forget(time.Now().Add(-time.Minute))
	return r, nil
}

// conflicts sums the ARP conflicts (another MAC claiming an address the
// node answers) the speakers of nodes counted since they started; a
// speaker that does not answer counts nothing.
func (b *l2Bench) conflicts(nodes []string) float64 {
	n := 0.0
	for _, node := range nodes {
		if m, err := b.speakerMetrics(node); err == nil {
			n += m["openelb_layer2_arp_conflicts_total"]
		}
	}
	return n
}

// sweepSettled asks the client who answers each address of the spread
// pool until every one is answered by exactly one MAC (three tries, a
// second apart), and returns the MACs by address.
func (b *l2Bench) sweepSettled(ctx context.Context) (map[netip.Addr][]string, error) {
	var bad []string
	for try := range 3 {
		if try > 0 {
			if err := pause(ctx, time.Second); err != nil {
				return nil, err
			}
		}
		seen, err := b.probe.sweep(ctx, b.manyIPs)
		if err != nil {
			return nil, err
		}
		bad = nil
		for _, ip := range b.manyIPs {
			if len(seen[ip]) != 1 {
				bad = append(bad, fmt.Sprintf("%s: %v", ip, seen[ip]))
			}
		}
		if len(bad) == 0 {
			return seen, nil
		}
	}
	return nil, fmt.Errorf("the client does not see one MAC answering each address after 3 sweeps: %d address(es) answered by none or several, e.g. %s",
		len(bad), strings.Join(bad[:min(3, len(bad))], "; "))
}

// sampleOf picks up to n of ips, evenly spaced.
func sampleOf(ips []netip.Addr, n int) []netip.Addr {
	if len(ips) <= n {
		return slices.Clone(ips)
	}
	out := make([]netip.Addr, n)
	for i := range n {
		out[i] = ips[i*len(ips)/n]
	}
	return out
}

// nodeOfMAC names the node whose segment MAC is mac, or returns mac.
func (b *l2Bench) nodeOfMAC(mac string) string {
	for _, n := range b.seg.Nodes {
		if n.MAC.String() == mac {
			return n.Name
		}
	}
	return mac
}

// perNode prints counts by node, in node order.
func (b *l2Bench) perNode(counts map[string]int) string {
	var parts []string
	for _, n := range b.nodeNames() {
		parts = append(parts, fmt.Sprintf("%s %d", n, counts[n]))
	}
	for _, k := range slices.Sorted(maps.Keys(counts)) {
		if b.seg.Node(k) == nil {
			parts = append(parts, fmt.Sprintf("%s %d", k, counts[k]))
		}
	}
	return strings.Join(parts, ", ")
}

func sum(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func sumF(m map[string]float64) float64 {
	n := 0.0
	for _, v := range m {
		n += v
	}
	return n
}
