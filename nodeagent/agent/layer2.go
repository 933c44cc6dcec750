package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

// Layer2Options tune the layer-2 half of the agent. The zero value is
// ready to use.
type Layer2Options struct {
	// Lease timings; zero: DefaultLeaseTimings.
	Lease LeaseTimings
	// AnnounceCount gratuitous ARPs / unsolicited NAs per address on
	// taking over or when its MAC changes; 0: layer2.DefaultAnnounceCount.
	AnnounceCount int
	// AnnounceInterval spaces them; 0: layer2.DefaultAnnounceInterval.
	AnnounceInterval time.Duration
}

// LeasePrefix starts the name of every layer-2 pool's Lease.
const LeasePrefix = "openelb-layer2-"

// LeaseName is the Lease of a layer-2 pool (Eip), in the speakers'
// namespace. Names too long for a Lease end in a hash of the pool name.
func LeaseName(pool string) string {
	const maxName = 253
	name := LeasePrefix + pool
	if len(name) <= maxName {
		return name
	}
	sum := sha256.Sum256([]byte(pool))
	h := hex.EncodeToString(sum[:8])
	return strings.TrimRight(name[:maxName-len(h)-1], "-.") + "-" + h
}

// Reasons of a layer-2 pool in this node's LoadBalancerSpeaker
// (status.layer2[].reason), and of its layer-2 problems.
const (
	ReasonAnswering       = "Answering"
	ReasonStandby         = "Standby"
	ReasonNoInterface     = "InterfaceUnavailable"
	ReasonOutsideSubnet   = "OutsideSubnet"
	ReasonResponderFailed = "ResponderFailed"
	ReasonNoLocalEndpoint = "NoLocalEndpoint"
	ReasonRejected        = "Rejected"
	ReasonStopped         = "Stopped"
)

// l2Problem says why this node cannot answer for a pool or an address.
type l2Problem struct {
	Reason, Message string
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
	leases    *cachedLeases
	// statusChanged asks for a status report (the agent's requestReport).
	statusChanged func()
	log           klog.Logger

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

// ifaceState is one interface the node answers on, shared by its pools.
type ifaceState struct {
	name  string
	index int
	mac   net.HardwareAddr
	r     *layer2.Responder
	stop  context.CancelFunc
	// answers last given to SetAnswers, and what it refused.
	answers  map[netip.Addr]string
	rejected map[netip.Addr]error
	stats    layer2.Stats
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
	term, lastEnded *term
	termCtx         context.Context    // ends with the term
	endTerm         context.CancelFunc // ends termCtx
	chosen          map[netip.Addr]chosenMAC
	announced       map[netip.Addr]string
}

type chosenMAC struct {
	mac  net.HardwareAddr
	node string
}

// poolCampaign is one campaign for a pool's Lease; callbacks of a campaign
// that was stopped are ignored.
type poolCampaign struct {
	m      *layer2Manager
	st     *poolState
	cancel context.CancelFunc
}

func (c *poolCampaign) started(ctx context.Context, t *term) { c.m.started(ctx, c, t) }
func (c *poolCampaign) ended(t *term)                        { c.m.ended(c, t) }

func newLayer2Manager(node, namespace string, opts Layer2Options, reader client.Reader, leases coordinationv1client.LeasesGetter, statusChanged func()) (*layer2Manager, error) {
	registerLayer2Metrics()
	if opts.Lease == (LeaseTimings{}) {
		opts.Lease = DefaultLeaseTimings
	}
	if err := opts.Lease.Validate(); err != nil {
		return nil, fmt.Errorf("layer-2 Lease timings: %w", err)
	}
	return &layer2Manager{
		node: node, namespace: namespace, opts: opts, reader: reader, statusChanged: statusChanged, log: klog.Background(),
		leases: &cachedLeases{namespace: namespace, reader: reader, client: leases.Leases(namespace), waiters: map[string]chan struct{}{}},
		kick:   make(chan struct{}, 1),
		ifaces: map[string]*ifaceState{}, pools: map[string]*poolState{},
	}, nil
}

// register hooks the manager to the informers it needs; call before the
// cache starts. LoadBalancerSpeakers are watched only once a layer-2
// Service with externalTrafficPolicy Local exists.
func (m *layer2Manager) register(ctx context.Context, c ctrlcache.Cache) error {
	m.log = klog.FromContext(ctx)
	// Only what can change the answers: plans change for reasons that do
	// not concern layer 2 (BGP plans, the CCM's conditions), Eips with
	// every allocation (status), the Node with every heartbeat.
	on := func(relevant func(old, cur any) bool) toolscache.ResourceEventHandler {
		kick := func(old, cur any) {
			if relevant(old, cur) {
				m.trigger()
			}
		}
		return toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { kick(nil, o) }, UpdateFunc: kick, DeleteFunc: func(o any) { kick(o, nil) },
		}
	}
	handlers := map[client.Object]toolscache.ResourceEventHandler{
		&v1.Node{}: on(func(old, cur any) bool {
			o, c := objectOf[*v1.Node](old), objectOf[*v1.Node](cur)
			return o == nil || c == nil || !maps.Equal(o.Labels, c.Labels)
		}),
		&v1alpha2.Eip{}: on(func(old, cur any) bool {
			o, c := objectOf[*v1alpha2.Eip](old), objectOf[*v1alpha2.Eip](cur)
			return o == nil || c == nil || o.Generation != c.Generation || o.UID != c.UID
		}),
		&v1alpha2.LoadBalancerPlan{}: on(func(old, cur any) bool {
			return layer2Relevant(objectOf[*v1alpha2.LoadBalancerPlan](old), objectOf[*v1alpha2.LoadBalancerPlan](cur))
		}),
	}
	for obj, h := range handlers {
		inf, err := c.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	inf, err := c.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return fmt.Errorf("informer for Leases: %w", err)
	}
	leaseChanged := func(o any) {
		if l := objectOf[*coordinationv1.Lease](o); l != nil {
			m.leases.notify(l.Name)
		}
	}
	_, err = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: leaseChanged, UpdateFunc: func(_, o any) { leaseChanged(o) }, DeleteFunc: leaseChanged,
	})
	return err
}

