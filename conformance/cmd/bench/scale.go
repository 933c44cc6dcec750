package main

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
)

// The scale lab: -scale-nodes simulated Node objects in -scale-racks racks.
// In every rack 4 nodes are eligible next hops and the others carry
// node.kubernetes.io/exclude-from-external-load-balancers=true (dedicated
// ingress nodes); the first eligible nodes are speakers. Only rack-00 is
// real:
//
//	       leaf 10.100.0.1  AS 65100  (FRR: dynamic neighbors, ECMP)
//	             |
//	        [sw] br0                  10.100.0.0/24
//	       /         \
//	n-00-000        n-00-001          speakers: namespaces, real openelb-speaker
//	10.100.0.11     10.100.0.12
//	n-00-002 (.13), n-00-003 (.14)    eligible, no namespace: on-link next hops
//
// Node i of rack r has InternalIP 10.100.r.(11+i); rack r's BgpPeer points
// at 10.100.r.1, which only rack-00's leaf answers. The bench decides when
// something happened from Services, Nodes, BgpPeers, the leaf's FIB and
// metrics only, never from LoadBalancerRack/LoadBalancerSpeaker objects, so
// it measures builds that predate them too (-bin-dir).
const (
	scaleEligible     = 4 // next hops per rack
	scaleRealSpeakers = 2 // speakers of rack-00, all running
	scaleLeafAS       = 65100
	scaleNodeAS       = 65000
	scaleNamespace    = "scale"
	scaleHealth       = "127.0.0.1:10290" // on each speaker namespace's loopback
	scaleMaxPerRack   = 244               // 10.100.r.11 .. .254

	// quietFor is how long no write may reach the API server before writes
	// are counted: longer than the speaker's --report-counts-interval
	// (10 s), which holds back status writes that only change counts.
	quietFor = 12 * time.Second
	// quietLimit bounds each wait for quiet: a build that writes per
	// Service after an event (10,000 plan statuses at a speaker's 20 QPS
	// take 8 minutes) is reported as such instead of waited for; its
	// writes then count in the next window.
	quietLimit = time.Minute
	// extraRun is how long the extra speakers run before their writes are
	// counted; extraTail is the end of it, whose writes show whether they
	// were still writing.
	extraRun  = 60 * time.Second
	extraTail = 10 * time.Second
)

type scaleOptions struct {
	nodes, racks, services, extraSpeakers int
	flips, creators                       int
	binDir, deployDir                     string
}

// otherSpeakers is how many speaker nodes each rack but rack-00 has: two,
// or more when the extra speakers need more nodes (40 extra speakers in 19
// other racks: 3).
func (o scaleOptions) otherSpeakers() int {
	if o.racks < 2 {
		return 0
	}
	return max(scaleRealSpeakers, (o.extraSpeakers+o.racks-2)/(o.racks-1))
}

func (o scaleOptions) perRack(r int) int {
	n := o.nodes / o.racks
	if r < o.nodes%o.racks {
		n++
	}
	return n
}

func (o scaleOptions) validate() error {
	switch {
	case o.racks < 1 || o.nodes/o.racks < scaleEligible || o.perRack(0) > scaleMaxPerRack:
		return fmt.Errorf("scale: %d nodes in %d racks: need %d to %d nodes per rack", o.nodes, o.racks, scaleEligible, scaleMaxPerRack)
	case o.extraSpeakers > 0 && o.racks < 2:
		return fmt.Errorf("scale: extra speakers need a rack besides rack-00")
	case o.extraSpeakers > 0 && o.otherSpeakers() > scaleEligible:
		return fmt.Errorf("scale: %d extra speakers need more than %d speaker nodes in each of %d other racks", o.extraSpeakers, scaleEligible, o.racks-1)
	case o.services < 1 || o.services > 60000:
		return fmt.Errorf("scale: %d Services: the pool is at most a /16", o.services)
	case o.flips < 1:
		return fmt.Errorf("scale: -rounds must be at least 1")
	}
	return nil
}

// extraNodes are the nodes the extra speakers run as, spread over the
// racks after rack-00.
func (o scaleOptions) extraNodes() []string {
	var out []string
	for i := range o.extraSpeakers {
		out = append(out, scaleNodeName(1+i%(o.racks-1), i/(o.racks-1)))
	}
	return out
}

func scaleNodeName(rack, i int) string { return fmt.Sprintf("n-%02d-%03d", rack, i) }
func scaleRack(rack int) string        { return fmt.Sprintf("rack-%02d", rack) }
func scaleNodeAddr(rack, i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 100, byte(rack), byte(11 + i)})
}

// scalePool is the smallest prefix of 172.30.0.0/16 holding every Service
// plus room for the CCM's reserved claims.
func scalePool(services int) netip.Prefix {
	bits := 32
	for 1<<(32-bits) < services+16 {
		bits--
	}
	return netip.PrefixFrom(netip.MustParseAddr("172.30.0.0"), bits)
}

