package agent

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// Options configure the agent.
type Options struct {
	NodeName  string
	Namespace string // of the layer-2 Leases (the speaker's own)
	// SecretsNamespace holds the BgpPeer password Secrets; empty:
	// DefaultSecretsNamespace.
	SecretsNamespace string
	Speaker          bgp.Speaker
	// Layer2 tunes ARP/NDP answering and its leader election.
	Layer2 Layer2Options
	// StatusInterval is how often session states are checked and, when
	// they changed, reported. Default 2s: the check is in-process and the
	// LoadBalancerSpeaker is written only when it changed, so a steady
	// speaker costs the API server nothing.
	StatusInterval time.Duration
	// CountsInterval spaces status writes that only change counts
	// (advertised prefixes and paths); 0: DefaultCountsInterval.
	CountsInterval time.Duration
	// DataPath is the probe of the node's kube-proxy (see dataPath); a
	// zero value probes nothing.
	DataPath DataPathOptions
}

// Agent reconciles this node's speaker with the cluster.
type Agent struct {
	opts    Options
	cache   ctrlcache.Cache
	client  client.Client
	racks   *rackWatch
	trigger chan struct{}
	last    State
	applied bool
	// reconciled: the BGP half computed its state at least once, so a
	// report says what it does rather than what it did not decide yet.
	reconciled bool
	// problems are the configuration problems of the last reconcile.
	problems []Problem
	nodeUID  types.UID
	// refused are the peers the speaker left out at the last apply
	// (reconcile goroutine only).
	refused []*bgp.PeerError
	// mu guards last, reconciled, problems and nodeUID, which the report
	// goroutine reads (the reconcile goroutine alone writes them, and
	// applied).
	mu        sync.Mutex
	reportNow chan struct{}
	// writer and sessions belong to the report goroutine (writer also to
	// Shutdown).
	writer   *reportWriter
	sessions sessionClock
	// peerWritten is when this node's entry of each BgpPeer status was
	// last written (report goroutine only).
	peerWritten map[string]time.Time
	lastErr     string
	l2          *layer2Manager
	health      *health
	dataPath    *dataPathProber
	// failOpen: the last reconcile kept every next hop although all fail
	// their data-path check (guarded by mu).
	failOpen bool
}

