package kube

import (
	"context"
	"encoding/json"
	"fmt"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
	ctrlcache "sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// Cluster implements cloud.Cluster with a shared informer cache (read side)
// and direct API calls (write side).
type Cluster struct {
	cache    ctrlcache.Cache
	client   client.Client
	events   record.EventRecorder
	shutdown func()

	// Services and Nodes come from the process's shared informers, which
	// the CCM's own controllers keep anyway: one cached copy, not two.
	services coreinformers.ServiceInformer
	nodes    coreinformers.NodeInformer

	// watchErrs says why a cached kind has not synced (see Start).
	watchErrs *watchErrors
	// hooked names the kinds whose handler Start added, and started
	// tells whether it started the cache: Start may run again after an
	// error and must not do either twice.
	hooked  map[string]bool
	started bool
}

var _ cloud.Cluster = (*Cluster)(nil)

// RequestSharedInformers requests from the process's shared informer
// factory the Service and Node informers NewCluster reads, Services trimmed
// (TrimService). The factory's owner starts it (the CCM framework does once
// every controller is built) and an informer requested after that would
// never run, so call it before: the CCM does when it builds the provider,
// which lets NewCluster run at any time, again after a failure included.
func RequestSharedInformers(shared informers.SharedInformerFactory) error {
	if err := shared.Core().V1().Services().Informer().SetTransform(TrimService); err != nil {
		return fmt.Errorf("trimming cached Services: %w", err)
	}
	shared.Core().V1().Nodes().Informer()
	return nil
}

// NewCluster builds the adapter from a REST config and the process's shared
// informer factory, whose Service and Node informers it reads: requested
// with RequestSharedInformers before the factory started (if not, they are
// requested here, which only works before the factory starts, and Services
// are cached whole). The other kinds are cached here. Nothing runs until
// Start. component names the event source.
func NewCluster(cfg *rest.Config, shared informers.SharedInformerFactory, component string) (*Cluster, error) {
	services, nodes := shared.Core().V1().Services(), shared.Core().V1().Nodes()
	services.Informer()
	nodes.Informer()
	// The CCM's client speaks protobuf, which custom resources do not
	// support; this adapter reads and writes both kinds, so it uses JSON.
	cfg = rest.CopyConfig(cfg)
	cfg.ContentType = "application/json"
	cfg.AcceptContentTypes = "application/json"
	scheme := apischeme.New()
	watchErrs := newWatchErrors()
	c, err := ctrlcache.New(cfg, ctrlcache.Options{
		Scheme: scheme,
		// Remembers why a kind does not sync, for Start to say so.
		DefaultWatchErrorHandler: watchErrs.handle,
		// The provider only reads cached objects and never mutates them, so
		// it can skip the deep copy on every Get/List (a large saving with
		// thousands of Services).
		DefaultUnsafeDisableDeepCopy: ptr.To(true),
		// Managed fields are never read; dropping them halves the memory
		// the cache needs per object.
		DefaultTransform: ctrlcache.TransformStripManagedFields(),
		ByObject: map[client.Object]ctrlcache.ByObject{
			&v1alpha2.LoadBalancerPlan{}: {Transform: trimPlan},
			&discoveryv1.EndpointSlice{}: {Transform: trimEndpointSlice},
		},
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
		cache:     c,
		client:    cl,
		events:    b.NewRecorder(scheme, v1.EventSource{Component: component}),
		shutdown:  b.Shutdown,
		services:  services,
		nodes:     nodes,
		watchErrs: watchErrs,
		hooked:    map[string]bool{},
	}, nil
}

// Start registers the handlers, runs the informers until ctx ends and
// waits for them, and the shared Service and Node informers, to sync. Every
// informer of the cache is created here, before the sync wait, so a synced
// cache means every kind is known.
//
// The wait lasts as long as the sync takes: an informer whose list fails
// (the API server unreachable, a stored object that no longer decodes)
// retries it with back-off, and every syncReportInterval a log line names
// the kinds not synced yet with their last error, so deleting or fixing the
// object lets Start return without a restart. Start returns an error only
// when ctx ends or an informer cannot be set up (its CRD is not installed
// yet, say); it may then be called again, from the same goroutine, and adds
// only what the failed call did not.
func (c *Cluster) Start(ctx context.Context, handlers cloud.Handlers) error {
	var waits []informerSync
	for _, kind := range []struct {
		obj client.Object
		fn  func(key string)
	}{
		{&v1alpha2.Eip{}, handlers.Eip},
		{&v1alpha2.IPClaim{}, handlers.Claim},
		{&v1alpha2.LoadBalancerPlan{}, handlers.Plan},
		{&v1alpha2.LoadBalancerRack{}, handlers.Rack},
		{&v1alpha2.BgpPeer{}, handlers.BgpPeer},
		{&v1alpha2.BgpConf{}, handlers.BgpConf},
		{&v1.Namespace{}, handlers.Namespace},
		{&discoveryv1.EndpointSlice{}, handlers.EndpointSlice},
	} {
		typ := fmt.Sprintf("%T", kind.obj)
		// Not blocking here: waitForSync waits, and says for what.
		inf, err := c.cache.GetInformer(ctx, kind.obj, ctrlcache.BlockUntilSynced(false))
		if err != nil {
			return fmt.Errorf("informer for %s: %w", typ, err)
		}
		if err := c.hook(typ, inf, kind.fn); err != nil {
			return err
		}
		waits = append(waits, informerSync{typ: typ, synced: inf.HasSynced})
	}
	for _, shared := range []struct {
		inf toolscache.SharedIndexInformer
		typ string
		fn  func(key string)
	}{
		{c.services.Informer(), "*v1.Service", handlers.Service},
		{c.nodes.Informer(), "*v1.Node", handlers.Node},
	} {
		if err := c.hook(shared.typ, shared.inf, shared.fn); err != nil {
			return err
		}
		waits = append(waits, informerSync{typ: shared.typ, synced: shared.inf.HasSynced})
	}
	if !c.started {
		c.started = true
		go func() {
			_ = c.cache.Start(ctx)
			c.shutdown()
		}()
	}
	return waitForSync(ctx, waits, c.watchErrs.last, syncReportInterval)
}

// hook adds fn's handler to the informer of typ unless an earlier Start
// did.
func (c *Cluster) hook(typ string, inf interface {
	AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}, fn func(key string)) error {
	if c.hooked[typ] {
		return nil
	}
	if err := addHandler(inf, fn); err != nil {
		return fmt.Errorf("handler for %s: %w", typ, err)
	}
	c.hooked[typ] = true
	return nil
}

// addHandler calls fn with the notifyKey of every added, changed or deleted
// object; a nil fn adds nothing.
func addHandler(inf interface {
	AddEventHandler(toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}, fn func(key string)) error {
	if fn == nil {
		return nil
	}
	notify := func(obj any) {
		if key, ok := notifyKey(obj); ok {
			fn(key)
		}
	}
	_, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    notify,
		UpdateFunc: func(_, obj any) { notify(obj) },
		DeleteFunc: notify,
	})
	return err
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

// BgpConfs lists the cached BgpConfs (the speakers use "default").
func (c *Cluster) BgpConfs(ctx context.Context) ([]*v1alpha2.BgpConf, error) {
	var l v1alpha2.BgpConfList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	out := make([]*v1alpha2.BgpConf, len(l.Items))
	for i := range l.Items {
		out[i] = &l.Items[i]
	}
	return out, nil
}

// PatchBgpPeerConditions replaces a BgpPeer's status.conditions.
func (c *Cluster) PatchBgpPeerConditions(ctx context.Context, peer *v1alpha2.BgpPeer, conds []metav1.Condition) error {
	return c.patchConditions(ctx, peer, conds)
}

// PatchBgpConfConditions replaces a BgpConf's status.conditions.
func (c *Cluster) PatchBgpConfConditions(ctx context.Context, conf *v1alpha2.BgpConf, conds []metav1.Condition) error {
	return c.patchConditions(ctx, conf, conds)
}

// BgpPeers lists the cached BgpPeers.
func (c *Cluster) BgpPeers(ctx context.Context) ([]*v1alpha2.BgpPeer, error) {
	var l v1alpha2.BgpPeerList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Services lists the cached Services (see TrimService for what they lack).
func (c *Cluster) Services(ctx context.Context) ([]*v1.Service, error) {
	return c.services.Lister().List(labels.Everything())
}

// Nodes lists the cached Nodes.
func (c *Cluster) Nodes(ctx context.Context) ([]*v1.Node, error) {
	return c.nodes.Lister().List(labels.Everything())
}

// EndpointSlices lists the cached EndpointSlices of a Service: only each
// endpoint's nodeName and conditions (see trimEndpointSlice).
func (c *Cluster) EndpointSlices(ctx context.Context, namespace, service string) ([]*discoveryv1.EndpointSlice, error) {
	var l discoveryv1.EndpointSliceList
	if err := c.cache.List(ctx, &l, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
}

// Service gets a cached Service (see TrimService for what it lacks).
func (c *Cluster) Service(ctx context.Context, namespace, name string) (*v1.Service, error) {
	return c.services.Lister().Services(namespace).Get(name)
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
	return c.nodes.Lister().Get(name)
}

// Plan gets a cached LoadBalancerPlan (see trimPlan).
func (c *Cluster) Plan(ctx context.Context, namespace, name string) (*v1alpha2.LoadBalancerPlan, error) {
	var p v1alpha2.LoadBalancerPlan
	if err := c.cache.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, &p); err != nil {
		return nil, err
	}
	return &p, nil
}

// Racks lists the cached LoadBalancerRacks.
func (c *Cluster) Racks(ctx context.Context) ([]*v1alpha2.LoadBalancerRack, error) {
	var l v1alpha2.LoadBalancerRackList
	if err := c.cache.List(ctx, &l); err != nil {
		return nil, err
	}
	return listPtrs(l.Items), nil
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

// PatchPlanConditions replaces status.conditions of a plan.
func (c *Cluster) PatchPlanConditions(ctx context.Context, plan *v1alpha2.LoadBalancerPlan, conds []metav1.Condition) error {
	return c.patchConditions(ctx, plan, conds)
}

// CreateRack creates a LoadBalancerRack.
func (c *Cluster) CreateRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error {
	return c.client.Create(ctx, rack)
}

// UpdateRack updates a LoadBalancerRack's spec; Conflict means the cache
// was behind and the next pass retries.
func (c *Cluster) UpdateRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error {
	return c.client.Update(ctx, rack)
}

// DeleteRack deletes exactly this LoadBalancerRack (UID precondition).
func (c *Cluster) DeleteRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error {
	return c.client.Delete(ctx, rack, client.Preconditions{UID: &rack.UID})
}

// PatchRackConditions replaces status.conditions of a rack.
func (c *Cluster) PatchRackConditions(ctx context.Context, rack *v1alpha2.LoadBalancerRack, conds []metav1.Condition) error {
	return c.patchConditions(ctx, rack, conds)
}

// patchConditions replaces only status.conditions (a merge patch of the
// status subresource).
func (c *Cluster) patchConditions(ctx context.Context, obj client.Object, conds []metav1.Condition) error {
	if conds == nil {
		conds = []metav1.Condition{}
	}
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": conds}})
	if err != nil {
		return err
	}
	return c.client.Status().Patch(ctx, obj, client.RawPatch(types.MergePatchType, body))
}

// UpdateEipStatus writes an Eip's status subresource.
func (c *Cluster) UpdateEipStatus(ctx context.Context, eip *v1alpha2.Eip) error {
	return c.client.Status().Update(ctx, eip)
}

// SetEipFinalizers patches the Eip's finalizers; the patch carries the
// resourceVersion read, so a concurrent change of them is a conflict, not
// overwritten.
func (c *Cluster) SetEipFinalizers(ctx context.Context, eip *v1alpha2.Eip, finalizers []string) error {
	if finalizers == nil {
		finalizers = []string{}
	}
	patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
		"finalizers": finalizers, "resourceVersion": eip.ResourceVersion,
	}})
	if err != nil {
		return err
	}
	return c.client.Patch(ctx, eip.DeepCopy(), client.RawPatch(types.MergePatchType, patch))
}

// Event records an event on obj.
func (c *Cluster) Event(obj runtime.Object, eventType, reason, message string) {
	c.events.Event(obj, eventType, reason, message)
}