// scaleBench measures what routine events cost at size: a node flip, a
// speaker start, the cluster at rest, and many speakers starting at once.
type scaleBench struct {
	o          scaleOptions
	cp         *harness.ControlPlane
	cs         kubernetes.Interface
	crd        client.Client
	ccm        *harness.Component
	net        *netlab.Lab
	leaf       *netlab.FRR
	fib        *netlab.FIBWatch
	pool       netip.Prefix
	hops       []netip.Addr // rack-00's next hops, sorted
	apiHost    string       // the API server's host:port, forwarded into every namespace
	speakerBin string
	deployDir  string
	kubeconfig string
	nodeNS     map[string]string       // speaker node → its namespace
	speakers   map[string]*netlab.Proc // running rack-00 speakers
	runs       int
	notes      []string
	table
}

func runScale(ctx context.Context, o scaleOptions) error {
	if err := o.validate(); err != nil {
		return err
	}
	opts, err := o.buildDirs()
	if err != nil {
		return err
	}
	cp, err := startControlPlane(ctx, true, opts)
	if err != nil {
		return err
	}
	defer cp.Stop()
	ccm, err := cp.StartCCM("ccm", strings.Fields(os.Getenv("BENCH_CCM_FLAGS"))...)
	if err != nil {
		return err
	}
	defer ccm.Stop()
	n, err := netlab.New("sc")
	if err != nil {
		return err
	}
	defer n.Close()
	crd, err := client.New(cp.Config, client.Options{Scheme: apischeme.New()})
	if err != nil {
		return err
	}
	u, err := url.Parse(cp.APIServerURL)
	if err != nil {
		return err
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.QPS, cfg.Burst = 5000, 10000
	b := &scaleBench{o: o, cp: cp, cs: kubernetes.NewForConfigOrDie(cfg), crd: crd, ccm: ccm, net: n,
		pool: scalePool(o.services), apiHost: u.Host, deployDir: opts.DeployDir,
		nodeNS: map[string]string{}, speakers: map[string]*netlab.Proc{}}
	if b.speakerBin, err = cp.ProjectBinary("openelb-speaker"); err != nil {
		return err
	}
	b.describe(opts)
	for _, step := range []func(context.Context) error{b.setup, b.nodeFlips, b.speakerStart, b.atRest, b.extraSpeakers} {
		if err := step(ctx); err != nil {
			b.print()
			return err
		}
	}
	b.print()
	return nil
}

// buildDirs resolves -bin-dir and -deploy-dir: an older build runs with
// the CRDs and RBAC it was built for, the deploy/ of its own checkout.
func (o scaleOptions) buildDirs() (harness.Options, error) {
	bin := o.binDir
	if bin == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			return harness.Options{}, err
		}
		bin = filepath.Join(root, "bin")
	}
	bin, err := filepath.Abs(bin)
	if err != nil {
		return harness.Options{}, err
	}
	deploy := o.deployDir
	if deploy == "" {
		deploy = filepath.Join(filepath.Dir(bin), "deploy")
	}
	if _, err := os.Stat(filepath.Join(deploy, "crds")); err != nil {
		return harness.Options{}, fmt.Errorf("scale: no CRDs for the binaries in %s (pass -deploy-dir): %w", bin, err)
	}
	return harness.Options{ProjectBinDir: bin, DeployDir: deploy}, nil
}

func (b *scaleBench) note(format string, args ...any) {
	b.notes = append(b.notes, fmt.Sprintf(format, args...))
}

func (b *scaleBench) describe(opts harness.Options) {
	o := b.o
	perRack := fmt.Sprint(o.perRack(0))
	if o.perRack(o.racks-1) != o.perRack(0) {
		perRack = fmt.Sprintf("%d–%d", o.perRack(o.racks-1), o.perRack(0))
	}
	b.note("%d nodes in %d racks (%s per rack), %d Services (allocateLoadBalancerNodePorts=false; created by %d clients) from one %s pool; binaries from %s, CRDs and RBAC from %s",
		o.nodes, o.racks, perRack, o.services, o.creators, b.pool, opts.ProjectBinDir, opts.DeployDir)
	b.note("next hops: %d eligible nodes per rack, the others labelled %s=true, as dedicated ingress nodes are. A speaker sends one path per "+
		"next hop of its rack, so each rack-00 speaker holds %d Services × %d = %d paths and the leaf %d from its %d speakers; "+
		"with every node of a rack eligible it would be %d paths per speaker, which would measure GoBGP's RIB rather than the events",
		scaleEligible, v1.LabelNodeExcludeBalancers, o.services, scaleEligible, o.services*scaleEligible,
		o.services*scaleEligible*scaleRealSpeakers, scaleRealSpeakers, o.services*o.perRack(0))
	why := ""
	if o.otherSpeakers() > scaleRealSpeakers {
		why = fmt.Sprintf(" (%d, not %d, so that each of the %d extra speakers has a node of its own)", o.otherSpeakers(), scaleRealSpeakers, o.extraSpeakers)
	}
	b.note("speakers: rack-00 has %d (of its %d eligible nodes), real openelb-speaker processes in namespaces peering with the FRR leaf; "+
		"the other racks have %d speaker-labelled nodes each%s, no process (their BgpPeers point at addresses nobody answers) until the extra speakers start",
		scaleRealSpeakers, scaleEligible, o.otherSpeakers(), why)
	b.note("API writes: apiserver_request_total over every client, less the bench's own node status write per flip and less Lease renewals "+
		"(leader election, API server identity), which run whatever happens; a count is read once no other write reached the API server "+
		"for %s (longer than the speaker's 10 s report-counts interval), waiting at most %s", quietFor, quietLimit)
}