// New builds the agent; Run starts it.
func New(cfg *rest.Config, opts Options) (*Agent, error) {
	RegisterMetrics()
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = 2 * time.Second
	}
	if opts.SecretsNamespace == "" {
		opts.SecretsNamespace = DefaultSecretsNamespace
	}
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	scheme := apischeme.New()
	h := newHealth()
	c, err := ctrlcache.New(cfg, ctrlcache.Options{
		Scheme:                       scheme,
		DefaultWatchErrorHandler:     h.watchError,
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		DefaultTransform:             ctrlcache.TransformStripManagedFields(),
		ByObject: map[client.Object]ctrlcache.ByObject{
			// Only this node, and only the Secrets of the BgpPeer password
			// namespace (see DefaultSecretsNamespace): the agent reads no
			// more than it needs (and RBAC allows).
			&v1.Node{}:   {Field: fields.OneTermEqualSelector("metadata.name", opts.NodeName)},
			&v1.Secret{}: {Namespaces: map[string]ctrlcache.Config{opts.SecretsNamespace: {}}},
			// Layer-2 election Leases live in the speaker's namespace, and
			// so does the ConfigMap of BgpConf spec.policy (OpenELB's
			// layout): a namespace of a few ConfigMaps.
			// Only the nodes' layer-2 Leases (not the CCM's).
			&coordinationv1.Lease{}: {
				Namespaces: map[string]ctrlcache.Config{opts.Namespace: {}},
				Label:      labels.SelectorFromSet(labels.Set{"app.kubernetes.io/component": election.LeaseComponent}),
			},
			&v1.ConfigMap{}: {Namespaces: map[string]ctrlcache.Config{opts.Namespace: {}}},
			// Every plan and Eip, trimmed to what the agent reads: their
			// number follows the Services.
			&v1alpha2.LoadBalancerPlan{}: {Transform: trimPlan},
			&v1alpha2.Eip{}:              {Transform: trimEip},
			// Watched only while a Local layer-2 Service needs the MACs.
			&v1alpha2.LoadBalancerSpeaker{}: {Transform: trimSpeaker},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("building cache: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("building client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building clientset: %w", err)
	}
	racks, err := newRackListWatch(cfg, scheme)
	if err != nil {
		return nil, err
	}
	a := &Agent{opts: opts, cache: c, client: cl, trigger: make(chan struct{}, 1), reportNow: make(chan struct{}, 1), sessions: sessionClock{}, peerWritten: map[string]time.Time{}, health: h}
	a.racks = &rackWatch{listWatch: racks, changed: a.kick}
	a.writer = &reportWriter{apply: a.applySpeaker, countsInterval: opts.CountsInterval}
	if a.l2, err = newLayer2Manager(opts.NodeName, opts.Namespace, opts.Layer2, c, cs.CoordinationV1(), a.requestReport); err != nil {
		return nil, err
	}
	a.dataPath = newDataPathProber(opts.DataPath, func() { a.kick(); a.requestReport(); a.l2.trigger() })
	a.l2.dataPath = func() (bool, string) {
		why, bad := a.dataPath.unhealthy()[opts.NodeName]
		return !bad, why
	}
	return a, nil
}

// Run reconciles until ctx ends. When the API server is unreachable the
// caches keep their last content and the speaker keeps advertising what it
// last applied: nothing is withdrawn for lack of news.
func (a *Agent) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", a.opts.NodeName)
	always := func(old, cur any) bool { return true }
	handlers := []struct {
		obj      client.Object
		relevant func(old, cur any) bool
	}{
		{&v1.Node{}, func(old, cur any) bool { return nodeRelevant(objectOf[*v1.Node](old), objectOf[*v1.Node](cur)) }},
		// Spec only: every node writes its session states into the
		// BgpPeer status, which no reconcile reads.
		{&v1alpha2.BgpConf{}, func(old, cur any) bool {
			o, c := objectOf[*v1alpha2.BgpConf](old), objectOf[*v1alpha2.BgpConf](cur)
			return o == nil || c == nil || !apiequality.Semantic.DeepEqual(o.Spec, c.Spec)
		}},
		{&v1alpha2.BgpPeer{}, func(old, cur any) bool {
			o, c := objectOf[*v1alpha2.BgpPeer](old), objectOf[*v1alpha2.BgpPeer](cur)
			return o == nil || c == nil || !apiequality.Semantic.DeepEqual(o.Spec, c.Spec)
		}},
		{&v1alpha2.LoadBalancerPlan{}, func(old, cur any) bool {
			return bgpRelevant(objectOf[*v1alpha2.LoadBalancerPlan](old), objectOf[*v1alpha2.LoadBalancerPlan](cur))
		}},
		{&v1.Secret{}, always},
		{&v1.ConfigMap{}, always},
	}
	for _, h := range handlers {
		inf, err := a.cache.GetInformer(ctx, h.obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", h.obj, err)
		}
		relevant := h.relevant
		kick := func(old, cur any) {
			if relevant(old, cur) {
				a.kick()
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: func(o any) { kick(nil, o) }, UpdateFunc: kick, DeleteFunc: func(o any) { kick(o, nil) },
		}); err != nil {
			return fmt.Errorf("event handler for %T: %w", h.obj, err)
		}
	}
	if err := a.l2.register(ctx, a.cache); err != nil {
		return err
	}
	go func() { _ = a.cache.Start(ctx) }()
	if err := a.waitForCaches(ctx); err != nil {
		return err
	}
	logger.Info("Speaker agent synced; reconciling")
	go a.reportLoop(ctx)
	a.dataPath.start(ctx)
	go a.l2.run(ctx, a.cache)
	a.kick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
			// Coalesce bursts of changes into one Apply.
			time.Sleep(5 * time.Millisecond)
			if err := a.trackedReconcile(ctx); err != nil {
				logger.Error(err, "Reconcile failed; retrying")
				time.AfterFunc(time.Second, a.kick)
			}
		}
	}
}

