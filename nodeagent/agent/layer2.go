package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/klog/v2"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// Layer2Options tune the layer-2 half of the agent. The zero value is
// ready to use.
type Layer2Options struct {
	// Lease timings; zero: election.DefaultLeaseTimings.
	Lease election.LeaseTimings
	// AnnounceCount gratuitous ARPs / unsolicited NAs per address on
	// taking over or when its MAC changes; 0: layer2.DefaultAnnounceCount.
	AnnounceCount int
	// AnnounceInterval spaces them; 0: layer2.DefaultAnnounceInterval.
	AnnounceInterval time.Duration
}

// layer2Manager makes this node answer ARP/NDP for its share of the
// layer-2 addresses. A node is a candidate of a pool (with addresses in
// use) when the pool's interface resolves, is up, carries the addresses'
// subnet, and a Responder runs on it; it lists the pool in its own Lease
// (election.OwnLease). The candidates of a pool, as a node sees them, are
// its view: the owner of each address is a rendezvous hash over the view
// (election.View.Owner), so the addresses spread over the candidates and
// the API cost is one Lease renewal per node, whatever the number of
// addresses.
//
// Hand-overs keep one answering node per address (election.Ready): a node
// stops answering what it no longer owns as soon as its view changes,
// before it says so in its Lease; it starts answering an address it now
// owns only once every other candidate has acknowledged the same view
// after that; a node that cannot renew its Lease stops answering
// everything before the others may take over. The switch of answers
// (Responder.SetAnswers) runs under mu.
type layer2Manager struct {
	node      string
	namespace string
	opts      Layer2Options
	reader    client.Reader
	own       *election.OwnLease
	peers     *election.Peers
	// statusChanged asks for a status report (the agent's requestReport).
	statusChanged func()
	// dataPath says whether the node forwards Service traffic (see
	// dataPath.healthy); nil: always.
	dataPath func() (bool, string)
	log      klog.Logger

	leaseWrites atomic.Int64 // own Lease writes counted in the metric

	kick      chan struct{} // full reconcile
	electKick chan struct{} // hand-overs only (Lease events)
	// speakers is the LoadBalancerSpeaker informer, started once a Local
	// layer-2 plan exists (only those need the other nodes' MACs).
	speakers       ctrlcache.Informer
	speakersWaited bool

	mu      sync.Mutex
	closed  bool
	synced  bool // reconciled at least once
	nodeUID types.UID
	epoch   uint64                 // of the own Lease the hand-overs are in
	ifaces  map[string]*ifaceState // by interface name
	pools   map[string]*poolState
	macs    poolMACs // published by the nodes, for the Local pools
	// status and problems are this node's layer-2 report (by pool, sorted).
	status   []v1alpha2.SpeakerLayer2
	problems []Problem
	wg       sync.WaitGroup // responders, announcements
}

// poolState is this node's part in one pool.
type poolState struct {
	spec *l2Pool
	// problem says why the node is not a candidate (empty reason: it is).
	problem      l2Problem
	addrProblems map[netip.Addr]error // addresses it cannot answer for here
	ifname       string               // the pool's interface here, if it resolves
	mac          string               // its MAC when the node may answer there
	iface        *ifaceState          // nil when not a candidate
	preferred    bool                 // matches the Eip's preferred-node selector
	// view is the pool's candidates as this node sees them; seq the own
	// Lease's Membership that first carried it, switchRV the
	// resourceVersion of the first write of it (empty until written).
	view     election.View
	seq      uint64
	switchRV string
	ready    bool
	waiting  []string // candidates that have not acknowledged view yet
	// mine are the addresses this node owns under view; answering those
	// it answers (all of mine once ready; before, those it kept).
	mine      map[netip.Addr]bool
	answering map[netip.Addr]bool
	chosen    map[netip.Addr]chosenMAC
	announced map[netip.Addr]string
	batches   []*announceBatch
}

// announceBatch is one run of gratuitous ARPs / unsolicited NAs; it is
// cancelled as soon as one of its addresses is no longer answered here.
type announceBatch struct {
	ips    map[netip.Addr]bool
	cancel context.CancelFunc
}