func (b *scaleBench) setup(ctx context.Context) error {
	fmt.Printf("\nscale: setting up %d nodes in %d racks, %d Services\n", b.o.nodes, b.o.racks, b.o.services)
	steps := []func(context.Context) error{b.speakerKubeconfig, b.createNodes, b.buildRack0, b.configure, b.createServices, b.startRack0}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			return err
		}
	}
	return nil
}

// speakerKubeconfig applies the speaker's ServiceAccount and RBAC from the
// manifests of the build under test (as seedlab does with this
// repository's) and writes a kubeconfig with a fresh token: tokens last an
// hour and a speaker reads its kubeconfig once, so each batch of speakers
// gets its own.
func (b *scaleBench) speakerKubeconfig(ctx context.Context) error {
	files := []string{filepath.Join(b.deployDir, "namespace.yaml"), filepath.Join(b.deployDir, "rbac", "speaker.yaml")}
	if out, err := b.cp.Kubectl(ctx, "apply", "-f", files[0], "-f", files[1]); err != nil {
		return fmt.Errorf("applying the speaker's RBAC: %w\n%s", err, out)
	}
	kc, err := b.cp.ServiceAccountKubeconfig(ctx, harness.CCMNamespace, "openelb-speaker")
	if err != nil {
		return err
	}
	b.kubeconfig = kc
	return nil
}

// createNodes creates every Node, Ready, labelled with its rack, the
// speaker label on the first speakers of each rack, and the exclusion
// label on all but the first scaleEligible.
func (b *scaleBench) createNodes(ctx context.Context) error {
	var nodes []harness.SimNode
	for r := range b.o.racks {
		speakers := b.o.otherSpeakers()
		if r == 0 {
			speakers = scaleRealSpeakers
		}
		for i := range b.o.perRack(r) {
			labels := map[string]string{v1alpha2.LabelRack: scaleRack(r)}
			if i < speakers {
				labels[v1alpha2.LabelSpeaker] = v1alpha2.LabelSpeakerValue
			}
			if i >= scaleEligible {
				labels[v1.LabelNodeExcludeBalancers] = "true"
			}
			nodes = append(nodes, harness.SimNode{Name: scaleNodeName(r, i), Labels: labels, Address: scaleNodeAddr(r, i).String(), Ready: true})
		}
	}
	t0 := time.Now()
	if err := harness.CreateNodes(ctx, b.cs, nodes, 16); err != nil {
		return err
	}
	fmt.Printf("  %d nodes created in %s\n", len(nodes), ms(time.Since(t0)))
	for i := range scaleEligible {
		b.hops = append(b.hops, scaleNodeAddr(0, i))
	}
	return nil
}

// leafConf is rack-00's leaf: speakers dial it from the rack's subnet
// (dynamic neighbors); FRR receives ADD-PATH by default and installs up to
// 16 paths per prefix, next hops inline in the route (netlink events name
// the gateways).
const leafConf = `frr version 8.4
frr defaults datacenter
hostname leaf
no ipv6 forwarding
no zebra nexthop kernel enable
!
router bgp %d
 bgp router-id 10.100.0.1
 no bgp ebgp-requires-policy
 no bgp network import-check
 bgp bestpath as-path multipath-relax
 neighbor RACK peer-group
 neighbor RACK remote-as external
 neighbor RACK timers 3 9
 bgp listen range 10.100.0.0/24 peer-group RACK
 !
 address-family ipv4 unicast
  maximum-paths 16
 exit-address-family
!
`