// objectOf unwraps an informer event's object; nil for none.
func objectOf[T client.Object](o any) T {
	if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
		o = d.Obj
	}
	t, _ := o.(T)
	return t
}

// layer2Relevant says whether a plan event (nil: added or deleted) can
// change what this node does for layer 2: only the spec of a plan with
// layer-2 addresses (for externalTrafficPolicy Local its endpointNodes are
// in the spec).
func layer2Relevant(old, cur *v1alpha2.LoadBalancerPlan) bool {
	switch {
	case !hasLayer2(old) && !hasLayer2(cur):
		return false
	case old == nil || cur == nil:
		return true
	}
	return !apiequality.Semantic.DeepEqual(old.Spec, cur.Spec)
}

// macsChanged says whether a LoadBalancerSpeaker event (nil: added or
// deleted) changes the MACs it publishes: its other changes (sessions,
// answering, problems) do not concern the other nodes.
func macsChanged(old, cur *v1alpha2.LoadBalancerSpeaker) bool {
	macs := func(s *v1alpha2.LoadBalancerSpeaker) map[string]string {
		out := map[string]string{}
		if s != nil {
			for _, l := range s.Status.Layer2 {
				if l.MAC != "" {
					out[l.Pool] = l.MAC
				}
			}
		}
		return out
	}
	return !maps.Equal(macs(old), macs(cur))
}

// watchSpeakers starts the LoadBalancerSpeaker informer the first time a
// layer-2 Service with externalTrafficPolicy Local appears, and says
// whether it has synced (waiting a few seconds for that). Only the
// reconcile goroutine calls it.
func (m *layer2Manager) watchSpeakers(ctx context.Context, c ctrlcache.Cache) bool {
	if m.speakers == nil {
		inf, err := c.GetInformer(ctx, &v1alpha2.LoadBalancerSpeaker{}, ctrlcache.BlockUntilSynced(false))
		if err != nil {
			m.log.Error(err, "Cannot watch LoadBalancerSpeakers; externalTrafficPolicy Local layer-2 addresses have no endpoint node MAC")
			return false
		}
		kick := func(old, cur any) {
			if macsChanged(objectOf[*v1alpha2.LoadBalancerSpeaker](old), objectOf[*v1alpha2.LoadBalancerSpeaker](cur)) {
				m.trigger()
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { kick(nil, o) }, UpdateFunc: kick, DeleteFunc: func(o any) { kick(o, nil) },
		}); err != nil {
			m.log.Error(err, "Cannot watch LoadBalancerSpeakers")
			return false
		}
		m.speakers = inf
	}
	if m.speakers.HasSynced() || m.speakersWaited {
		// Until it syncs, its events trigger reconciles as speakers arrive.
		return m.speakers.HasSynced()
	}
	m.speakersWaited = true
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return toolscache.WaitForCacheSync(wctx.Done(), m.speakers.HasSynced)
}

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

