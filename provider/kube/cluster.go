package kube

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/provider/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// Cluster implements cloud.Cluster with a shared informer cache (read side)
// and direct API calls (write side).
type Cluster struct {
	cache    ctrlcache.Cache
	client   client.Client
	events   record.EventRecorder
	shutdown func()
}

var _ cloud.Cluster = (*Cluster)(nil)

// NewCluster builds the adapter from a REST config. Nothing runs until Start.
// component names the event source.
func NewCluster(cfg *rest.Config, component string) (*Cluster, error) {
	// The CCM's client speaks protobuf, which custom resources do not
	// support; this adapter reads and writes both kinds, so it uses JSON.
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	scheme := NewScheme()
	c, err := ctrlcache.New(cfg, ctrlcache.Options{
		Scheme: scheme,
		// The provider only reads cached objects and never mutates them, so
		// it can skip the deep copy on every Get/List (a large saving with
		// thousands of Services).
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		// Managed fields are never read; dropping them halves the memory
		// the cache needs per object.
		DefaultTransform: ctrlcache.TransformStripManagedFields(),
	})
	if err != nil {
		return nil, fmt.Errorf("building informer cache: %w", err)
	}
	cl, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, fmt.Errorf("building client: %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("building clientset: %w", err)
	}
	b := record.NewBroadcaster()
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: cs.CoreV1().Events("")})
	return &Cluster{
		cache:    c,
		client:   cl,
		events:   b.NewRecorder(scheme, v1.EventSource{Component: component}),
		shutdown: b.Shutdown,
	}, nil
}

// Start runs the informers until ctx ends and waits for them to sync. Every
// informer the provider reads is created here, before the sync wait, so a
// synced cache means every kind is known.
func (c *Cluster) Start(ctx context.Context, handlers cloud.Handlers) error {
	for _, kind := range []struct {
		obj client.Object
		fn  func(key string)
	}{
		{&v1alpha2.Eip{}, handlers.Eip},
		{&v1alpha2.IPClaim{}, handlers.Claim},
		{&v1alpha2.LoadBalancerPlan{}, handlers.Plan},
		{&v1alpha2.BgpPeer{}, handlers.BgpPeer},
		{&v1.Service{}, handlers.Service},
		{&v1.Namespace{}, handlers.Namespace},
		{&v1.Node{}, handlers.Node},
		{&discoveryv1.EndpointSlice{}, handlers.EndpointSlice},
	} {
		inf, err := c.cache.GetInformer(ctx, kind.obj)
		if err != nil {
			return fmt.Errorf("informer for %T: %w", kind.obj, err)
		}
		if kind.fn == nil {
			continue
		}
		fn := kind.fn
		notify := func(obj any) {
			if key, ok := notifyKey(obj); ok {
				fn(key)
			}
		}
		if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    notify,
			UpdateFunc: func(_, obj any) { notify(obj) },
			DeleteFunc: notify,
		}); err != nil {
			return fmt.Errorf("handler for %T: %w", kind.obj, err)
		}
	}
	go func() {
		_ = c.cache.Start(ctx)
		c.shutdown()
	}()
	syncCtx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	if !c.cache.WaitForCacheSync(syncCtx) {
		return fmt.Errorf("informer caches did not sync: %w", syncCtx.Err())
	}
	return nil
}

// notifyKey is the key handlers get: the object's own, except for an
// EndpointSlice, which is reported as its Service's key.
func notifyKey(obj any) (string, bool) {
	if tomb, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
		obj = tomb.Obj
	}
	if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
		svc := es.Labels[discoveryv1.LabelServiceName]
		return es.Namespace + "/" + svc, svc != ""
	}
	key, err := toolscache.MetaNamespaceKeyFunc(obj)
	return key, err == nil
}