// buildRack0 builds rack-00's segment (a bridge in its own namespace, as
// seed 000's switches), the leaf and the speaker nodes' namespaces, each
// with a forwarder on its loopback to the API server so the speakers'
// kubeconfig works unchanged.
func (b *scaleBench) buildRack0(ctx context.Context) error {
	l := b.net
	sw, err := l.AddNS("sw")
	if err != nil {
		return err
	}
	leaf, err := l.AddNS("leaf")
	if err != nil {
		return err
	}
	steps := []func() error{
		func() error { return l.Bridge(sw, "br0") },
		func() error { return l.Veth(leaf, "rack", sw, "leaf") },
		func() error { return l.Enslave(sw, "leaf", "br0") },
		func() error { return l.Addr(leaf, "rack", "10.100.0.1/24") },
	}
	for i := range scaleRealSpeakers {
		node := scaleNodeName(0, i)
		ns, err := l.AddNS(fmt.Sprintf("s%d", i))
		if err != nil {
			return err
		}
		b.nodeNS[node] = ns
		port := fmt.Sprintf("s%d", i)
		steps = append(steps,
			func() error { return l.Veth(sw, port, ns, "eth0") },
			func() error { return l.Enslave(sw, port, "br0") },
			func() error { return l.Addr(ns, "eth0", scaleNodeAddr(0, i).String()+"/24") },
			func() error { _, err := l.Forward(ns, b.apiHost, b.apiHost); return err },
		)
	}
	for _, f := range steps {
		if err := f(); err != nil {
			return fmt.Errorf("building rack-00: %w", err)
		}
	}
	if b.leaf, err = l.StartFRR(ctx, "leaf", leaf, fmt.Sprintf(leafConf, scaleLeafAS)); err != nil {
		return err
	}
	b.fib, err = l.WatchFIB(leaf)
	return err
}

// configure creates the BgpConf, one BgpPeer per rack selecting the rack's
// nodes (a short connect retry, as the seed lab; GoBGP makes it at least
// 2 s) and the default pool.
func (b *scaleBench) configure(ctx context.Context) error {
	objs := []client.Object{
		&v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha2.BgpConfSpec{As: scaleNodeAS}},
		&v1alpha2.Eip{
			ObjectMeta: metav1.ObjectMeta{Name: "scale", Annotations: map[string]string{v1alpha2.AnnotationDefaultEip: "true"}},
			Spec:       v1alpha2.EipSpec{Address: v1alpha2.AddressRange(b.pool.String())},
		},
	}
	for r := range b.o.racks {
		objs = append(objs, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: scaleRack(r)}, Spec: v1alpha2.BgpPeerSpec{
			Conf:         &v1alpha2.PeerConf{PeerAs: scaleLeafAS, NeighborAddress: fmt.Sprintf("10.100.%d.1", r)},
			Timers:       &v1alpha2.Timers{Config: &v1alpha2.TimersConfig{ConnectRetry: "1", HoldTime: "9", KeepaliveInterval: "3"}},
			NodeSelector: &metav1.LabelSelector{MatchLabels: map[string]string{v1alpha2.LabelRack: scaleRack(r)}},
		}})
	}
	for _, obj := range objs {
		if err := b.crd.Create(ctx, obj); err != nil {
			return fmt.Errorf("creating %s: %w", obj.GetName(), err)
		}
	}
	return b.cp.EnsureNamespace(ctx, scaleNamespace, nil)
}

// createServices creates the Services with -creators concurrent clients
// and waits until each has an address.
func (b *scaleBench) createServices(ctx context.Context) error {
	w := newWatcher(b.cs)
	defer w.stop()
	t0 := time.Now()
	err := inParallel(b.o.creators, b.o.services, func(i int) error {
		_, err := b.cs.CoreV1().Services(scaleNamespace).Create(ctx, newService(scaleNamespace, fmt.Sprintf("s-%d", i)), metav1.CreateOptions{})
		return err
	})
	if err != nil {
		return err
	}
	created := time.Now()
	last, err := waitAddresses(ctx, w, scaleNamespace, b.o.services)
	if err != nil {
		return err
	}
	b.add(fmt.Sprintf("setup: %d Services created by %d clients in", b.o.services, b.o.creators), dur(created.Sub(t0)), "")
	b.add("setup: last create → last address", ms(last.Sub(created)), "")
	return nil
}

// startRack0 starts rack-00's speakers and waits for every route in the
// leaf's kernel over all the rack's next hops.
func (b *scaleBench) startRack0(ctx context.Context) error {
	b.fib.Match(b.routesVia(b.hops))
	t0 := time.Now()
	for i := range scaleRealSpeakers {
		if err := b.startRackSpeaker(scaleNodeName(0, i)); err != nil {
			return err
		}
	}
	c, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	t1, err := b.fib.WaitCount(c, wantCount(b.o.services))
	if err != nil {
		return fmt.Errorf("routes over %v in the leaf's FIB: %w", b.hops, err)
	}
	b.add(fmt.Sprintf("setup: %d speakers start → %d routes in leaf FIB", scaleRealSpeakers, b.o.services), dur(t1.Sub(t0)), "")
	return nil
}

func (b *scaleBench) startRackSpeaker(node string) error {
	p, err := b.startSpeaker(b.nodeNS[node], node)
	if err != nil {
		return err
	}
	b.speakers[node] = p
	return nil
}

func (b *scaleBench) startSpeaker(ns, node string) (*netlab.Proc, error) {
	b.runs++
	return b.net.Start(ns, fmt.Sprintf("speaker-%s-%d", node, b.runs), b.speakerBin,
		append([]string{"--kubeconfig=" + b.kubeconfig, "--node-name=" + node, "--namespace=" + harness.CCMNamespace,
			"--health-address=" + scaleHealth}, speakerFlags()...)...)
}