// nodeRelevant says whether a Node event (nil: added or deleted) can
// change what the BGP half does: its labels (speaker, rack, peer
// selectors), its addresses (router ID) or its identity (the report's
// owner), not its heartbeats.
func nodeRelevant(old, cur *v1.Node) bool {
	return old == nil || cur == nil || old.UID != cur.UID || !maps.Equal(old.Labels, cur.Labels) ||
		!apiequality.Semantic.DeepEqual(old.Status.Addresses, cur.Status.Addresses)
}

// bgpRelevant says whether a plan event (nil: added or deleted) can change
// the paths: only the spec of a plan with BGP addresses, not the CCM's
// conditions, nor layer-2 plans.
func bgpRelevant(old, cur *v1alpha2.LoadBalancerPlan) bool {
	switch {
	case !hasBGP(old) && !hasBGP(cur):
		return false
	case old == nil || cur == nil:
		return true
	}
	return !apiequality.Semantic.DeepEqual(old.Spec, cur.Spec)
}

// hasBGP says whether a plan has BGP addresses.
func hasBGP(p *v1alpha2.LoadBalancerPlan) bool {
	return p != nil && slices.ContainsFunc(p.Spec.Addresses, func(a v1alpha2.PlanAddress) bool { return a.Protocol == v1alpha2.ProtocolBGP })
}

// reportLoop writes statuses on its own goroutine, after every applied
// change and every StatusInterval, so status writes (rate-limited by the
// client) never delay a route change.
func (a *Agent) reportLoop(ctx context.Context) {
	tick := time.NewTicker(a.opts.StatusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-a.reportNow:
		case <-tick.C:
		}
		a.report(ctx)
	}
}

func (a *Agent) requestReport() {
	select {
	case a.reportNow <- struct{}{}:
	default:
	}
}

// snapshot is what report needs from the last reconcile.
type snapshot struct {
	state      State
	reconciled bool
	problems   []Problem
	nodeUID    types.UID
	failOpen   bool
}

func (a *Agent) snapshot() snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return snapshot{state: a.last, reconciled: a.reconciled, problems: a.problems, nodeUID: a.nodeUID, failOpen: a.failOpen}
}

