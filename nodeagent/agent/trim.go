package agent

import (
	"encoding/json"
	"sync"
	"unique"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// Cache transforms: every speaker caches every LoadBalancerPlan (one per
// Service) and every Eip, so what it keeps of them decides its memory with
// 10,000 Services. Each keeps what the agent reads and nothing else; they
// build a new object instead of clearing fields, so the decoded one (with
// its managed fields, annotations and status) is garbage at once. They are
// idempotent, as client-go asks.
var (
	_ toolscache.TransformFunc = trimPlan
	_ toolscache.TransformFunc = trimEip
	_ toolscache.TransformFunc = trimSpeaker
	_ toolscache.TransformFunc = trimRack
)

// intern shares the storage of strings repeated across plans (pool and
// node names, protocols, policies): 10,000 plans then hold one copy each.
func intern(s string) string {
	if s == "" {
		return ""
	}
	return unique.Make(s).Value()
}

// sharedAttributes holds one copy of each distinct set of BGP attributes
// the plans carry (a pool's Services all carry its set): 10,000 plans then
// point at a handful of objects. Sets are few (one per pool and per
// Service override) and never freed, which costs less than a copy per
// plan.
var sharedAttributes sync.Map // string (JSON) -> *v1alpha2.BGPAttributes

// internAttributes returns the shared copy of a (nil for nil). The agent
// never modifies what the cache holds.
func internAttributes(a *v1alpha2.BGPAttributes) *v1alpha2.BGPAttributes {
	if a == nil {
		return nil
	}
	key, err := json.Marshal(a)
	if err != nil {
		return a
	}
	v, _ := sharedAttributes.LoadOrStore(string(key), a.DeepCopy())
	return v.(*v1alpha2.BGPAttributes)
}

// trimPlan keeps of a LoadBalancerPlan its identity (namespace, name,
// resourceVersion) and its spec: the status is the CCM's conditions, which
// the speaker never reads, and it never writes plans.
func trimPlan(obj any) (any, error) {
	p, ok := obj.(*v1alpha2.LoadBalancerPlan)
	if !ok {
		return obj, nil
	}
	out := &v1alpha2.LoadBalancerPlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: intern(p.Namespace), Name: p.Name, ResourceVersion: p.ResourceVersion},
		Spec: v1alpha2.LoadBalancerPlanSpec{
			ServiceUID:            p.Spec.ServiceUID,
			ExternalTrafficPolicy: intern(p.Spec.ExternalTrafficPolicy),
		},
	}
	if len(p.Spec.Addresses) > 0 {
		out.Spec.Addresses = make([]v1alpha2.PlanAddress, len(p.Spec.Addresses))
		for i, a := range p.Spec.Addresses {
			out.Spec.Addresses[i] = v1alpha2.PlanAddress{IP: a.IP, Pool: intern(a.Pool), Protocol: intern(a.Protocol), Interface: intern(a.Interface),
				Prefix: intern(a.Prefix), BGP: internAttributes(a.BGP)}
		}
	}
	if len(p.Spec.EndpointNodes) > 0 {
		out.Spec.EndpointNodes = make([]string, len(p.Spec.EndpointNodes))
		for i, n := range p.Spec.EndpointNodes {
			out.Spec.EndpointNodes[i] = intern(n)
		}
	}
	return out, nil
}

// trimEip keeps of an Eip what layer 2 reads (name, UID for the Lease's
// owner, generation to see spec changes, the spec): its status maps up to
// a thousand addresses in use to their Services.
func trimEip(obj any) (any, error) {
	e, ok := obj.(*v1alpha2.Eip)
	if !ok {
		return obj, nil
	}
	return &v1alpha2.Eip{
		ObjectMeta: metav1.ObjectMeta{Name: e.Name, UID: e.UID, Generation: e.Generation, ResourceVersion: e.ResourceVersion},
		Spec:       e.Spec,
	}, nil
}

// trimSpeaker keeps of another node's LoadBalancerSpeaker the MACs it
// publishes per layer-2 pool, all that the answering node needs from it.
func trimSpeaker(obj any) (any, error) {
	s, ok := obj.(*v1alpha2.LoadBalancerSpeaker)
	if !ok {
		return obj, nil
	}
	out := &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: s.Name, ResourceVersion: s.ResourceVersion}}
	for _, l := range s.Status.Layer2 {
		if l.MAC != "" {
			out.Status.Layer2 = append(out.Status.Layer2, v1alpha2.SpeakerLayer2{Pool: intern(l.Pool), MAC: l.MAC})
		}
	}
	return out, nil
}

// trimRack drops the rack object's managed fields and status (the CCM's
// conditions).
func trimRack(obj any) (any, error) {
	r, ok := obj.(*v1alpha2.LoadBalancerRack)
	if !ok {
		return obj, nil
	}
	return &v1alpha2.LoadBalancerRack{
		ObjectMeta: metav1.ObjectMeta{Name: r.Name, UID: r.UID, Generation: r.Generation, ResourceVersion: r.ResourceVersion},
		Spec:       r.Spec,
	}, nil
}