// interfacesChanged resolves the interfaces of the pools again and says
// whether any differs from what the node acts on (and feeds the metrics).
func (m *layer2Manager) interfacesChanged() bool {
	m.mu.Lock()
	m.statsLocked()
	specs := make([]*l2Pool, 0, len(m.pools))
	for _, st := range m.pools {
		specs = append(specs, st.spec)
	}
	m.mu.Unlock()
	targets := make(map[string]target, len(specs))
	for _, p := range specs {
		targets[p.Name] = resolveTarget(p)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, t := range targets {
		st := m.pools[name]
		if st == nil {
			continue
		}
		if st.ifname != t.ifname || st.problem != t.problem || len(st.addrProblems) != len(t.addrProblems) {
			return true
		}
		if t.ifi != nil && (st.iface == nil || st.iface.index != t.ifi.Index || st.iface.mac.String() != t.ifi.HardwareAddr.String()) {
			return true
		}
	}
	return false
}

// target is where a pool would be answered on this node, or why not.
type target struct {
	ifi          *net.Interface
	ifname       string // the resolved interface, also when it cannot serve
	problem      l2Problem
	addrProblems map[netip.Addr]error
}

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
		targets[name] = resolveTarget(p)
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

// resolveTarget finds the pool's interface on this node and checks that it
// carries the pool's addresses.
func resolveTarget(p *l2Pool) target {
	ifi, err := layer2.ResolveInterface(p.Interface)
	if err != nil {
		return target{problem: l2Problem{Reason: ReasonNoInterface, Message: fmt.Sprintf("interface %q of Eip %s: %v", p.Interface, p.Name, err)}}
	}
	prefixes, err := layer2.InterfacePrefixes(ifi)
	if err != nil {
		return target{problem: l2Problem{Reason: ReasonNoInterface, Message: err.Error()}}
	}
	t := target{ifi: ifi, ifname: ifi.Name}
	for _, a := range p.Addrs {
		if err := layer2.CheckAddr(a.IP, prefixes); err != nil {
			if t.addrProblems == nil {
				t.addrProblems = map[netip.Addr]error{}
			}
			t.addrProblems[a.IP] = err
		}
	}
	if len(t.addrProblems) == len(p.Addrs) {
		// Not one address can be answered here: do not take the Lease
		// from a node that can.
		ips := make([]string, len(p.Addrs))
		for i, a := range p.Addrs {
			ips[i] = a.IP.String()
		}
		return target{ifname: ifi.Name, addrProblems: t.addrProblems, problem: l2Problem{Reason: ReasonOutsideSubnet,
			Message: fmt.Sprintf("the addresses of Eip %s (%s) are outside every subnet of interface %s %v", p.Name, listed(ips, ", "), ifi.Name, prefixes)}}
	}
	return t
}

func ifaceStillWanted(is *ifaceState, targets map[string]target) bool {
	for _, t := range targets {
		if t.ifi != nil && t.ifi.Name == is.name && t.ifi.Index == is.index && t.ifi.HardwareAddr.String() == is.mac.String() {
			return true
		}
	}
	return false
}

func (m *layer2Manager) usedLocked(is *ifaceState) bool {
	for _, st := range m.pools {
		if st.iface == is {
			return true
		}
	}
	return false
}

// ifaceLocked returns the running responder on ifi, opening one if needed.
func (m *layer2Manager) ifaceLocked(ctx context.Context, ifi *net.Interface) (*ifaceState, error) {
	if is := m.ifaces[ifi.Name]; is != nil {
		return is, nil
	}
	r, err := layer2.New(ifi, layer2.Options{
		Logger:           klog.FromContext(ctx).WithName("layer2"),
		AnnounceCount:    m.opts.AnnounceCount,
		AnnounceInterval: m.opts.AnnounceInterval,
	})
	if err != nil {
		return nil, err
	}
	rctx, stop := context.WithCancel(ctx)
	is := &ifaceState{name: ifi.Name, index: ifi.Index, mac: ifi.HardwareAddr, r: r, stop: stop}
	m.ifaces[ifi.Name] = is
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := r.Run(rctx)
		if err != nil {
			m.responderFailed(ctx, is, err)
		}
	}()
	klog.FromContext(ctx).Info("Layer-2 responder running", "interface", ifi.Name, "mac", ifi.HardwareAddr.String())
	return is, nil
}

