package agent

import (
	"context"
	"fmt"
	"net/netip"
	"sync"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
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

// layer2Manager makes this node answer ARP/NDP for the layer-2 pools whose
// Lease it holds. Per pool with addresses in use, a node competes for the
// pool's Lease when the pool's interface resolves, is up, carries the
// addresses' subnet, and a Responder runs on it; the leader answers for
// every address of the pool (its own MAC, or for externalTrafficPolicy
// Local a node with a ready endpoint) and announces each address it takes
// over or whose MAC changes. Losing the Lease, giving it up, or no longer
// qualifying stops the answers before anything else happens: the switch of
// answers (Responder.SetAnswers) and every leadership change run under mu,
// and the Lease is released only after that.
type layer2Manager struct {
	node      string
	namespace string
	opts      Layer2Options
	reader    client.Reader
	leases    *election.CachedLeases
	// statusChanged asks for a status report (the agent's requestReport).
	statusChanged func()
	// dataPath says whether the node forwards Service traffic (see
	// dataPath.healthy); nil: always.
	dataPath func() (bool, string)
	log      klog.Logger

	kick chan struct{}
	// speakers is the LoadBalancerSpeaker informer, started once a Local
	// layer-2 plan exists (only those need the other nodes' MACs).
	speakers       ctrlcache.Informer
	speakersWaited bool

	mu     sync.Mutex
	closed bool
	synced bool                   // reconciled at least once
	ifaces map[string]*ifaceState // by interface name
	pools  map[string]*poolState
	macs   poolMACs // published by the nodes, for the Local pools
	// status and problems are this node's layer-2 report (by pool, sorted).
	status   []v1alpha2.SpeakerLayer2
	problems []Problem
	wg       sync.WaitGroup // campaigns, responders, announcements
}

// poolState is this node's part in one pool.
type poolState struct {
	spec *l2Pool
	// problem says why the node does not compete (empty reason: it does).
	problem      l2Problem
	addrProblems map[netip.Addr]error // addresses it cannot answer for here
	ifname       string               // the pool's interface here, if it resolves
	mac          string               // its MAC when the node may answer there
	iface        *ifaceState          // nil when not competing
	campaign     *poolCampaign        // nil when not competing
	// term is the current leadership (nil: not leading); lastEnded the
	// last term that ended, so a late "started" for it is ignored.
	term, lastEnded *election.Term
	termCtx         context.Context    // ends with the term
	endTerm         context.CancelFunc // ends termCtx
	chosen          map[netip.Addr]chosenMAC
	announced       map[netip.Addr]string
}

// newLayer2Manager builds the manager. It checks the Lease timings itself
// rather than trust its caller: timings that let a leader outlive its Lease
// would let two nodes answer at once.
func newLayer2Manager(node, namespace string, opts Layer2Options, reader client.Reader, leases coordinationv1client.LeasesGetter, statusChanged func()) (*layer2Manager, error) {
	registerLayer2Metrics()
	if opts.Lease == (election.LeaseTimings{}) {
		opts.Lease = election.DefaultLeaseTimings
	}
	if err := opts.Lease.Validate(); err != nil {
		return nil, fmt.Errorf("layer-2 Lease timings: %w", err)
	}
	return &layer2Manager{
		node: node, namespace: namespace, opts: opts, reader: reader, statusChanged: statusChanged, log: klog.Background(),
		leases: election.NewCachedLeases(namespace, leaseCache{reader: reader}, leases.Leases(namespace)),
		kick:   make(chan struct{}, 1),
		ifaces: map[string]*ifaceState{}, pools: map[string]*poolState{},
	}, nil
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
	m.trigger()
	for {
		select {
		case <-ctx.Done():
			return
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
	logger := klog.FromContext(ctx)
	// Stop competing where the node no longer qualifies, or qualifies on
	// another interface, before touching any interface.
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
			} else if st.campaign == nil {
				m.startCampaignLocked(ctx, st, is)
			}
		}
		if st.problem != prev && st.problem.Reason != "" {
			logger.Info("Not competing for a layer-2 pool", "pool", name, "reason", st.problem.Reason, "problem", st.problem.Message)
		}
	}
	m.macs = macs
	m.applyLocked()
	m.statsLocked()
	m.refreshStatusLocked()
	m.synced = true
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

// shutdown stops answering and releases every Lease (so other nodes take
// over at once), waits for that until ctx ends, and closes the responders.
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
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		m.log.Info("Layer-2 shutdown did not finish in time", "err", ctx.Err())
	}
}