// newLayer2Manager builds the manager. It checks the Lease timings itself
// rather than trust its caller: timings that let a node answer after the
// others may consider its Lease expired would let two nodes answer at once.
func newLayer2Manager(node, namespace string, opts Layer2Options, reader client.Reader, leases coordinationv1client.LeasesGetter, statusChanged func()) (*layer2Manager, error) {
	registerLayer2Metrics()
	if opts.Lease == (election.LeaseTimings{}) {
		opts.Lease = election.DefaultLeaseTimings
	}
	if err := opts.Lease.Validate(); err != nil {
		return nil, fmt.Errorf("layer-2 Lease timings: %w", err)
	}
	m := &layer2Manager{
		node: node, namespace: namespace, opts: opts, reader: reader, statusChanged: statusChanged, log: klog.Background(),
		kick: make(chan struct{}, 1), electKick: make(chan struct{}, 1),
		ifaces: map[string]*ifaceState{}, pools: map[string]*poolState{},
	}
	client := leases.Leases(namespace)
	m.own = election.NewOwnLease(client, namespace, node, opts.Lease, m.leaseMeta, m.ownChanged)
	m.peers = election.NewPeers(node, opts.Lease, client, m.triggerElect)
	return m, nil
}

// leaseMeta is the labels and owner of this node's Lease: it goes with
// the Node (garbage collector), so departed nodes leave no Lease behind.
func (m *layer2Manager) leaseMeta() metav1.ObjectMeta {
	om := metav1.ObjectMeta{Labels: map[string]string{
		"app.kubernetes.io/managed-by": "openelb-speaker", "app.kubernetes.io/component": election.LeaseComponent,
	}}
	m.mu.Lock()
	uid := m.nodeUID
	m.mu.Unlock()
	if uid != "" {
		om.OwnerReferences = []metav1.OwnerReference{{APIVersion: "v1", Kind: "Node", Name: m.node, UID: uid}}
	}
	return om
}

// ownChanged reacts to a write or lapse of this node's Lease: a lapse
// stops every answer at once, in the timer's goroutine, rather than after
// a queued reconcile.
func (m *layer2Manager) ownChanged() {
	if n := m.own.Writes(); n > m.leaseWrites.Load() {
		if old := m.leaseWrites.Swap(n); n > old {
			metricL2LeaseWrites.Add(float64(n - old))
		}
	}
	if !m.own.State().Live {
		m.mu.Lock()
		stopped := 0
		for _, st := range m.pools {
			stopped += len(st.answering)
			st.answering = nil
		}
		if stopped > 0 {
			m.applyLocked()
			m.poolMetricsLocked()
			m.log.Info("Stopped answering every layer-2 address: this node's Lease is not renewed", "addresses", stopped)
		}
		m.mu.Unlock()
	}
	m.triggerElect()
}

// triggerElect asks for the hand-overs to be reconsidered (a Lease
// changed); a pending one absorbs it.
func (m *layer2Manager) triggerElect() {
	select {
	case m.electKick <- struct{}{}:
	default:
	}
}

// trigger asks for a reconcile; one already pending absorbs it, so a burst
// of events costs one.
func (m *layer2Manager) trigger() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// run reconciles on every change, and when an interface changed (checked
// every second: interfaces come and go without an API event), until ctx
// ends.
func (m *layer2Manager) run(ctx context.Context, c ctrlcache.Cache) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	go m.own.Run(ctx)
	m.trigger()
	for {
		select {
		case <-ctx.Done():
			return
		case <-m.electKick:
			m.mu.Lock()
			if !m.closed && m.synced {
				m.electLocked()
				m.refreshStatusLocked()
			}
			m.mu.Unlock()
			continue
		case <-m.kick:
			time.Sleep(5 * time.Millisecond) // coalesce bursts
		case <-tick.C:
			if !m.interfacesChanged() {
				continue
			}
		}
		if err := m.sync(ctx, c); err != nil && ctx.Err() == nil {
			klog.FromContext(ctx).Error(err, "Layer-2 reconcile failed; retrying")
			time.AfterFunc(time.Second, m.trigger)
		}
	}
}