func (a *Agent) kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) reconcile(ctx context.Context) error {
	logger := klog.FromContext(ctx)
	var node v1.Node
	nodePtr := &node
	if err := a.cache.Get(ctx, types.NamespacedName{Name: a.opts.NodeName}, &node); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading Node %s: %w", a.opts.NodeName, err)
		}
		nodePtr = nil
	}
	// The node's rack object: followed while the node is a speaker, and
	// re-watched when its rack label changes. Until the watch has synced
	// the rack is unknown, and what is applied stays: withdrawing for lack
	// of news would cut traffic on every rack change, and at start an
	// empty first Apply would end a graceful restart with nothing.
	var rack *v1alpha2.LoadBalancerRack
	if nodePtr != nil && nodePtr.Labels[v1alpha2.LabelSpeaker] == v1alpha2.LabelSpeakerValue {
		name := v1alpha2.RackObjectName(nodePtr.Labels[v1alpha2.LabelRack])
		a.racks.watch(ctx, name)
		var synced bool
		if rack, synced = a.racks.current(); !synced {
			logger.Info("Waiting for the rack object; keeping what is applied", "lbrack", name)
			return nil
		}
	} else {
		a.racks.close()
	}
	var conf v1alpha2.BgpConf
	confPtr := &conf
	if err := a.cache.Get(ctx, types.NamespacedName{Name: "default"}, &conf); err != nil {
		if !apierrors.IsNotFound(err) {
			return fmt.Errorf("reading BgpConf default: %w", err)
		}
		confPtr = nil
	}
	var peers v1alpha2.BgpPeerList
	if err := a.cache.List(ctx, &peers); err != nil {
		return fmt.Errorf("listing BgpPeers: %w", err)
	}
	var plans v1alpha2.LoadBalancerPlanList
	if err := a.cache.List(ctx, &plans); err != nil {
		return fmt.Errorf("listing LoadBalancerPlans: %w", err)
	}
	// The probes follow the rack's next hops and this node; next hops
	// whose kube-proxy fails are left out of what is announced.
	var selfAddr netip.Addr
	if nodePtr != nil {
		selfAddr, _ = nodeIPv4(nodePtr)
	}
	a.dataPath.setTargets(a.dataPath.probeTargets(a.opts.NodeName, selfAddr, rack))
	unhealthy := a.dataPath.unhealthy()
	announced, failOpen := healthyRack(rack, unhealthy)
	st, problems := Desired(nodePtr, confPtr, ptrs(peers.Items), announced, ptrs(plans.Items), a.readSecret(ctx))
	prev := a.snapshot()
	problems = append(problems, resolvePolicy(&st, confPtr, a.opts.Namespace, a.readConfigMap(ctx), prev.state.Global.Policy)...)
	if failOpen != prev.failOpen {
		if failOpen {
			logger.Info("Every next hop of the rack fails its data-path check; announcing them all (fail open)", "unhealthy", describeUnhealthy(unhealthy))
		} else {
			logger.Info("Next hops whose data path is unhealthy are left out again", "unhealthy", describeUnhealthy(unhealthy))
		}
	}
	apply := !a.applied || !st.sameBGP(prev.state)
	var applyErr error
	if apply {
		a.refused, applyErr = a.applyBGP(ctx, st)
	}
	problems = append(problems, refusedProblems(a.refused, func() []string {
		return affectedServices(a.opts.NodeName, rack, ptrs(plans.Items))
	})...)
	for _, p := range problems {
		if !slices.ContainsFunc(prev.problems, func(q Problem) bool { return q.Object == p.Object && q.Message == p.Message }) {
			logger.Info("Configuration problem", "object", p.Object, "reason", p.Reason, "problem", p.Message, "services", len(p.Services))
		}
	}
	var uid types.UID
	if nodePtr != nil {
		uid = nodePtr.UID
	}
	a.mu.Lock()
	changed := !a.reconciled || a.nodeUID != uid || !sameProblems(a.problems, problems) || a.failOpen != failOpen
	a.problems, a.nodeUID, a.reconciled, a.failOpen = problems, uid, true, failOpen
	a.mu.Unlock()
	if applyErr != nil {
		return applyErr
	}
	changed = changed || apply
	// What is only reported (rack generation, per-plan counts...) follows
	// too, without an Apply.
	a.mu.Lock()
	changed = changed || !reflect.DeepEqual(st, a.last)
	a.last, a.applied = st, true
	a.mu.Unlock()
	if changed {
		a.requestReport()
	}
	return nil
}

// sameProblems compares problems as the report shows them.
func sameProblems(a, b []Problem) bool {
	return slices.EqualFunc(a, b, func(x, y Problem) bool {
		return x.Object == y.Object && x.Reason == y.Reason && x.Message == y.Message && slices.Equal(x.Services, y.Services)
	})
}

func (a *Agent) readConfigMap(ctx context.Context) ConfigMapReader {
	return func(name string) (*v1.ConfigMap, error) {
		var cm v1.ConfigMap
		if err := a.cache.Get(ctx, types.NamespacedName{Namespace: a.opts.Namespace, Name: name}, &cm); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil
			}
			return nil, err
		}
		return &cm, nil
	}
}