// routesVia matches the pool's routes whose next hops are exactly want
// (sorted; a next hop learned from both speakers counts once).
func (b *scaleBench) routesVia(want []netip.Addr) func(netip.Addr, []netip.Addr) bool {
	return func(dst netip.Addr, hops []netip.Addr) bool {
		return b.pool.Contains(dst) && slices.Equal(slices.Compact(slices.Clone(hops)), want)
	}
}

// nodeFlips turns an eligible node of rack-00 that runs no speaker
// NotReady and Ready again, -rounds times, and times each flip → every
// route in the leaf's kernel without / with it again; between flips the
// cluster comes to rest and the writes each flip caused are counted.
func (b *scaleBench) nodeFlips(ctx context.Context) error {
	node, addr := scaleNodeName(0, scaleRealSpeakers), scaleNodeAddr(0, scaleRealSpeakers)
	without := slices.DeleteFunc(slices.Clone(b.hops), func(a netip.Addr) bool { return a == addr })
	fmt.Printf("\nscale: %s (%s) NotReady and Ready again, %d rounds\n", node, addr, b.o.flips)
	before, _, err := b.waitQuiet(ctx)
	if err != nil {
		return err
	}
	lat := map[bool][]time.Duration{}
	var perFlip []float64
	kinds := map[bool]string{false: "NotReady", true: "Ready"}
	rounds := map[bool]map[string][]int{false: {}, true: {}} // breakdown → rounds that wrote it
	unsettled := 0
	for round := range b.o.flips {
		for _, ready := range []bool{false, true} {
			want := b.hops
			if !ready {
				want = without
			}
			d, err := b.flip(ctx, node, ready, want)
			if err != nil {
				return err
			}
			after, settled, err := b.waitQuiet(ctx)
			if err != nil {
				return err
			}
			w := flipWrites(before, after)
			before = after
			lat[ready] = append(lat[ready], d)
			perFlip = append(perFlip, harness.TotalWrites(w))
			if !settled {
				unsettled++
			}
			rounds[ready][breakdown(w)] = append(rounds[ready][breakdown(w)], round+1)
			fmt.Printf("  round %2d Ready=%-5v → FIB %s, %.0f writes: %s\n", round+1, ready, dur(d), harness.TotalWrites(w), breakdown(w))
		}
	}
	for _, ready := range []bool{false, true} {
		b.noteFlipWrites(kinds[ready], rounds[ready])
	}
	down, up := summarize("", lat[false]), summarize("", lat[true])
	b.add(fmt.Sprintf("node NotReady → gone from all %d routes in leaf FIB, p50 / p99", b.o.services), dur(down.p50)+" / "+dur(down.p99), "p99 ≤ 1 s")
	b.add(fmt.Sprintf("node Ready → back in all %d routes in leaf FIB, p50 / p99", b.o.services), dur(up.p50)+" / "+dur(up.p99), "p99 ≤ 1 s")
	value := fmt.Sprintf("mean %.1f, max %.0f (%d flips)", mean(perFlip), slices.Max(perFlip), len(perFlip))
	if unsettled > 0 {
		value = "≥ " + value
		b.note("after %d of %d flips writes went on for %s: those flips' writes are counted up to then, the rest in later flips", unsettled, len(perFlip), quietLimit)
	}
	b.add("API writes per node flip", value, "≤ 10")
	return nil
}

// noteFlipWrites notes the writes most flips of a kind caused, and those of
// the rounds that differ.
func (b *scaleBench) noteFlipWrites(kind string, rounds map[string][]int) {
	byCount := slices.SortedFunc(maps.Keys(rounds), func(x, y string) int {
		if c := len(rounds[y]) - len(rounds[x]); c != 0 {
			return c
		}
		return rounds[x][0] - rounds[y][0]
	})
	n := 0
	for _, r := range rounds {
		n += len(r)
	}
	b.note("writes of a %s flip (%d of %d): %s", kind, len(rounds[byCount[0]]), n, byCount[0])
	for _, w := range byCount[1:] {
		b.note("  but of %s flip %s: %s", kind, strings.Trim(fmt.Sprint(rounds[w]), "[]"), w)
	}
}

// flipWrites is what a flip caused: the writes between two readings less
// the bench's own node status write (the kubelet's part of a flip).
func flipWrites(before, after map[string]float64) map[string]float64 {
	const own = "PUT nodes/status"
	w := caused(before, after)
	if w[own]--; w[own] <= 0 {
		delete(w, own)
	}
	return w
}

// flip writes the node's Ready condition and times it → the pool's routes
// in the leaf's kernel all going exactly over want.
func (b *scaleBench) flip(ctx context.Context, node string, ready bool, want []netip.Addr) (time.Duration, error) {
	b.fib.Match(b.routesVia(want))
	t0 := time.Now()
	if err := harness.SetNodeReady(ctx, b.cs, node, ready); err != nil {
		return 0, err
	}
	c, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	t1, err := b.fib.WaitCount(c, wantCount(b.o.services))
	if err != nil {
		return 0, fmt.Errorf("%s Ready=%v: routes over %v: %w", node, ready, want, err)
	}
	return t1.Sub(t0), nil
}