// sync makes what this node competes for and answers follow the objects:
// it stops competing where it no longer qualifies before it touches any
// interface, then opens the responders and campaigns the pools need.
func (m *layer2Manager) sync(ctx context.Context, c ctrlcache.Cache) error {
	var node v1.Node
	nodePtr := &node
	if err := m.reader.Get(ctx, types.NamespacedName{Name: m.node}, &node); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		nodePtr = nil
	}
	var eips v1alpha2.EipList
	if err := m.reader.List(ctx, &eips); err != nil {
		return err
	}
	var plans v1alpha2.LoadBalancerPlanList
	if err := m.reader.List(ctx, &plans); err != nil {
		return err
	}
	pools := layer2Desired(nodePtr, ptrs(eips.Items), ptrs(plans.Items))
	macs := m.publishedMACs(ctx, c, pools)

	targets := make(map[string]target, len(pools))
	for name, p := range pools {
		if p.NotSelected != "" {
			targets[name] = target{problem: l2Problem{Reason: ReasonNodeNotSelected, Message: p.NotSelected}}
			continue
		}
		targets[name] = resolveTarget(p)
	}
	if m.dataPath != nil {
		if ok, why := m.dataPath(); !ok {
			// A node whose kube-proxy fails neither competes (its Lease
			// goes to a node that forwards) nor publishes its MAC for the
			// Local Services with an endpoint here.
			for name, t := range targets {
				targets[name] = target{ifname: t.ifname, problem: l2Problem{Reason: ReasonDataPathUnhealthy,
					Message: fmt.Sprintf("this node's kube-proxy health check fails (%s); it answers for Eip %s again once it passes", why, name)}}
			}
		}
	}

	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	if nodePtr != nil {
		m.nodeUID = node.UID
	}
	logger := klog.FromContext(ctx)
	// Stop being a candidate where the node no longer qualifies, or
	// qualifies on another interface, before touching any interface.
	for name, st := range m.pools {
		p, want := pools[name]
		t := targets[name]
		if !want || t.ifi == nil || st.iface == nil || st.iface.name != t.ifi.Name || st.iface.index != t.ifi.Index || st.iface.mac.String() != t.ifi.HardwareAddr.String() {
			m.stopCompetingLocked(st)
		}
		if !want {
			delete(m.pools, name)
			continue
		}
		st.spec = p
	}
	m.applyLocked()
	// Interfaces no pool answers on any more, or replaced (new index).
	for name, is := range m.ifaces {
		if !m.usedLocked(is) || !ifaceStillWanted(is, targets) {
			m.closeIfaceLocked(is)
			delete(m.ifaces, name)
		}
	}
	for name, p := range pools {
		st := m.pools[name]
		if st == nil {
			st = &poolState{spec: p}
			m.pools[name] = st
		}
		t := targets[name]
		prev := st.problem
		st.problem, st.addrProblems, st.ifname, st.mac = t.problem, t.addrProblems, t.ifname, ""
		if t.ifi != nil {
			st.mac = t.ifi.HardwareAddr.String()
			if is, err := m.ifaceLocked(ctx, t.ifi); err != nil {
				st.problem = l2Problem{Reason: ReasonResponderFailed, Message: fmt.Sprintf("cannot answer on %s: %v", t.ifi.Name, err)}
			} else if st.iface == nil {
				st.iface = is
				logger.Info("Candidate for a layer-2 pool", "pool", name, "interface", is.name, "lease", m.own.Describe())
			}
		}
		if st.problem != prev && st.problem.Reason != "" {
			logger.Info("Not a candidate for a layer-2 pool", "pool", name, "reason", st.problem.Reason, "problem", st.problem.Message)
		}
		st.preferred = p.Preferred
		st.mine = nil // the addresses may have changed
	}
	m.macs = macs
	m.synced = true
	m.electLocked()
	m.statsLocked()
	m.refreshStatusLocked()
	return nil
}

// publishedMACs returns the MACs the nodes publish for the pools with
// externalTrafficPolicy Local addresses, starting the LoadBalancerSpeaker
// watch when the first such pool appears; nil when there is none or the
// watch has not synced yet (those addresses then wait for it).
func (m *layer2Manager) publishedMACs(ctx context.Context, c ctrlcache.Cache, pools map[string]*l2Pool) poolMACs {
	local := false
	for _, p := range pools {
		local = local || p.Local
	}
	if !local {
		return nil
	}
	if !m.watchSpeakers(ctx, c) {
		m.log.V(2).Info("LoadBalancerSpeakers not synced yet; Local layer-2 addresses wait for them")
		return nil
	}
	var list v1alpha2.LoadBalancerSpeakerList
	if err := m.reader.List(ctx, &list); err != nil {
		m.log.V(2).Info("Listing LoadBalancerSpeakers failed", "err", err)
		return nil
	}
	return speakerMACs(ptrs(list.Items), pools)
}

// shutdown stops answering, then writes this node's Lease without pools
// (so the other nodes take its addresses at once), waits for that until
// ctx ends, and closes the responders.
func (m *layer2Manager) shutdown(ctx context.Context) {
	m.mu.Lock()
	m.closed = true
	for _, st := range m.pools {
		m.stopCompetingLocked(st)
	}
	m.applyLocked()
	for name, is := range m.ifaces {
		m.closeIfaceLocked(is)
		delete(m.ifaces, name)
	}
	m.refreshStatusLocked()
	m.mu.Unlock()
	if err := m.own.Release(ctx); err != nil {
		m.log.Info("Layer-2 Lease not released; the other nodes take over when it expires", "err", err)
	}
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Info("Layer-2 shutdown did not finish in time", "err", ctx.Err())
	}
}
