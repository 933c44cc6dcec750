package cloud

import (
	"context"
	"fmt"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/planner"
)

// ReasonNoLocalEndpoints is the plan condition of an externalTrafficPolicy
// Local Service without a ready endpoint: nothing announces it.
const ReasonNoLocalEndpoints = "NoLocalEndpoints"

// ReasonInvalidBGPAttributes is the plan condition of a Service whose BGP
// attribute annotations (or whose pool's spec.bgp) hold a value the
// speakers cannot announce: that value is left out, the rest announced.
const ReasonInvalidBGPAttributes = "InvalidBGPAttributes"

// ReasonInvalidLayer2Interface: a Service's
// openelb.kubesphere.io/layer2-interface annotation does not parse; its
// addresses are answered on the Eip's interfaces.
const ReasonInvalidLayer2Interface = "InvalidLayer2Interface"

// serviceBGPAttributes are what a Service's addresses of pool pl are
// announced with: the pool's spec.bgp with the Service's annotations
// applied (v1alpha2.ServiceBGPAttributes).
func serviceBGPAttributes(pl *pool, svc *v1.Service) (*v1alpha2.BGPAttributes, []error) {
	var base *v1alpha2.BGPAttributes
	if pl != nil && pl.eip.Spec.BGP != nil {
		base = &pl.eip.Spec.BGP.BGPAttributes
	}
	return v1alpha2.ServiceBGPAttributes(base, svc.Annotations)
}

// planWorker writes LoadBalancerPlans off the allocation path: a Service
// gets its address as soon as the API server records the claim, and the
// plan follows within milliseconds. Plans are also rewritten whenever the
// Service, its endpoints (externalTrafficPolicy Local) or a pool changes,
// and after a restart every Service is re-ensured, so a plan is never
// lost. Node and BgpPeer changes never touch plans: they are the racks'
// (racks.go).
func (p *Provider) planWorker(ctx context.Context) {
	for {
		key, quit := p.planQueue.Get()
		if quit {
			return
		}
		err := p.syncPlan(ctx, key)
		if err != nil {
			klog.FromContext(ctx).V(2).Info("Writing plan failed; retrying", "service", key, "err", err)
			p.planQueue.AddRateLimited(key)
		} else {
			p.planQueue.Forget(key)
		}
		p.planQueue.Done(key)
	}
}

func (p *Provider) syncPlan(ctx context.Context, key string) error {
	ns, name, ok := strings.Cut(key, "/")
	if !ok {
		return nil
	}
	svc, err := p.cluster.Service(ctx, ns, name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	existing, err := p.cluster.Plan(ctx, ns, name)
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	if err != nil {
		existing = nil
	}
	var desired *v1alpha2.LoadBalancerPlan
	var problems []planner.Problem
	if svc != nil && p.wantsLoadBalancer(svc) {
		if desired, problems, err = p.desiredPlan(ctx, svc); err != nil {
			return err
		}
	}
	// The racks carry the node labels the Service's node selector reads.
	var keys []string
	if desired != nil {
		for _, a := range desired.Spec.Addresses {
			if a.BGP != nil {
				keys = append(keys, v1alpha2.SelectorKeys(a.BGP.NodeSelector)...)
			}
		}
		slices.Sort(keys)
		keys = slices.Compact(keys)
	}
	p.noteSelectorKeys(key, keys)
	switch {
	case desired == nil && existing == nil:
		p.rememberPlan(key, nil)
		return nil
	case desired == nil:
		p.rememberPlan(key, nil)
		err := p.cluster.DeletePlan(ctx, existing)
		if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
			return nil
		}
		return err
	case existing == nil:
		if p.wrotePlan(key, &desired.Spec) {
			return nil // created moments ago; the cache will deliver it
		}
		err := p.cluster.CreatePlan(ctx, desired)
		if err == nil {
			p.rememberPlan(key, &desired.Spec)
		}
		if apierrors.IsAlreadyExists(err) {
			return nil // the cache will deliver it and requeue
		}
		// Conditions are written once the cache has the plan (its handler
		// requeues the Service).
		return err
	case existing.Spec.ServiceUID != desired.Spec.ServiceUID:
		// A plan of an earlier Service with the same name; replace it.
		if err := p.cluster.DeletePlan(ctx, existing); err != nil && !apierrors.IsNotFound(err) {
			return err
		}
		return fmt.Errorf("replaced stale plan %s, recreating", key)
	}
	// The cache has the plan now: what was remembered of its creation is
	// no longer needed (10,000 specs are several MiB).
	p.rememberPlan(key, nil)
	if !apiequality.Semantic.DeepEqual(existing.Spec, desired.Spec) {
		upd := existing.DeepCopy()
		upd.Spec = desired.Spec
		if err := p.cluster.UpdatePlan(ctx, upd); err != nil {
			return err
		}
	}
	// Problems live in status conditions. A plan without problems and
	// without earlier conditions costs no write.
	if len(problems) == 0 && len(existing.Status.Conditions) == 0 {
		return nil
	}
	summary := metav1.Condition{Type: ConditionPlanned, Status: metav1.ConditionTrue, Reason: ConditionPlanned,
		Message: "announced as its racks say (kubectl get lbrack)"}
	if len(problems) > 0 {
		summary.Status, summary.Message = metav1.ConditionFalse, "see the other conditions"
	}
	conds := problemConditions(existing.Status.Conditions, problems, summary, existing.Generation)
	if conditionsEqual(existing.Status.Conditions, conds) {
		return nil
	}
	return p.cluster.PatchPlanConditions(ctx, existing, conds)
}