// responderFailed stops competing on an interface whose socket broke and
// rebuilds it on a later reconcile.
func (m *layer2Manager) responderFailed(ctx context.Context, is *ifaceState, err error) {
	klog.FromContext(ctx).Error(err, "Layer-2 responder failed; rebuilding it", "interface", is.name)
	m.mu.Lock()
	if m.ifaces[is.name] == is {
		for _, st := range m.pools {
			if st.iface == is {
				m.stopCompetingLocked(st)
			}
		}
		m.applyLocked()
		m.closeIfaceLocked(is)
		delete(m.ifaces, is.name)
		m.refreshStatusLocked()
	}
	m.mu.Unlock()
	time.AfterFunc(time.Second, m.trigger)
}

func (m *layer2Manager) closeIfaceLocked(is *ifaceState) {
	is.stop()
	_ = is.r.Close()
	countStats(is.stats, is.r.Stats())
	is.stats = is.r.Stats()
}

func (m *layer2Manager) startCampaignLocked(ctx context.Context, st *poolState, is *ifaceState) {
	cctx, cancel := context.WithCancel(ctx)
	c := &poolCampaign{m: m, st: st, cancel: cancel}
	st.iface, st.campaign = is, c
	pool := st.spec.Name
	lock := &leaseLock{
		store: m.leases, namespace: m.namespace, name: LeaseName(pool), identity: m.node,
		renewEvery: m.opts.Lease.RetryPeriod,
		meta: func() metav1.ObjectMeta {
			om := metav1.ObjectMeta{
				Labels:      map[string]string{"app.kubernetes.io/managed-by": "openelb-speaker", "app.kubernetes.io/component": "layer2-election"},
				Annotations: map[string]string{"openelb.kubesphere.io/eip": pool},
			}
			m.mu.Lock()
			uid := st.spec.EipUID
			m.mu.Unlock()
			if uid != "" {
				// The Lease goes when its Eip does (garbage collector).
				om.OwnerReferences = []metav1.OwnerReference{{APIVersion: v1alpha2.SchemeGroupVersion.String(), Kind: "Eip", Name: pool, UID: uid}}
			}
			return om
		},
	}
	metricL2Leader.WithLabelValues(pool).Set(0)
	klog.FromContext(ctx).Info("Competing for a layer-2 pool", "pool", pool, "lease", lock.Describe(), "interface", is.name)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		campaign(cctx, lock, m.opts.Lease, c)
	}()
}

// stopCompetingLocked stops answering for the pool (at the next
// applyLocked, which every caller runs before releasing mu, and so before
// the campaign can release the Lease) and ends the campaign.
func (m *layer2Manager) stopCompetingLocked(st *poolState) {
	if st.campaign == nil {
		return
	}
	if st.term != nil {
		m.endTermLocked(st)
	}
	st.campaign.cancel()
	st.campaign, st.iface = nil, nil
	metricL2Leader.DeleteLabelValues(st.spec.Name)
}

func (m *layer2Manager) endTermLocked(st *poolState) {
	st.lastEnded, st.term = st.term, nil
	st.endTerm()
	st.chosen, st.announced = nil, nil
	metricL2Leader.WithLabelValues(st.spec.Name).Set(0)
	metricL2Transitions.WithLabelValues(st.spec.Name).Inc()
}

// started makes the node answer for the pool, unless the term ended (or
// the campaign was stopped) before this callback ran.
func (m *layer2Manager) started(ctx context.Context, c *poolCampaign, t *term) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := c.st
	if m.closed || st.campaign != c || st.lastEnded == t || st.term != nil || ctx.Err() != nil {
		return
	}
	st.term = t
	st.termCtx, st.endTerm = context.WithCancel(ctx)
	st.chosen, st.announced = map[netip.Addr]chosenMAC{}, map[netip.Addr]string{}
	metricL2Leader.WithLabelValues(st.spec.Name).Set(1)
	metricL2Transitions.WithLabelValues(st.spec.Name).Inc()
	m.log.Info("Answering for a layer-2 pool", "pool", st.spec.Name, "interface", st.iface.name, "addresses", len(st.spec.Addrs))
	m.applyLocked()
	m.refreshStatusLocked()
}

// ended stops answering for the pool. It runs before the Lease is
// released and again when client-go reports the end.
func (m *layer2Manager) ended(c *poolCampaign, t *term) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := c.st
	if st.campaign != c {
		return
	}
	if st.term != t {
		st.lastEnded = t
		return
	}
	m.endTermLocked(st)
	m.log.Info("Stopped answering for a layer-2 pool", "pool", st.spec.Name)
	m.applyLocked()
	m.refreshStatusLocked()
}

