package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
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
)

// Options configure the agent.
type Options struct {
	NodeName  string
	Namespace string // where BgpPeer password Secrets live (the speaker's own)
	Speaker   bgp.Speaker
	// Layer2 tunes ARP/NDP answering and its leader election.
	Layer2 Layer2Options
	// StatusInterval is how often session states are checked and, when
	// they changed, reported. Default 2s: the check is in-process and a
	// report writes only what changed, so a steady speaker costs the API
	// server nothing.
	StatusInterval time.Duration
}

// Agent reconciles this node's speaker with the cluster.
type Agent struct {
	opts    Options
	cache   ctrlcache.Cache
	client  client.Client
	trigger chan struct{}
	last    State
	applied bool
	// problems are the configuration problems of the last reconcile, by
	// object ("BgpPeer/leaf1"), reported in that object's status.
	problems map[string]string
	// mu guards last and problems, shared with the report goroutine.
	mu        sync.Mutex
	reportNow chan struct{}
	l2        *layer2Manager
}

// New builds the agent; Run starts it.
func New(cfg *rest.Config, opts Options) (*Agent, error) {
	RegisterMetrics()
	if opts.StatusInterval <= 0 {
		opts.StatusInterval = 2 * time.Second
	}
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	scheme := apischeme.New()
	c, err := ctrlcache.New(cfg, ctrlcache.Options{
		Scheme:                       scheme,
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		DefaultTransform:             ctrlcache.TransformStripManagedFields(),
		ByObject: map[client.Object]ctrlcache.ByObject{
			// Only this node, and only Secrets of the speaker's namespace:
			// the agent reads no more than it needs (and RBAC allows).
			&v1.Node{}:   {Field: fields.OneTermEqualSelector("metadata.name", opts.NodeName)},
			&v1.Secret{}: {Namespaces: map[string]ctrlcache.Config{opts.Namespace: {}}},
			// Layer-2 election Leases live in the speaker's namespace.
			&coordinationv1.Lease{}: {Namespaces: map[string]ctrlcache.Config{opts.Namespace: {}}},
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
	a := &Agent{opts: opts, cache: c, client: cl, trigger: make(chan struct{}, 1), reportNow: make(chan struct{}, 1)}
	if a.l2, err = newLayer2Manager(opts.NodeName, opts.Namespace, opts.Layer2, c, cs.CoordinationV1(), a.requestReport); err != nil {
		return nil, err
	}
	return a, nil
}

// Run reconciles until ctx ends. When the API server is unreachable the
// caches keep their last content and the speaker keeps advertising what it
// last applied: nothing is withdrawn for lack of news.
func (a *Agent) Run(ctx context.Context) error {
	logger := klog.FromContext(ctx).WithValues("node", a.opts.NodeName)
	for _, obj := range []client.Object{&v1.Node{}, &v1alpha2.BgpConf{}, &v1alpha2.BgpPeer{}, &v1alpha2.LoadBalancerPlan{}, &v1.Secret{}} {
		inf, err := a.cache.GetInformer(ctx, obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", obj, err)
		}
		kick := func(any) { a.kick() }
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick,
		}); err != nil {
			return err
		}
	}
	if err := a.l2.register(ctx, a.cache); err != nil {
		return err
	}
	go func() { _ = a.cache.Start(ctx) }()
	if !a.cache.WaitForCacheSync(ctx) {
		return fmt.Errorf("caches did not sync: %w", ctx.Err())
	}
	logger.Info("Speaker agent synced; reconciling")
	go a.reportLoop(ctx)
	go a.l2.run(ctx, a.cache)
	a.kick()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-a.trigger:
			// Coalesce bursts of changes into one Apply.
			time.Sleep(5 * time.Millisecond)
			if err := a.reconcile(ctx); err != nil {
				logger.Error(err, "Reconcile failed; retrying")
				time.AfterFunc(time.Second, a.kick)
			}
		}
	}
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
	global    bgp.Global
	peers     []bgp.Peer
	planPaths map[string]int
	problems  map[string]string
}

func (a *Agent) snapshot() snapshot {
	a.mu.Lock()
	defer a.mu.Unlock()
	return snapshot{global: a.last.Global, peers: a.last.Peers, planPaths: a.last.PlanPaths, problems: a.problems}
}

func (a *Agent) kick() {
	select {
	case a.trigger <- struct{}{}:
	default:
	}
}

