package cloud

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/planner"
)

// LabelExcludeFromLB is the well-known label that keeps a node out of
// load-balancer backends.
const LabelExcludeFromLB = planner.ExcludeLabel

// TaintToBeDeleted is the cluster autoscaler's taint on a node it is about
// to remove: like a cordon, it takes the node out of the next hops.
const TaintToBeDeleted = "ToBeDeletedByClusterAutoscaler"

// Rack condition types. Announced summarises; each planner problem reason
// is a condition of its own while it lasts.
const (
	ConditionAnnounced = "Announced"
	ConditionPlanned   = "Planned"
)

// rackRetry is how soon a failed rack sync is retried.
const rackRetry = time.Second

// rackLoop keeps one LoadBalancerRack per rack in step with the Nodes and
// BgpPeers. It is what makes a node event cheap: a node turning NotReady,
// being excluded, deleted or moved to another rack changes the spec of the
// racks it left and joined (one update each), and every speaker of those
// racks follows; no Service's plan is written. A burst of node events is
// coalesced into one pass, which runs at once (no delay: the routers'
// correction waits on it).
func (p *Provider) rackLoop(ctx context.Context) {
	logger := klog.FromContext(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.racksDirty:
		}
		switch err := p.syncRacks(ctx); {
		case err == nil:
		case apierrors.IsConflict(err):
			// The cache had not seen our previous write yet; its event
			// for that write queues the next pass, at once.
			logger.V(2).Info("A LoadBalancerRack changed since it was cached; writing it again once the cache has it", "err", err)
		default:
			logger.Error(err, "Writing LoadBalancerRacks failed; retrying")
			time.AfterFunc(rackRetry, func() { signal(p.racksDirty) })
		}
	}
}