func (a *Agent) readSecret(ctx context.Context) SecretReader {
	return secretReader(ctx, a.cache, a.opts.SecretsNamespace)
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// report writes this node's view: its entry of each BgpPeer status (as
// OpenELB does), and its LoadBalancerSpeaker, with server-side apply under
// a per-node field manager, so speakers never conflict. Each is written
// only when it changed: a steady speaker makes no API requests, however
// many Services it announces, and nothing here grows with them.
func (a *Agent) report(ctx context.Context) {
	logger := klog.FromContext(ctx)
	states, err := a.opts.Speaker.States(ctx)
	if err != nil {
		logger.V(2).Info("Reading BGP states failed", "err", err)
		return
	}
	snap := a.snapshot()
	now := time.Now()
	resetPeerMetrics()
	seen := map[string]bool{}
	peerAS := make(map[string]uint32, len(snap.state.Peers))
	for _, p := range snap.state.Peers {
		peerAS[p.Name] = p.AS
	}
	peerProblems := map[string]string{}
	for _, p := range snap.problems {
		if name, ok := strings.CutPrefix(p.Object, "BgpPeer/"); ok {
			peerProblems[name] = p.Message
		}
	}
	for _, s := range states {
		seen[s.Name] = true
		setPeerMetrics(s)
		a.reportPeer(ctx, s.Name, v1alpha2.PeerState{
			NeighborAddress:   s.Address,
			PeerAs:            peerAS[s.Name],
			LocalAs:           snap.state.Global.AS,
			RouterId:          snap.state.Global.RouterID.String(),
			SessionState:      s.State,
			AddPathNegotiated: s.AddPathNegotiated,
			NextHopSelf:       s.NextHopSelf,
			AdvertisedPaths:   int32(s.AdvertisedPaths),
			BfdState:          s.BFDState,
			Message:           cmp.Or(peerProblems[s.Name], prefixLimitMessage(s)),
		}, now)
	}
	// Peers this node should use but could not configure (bad password
	// Secret, invalid timers...) say why, under this node's key.
	for name, msg := range peerProblems {
		if !seen[name] {
			a.reportPeer(ctx, name, v1alpha2.PeerState{SessionState: sessionUnconfigured, Message: msg}, now)
		}
	}

	// The LoadBalancerSpeaker waits for both halves: a report written
	// before layer 2 knows its pools would withdraw the MACs this node
	// publishes, and the answering nodes would stop pointing at it.
	// Nor is it written while the Node is gone: applied without its owner
	// reference it would outlive the Node, which the garbage collector
	// deletes it with.
	l2, l2probs, l2known := a.l2.report()
	if !snap.reconciled || !l2known || snap.nodeUID == "" {
		return
	}
	want := speakerReport{NodeUID: snap.nodeUID, Status: buildStatus(reportInput{
		state: snap.state, problems: snap.problems, sessions: states, layer2: l2, l2probs: l2probs,
		dataPath: a.dataPath.status(snap.failOpen),
	}, a.sessions, now)}
	wrote, err := a.writer.write(ctx, want, now)
	switch {
	case err != nil:
		if msg := err.Error(); msg != a.lastErr {
			logger.Error(err, "Reporting LoadBalancerSpeaker failed; retrying")
			a.lastErr = msg
		}
	case wrote:
		a.lastErr = ""
		logger.V(4).Info("Reported LoadBalancerSpeaker", "announcing", want.Status.Announcing, "paths", want.Status.Paths,
			"sessionsEstablished", want.Status.SessionsEstablished, "problems", len(want.Status.Problems))
	}
}

// reportPeer writes this node's entry of a BgpPeer status when it differs
// from the cached one. LastTransitionTime moves only when the session state
// does.
func (a *Agent) reportPeer(ctx context.Context, name string, ps v1alpha2.PeerState, now time.Time) {
	var bp v1alpha2.BgpPeer
	if err := a.cache.Get(ctx, types.NamespacedName{Name: name}, &bp); err != nil {
		return
	}
	cur, has := bp.Status.NodesPeerStatus[a.opts.NodeName]
	ps.LastTransitionTime = cur.PeerState.LastTransitionTime
	if !has || cur.PeerState.SessionState != ps.SessionState || ps.LastTransitionTime == nil {
		ps.LastTransitionTime = &metav1.Time{Time: now.UTC().Truncate(time.Second)}
	}
	// Semantic: a time read back from the API server is UTC, ours is
	// local; plain DeepEqual would see a change every interval.
	if has && apiequality.Semantic.DeepEqual(cur.PeerState, ps) {
		return
	}
	// The advertised path count alone moves with every Service: it is
	// refreshed at most once per counts interval (see reportWriter).
	if has && time.Since(a.peerWritten[name]) < a.writer.interval() {
		counts := cur.PeerState
		counts.AdvertisedPaths = ps.AdvertisedPaths
		if apiequality.Semantic.DeepEqual(counts, ps) {
			return
		}
	}
	status := map[string]any{"nodesPeerStatus": map[string]any{a.opts.NodeName: map[string]any{"peerState": ps}}}
	body := map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(),
		"kind":       "BgpPeer",
		"metadata":   map[string]any{"name": name},
		"status":     status,
	}
	raw, err := json.Marshal(body)
	if err == nil {
		err = a.client.Status().Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, client.RawPatch(types.ApplyPatchType, raw),
			client.FieldOwner(a.fieldManager()), client.ForceOwnership)
	}
	if err != nil {
		klog.FromContext(ctx).V(2).Info("Reporting BgpPeer status failed", "bgppeer", name, "err", err)
		return
	}
	a.peerWritten[name] = time.Now()
}