// speakerStart stops both rack-00 speakers (SIGTERM: they withdraw), then
// times one starting → every route in the leaf's kernel, and starts the
// other again.
func (b *scaleBench) speakerStart(ctx context.Context) error {
	fmt.Printf("\nscale: both rack-00 speakers stopped, one started → %d routes\n", b.o.services)
	for i := range scaleRealSpeakers {
		if err := b.speakers[scaleNodeName(0, i)].Stop(10 * time.Second); err != nil {
			return err
		}
	}
	b.fib.Match(b.routesVia(b.hops))
	c, cancel := context.WithTimeout(ctx, time.Minute)
	_, err := b.fib.WaitCount(c, wantAtMost(0))
	cancel()
	if err != nil {
		return fmt.Errorf("routes left after both speakers stopped: %w", err)
	}
	for i := range scaleRealSpeakers {
		if err := waitSession(ctx, b.leaf, scaleNodeAddr(0, i).String(), false); err != nil {
			return err
		}
	}
	if err := b.speakerKubeconfig(ctx); err != nil {
		return err
	}
	first := scaleNodeName(0, 0)
	toRoutes, fromSession, err := timeSpeakerStart(ctx, func() error { return b.startRackSpeaker(first) },
		b.leaf, scaleNodeAddr(0, 0).String(), b.fib, b.o.services)
	if err != nil {
		return fmt.Errorf("routes after %s started: %w", first, err)
	}
	b.add(fmt.Sprintf("speaker start → %d routes (%d next hops) in leaf FIB", b.o.services, scaleEligible), dur(toRoutes), "(routes suite: 10,000 routes ≤ 3 s)")
	if fromSession > 0 {
		b.add(fmt.Sprintf("  of which session established → %d routes", b.o.services), ms(fromSession), "")
	}
	for i := 1; i < scaleRealSpeakers; i++ {
		if err := b.startRackSpeaker(scaleNodeName(0, i)); err != nil {
			return err
		}
		if err := waitSession(ctx, b.leaf, scaleNodeAddr(0, i).String(), true); err != nil {
			return err
		}
	}
	return nil
}

// atRest lets the cluster rest -settle after its last write, then samples
// memory and counts requests over -rate-window.
func (b *scaleBench) atRest(ctx context.Context) error {
	fmt.Printf("\nscale: at rest, %s after the last write, requests over %s\n", *steadySettle, *steadyWindow)
	if _, _, err := b.waitQuiet(ctx); err != nil {
		return err
	}
	if err := pause(ctx, *steadySettle); err != nil {
		return err
	}
	r0, err := b.requestCounters(ctx)
	if err != nil {
		return err
	}
	if err := pause(ctx, *steadyWindow); err != nil {
		return err
	}
	r1, err := b.requestCounters(ctx)
	if err != nil {
		return err
	}
	rate := func(d float64) string { return fmt.Sprintf("%.2f", d/steadyWindow.Seconds()) }
	var rss, reqs, writes []string
	for i := range scaleRealSpeakers {
		node := scaleNodeName(0, i)
		rss = append(rss, fmt.Sprintf("%.0f MiB", rssMiB(b.speakers[node].Pid())))
		reqs = append(reqs, rate(r1.speakers[node]["reads"]+r1.speakers[node]["writes"]-r0.speakers[node]["reads"]-r0.speakers[node]["writes"]))
		writes = append(writes, rate(r1.speakers[node]["writes"]-r0.speakers[node]["writes"]))
	}
	// BENCH_PPROF_DIR=dir (with BENCH_SPEAKER_FLAGS=--profiling) keeps each
	// rack-00 speaker's heap profile at rest, for diagnosis.
	if dir := os.Getenv("BENCH_PPROF_DIR"); dir != "" {
		for i := range scaleRealSpeakers {
			node := scaleNodeName(0, i)
			if err := download(nsHTTP(b.nodeNS[node]), "http://"+scaleHealth+"/debug/pprof/heap", filepath.Join(dir, node+".heap")); err != nil {
				fmt.Fprintf(os.Stderr, "bench: heap profile of %s: %v\n", node, err)
			}
			if err := download(nsHTTP(b.nodeNS[node]), "http://"+scaleHealth+"/metrics", filepath.Join(dir, node+".metrics")); err != nil {
				fmt.Fprintf(os.Stderr, "bench: metrics of %s: %v\n", node, err)
			}
			if smaps, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", b.speakers[node].Pid())); err == nil {
				_ = os.WriteFile(filepath.Join(dir, node+".smaps"), smaps, 0o644)
			}
		}
	}
	names := fmt.Sprintf("%s .. %s", scaleNodeName(0, 0), scaleNodeName(0, scaleRealSpeakers-1))
	b.add("speaker RSS at rest ("+names+")", strings.Join(rss, " / "), "≤ 60 MB")
	b.add("speaker API requests/s at rest", strings.Join(reqs, " / "), "")
	b.add("speaker API writes/s at rest", strings.Join(writes, " / "), "0")
	b.add("CCM RSS at rest", fmt.Sprintf("%.0f MiB", rssMiB(b.ccm.Pid())), "(steady: ≤ 150 MB)")
	if r0.ccmOK && r1.ccmOK {
		b.add("CCM API requests/s at rest", rate(r1.ccm["rest_client_requests_total"]-r0.ccm["rest_client_requests_total"]), "")
	}
	b.add("API writes/s at rest, every client, Leases left out", rate(harness.TotalWrites(caused(r0.writes, r1.writes))), "")
	return nil
}