// syncRacks writes what changed of every rack's object: spec (creating or
// deleting objects as racks appear and go), then conditions.
func (p *Provider) syncRacks(ctx context.Context) error {
	nodes, err := p.cluster.Nodes(ctx)
	if err != nil {
		return err
	}
	peers, err := p.cluster.BgpPeers(ctx)
	if err != nil {
		return err
	}
	existing, err := p.cluster.Racks(ctx)
	if err != nil {
		return err
	}
	gs, err := p.gracefulShutdown(ctx)
	if err != nil {
		return err
	}
	in := planner.Input{Nodes: make([]planner.Node, 0, len(nodes))}
	now := time.Now()
	draining := map[string]bool{}
	p.mu.Lock()
	for _, n := range nodes {
		pn := plannerNode(n, gs.taints)
		p.drainingFor(&pn, gs, now)
		in.Nodes = append(in.Nodes, pn)
		draining[pn.Name] = pn.Draining
	}
	maps.DeleteFunc(p.drainSince, func(name string, _ time.Time) bool { return !draining[name] })
	p.mu.Unlock()
	for _, bp := range peers {
		pp, err := plannerPeer(bp)
		if err != nil {
			klog.FromContext(ctx).Error(err, "BgpPeer has an invalid nodeSelector; it matches no speaker", "bgppeer", bp.Name)
			continue
		}
		in.Peers = append(in.Peers, pp)
	}
	byName := make(map[string]*v1alpha2.LoadBalancerRack, len(existing))
	for _, r := range existing {
		byName[r.Name] = r
	}
	var errs []error
	want := map[string]bool{}
	keys := p.selectorKeysSnapshot()
	for _, r := range planner.Racks(in) {
		desired := rackObject(r, keys)
		want[desired.Name] = true
		if err := p.writeRack(ctx, byName[desired.Name], desired, r); err != nil {
			errs = append(errs, fmt.Errorf("rack %q: %w", r.Name, err))
		}
	}
	for name, r := range byName {
		if want[name] {
			continue
		}
		if err := p.cluster.DeleteRack(ctx, r); err != nil && !apierrors.IsNotFound(err) {
			errs = append(errs, fmt.Errorf("deleting rack object %s: %w", name, err))
		}
	}
	// Conflicts only when every error is one (errors.Join matches a
	// conflict if any is, so it would hide a real failure behind one).
	for _, err := range errs {
		if !apierrors.IsConflict(err) {
			return fmt.Errorf("%d rack(s) not written: %w", len(errs), err)
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%d rack(s) not written: %w", len(errs), errs[0])
	}
	return nil
}

// writeRack creates or updates one rack object and its conditions, writing
// only what differs from the cached object. A condition change needs the
// object's current generation, so on a spec change the conditions follow
// when the cache delivers the update (its handler queues another pass).
func (p *Provider) writeRack(ctx context.Context, cur, desired *v1alpha2.LoadBalancerRack, r planner.Rack) error {
	switch {
	case cur == nil:
		err := p.cluster.CreateRack(ctx, desired)
		if apierrors.IsAlreadyExists(err) {
			return nil // the cache will deliver it and queue another pass
		}
		return err
	case !apiequality.Semantic.DeepEqual(cur.Spec, desired.Spec):
		upd := cur.DeepCopy()
		upd.Spec = desired.Spec
		return p.cluster.UpdateRack(ctx, upd)
	}
	conds := rackConditions(cur.Status.Conditions, r)
	if conditionsEqual(cur.Status.Conditions, conds) {
		return nil
	}
	return p.cluster.PatchRackConditions(ctx, cur, conds)
}

// rackObject is the LoadBalancerRack for a planned rack; its next hops
// carry the node labels of keys only (those the BGP node selectors read).
func rackObject(r planner.Rack, keys map[string]int) *v1alpha2.LoadBalancerRack {
	obj := &v1alpha2.LoadBalancerRack{
		ObjectMeta: metav1.ObjectMeta{Name: v1alpha2.RackObjectName(r.Name)},
		Spec: v1alpha2.LoadBalancerRackSpec{
			Rack:     r.Name,
			Speakers: r.Speakers,
		},
	}
	for _, pr := range r.Peers {
		obj.Spec.Peers = append(obj.Spec.Peers, v1alpha2.PlanPeer{Name: pr.Name, Address: pr.Address, AS: pr.AS})
	}
	for _, nh := range r.NextHops {
		hop := v1alpha2.RackNextHop{Node: nh.Node, GracefulShutdown: nh.GracefulShutdown}
		for _, a := range nh.Addresses {
			hop.Addresses = append(hop.Addresses, a.String())
		}
		for k, v := range nh.Labels {
			if keys[k] > 0 {
				if hop.Labels == nil {
					hop.Labels = map[string]string{}
				}
				hop.Labels[k] = v
			}
		}
		obj.Spec.NextHops = append(obj.Spec.NextHops, hop)
	}
	return obj
}

// noteSelectorKeys records the node label keys a Service's (or, with
// key "eip/<name>", a pool's) BGP node selector reads; a change of the
// set of keys read by anyone queues a rack pass, so the racks carry
// exactly those labels.
func (p *Provider) noteSelectorKeys(owner string, keys []string) {
	p.mu.Lock()
	old := p.selectorKeysOf[owner]
	if slices.Equal(old, keys) {
		p.mu.Unlock()
		return
	}
	changed := false
	for _, k := range old {
		if p.selectorKeys[k]--; p.selectorKeys[k] <= 0 {
			delete(p.selectorKeys, k)
			changed = true
		}
	}
	for _, k := range keys {
		if p.selectorKeys[k]++; p.selectorKeys[k] == 1 {
			changed = true
		}
	}
	if len(keys) == 0 {
		delete(p.selectorKeysOf, owner)
	} else {
		p.selectorKeysOf[owner] = keys
	}
	p.mu.Unlock()
	if changed {
		signal(p.racksDirty)
	}
}

// selectorKeysSnapshot copies the keys read by node selectors.
func (p *Provider) selectorKeysSnapshot() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return maps.Clone(p.selectorKeys)
}

// rackConditions: one condition per problem reason, True while it lasts,
// plus Announced. They carry no observedGeneration and their messages no
// counts that move with every node event, so a node flip costs one spec
// write and no condition write; they are computed from the same snapshot
// as the spec, so they cannot describe another one.
func rackConditions(existing []metav1.Condition, r planner.Rack) []metav1.Condition {
	summary := metav1.Condition{Type: ConditionAnnounced, Status: metav1.ConditionTrue, Reason: ConditionAnnounced,
		Message: "the rack's speakers announce every Service's BGP addresses to its peers with its next hops"}
	if !r.Announced() {
		summary.Status, summary.Reason = metav1.ConditionFalse, "NotAnnounced"
		summary.Message = "the rack's routers do not learn the Services from it: see the other conditions"
	}
	return problemConditions(existing, r.Problems, summary, 0)
}

// problemConditions turns planning problems into conditions: one condition
// per problem reason, True while the problem lasts, plus the summary
// condition, whose reason becomes the first problem's when it is False.
func problemConditions(existing []metav1.Condition, problems []planner.Problem, summary metav1.Condition, generation int64) []metav1.Condition {
	conds := slices.Clone(existing)
	byReason := map[string][]string{}
	for _, pr := range problems {
		byReason[pr.Reason] = append(byReason[pr.Reason], pr.Message)
	}
	for _, c := range existing {
		if c.Type != summary.Type {
			if _, still := byReason[c.Type]; !still {
				meta.RemoveStatusCondition(&conds, c.Type)
			}
		}
	}
	reasons := make([]string, 0, len(byReason))
	for r := range byReason {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		meta.SetStatusCondition(&conds, metav1.Condition{
			Type: r, Status: metav1.ConditionTrue, Reason: r,
			Message: strings.Join(byReason[r], "; "), ObservedGeneration: generation,
		})
	}
	if summary.Status == metav1.ConditionFalse && len(reasons) > 0 {
		summary.Reason = reasons[0]
	}
	summary.ObservedGeneration = generation
	meta.SetStatusCondition(&conds, summary)
	return conds
}

