package agent

import (
	"context"
	"fmt"
	"maps"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

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
			return fmt.Errorf("event handler for %T: %w", obj, err)
		}
	}
	inf, err := c.GetInformer(ctx, &coordinationv1.Lease{})
	if err != nil {
		return fmt.Errorf("informer for Leases: %w", err)
	}
	// The other nodes' Leases: who is live, and the views they act on.
	return m.peers.Watch(ctx, inf)
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