// desiredPlan is the plan for a Service, from its confirmed addresses and
// their pools; nil when it holds none. What it reads is the Service's own:
// addresses, pools, traffic policy and, for Local, its endpoints' nodes.
func (p *Provider) desiredPlan(ctx context.Context, svc *v1.Service) (*v1alpha2.LoadBalancerPlan, []planner.Problem, error) {
	key := serviceKey(svc)
	addrs := p.confirmedAddrs(key)
	if len(addrs) == 0 {
		return nil, nil, nil
	}
	pools := map[string]string{}
	for _, a := range p.alloc.Lookup(key) {
		pools[a.Addr.String()] = a.Pool
	}
	set := p.pools.Load()
	plan := &v1alpha2.LoadBalancerPlan{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: svc.Namespace,
			Name:      svc.Name,
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: "v1", Kind: "Service", Name: svc.Name, UID: svc.UID,
				Controller: ptr.To(true),
			}},
		},
		Spec: v1alpha2.LoadBalancerPlanSpec{
			ServiceUID:            svc.UID,
			ExternalTrafficPolicy: string(svc.Spec.ExternalTrafficPolicy),
		},
	}
	var attrProblems []string
	var ifaceProblem string
	for _, a := range addrs {
		pa := v1alpha2.PlanAddress{IP: a.String(), Pool: pools[a.String()]}
		if pl := set.get(pa.Pool); pl != nil {
			pa.Protocol = pl.eip.EffectiveProtocol()
			if pa.Protocol == v1alpha2.ProtocolLayer2 {
				pa.Interface = strings.Join(pl.eip.Layer2Interfaces(), ",")
				if ann, ok := svc.Annotations[v1alpha2.AnnotationLayer2Interface]; ok {
					if list, err := v1alpha2.ParseInterfaceList(ann); err != nil {
						ifaceProblem = fmt.Sprintf("annotation %s: %v", v1alpha2.AnnotationLayer2Interface, err)
					} else {
						pa.Interface = strings.Join(list, ",")
					}
				}
			}
		}
		if pa.Protocol == v1alpha2.ProtocolBGP {
			// An aggregate is shared by the pool's Cluster Services; a
			// Local Service's next hops are its own (see EipBGP).
			if pl := set.get(pa.Pool); pl != nil && svc.Spec.ExternalTrafficPolicy != v1.ServiceExternalTrafficPolicyLocal {
				if agg, ok := pl.eip.Spec.BGP.AggregatePrefix(a); ok {
					pa.Prefix = agg.String()
				}
			}
			attrs, errs := serviceBGPAttributes(set.get(pa.Pool), svc)
			pa.BGP = attrs
			for _, err := range errs {
				attrProblems = append(attrProblems, err.Error())
			}
		}
		plan.Spec.Addresses = append(plan.Spec.Addresses, pa)
	}
	var problems []planner.Problem
	if len(attrProblems) > 0 {
		slices.Sort(attrProblems)
		attrProblems = slices.Compact(attrProblems)
		msg := strings.Join(attrProblems, "; ")
		klog.FromContext(ctx).Info("Service's BGP attributes partly invalid: announced with the valid ones", "service", key, "problems", msg)
		problems = append(problems, planner.Problem{Reason: ReasonInvalidBGPAttributes,
			Message: msg + " (each bad value is left out: the pool's value of that attribute, or none, is announced instead)"})
	}
	if ifaceProblem != "" {
		klog.FromContext(ctx).Info("Service's layer-2 interface annotation invalid: answered on its Eip's interfaces", "service", key, "problem", ifaceProblem)
		problems = append(problems, planner.Problem{Reason: ReasonInvalidLayer2Interface,
			Message: ifaceProblem + " (its addresses are answered on the Eip's interfaces instead)"})
	}
	if svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal {
		nodes, err := p.endpointNodes(ctx, svc)
		if err != nil {
			return nil, nil, fmt.Errorf("endpoints of %s: %w", key, err)
		}
		plan.Spec.EndpointNodes = nodes
		if len(nodes) == 0 {
			problems = append(problems, planner.Problem{Reason: ReasonNoLocalEndpoints,
				Message: "no node has a ready endpoint of the Service (externalTrafficPolicy Local), so nothing announces it"})
		}
	}
	return plan, problems, nil
}

// rememberPlan records the spec just created for a Service, so a sync that
// runs before the cache has the new plan does not create it twice. nil
// forgets.
func (p *Provider) rememberPlan(key string, spec *v1alpha2.LoadBalancerPlanSpec) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if spec == nil {
		delete(p.created, key)
		return
	}
	p.created[key] = spec.DeepCopy()
}

func (p *Provider) wrotePlan(key string, spec *v1alpha2.LoadBalancerPlanSpec) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	w, ok := p.created[key]
	return ok && apiequality.Semantic.DeepEqual(w, spec)
}
