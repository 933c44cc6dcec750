package main

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// l2Rounds is how many failovers of each kind are timed with one Service.
const l2Rounds = 20

// l2ProbeEvery is the client's ARP request interval (arping in a loop).
const l2ProbeEvery = 50 * time.Millisecond

// l2Health is where each speaker serves /metrics, on its node's loopback.
const l2Health = "127.0.0.1:10290"

// l2Pool is the pool of the one-Service failover.
const (
	l2Pool      = "l2pool"
	l2PoolRange = "192.168.50.100-192.168.50.109"
)

// l2Bench measures layer 2 from the client's side of a real segment: three
// node namespaces running the real speaker (shipped defaults, shipped
// RBAC), the real CCM, and a client asking for the Service IPs while
// watching every ARP packet that claims them. It times failover with one
// Service, then with 1,000 addresses spread over the nodes (layer2_many.go),
// and counts the Lease writes that spreading costs at rest.
type l2Bench struct {
	cs       kubernetes.Interface
	crd      client.Client
	net      *netlab.Lab
	seg      *netlab.L2
	kc       string
	speakers map[string]*netlab.Proc
	runs     map[string]int
	// metricsHTTP reaches each node's speaker /metrics, by node.
	metricsHTTP map[string]*http.Client
	vip         netip.Addr
	watch       *netlab.ARPWatch
	rounds      int // one-Service failovers of each kind
	manyN       int // addresses of the spread pool
	manyIPs     []netip.Addr
	// spreadWant is, by node, how many of them it answers when all three
	// speakers run: every round must come back to it.
	spreadWant map[string]int
	// probe asks for many addresses at once (the 1,000-address rounds).
	probe *arpProbe
	// leases records the node Leases' writes: a failover's last renewal
	// or release.
	leases *leaseLog
	// table holds the one-Service failover; many the 1,000-address rows;
	// notes the anomalies seen on the way.
	table
	many  table
	notes []string
}

// runLayer2 builds the lab, times the one-Service failovers, then the
// 1,000-address spread, Lease writes and failovers, and prints the tables.
// BENCH_L2_ROUNDS (default 20) and BENCH_L2_SERVICES (default 1000; 0
// skips that part) shorten a run while diagnosing.
func runLayer2(ctx context.Context) error {
	began := time.Now()
	rounds, services := envInt("BENCH_L2_ROUNDS", l2Rounds), envInt("BENCH_L2_SERVICES", l2Many)
	cp, err := startControlPlane(ctx, true, harness.Options{})
	if err != nil {
		return err
	}
	defer cp.Stop()
	kc, err := seedlab.SpeakerKubeconfig(ctx, cp)
	if err != nil {
		return err
	}
	ccm, err := cp.StartCCM("ccm")
	if err != nil {
		return err
	}
	defer ccm.Stop()
	n, err := netlab.New("l2b")
	if err != nil {
		return err
	}
	defer n.Close()
	u, err := url.Parse(cp.APIServerURL)
	if err != nil {
		return fmt.Errorf("API server URL: %w", err)
	}
	seg, err := netlab.BuildL2(ctx, n, netlab.L2Options{APIServer: u.Host})
	if err != nil {
		return fmt.Errorf("building the layer-2 segment: %w", err)
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	crd, err := client.New(cfg, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return fmt.Errorf("CRD client: %w", err)
	}
	b := &l2Bench{cs: kubernetes.NewForConfigOrDie(cfg), crd: crd, net: n, seg: seg, kc: kc,
		speakers: map[string]*netlab.Proc{}, runs: map[string]int{}, metricsHTTP: map[string]*http.Client{}}
	b.leases = watchLeases(b.cs, harness.CCMNamespace)
	defer b.leases.close()
	fmt.Printf("\nlayer2: speaker logs in %s/speaker-<node>-<run>.log (kept after the run with NETLAB_KEEP=1)\n", n.Dir())
	if err := b.measure(ctx, rounds, services); err != nil {
		return fmt.Errorf("%w (speaker logs: %s/speaker-*.log, kept with NETLAB_KEEP=1)", err, n.Dir())
	}
	b.print()
	fmt.Printf("\nlayer2: the suite took %s\n", time.Since(began).Round(time.Second))
	return nil
}

// measure sets the lab up and runs the one-Service failovers (rounds of
// each kind) and the many-address part (services addresses; none: 0).
func (b *l2Bench) measure(ctx context.Context, rounds, services int) error {
	if err := b.setup(ctx); err != nil {
		return err
	}
	if rounds > 0 {
		fmt.Printf("\nlayer2: Service %s answered on a 3-node segment; client probes every %v, %d rounds each\n", b.vip, l2ProbeEvery, rounds)
		for _, planned := range []bool{false, true} {
			if err := b.failover(ctx, planned, rounds); err != nil {
				return err
			}
		}
	}
	if services > 0 {
		return b.runMany(ctx, services)
	}
	return nil
}

// setup creates the Nodes (Ready, as a kubelet would report them), starts
// a speaker on each, gives the segment the subnet of the 1,000-address
// pool, creates the one-Service pool and its Service and waits until the
// client gets an answer for it from a settled set of speakers.
func (b *l2Bench) setup(ctx context.Context) error {
	for _, node := range b.seg.Nodes {
		if err := b.createNode(ctx, node); err != nil {
			return err
		}
		b.metricsHTTP[node.Name] = nsHTTP(node.NS)
		if err := b.startSpeaker(node.Name); err != nil {
			return err
		}
	}
	if err := b.addManySubnet(); err != nil {
		return err
	}
	if err := b.crd.Create(ctx, &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: l2Pool},
		Spec: v1alpha2.EipSpec{Address: l2PoolRange, Protocol: v1alpha2.ProtocolLayer2, Interface: netlab.L2Interface}}); err != nil {
		return fmt.Errorf("creating Eip %s: %w", l2Pool, err)
	}
	svc := newService("default", "web")
	svc.Annotations = map[string]string{v1alpha2.AnnotationEip: l2Pool}
	if _, err := b.cs.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Service default/web: %w", err)
	}
	err := wait.PollUntilContextTimeout(ctx, 20*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := b.cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		b.vip, err = netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
		return err == nil, nil
	})
	if err != nil {
		return fmt.Errorf("the Service got no address: %w", err)
	}
	if b.watch, err = b.seg.WatchARP(b.vip, l2ProbeEvery); err != nil {
		return fmt.Errorf("watching ARP for %s: %w", b.vip, err)
	}
	if _, err := b.settleAfterRestart(ctx, l2Pool, 1, nil, "setup"); err != nil {
		return err
	}
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if _, err = b.watch.WaitReply(c, time.Now()); err != nil {
		return fmt.Errorf("the client gets no answer for %s: %w", b.vip, err)
	}
	return nil
}