// applyLocked gives each responder the answers of the pools this node
// leads on it, and announces every address newly answered or answered with
// a new MAC.
func (m *layer2Manager) applyLocked() {
	for _, is := range m.ifaces {
		want := map[netip.Addr]net.HardwareAddr{}
		for _, st := range m.pools {
			if st.iface != is || st.term == nil {
				continue
			}
			st.chosen = map[netip.Addr]chosenMAC{}
			for _, a := range st.spec.Addrs {
				if st.addrProblems[a.IP] != nil {
					continue
				}
				if mac, node := answerMAC(a.IP, a.Plan, m.macs[st.spec.Name], m.node, is.mac); mac != nil {
					st.chosen[a.IP] = chosenMAC{mac: mac, node: node}
					want[a.IP] = mac
				}
			}
		}
		m.setAnswersLocked(is, want)
	}
	for _, st := range m.pools {
		if st.term == nil {
			continue
		}
		var ips []netip.Addr
		for ip, c := range st.chosen {
			if st.iface.rejected[ip] == nil && st.announced[ip] != c.mac.String() {
				ips = append(ips, ip)
				st.announced[ip] = c.mac.String()
			}
		}
		maps.DeleteFunc(st.announced, func(ip netip.Addr, _ string) bool { _, ok := st.chosen[ip]; return !ok })
		if len(ips) > 0 {
			m.announceLocked(st, ips)
		}
	}
}

func (m *layer2Manager) setAnswersLocked(is *ifaceState, want map[netip.Addr]net.HardwareAddr) {
	cur := make(map[netip.Addr]string, len(want))
	for ip, mac := range want {
		cur[ip] = mac.String()
	}
	if maps.Equal(cur, is.answers) {
		return
	}
	err := is.r.SetAnswers(want)
	is.answers, is.rejected = cur, nil
	var rej *layer2.RejectedError
	switch {
	case errors.As(err, &rej):
		is.rejected = map[netip.Addr]error{}
		for _, e := range rej.Errs {
			is.rejected[e.Addr] = e.Err
		}
		m.log.Info("Some layer-2 addresses cannot be answered", "interface", is.name, "problem", err.Error())
	case err != nil:
		m.log.Error(err, "Setting layer-2 answers failed", "interface", is.name)
	}
}

// announceLocked sends gratuitous ARPs / unsolicited NAs for ips in the
// background, for as long as the leadership term lasts.
func (m *layer2Manager) announceLocked(st *poolState, ips []netip.Addr) {
	slices.SortFunc(ips, netip.Addr.Compare)
	ctx, is, pool := st.termCtx, st.iface, st.spec.Name
	m.log.V(2).Info("Announcing layer-2 addresses", "pool", pool, "interface", is.name, "addresses", ips)
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		err := is.r.Announce(ctx, ips)
		var rej *layer2.RejectedError
		if err != nil && ctx.Err() == nil && !errors.As(err, &rej) {
			m.log.Error(err, "Announcing layer-2 addresses failed", "pool", pool, "interface", is.name)
		}
		m.mu.Lock()
		m.statsLocked()
		m.mu.Unlock()
	}()
}

// statsLocked feeds the responders' counters to the metrics.
func (m *layer2Manager) statsLocked() {
	for _, is := range m.ifaces {
		cur := is.r.Stats()
		countStats(is.stats, cur)
		is.stats = cur
	}
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

// cachedLeases is the leaseStore of the agent: reads from its watch cache
// (namespace-scoped Lease informer), writes through the API client.
type cachedLeases struct {
	namespace string
	reader    client.Reader
	client    coordinationv1client.LeaseInterface

	mu      sync.Mutex
	waiters map[string]chan struct{}
}

func (c *cachedLeases) Get(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	var l coordinationv1.Lease
	if err := c.reader.Get(ctx, types.NamespacedName{Namespace: c.namespace, Name: name}, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

func (c *cachedLeases) Changed(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.waiters[name]
	if ch == nil {
		ch = make(chan struct{})
		c.waiters[name] = ch
	}
	return ch
}

// notify wakes whoever waits for a change of the Lease.
func (c *cachedLeases) notify(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.waiters[name]; ch != nil {
		close(ch)
		delete(c.waiters, name)
	}
}

func (c *cachedLeases) Create(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.client.Create(ctx, l, metav1.CreateOptions{})
}

func (c *cachedLeases) Update(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.client.Update(ctx, l, metav1.UpdateOptions{})
}