func (a *Agent) fieldManager() string { return "openelb-speaker/" + a.opts.NodeName }

// applySpeaker writes this node's LoadBalancerSpeaker with server-side
// apply, force-owning what this speaker sets. The resource has no status
// subresource: the speaker is its only writer, so the object is applied
// whole, and creating it needs no second request.
func (a *Agent) applySpeaker(ctx context.Context, r speakerReport) error {
	meta := map[string]any{"name": a.opts.NodeName}
	if r.NodeUID != "" {
		// Owned by the Node, so it goes when the Node does.
		meta["ownerReferences"] = []any{map[string]any{"apiVersion": "v1", "kind": "Node", "name": a.opts.NodeName, "uid": r.NodeUID}}
	}
	raw, err := json.Marshal(map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(),
		"kind":       "LoadBalancerSpeaker",
		"metadata":   meta,
		"status":     r.Status,
	})
	if err != nil {
		return fmt.Errorf("encoding LoadBalancerSpeaker %s: %w", a.opts.NodeName, err)
	}
	if err := a.client.Patch(ctx, &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: a.opts.NodeName}},
		client.RawPatch(types.ApplyPatchType, raw), client.FieldOwner(a.fieldManager()), client.ForceOwnership); err != nil {
		return fmt.Errorf("applying LoadBalancerSpeaker %s: %w", a.opts.NodeName, err)
	}
	return nil
}

// Shutdown stops the speaker: with graceful restart configured the routes
// stay at the routers as stale while the agent restarts (no churn on a
// rolling update); otherwise they are withdrawn at once.
//
// Layer 2 stops answering and releases its Leases meanwhile, so another
// node takes over at once; then this node's LoadBalancerSpeaker says its
// pools are Stopped, so only the new answering node says answering.
func (a *Agent) Shutdown(ctx context.Context) error {
	l2done := make(chan struct{})
	go func() { defer close(l2done); a.l2.shutdown(ctx) }()
	err := a.opts.Speaker.Stop(ctx, a.snapshot().state.Global.GracefulRestart)
	<-l2done
	statusCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	a.reportLayer2Stopped(statusCtx)
	return err
}

// reportLayer2Stopped marks, on shutdown, this node's layer-2 pools as no
// longer answered. Best effort within ctx: a speaker that dies without it
// leaves its report until it runs again.
func (a *Agent) reportLayer2Stopped(ctx context.Context) {
	l2, _, known := a.l2.report()
	if !known {
		return
	}
	wrote, err := a.writer.update(ctx, time.Now(), func(r *speakerReport) { stoppedLayer2(r, l2) })
	if err != nil {
		klog.FromContext(ctx).Info("Reporting layer 2 stopped failed", "err", err)
	} else if wrote {
		klog.FromContext(ctx).V(2).Info("Reported layer 2 stopped", "pools", len(l2))
	}
}