// requestCounters are the request counters atRest compares.
type requestCounters struct {
	speakers map[string]map[string]float64 // speakerRequests
	ccm      map[string]float64            // ccmMetrics
	ccmOK    bool
	writes   map[string]float64 // at the API server
}

func (b *scaleBench) requestCounters(ctx context.Context) (requestCounters, error) {
	var r requestCounters
	var err error
	if r.speakers, err = b.speakerRequests(ctx); err != nil {
		return r, err
	}
	r.ccm, r.ccmOK = ccmMetrics(b.ccm)
	r.writes, err = harness.APIWrites(ctx, b.cs)
	return r, err
}

// speakerRequests reads each running rack-00 speaker's client-go request
// counter, split into reads (GET: get, list, watch) and writes.
func (b *scaleBench) speakerRequests(ctx context.Context) (map[string]map[string]float64, error) {
	out := map[string]map[string]float64{}
	for node, p := range b.speakers {
		m, err := scrape(nsHTTP(p.NS), "http://"+scaleHealth+"/metrics", func(name, labels string) string {
			switch {
			case name != "rest_client_requests_total":
				return ""
			case strings.Contains(labels, `method="GET"`):
				return "reads"
			}
			return "writes"
		})
		if err != nil {
			return nil, fmt.Errorf("metrics of the speaker of %s: %w", node, err)
		}
		out[node] = m
	}
	return out, ctx.Err()
}

// nsHTTP is an HTTP client whose connections are opened inside ns.
func nsHTTP(ns string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext: func(_ context.Context, _, addr string) (net.Conn, error) {
			return netlab.DialTCP(ns, addr, 2*time.Second)
		},
	}}
}

// extraSpeakers starts speakers for speaker nodes of the other racks, all
// at once, each in a fresh namespace reaching nothing but the API server
// (no router answers them), and counts the API writes of their first
// minute: a speaker should cost a few writes of its own (its report, its
// BgpPeer entries), not one per Service.
func (b *scaleBench) extraSpeakers(ctx context.Context) error {
	nodes := b.o.extraNodes()
	if len(nodes) == 0 {
		return nil
	}
	fmt.Printf("\nscale: %d speakers of other racks start at once; their writes counted for %s\n", len(nodes), extraRun)
	if err := b.speakerKubeconfig(ctx); err != nil {
		return err
	}
	nss, err := b.isolatedNamespaces(len(nodes))
	if err != nil {
		return err
	}
	before, _, err := b.waitQuiet(ctx)
	if err != nil {
		return err
	}
	procs := make([]*netlab.Proc, len(nodes))
	defer stopAll(procs)
	t0 := time.Now()
	for i, node := range nodes {
		if procs[i], err = b.startSpeaker(nss[i], node); err != nil {
			return err
		}
	}
	polling, stopPolling := context.WithTimeout(ctx, extraRun)
	defer stopPolling()
	reportedAfter := make(chan time.Duration, 1)
	go func() { reportedAfter <- b.waitReported(polling, nodes, t0) }()
	if err := pause(ctx, extraRun-extraTail); err != nil {
		return err
	}
	mid, err := harness.APIWrites(ctx, b.cs)
	if err != nil {
		return err
	}
	if err := pause(ctx, extraTail); err != nil {
		return err
	}
	after, err := harness.APIWrites(ctx, b.cs)
	if err != nil {
		return err
	}
	stopPolling()
	allReported := <-reportedAfter
	var rss []float64
	for _, p := range procs {
		rss = append(rss, rssMiB(p.Pid()))
	}
	reported, err := b.reportedInPeers(ctx, nodes)
	if err != nil {
		return err
	}
	w := caused(before, after)
	n := float64(len(nodes))
	b.add(fmt.Sprintf("API writes caused by %d speakers starting, first %s", len(nodes), extraRun),
		fmt.Sprintf("%.0f (%.1f per speaker)", harness.TotalWrites(w), harness.TotalWrites(w)/n), "O(speakers): a small constant per speaker, not per Service")
	b.add(fmt.Sprintf("  of which in its last %s", extraTail), fmt.Sprintf("%.0f", harness.TotalWrites(caused(mid, after))), "")
	value := fmt.Sprintf("%d of %d", reported, len(nodes))
	if allReported > 0 {
		value += fmt.Sprintf(", the last %s after the start", dur(allReported))
	}
	b.add(fmt.Sprintf("  speakers with an entry in BgpPeer status after %s", extraRun), value, "")
	b.add("  their RSS, mean / max", fmt.Sprintf("%.0f / %.0f MiB", mean(rss), slices.Max(rss)), "")
	b.note("writes of the %d starting speakers: %s", len(nodes), breakdown(w))
	return nil
}