// createNode creates the Node object of a lab node, labelled as a speaker
// node, Ready with its segment address.
func (b *l2Bench) createNode(ctx context.Context, node *netlab.L2Node) error {
	if _, err := b.cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: node.Name,
		Labels: map[string]string{v1alpha2.LabelSpeaker: v1alpha2.LabelSpeakerValue}}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating Node %s: %w", node.Name, err)
	}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := b.cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = []v1.NodeCondition{{Type: v1.NodeReady, Status: v1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		n.Status.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: node.IP4.String()}}
		_, err = b.cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		return fmt.Errorf("marking Node %s Ready: %w", node.Name, err)
	}
	return nil
}

// startSpeaker starts the node's speaker (again), with its shipped
// defaults plus BENCH_SPEAKER_FLAGS; its log is speaker-<node>-<run>.log
// in the lab's directory.
func (b *l2Bench) startSpeaker(node string) error {
	bin, err := harness.ProjectBinary("openelb-speaker")
	if err != nil {
		return err
	}
	b.runs[node]++
	p, err := b.net.Start(b.seg.Node(node).NS, fmt.Sprintf("speaker-%s-%d", node, b.runs[node]), bin,
		append([]string{"--kubeconfig=" + b.kc, "--node-name=" + node, "--namespace=" + harness.CCMNamespace,
			"--health-address=" + l2Health}, speakerFlags()...)...)
	if err != nil {
		return fmt.Errorf("starting the speaker of %s: %w", node, err)
	}
	b.speakers[node] = p
	return nil
}

// restartSpeaker waits for the node's speaker, signalled, to exit and
// starts it again.
func (b *l2Bench) restartSpeaker(node string) error {
	if err := b.speakers[node].Wait(15 * time.Second); err != nil {
		return err
	}
	return b.startSpeaker(node)
}

// l2PoolState is what the speakers say of one pool: by node, how many
// addresses it answers for and how many candidates its view has. A node
// whose metrics cannot be read (its speaker is down) is left out.
type l2PoolState struct {
	answered, candidates map[string]int
}

// total is how many addresses the nodes answer for together.
func (s l2PoolState) total() int { return sum(s.answered) }

