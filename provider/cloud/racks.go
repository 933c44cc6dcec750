package cloud

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/planner"
)

// LabelExcludeFromLB is the well-known label that keeps a node out of
// load-balancer backends.
const LabelExcludeFromLB = "node.kubernetes.io/exclude-from-external-load-balancers"

// topology is one snapshot of nodes and peers shared by every plan computed
// in a pass, so a node change re-plans N Services from one list.
type topology struct {
	nodes []planner.Node
	peers []planner.Peer
}

// topology returns the current snapshot, building it when a node or peer
// change invalidated it. A snapshot built while another change arrived is
// used once but not kept (the generation moved on).
func (p *Provider) topology(ctx context.Context) (*topology, error) {
	p.topoMu.Lock()
	t, gen := p.topo, p.topoGen
	p.topoMu.Unlock()
	if t != nil {
		return t, nil
	}
	t, err := p.buildTopology(ctx)
	if err != nil {
		return nil, err
	}
	p.topoMu.Lock()
	if p.topoGen == gen {
		p.topo = t
	}
	p.topoMu.Unlock()
	return t, nil
}

// invalidateTopology drops the snapshot after a node or BgpPeer change.
func (p *Provider) invalidateTopology() {
	p.topoMu.Lock()
	p.topo = nil
	p.topoGen++
	p.topoMu.Unlock()
}

func (p *Provider) buildTopology(ctx context.Context) (*topology, error) {
	nodes, err := p.cluster.Nodes(ctx)
	if err != nil {
		return nil, err
	}
	peers, err := p.cluster.BgpPeers(ctx)
	if err != nil {
		return nil, err
	}
	t := &topology{}
	for _, n := range nodes {
		t.nodes = append(t.nodes, plannerNode(n))
	}
	for _, bp := range peers {
		pp, err := plannerPeer(bp)
		if err != nil {
			klog.FromContext(ctx).Error(err, "BgpPeer has an invalid nodeSelector; it matches no speaker", "bgppeer", bp.Name)
			continue
		}
		t.peers = append(t.peers, pp)
	}
	return t, nil
}

func plannerNode(n *v1.Node) planner.Node {
	pn := planner.Node{
		Name:     n.Name,
		Rack:     n.Labels[v1alpha2.LabelRack],
		Labels:   n.Labels,
		Deleting: n.DeletionTimestamp != nil,
		Speaker:  n.Labels[v1alpha2.LabelSpeaker] == v1alpha2.LabelSpeakerValue,
	}
	_, pn.Excluded = n.Labels[LabelExcludeFromLB]
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

// endpointNodes lists the nodes with a ready endpoint of the Service.
func (p *Provider) endpointNodes(ctx context.Context, svc *v1.Service) map[string]bool {
	eps, err := p.cluster.EndpointSlices(ctx, svc.Namespace, svc.Name)
	if err != nil {
		return nil
	}
	out := map[string]bool{}
	for _, es := range eps {
		for _, ep := range es.Endpoints {
			if ep.NodeName == nil || (ep.Conditions.Ready != nil && !*ep.Conditions.Ready) {
				continue
			}
			out[*ep.NodeName] = true
		}
	}
	return out
}

// racks computes the per-rack assignment of a Service's BGP addresses.
func (p *Provider) racks(ctx context.Context, svc *v1.Service, addrs []v1alpha2.PlanAddress, topo *topology) ([]v1alpha2.RackPlan, []planner.Problem) {
	in := planner.Input{
		Local: svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
		Nodes: topo.nodes,
		Peers: topo.peers,
	}
	for _, a := range addrs {
		if a.Protocol != v1alpha2.ProtocolBGP {
			continue
		}
		if ip, err := netip.ParseAddr(a.IP); err == nil {
			in.Addresses = append(in.Addresses, ip)
		}
	}
	if len(in.Addresses) == 0 {
		return nil, nil
	}
	if in.Local {
		in.EndpointNodes = p.endpointNodes(ctx, svc)
	}
	plan := planner.Compute(in)
	var out []v1alpha2.RackPlan
	for _, r := range plan.Racks {
		rp := v1alpha2.RackPlan{Name: r.Name, Speakers: r.Speakers}
		for _, pr := range r.Peers {
			rp.Peers = append(rp.Peers, v1alpha2.PlanPeer{Name: pr.Name, Address: pr.Address, AS: pr.AS})
		}
		for _, nh := range r.NextHops {
			rp.NextHops = append(rp.NextHops, nh.String())
		}
		out = append(out, rp)
	}
	return out, plan.Problems
}

// planConditions turns planning problems into plan conditions: one
// condition per problem reason, True while the problem lasts, plus Planned.
func planConditions(existing []metav1.Condition, problems []planner.Problem, generation int64) []metav1.Condition {
	conds := slices.Clone(existing)
	byReason := map[string][]string{}
	for _, pr := range problems {
		byReason[pr.Reason] = append(byReason[pr.Reason], pr.Message)
	}
	for _, c := range existing {
		if c.Type != "Planned" {
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
	planned := metav1.Condition{Type: "Planned", Status: metav1.ConditionTrue, Reason: "Planned",
		Message: "every rack with eligible nodes has speakers and peers", ObservedGeneration: generation}
	if len(reasons) > 0 {
		planned.Status, planned.Reason = metav1.ConditionFalse, reasons[0]
		planned.Message = "see the other conditions: " + strings.Join(reasons, ", ")
	}
	meta.SetStatusCondition(&conds, planned)
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