// isolatedNamespaces makes n namespaces that reach nothing but the API
// server (a forwarder on their loopback).
func (b *scaleBench) isolatedNamespaces(n int) ([]string, error) {
	nss := make([]string, n)
	for i := range nss {
		ns, err := b.net.AddNS(fmt.Sprintf("x%02d", i))
		if err != nil {
			return nil, err
		}
		if _, err := b.net.Forward(ns, b.apiHost, b.apiHost); err != nil {
			return nil, err
		}
		nss[i] = ns
	}
	return nss, nil
}

// stopAll stops the processes (SIGTERM, then SIGKILL) by PID, in parallel.
func stopAll(procs []*netlab.Proc) {
	var wg sync.WaitGroup
	for _, p := range procs {
		if p == nil {
			continue
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = p.Stop(10 * time.Second) }()
	}
	wg.Wait()
}

// waitReported polls the BgpPeers every second until every node has an
// entry in their status, and returns how long after since the last entry
// appeared; 0 when ctx ended first.
func (b *scaleBench) waitReported(ctx context.Context, nodes []string, since time.Time) time.Duration {
	for {
		// A failed poll is retried: the API server is busy with the
		// speakers' initial lists.
		if n, err := b.reportedInPeers(ctx, nodes); err == nil && n == len(nodes) {
			return time.Since(since)
		}
		if pause(ctx, time.Second) != nil {
			return 0
		}
	}
}

// reportedInPeers counts the nodes that have an entry in some BgpPeer's
// status: the speakers that got as far as reporting their sessions.
func (b *scaleBench) reportedInPeers(ctx context.Context, nodes []string) (int, error) {
	var peers v1alpha2.BgpPeerList
	if err := b.crd.List(ctx, &peers); err != nil {
		return 0, err
	}
	n := 0
	for _, node := range nodes {
		for _, p := range peers.Items {
			if _, ok := p.Status.NodesPeerStatus[node]; ok {
				n++
				break
			}
		}
	}
	return n, nil
}

// waitQuiet waits until no write other than Lease renewals has reached the
// API server for quietFor, and returns the API server's write counters
// then; false when writes went on for quietLimit.
func (b *scaleBench) waitQuiet(ctx context.Context) (map[string]float64, bool, error) {
	prev, err := harness.APIWrites(ctx, b.cs)
	if err != nil {
		return nil, false, err
	}
	start, quiet := time.Now(), time.Now()
	for time.Since(quiet) < quietFor {
		if time.Since(start) > quietLimit {
			return prev, false, nil
		}
		if err := pause(ctx, time.Second); err != nil {
			return nil, false, err
		}
		cur, err := harness.APIWrites(ctx, b.cs)
		if err != nil {
			return nil, false, err
		}
		if len(caused(prev, cur)) > 0 {
			quiet = time.Now()
		}
		prev = cur
	}
	return prev, true, nil
}

// caused is what was written between two readings of the API server's
// write counters, less the Lease renewals of leader election and the API
// server's identity, which run whatever happens.
func caused(before, after map[string]float64) map[string]float64 {
	w := harness.WritesDelta(before, after)
	for k := range w {
		_, res, _ := strings.Cut(k, " ")
		if res, _, _ = strings.Cut(res, "/"); res == "leases" {
			delete(w, k)
		}
	}
	return w
}

func mean(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	var t float64
	for _, x := range v {
		t += x
	}
	return t / float64(len(v))
}

// breakdown lists writes by request, largest first.
func breakdown(w map[string]float64) string {
	if len(w) == 0 {
		return "none"
	}
	keys := make([]string, 0, len(w))
	for k := range w {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if w[keys[i]] != w[keys[j]] {
			return w[keys[i]] > w[keys[j]]
		}
		return keys[i] < keys[j]
	})
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s %.0f", k, w[k])
	}
	return strings.Join(parts, ", ")
}

// dur is ms() below 10 s and seconds above: setups and slow builds take
// minutes.
func dur(d time.Duration) string {
	if d < 10*time.Second {
		return ms(d)
	}
	return fmt.Sprintf("%.1f s", d.Seconds())
}

// pause sleeps d unless ctx ends first.
func pause(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func (b *scaleBench) print() {
	b.printTable(fmt.Sprintf("Scale (%d nodes in %d racks, %d Services; rack-00 real: FRR 8.4 leaf, %d speakers; route times from netlink events)",
		b.o.nodes, b.o.racks, b.o.services, scaleRealSpeakers))
	fmt.Println("notes:")
	for _, n := range b.notes {
		fmt.Println("  - " + n)
	}
}