// speakerMetrics reads the layer-2 samples of a node's speaker, keyed
// "name" or "name{labels}".
func (b *l2Bench) speakerMetrics(node string) (map[string]float64, error) {
	m, err := scrape(b.metricsHTTP[node], "http://"+l2Health+"/metrics", func(name, labels string) string {
		switch {
		case !strings.HasPrefix(name, "openelb_layer2_"):
			return ""
		case labels == "":
			return name
		}
		return name + "{" + labels + "}"
	})
	if err != nil {
		return nil, fmt.Errorf("metrics of the speaker of %s: %w", node, err)
	}
	return m, nil
}

// poolState reads the pool's answered addresses and candidates from the
// speakers of nodes.
func (b *l2Bench) poolState(nodes []string, pool string) l2PoolState {
	s := l2PoolState{answered: map[string]int{}, candidates: map[string]int{}}
	for _, n := range nodes {
		m, err := b.speakerMetrics(n)
		if err != nil {
			continue
		}
		a, ok := m[fmt.Sprintf(`openelb_layer2_answered_addresses{pool=%q}`, pool)]
		if !ok {
			continue
		}
		s.answered[n] = int(a)
		s.candidates[n] = int(m[fmt.Sprintf(`openelb_layer2_candidates{pool=%q}`, pool)])
	}
	return s
}

// nodeNames lists the lab's nodes.
func (b *l2Bench) nodeNames() []string {
	out := make([]string, len(b.seg.Nodes))
	for i, n := range b.seg.Nodes {
		out[i] = n.Name
	}
	return out
}

// waitSettled waits until every node's speaker is a candidate of pool and
// sees all the nodes, and together they answer for total addresses
// (split as want, when given), and returns that state.
func (b *l2Bench) waitSettled(ctx context.Context, pool string, total int, want map[string]int, timeout time.Duration) (l2PoolState, error) {
	nodes := b.nodeNames()
	var s l2PoolState
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, timeout, true, func(context.Context) (bool, error) {
		s = b.poolState(nodes, pool)
		for _, n := range nodes {
			if _, ok := s.answered[n]; !ok || s.candidates[n] != len(nodes) {
				return false, nil
			}
			if want != nil && s.answered[n] != want[n] {
				return false, nil
			}
		}
		return s.total() == total, nil
	})
	if err != nil {
		return s, fmt.Errorf("pool %s not settled on %d nodes answering %d address(es) %v (last seen: answered %v, candidates %v; %s): %w",
			pool, len(nodes), total, want, s.answered, s.candidates, b.diagnose(ctx, pool), err)
	}
	return s, nil
}

// l2SettleTimeout is how long a restarted speaker gets before the bench
// calls it stuck.
const l2SettleTimeout = 30 * time.Second

// settleAfterRestart waits until pool settles after a speaker was
// restarted (or after the speakers started, or the pool's Services were
// created), and returns how long that took. When it does not within
// l2SettleTimeout, the bench notes an anomaly, makes the speakers that do
// not answer their share (all of them when that is unknown) dump their
// goroutines into their logs (SIGQUIT), restarts them and gives them
// another minute, so that it goes on measuring.
func (b *l2Bench) settleAfterRestart(ctx context.Context, pool string, total int, want map[string]int, round string) (time.Duration, error) {
	start := time.Now()
	s, err := b.waitSettled(ctx, pool, total, want, l2SettleTimeout)
	if err == nil {
		return time.Since(start), nil
	}
	if ctx.Err() != nil {
		return 0, err
	}
	var stuck []string
	for _, n := range b.nodeNames() {
		if want != nil && s.answered[n] != want[n] {
			stuck = append(stuck, n)
		}
	}
	if len(stuck) == 0 {
		stuck = b.nodeNames()
	}
	var logs []string
	for _, n := range stuck {
		p := b.speakers[n]
		logs = append(logs, p.LogPath)
		if err := p.Signal(syscall.SIGQUIT); err != nil {
			return 0, fmt.Errorf("signalling the speaker of %s: %w", n, err)
		}
	}
	b.note("%s: %v; goroutine dumps (SIGQUIT) in %s; restarting %v", round, err, strings.Join(logs, ", "), stuck)
	for _, n := range stuck {
		if err := b.restartSpeaker(n); err != nil {
			return 0, err
		}
	}
	if _, err := b.waitSettled(ctx, pool, total, want, time.Minute); err != nil {
		return 0, fmt.Errorf("%s, after restarting the speakers of %v: %w", round, stuck, err)
	}
	b.note("%s: settled %s after restarting %v", round, dur(time.Since(start)), stuck)
	return time.Since(start), nil
}