func listPtrs[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// Eips lists the cached Eips.
func (c *Cluster) Eips(ctx context.Context) ([]*v1alpha2.Eip, error) {
	var l v1alpha2.EipList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Claims lists the cached IPClaims.
func (c *Cluster) Claims(ctx context.Context) ([]*v1alpha2.IPClaim, error) {
	var l v1alpha2.IPClaimList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// BgpPeers lists the cached BgpPeers.
func (c *Cluster) BgpPeers(ctx context.Context) ([]*v1alpha2.BgpPeer, error) {
	var l v1alpha2.BgpPeerList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Services lists the cached Services.
func (c *Cluster) Services(ctx context.Context) ([]*v1.Service, error) {
	var l v1.ServiceList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Nodes lists the cached Nodes.
func (c *Cluster) Nodes(ctx context.Context) ([]*v1.Node, error) {
	var l v1.NodeList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// EndpointSlices lists the cached EndpointSlices of a Service.
func (c *Cluster) EndpointSlices(ctx context.Context, namespace, service string) ([]*discoveryv1.EndpointSlice, error) {
	var l discoveryv1.EndpointSliceList
	if err := c.cache.List(ctx, &l, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Service gets a cached Service.
func (c *Cluster) Service(ctx context.Context, namespace, name string) (*v1.Service, error) {
	var s v1.Service
	if err := c.cache.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &s); err != nil {
		return nil, err
	}
	return &s, nil
}

// Namespace gets a cached Namespace.
func (c *Cluster) Namespace(ctx context.Context, name string) (*v1.Namespace, error) {
	var n v1.Namespace
	if err := c.cache.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// Node gets a cached Node.
func (c *Cluster) Node(ctx context.Context, name string) (*v1.Node, error) {
	var n v1.Node
	if err := c.cache.Get(ctx, types.NamespacedName{Name: name}, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

// Plan gets a cached LoadBalancerPlan.
func (c *Cluster) Plan(ctx context.Context, namespace, name string) (*v1alpha2.LoadBalancerPlan, error) {
	var p v1alpha2.LoadBalancerPlan
	if err := c.cache.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Claim gets a cached IPClaim.
func (c *Cluster) Claim(ctx context.Context, name string) (*v1alpha2.IPClaim, error) {
	var p v1alpha2.IPClaim
	if err := c.cache.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// LiveClaim reads an IPClaim from the API server, bypassing the cache: used
// when a create found the name taken and the cache may not have seen it yet.
func (c *Cluster) LiveClaim(ctx context.Context, name string) (*v1alpha2.IPClaim, error) {
	var p v1alpha2.IPClaim
	if err := c.client.Get(ctx, types.NamespacedName{Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// CreateClaim creates an IPClaim; AlreadyExists means the address is taken.
func (c *Cluster) CreateClaim(ctx context.Context, claim *v1alpha2.IPClaim) error {
	return c.client.Create(ctx, claim)
}

// UpdateClaim updates an IPClaim; Conflict means someone changed it first.
func (c *Cluster) UpdateClaim(ctx context.Context, claim *v1alpha2.IPClaim) error {
	return c.client.Update(ctx, claim)
}

// DeleteClaim deletes exactly this version of an IPClaim (UID and
// resourceVersion preconditions), so a claim changed meanwhile survives.
func (c *Cluster) DeleteClaim(ctx context.Context, claim *v1alpha2.IPClaim) error {
	return c.client.Delete(ctx, claim, client.Preconditions{UID: &claim.UID, ResourceVersion: &claim.ResourceVersion})
}

// CreatePlan creates a LoadBalancerPlan.
func (c *Cluster) CreatePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error {
	return c.client.Create(ctx, plan)
}

// UpdatePlan updates a LoadBalancerPlan's spec.
func (c *Cluster) UpdatePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error {
	return c.client.Update(ctx, plan)
}

// DeletePlan deletes a LoadBalancerPlan.
func (c *Cluster) DeletePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error {
	return c.client.Delete(ctx, plan, client.Preconditions{UID: &plan.UID})
}

// PatchPlanConditions replaces only status.conditions of a plan (a merge
// patch), leaving the per-node entries the speakers own untouched.
func (c *Cluster) PatchPlanConditions(ctx context.Context, plan *v1alpha2.LoadBalancerPlan, conds []metav1.Condition) error {
	if conds == nil {
		conds = []metav1.Condition{}
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return err
	}
	return c.client.Status().Patch(ctx, plan, client.RawPatch(types.MergePatchType, body))
}

// UpdateEipStatus writes an Eip's status subresource.
func (c *Cluster) UpdateEipStatus(ctx context.Context, eip *v1alpha2.Eip) error {
	return c.client.Status().Update(ctx, eip)
}

// Event records an event on obj.
func (c *Cluster) Event(obj runtime.Object, eventType, reason, message string) {
	c.events.Event(obj, eventType, reason, message)
}