// conditionsEqual ignores transition times.
func conditionsEqual(a, b []metav1.Condition) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		o := meta.FindStatusCondition(b, c.Type)
		if o == nil || o.Status != c.Status || o.Reason != c.Reason || o.Message != c.Message || o.ObservedGeneration != c.ObservedGeneration {
			return false
		}
	}
	return true
}

// drainSettings is BgpConf default's spec.gracefulShutdown as the racks
// use it.
type drainSettings struct {
	enabled bool
	delay   time.Duration
	taints  []string
}

func (p *Provider) gracefulShutdown(ctx context.Context) (drainSettings, error) {
	confs, err := p.cluster.BgpConfs(ctx)
	if err != nil {
		return drainSettings{}, err
	}
	for _, c := range confs {
		if c.Name != "default" || c.Spec.GracefulShutdown == nil || !c.Spec.GracefulShutdown.Enabled {
			continue
		}
		g := c.Spec.GracefulShutdown
		d := time.Duration(g.DelaySeconds) * time.Second
		if g.DelaySeconds <= 0 {
			d = v1alpha2.DefaultGracefulShutdownDelay * time.Second
		}
		return drainSettings{enabled: true, delay: d, taints: g.Taints}, nil
	}
	return drainSettings{}, nil
}

// drainingFor marks a draining node as within its graceful-shutdown delay
// (counted from the first pass that saw it draining: a cordon carries no
// time; a CCM restart starts the delay again, which only lengthens it)
// and schedules the pass that withdraws it. Called with p.mu held.
func (p *Provider) drainingFor(n *planner.Node, gs drainSettings, now time.Time) {
	if !n.Draining || !gs.enabled {
		return
	}
	since, ok := p.drainSince[n.Name]
	if !ok {
		since = now
		p.drainSince[n.Name] = now
	}
	if left := since.Add(gs.delay).Sub(now); left > 0 {
		n.GracefulShutdown = true
		if !ok {
			time.AfterFunc(left+10*time.Millisecond, func() { signal(p.racksDirty) })
		}
	}
}

func plannerNode(n *v1.Node, drainTaints []string) planner.Node {
	pn := planner.Node{
		Name:     n.Name,
		Rack:     n.Labels[v1alpha2.LabelRack],
		Labels:   n.Labels,
		Deleting: n.DeletionTimestamp != nil,
		Speaker:  n.Labels[v1alpha2.LabelSpeaker] == v1alpha2.LabelSpeakerValue,
	}
	_, pn.Excluded = n.Labels[LabelExcludeFromLB]
	pn.Draining = n.Spec.Unschedulable || slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool {
		return t.Key == TaintToBeDeleted || slices.Contains(drainTaints, t.Key)
	})
	for _, c := range n.Status.Conditions {
		if c.Type == v1.NodeReady {
			pn.Ready = c.Status == v1.ConditionTrue
		}
	}
	for _, a := range n.Status.Addresses {
		if a.Type != v1.NodeInternalIP {
			continue
		}
		if ip, err := netip.ParseAddr(a.Address); err == nil {
			pn.Addresses = append(pn.Addresses, ip.Unmap())
		}
	}
	return pn
}

func plannerPeer(bp *v1alpha2.BgpPeer) (planner.Peer, error) {
	pp := planner.Peer{Name: bp.Name}
	if c := bp.Spec.Conf; c != nil {
		pp.Address, pp.AS = c.NeighborAddress, c.PeerAs
	}
	if bp.Spec.NodeSelector != nil {
		sel, err := metav1.LabelSelectorAsSelector(bp.Spec.NodeSelector)
		if err != nil {
			return pp, fmt.Errorf("BgpPeer %s: %w", bp.Name, err)
		}
		pp.Matches = func(l map[string]string) bool { return sel.Matches(labels.Set(l)) }
	}
	return pp, nil
}

// endpointNodes lists, sorted, the nodes with a ready endpoint of the
// Service.
func (p *Provider) endpointNodes(ctx context.Context, svc *v1.Service) ([]string, error) {
	eps, err := p.cluster.EndpointSlices(ctx, svc.Namespace, svc.Name)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, es := range eps {
		for _, ep := range es.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			out = append(out, *ep.NodeName)
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}