// note records an anomaly, printed now and under the tables.
func (b *l2Bench) note(format string, args ...any) {
	n := fmt.Sprintf(format, args...)
	fmt.Println("  ANOMALY: " + n)
	b.notes = append(b.notes, n)
}

// diagnose describes what the speakers say of pool (their
// LoadBalancerSpeaker status entry) and what their Leases carry, for an
// error message.
func (b *l2Bench) diagnose(ctx context.Context, pool string) string {
	var parts []string
	var speakers v1alpha2.LoadBalancerSpeakerList
	if err := b.crd.List(ctx, &speakers); err != nil {
		parts = append(parts, fmt.Sprintf("LoadBalancerSpeakers unreadable: %v", err))
	}
	for _, sp := range speakers.Items {
		for _, e := range sp.Status.Layer2 {
			if e.Pool == pool {
				parts = append(parts, fmt.Sprintf("status of %s: %s, %d address(es), %q", sp.Name, e.Reason, e.Addresses, e.Message))
			}
		}
	}
	leases, err := b.cs.CoordinationV1().Leases(harness.CCMNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		parts = append(parts, fmt.Sprintf("Leases unreadable: %v", err))
	} else {
		for _, l := range leases.Items {
			if strings.HasPrefix(l.Name, election.NodeLeasePrefix) {
				renew := "-"
				if l.Spec.RenewTime != nil {
					renew = l.Spec.RenewTime.Format("15:04:05.000")
				}
				parts = append(parts, fmt.Sprintf("Lease %s rv %s renewed %s: %s", l.Name, l.ResourceVersion, renew, l.Annotations[election.AnnotationPools]))
			}
		}
	}
	return strings.Join(parts, "; ")
}

// failover stops the answering node's speaker rounds times (SIGKILL: a
// crash; SIGTERM: a rolling update) and times, at the client, signal →
// the first ARP packet claiming the IP for another MAC, and the gap
// between the last reply before it and the first reply after. The node
// stopped is the one whose MAC the client sees answering.
func (b *l2Bench) failover(ctx context.Context, planned bool, rounds int) error {
	sig, what, target := syscall.SIGKILL, "unplanned (SIGKILL of the answering speaker)", "≤ 3 s"
	if planned {
		sig, what, target = syscall.SIGTERM, "planned (SIGTERM of the answering speaker)", "≤ 300 ms"
	}
	fmt.Printf("\nlayer2: %s\n", what)
	// fromLease: unplanned, the stopped node's last Lease renewal → the
	// new MAC's claim; planned, its release → that claim. release:
	// signal → release.
	var claim, gap, fromLease, release []time.Duration
	split := 0
	b.rounds = rounds
	for i := range rounds {
		s, err := b.waitSettled(ctx, l2Pool, 1, nil, time.Minute)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		last, err := b.watch.WaitReply(c, time.Now())
		cancel()
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		old := b.seg.NodeByMAC(last.MAC)
		if old == nil {
			return fmt.Errorf("round %d: %s answers for %s, the MAC of no node", i+1, last.MAC, b.vip)
		}
		if s.answered[old.Name] != 1 {
			return fmt.Errorf("round %d: the client sees %s (%s) answering for %s, but its speaker answers for %d address(es) (all: %v)",
				i+1, old.Name, old.MAC, b.vip, s.answered[old.Name], s.answered)
		}
		t0 := time.Now()
		if err := b.speakers[old.Name].Signal(sig); err != nil {
			return fmt.Errorf("signalling the speaker of %s: %w", old.Name, err)
		}
		c, cancel = context.WithTimeout(ctx, 15*time.Second)
		next, err := b.watch.WaitOther(c, t0, old.MAC)
		var reply netlab.ARPSeen
		if err == nil {
			reply, err = b.watch.WaitReply(c, next.At)
		}
		cancel()
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		lastOld := last.At
		for _, s := range b.watch.Seen(last.At) {
			if s.Kind == netlab.ARPReply && s.MAC.String() == old.MAC.String() && s.At.After(lastOld) {
				lastOld = s.At
			}
		}
		ref, err := b.leaseRef(ctx, old.Name, t0, next.At, planned)
		if err != nil {
			return fmt.Errorf("round %d: %w", i+1, err)
		}
		if (planned && next.At.Sub(t0) > 300*time.Millisecond) || (!planned && next.At.Sub(ref) > 2500*time.Millisecond) {
			b.note("%s round %d: %s claimed %s only %s after the signal; Lease writes from its %s (node, time from it, view of %s): %s",
				what, i+1, next.MAC, b.vip, ms(next.At.Sub(t0)), leaseEvent(planned), l2Pool, b.leases.timeline(l2Pool, ref, ref.Add(-time.Second), time.Now()))
		}
		claim = append(claim, next.At.Sub(t0))
		gap = append(gap, reply.At.Sub(lastOld))
		fromLease = append(fromLease, next.At.Sub(ref))
		if planned {
			release = append(release, ref.Sub(t0))
		}
		split += len(b.watch.SplitRounds(t0.Add(-time.Second), time.Now()))
		newName := "?"
		if n := b.seg.NodeByMAC(next.MAC); n != nil {
			newName = n.Name
		}
		fmt.Printf("  round %2d: %s → %s  claimed after %s (%s after its Lease's %s), client without an answer %s\n", i+1, old.Name,
			newName, ms(next.At.Sub(t0)), ms(next.At.Sub(ref)), leaseEvent(planned), ms(reply.At.Sub(lastOld)))
		if err := b.restartSpeaker(old.Name); err != nil {
			return err
		}
		if _, err := b.settleAfterRestart(ctx, l2Pool, 1, nil, fmt.Sprintf("%s round %d", what, i+1)); err != nil {
			return err
		}
	}
	kind := "unplanned"
	if planned {
		kind = "planned"
	}
	r, g, f := summarize("", claim), summarize("", gap), summarize("", fromLease)
	b.add(fmt.Sprintf("%s failover: signal → new MAC claims the IP, p50 / p99", kind), ms(r.p50)+" / "+ms(r.p99), target)
	b.add(fmt.Sprintf("%s failover: client without an answer, p50 / p99", kind), ms(g.p50)+" / "+ms(g.p99), target)
	if planned {
		rel := summarize("", release)
		b.add("planned failover: signal → Lease released (watch), p50 / p99", ms(rel.p50)+" / "+ms(rel.p99), "-")
		b.add("planned failover: Lease released → new MAC claims the IP, p50 / p99", ms(f.p50)+" / "+ms(f.p99), "a few round trips")
	} else {
		b.add("unplanned failover: last Lease renewal (watch) → new MAC claims the IP, p50 / p99", ms(f.p50)+" / "+ms(f.p99), "≈ 2 s + a few round trips")
	}
	b.add(fmt.Sprintf("%s failover: requests answered by two MACs", kind), fmt.Sprint(split), "0")
	return nil
}