func (a *Agent) reconcile(ctx context.Context) error {
	var node v1.Node
	nodePtr := &node
	if err := a.cache.Get(ctx, types.NamespacedName{Name: a.opts.NodeName}, &node); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		nodePtr = nil
	}
	var conf v1alpha2.BgpConf
	confPtr := &conf
	if err := a.cache.Get(ctx, types.NamespacedName{Name: "default"}, &conf); err != nil {
		if !apierrors.IsNotFound(err) {
			return err
		}
		confPtr = nil
	}
	var peers v1alpha2.BgpPeerList
	if err := a.cache.List(ctx, &peers); err != nil {
		return err
	}
	var plans v1alpha2.LoadBalancerPlanList
	if err := a.cache.List(ctx, &plans); err != nil {
		return err
	}
	st, problems := Desired(nodePtr, confPtr, ptrs(peers.Items), ptrs(plans.Items), a.readSecret(ctx))
	probs := make(map[string]string, len(problems))
	for _, p := range problems {
		if a.snapshot().problems[p.Object] != p.Message {
			klog.FromContext(ctx).Info("Configuration problem", "object", p.Object, "problem", p.Message)
		}
		probs[p.Object] = p.Message
	}
	a.mu.Lock()
	a.problems = probs
	a.mu.Unlock()
	if a.applied && reflect.DeepEqual(st, a.last) {
		return nil
	}
	if !st.Enabled {
		if err := a.opts.Speaker.Stop(ctx, false); err != nil {
			metricApplies.WithLabelValues("error").Inc()
			return err
		}
	} else if err := a.opts.Speaker.Apply(ctx, st.Global, st.Peers, st.Paths); err != nil {
		metricApplies.WithLabelValues("error").Inc()
		return err
	}
	metricApplies.WithLabelValues("ok").Inc()
	a.mu.Lock()
	a.last, a.applied = st, true
	a.mu.Unlock()
	a.requestReport()
	return nil
}

func (a *Agent) readSecret(ctx context.Context) SecretReader {
	return func(name, key string) (string, error) {
		var s v1.Secret
		if err := a.cache.Get(ctx, types.NamespacedName{Namespace: a.opts.Namespace, Name: name}, &s); err != nil {
			return "", err
		}
		v, ok := s.Data[key]
		if !ok {
			return "", fmt.Errorf("no key %q", key)
		}
		return string(v), nil
	}
}

func ptrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// report writes this node's view into BgpPeer and plan statuses with
// server-side apply under a per-node field manager, so speakers never
// conflict and each owns only its own key. It writes only what changed
// against the cached objects (which carry the statuses): a steady speaker
// makes no API requests, however many Services it announces.
func (a *Agent) report(ctx context.Context) {
	logger := klog.FromContext(ctx)
	states, err := a.opts.Speaker.States(ctx)
	if err != nil {
		logger.V(2).Info("Reading BGP states failed", "err", err)
		return
	}
	snap := a.snapshot()
	now := time.Now()
	var peerNames, nextHopSelf []string
	metricSessionUp.Reset()
	metricAdvertised.Reset()
	seen := map[string]bool{}
	peerAS := make(map[string]uint32, len(snap.peers))
	for _, p := range snap.peers {
		peerAS[p.Name] = p.AS
	}
	for _, s := range states {
		seen[s.Name] = true
		up := 0.0
		peerNames = append(peerNames, s.Name)
		if s.State == "established" {
			up = 1
		}
		// Remembered while the session is down (the speaker keeps the peer
		// in its next-hop-self set), so a flap does not rewrite plans.
		if s.NextHopSelf {
			nextHopSelf = append(nextHopSelf, s.Name)
		}
		metricSessionUp.WithLabelValues(s.Name).Set(up)
		metricAdvertised.WithLabelValues(s.Name).Set(float64(s.AdvertisedPaths))
		metricUpdatesSent.WithLabelValues(s.Name).Set(float64(s.UpdatesSent))
		a.reportPeer(ctx, s.Name, v1alpha2.PeerState{
			NeighborAddress:   s.Address,
			PeerAs:            peerAS[s.Name],
			LocalAs:           snap.global.AS,
			RouterId:          snap.global.RouterID.String(),
			SessionState:      s.State,
			AddPathNegotiated: s.AddPathNegotiated,
			NextHopSelf:       s.NextHopSelf,
			AdvertisedPaths:   int32(s.AdvertisedPaths),
			BfdState:          s.BFDState,
			Message:           snap.problems["BgpPeer/"+s.Name],
		}, now)
	}
	// Peers this node should use but could not configure (bad password
	// Secret, invalid timers...) say why, under this node's key.
	for obj, msg := range snap.problems {
		if name, ok := strings.CutPrefix(obj, "BgpPeer/"); ok && !seen[name] {
			a.reportPeer(ctx, name, v1alpha2.PeerState{SessionState: "unconfigured", Message: msg}, now)
		}
	}

	var plans v1alpha2.LoadBalancerPlanList
	if err := a.cache.List(ctx, &plans); err != nil {
		logger.V(2).Info("Listing plans failed", "err", err)
		return
	}
	// One entry per plan and node, from both halves: BGP paths and the
	// layer-2 answering state (a dual-stack Service may have both).
	l2, l2known := a.l2.planStatus()
	for i := range plans.Items {
		p := &plans.Items[i]
		key := p.Namespace + "/" + p.Name
		cur, has := p.Status.Nodes[a.opts.NodeName]
		n, mine := snap.planPaths[key]
		l2s, answers := l2[key]
		if !mine && !answers {
			if has && (l2known || !hasLayer2(p)) {
				// No longer a speaker of this plan: drop this node's key.
				a.writePlanStatus(ctx, p, nil)
			}
			continue
		}
		var want v1alpha2.NodeAnnouncement
		if mine {
			want = planEntry(n, peerNames, nextHopSelf)
		}
		if answers {
			want = withLayer2(want, mine, l2s)
		}
		if has && sameEntry(want, cur) {
			continue
		}
		want.LastUpdate = metav1.NewTime(now.UTC().Truncate(time.Second))
		a.writePlanStatus(ctx, p, &want)
	}
}