// leaseRef is when, as the bench's Lease watch saw it, node's speaker,
// signalled at t0, last renewed its Lease (unplanned: the last write seen
// before until, when another node answered; a renewal in flight at the
// SIGKILL still lands after t0) or released it (planned: the first write
// after t0 that lists no pool).
func (b *l2Bench) leaseRef(ctx context.Context, node string, t0, until time.Time, planned bool) (time.Time, error) {
	if !planned {
		w, ok := b.leases.lastBefore(node, until)
		if !ok {
			return time.Time{}, fmt.Errorf("no write of the Lease of %s seen before it was taken over", node)
		}
		return w.At, nil
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	w, err := b.leases.waitRelease(c, node, t0)
	return w.At, err
}

// leaseEvent names what leaseRef returns.
func leaseEvent(planned bool) string {
	if planned {
		return "release"
	}
	return "last renewal"
}

// envInt is the integer in environment variable name, def when unset or
// not a number.
func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n >= 0 {
		return n
	}
	return def
}

// leaseTimings describes the shipped Lease timings.
func leaseTimings() string {
	t := election.DefaultLeaseTimings
	return strings.Join([]string{t.Duration.String(), t.RenewDeadline.String(), t.RetryPeriod.String()}, " / ")
}

func (b *l2Bench) print() {
	if len(b.rows) > 0 {
		b.printTable(fmt.Sprintf("Layer 2 failover, 1 Service (3 speakers on one segment, shipped defaults: node Leases %s; client ARP every %v; %d rounds)",
			leaseTimings(), l2ProbeEvery, b.rounds))
	}
	if len(b.many.rows) > 0 {
		b.many.printTable(fmt.Sprintf("Layer 2 with %d addresses (%d Services in one pool on 3 speakers, shipped defaults; client ARP every %v on a sample of up to %d moved addresses; %d rounds)",
			b.manyN, b.manyN, l2ProbeEvery, l2Sample, l2ManyRounds))
	}
	if len(b.notes) > 0 {
		fmt.Println("anomalies:")
		for _, n := range b.notes {
			fmt.Println("  - " + n)
		}
	}
	if os.Getenv("NETLAB_KEEP") != "" {
		fmt.Printf("speaker logs kept in %s\n", b.net.Dir())
	}
}