// planEntry says whether and how this node advertises a plan's n paths.
// It depends on configuration (peers, their ADD-PATH capability), never on
// the sessions' current state: a session flap is one BgpPeer status change
// per node, not one plan status write per Service (10,000 writes for a
// node announcing 10,000 Services). The BgpPeer status says whether the
// sessions are up.
func planEntry(n int, peers []string, nextHopSelf []string) v1alpha2.NodeAnnouncement {
	switch {
	case len(peers) == 0:
		return v1alpha2.NodeAnnouncement{Reason: "NoPeers", Message: "no BgpPeer matches this node"}
	case len(nextHopSelf) > 0:
		return v1alpha2.NodeAnnouncement{Advertised: true, Reason: "NoAddPath",
			Message: fmt.Sprintf("to %s: %s did not negotiate ADD-PATH and gets one path with this node as next hop instead of %d",
				strings.Join(peers, ","), strings.Join(nextHopSelf, ","), n)}
	default:
		return v1alpha2.NodeAnnouncement{Advertised: true, Reason: "Advertised",
			Message: fmt.Sprintf("%d path(s) to %s (session state: BgpPeer status)", n, strings.Join(peers, ","))}
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
	status := map[string]any{"nodesPeerStatus": map[string]any{a.opts.NodeName: map[string]any{"peerState": ps}}}
	if err := a.applyStatus(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: name}}, "BgpPeer", status); err != nil {
		klog.FromContext(ctx).V(2).Info("Reporting BgpPeer status failed", "bgppeer", name, "err", err)
	}
}

// writePlanStatus applies this node's entry of a plan's status; nil
// removes it (server-side apply drops fields its manager no longer sets).
func (a *Agent) writePlanStatus(ctx context.Context, p *v1alpha2.LoadBalancerPlan, entry *v1alpha2.NodeAnnouncement) {
	klog.FromContext(ctx).V(4).Info("Writing plan status", "plan", klog.KObj(p), "entry", entry, "cached", p.Status.Nodes[a.opts.NodeName])
	status := map[string]any{}
	if entry != nil {
		status["nodes"] = map[string]any{a.opts.NodeName: entry}
	}
	if err := a.applyStatus(ctx, &v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}, "LoadBalancerPlan", status); err != nil {
		klog.FromContext(ctx).V(2).Info("Reporting plan status failed", "plan", klog.KObj(p), "err", err)
	}
}

func (a *Agent) applyStatus(ctx context.Context, obj client.Object, kind string, status map[string]any) error {
	body := map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(),
		"kind":       kind,
		"metadata":   map[string]any{"name": obj.GetName()},
		"status":     status,
	}
	if ns := obj.GetNamespace(); ns != "" {
		body["metadata"].(map[string]any)["namespace"] = ns
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return err
	}
	return a.client.Status().Patch(ctx, obj, client.RawPatch(types.ApplyPatchType, raw),
		client.FieldOwner("openelb-speaker/"+a.opts.NodeName), client.ForceOwnership)
}

// Shutdown stops the speaker: with graceful restart configured the routes
// stay at the routers as stale while the agent restarts (no churn on a
// rolling update); otherwise they are withdrawn at once.
//
// Layer 2 stops answering and releases its Leases meanwhile, so another
// node takes over at once; then the plans it answered for say so.
func (a *Agent) Shutdown(ctx context.Context) error {
	l2done := make(chan struct{})
	go func() { defer close(l2done); a.l2.shutdown(ctx) }()
	err := a.opts.Speaker.Stop(ctx, a.snapshot().global.GracefulRestart)
	<-l2done
	statusCtx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	a.reportLayer2Stopped(statusCtx)
	return err
}
