package controller

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	v1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	coreinformers "k8s.io/client-go/informers/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	cloudprovider "k8s.io/cloud-provider"
	"k8s.io/cloud-provider/api"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// Controller reconciles LoadBalancer Services against a
// cloudprovider.LoadBalancer. It serves the Services the framework's
// controller would (type LoadBalancer without spec.loadBalancerClass),
// unless told to leave them to another implementation, and those of
// spec.loadBalancerClass openelb.kubesphere.io/lb (cloud.Classes). It
// uses the framework's finalizer (service.kubernetes.io/load-balancer-cleanup),
// so switching between the two controllers is seamless.
//
// The finalizer is added in the same patch as the status, after the provider
// recorded the address, not before as the framework does. The window this
// opens (an IPClaim exists, the Service has no finalizer yet) is closed on
// both sides: a Service deleted meanwhile reaches the delete handler, which
// releases its addresses, and a claim whose Service vanished while no CCM
// ran is pruned when the provider starts.
type Controller struct {
	classes     cloud.Classes
	lb          cloudprovider.LoadBalancer
	clusterName string
	client      kubernetes.Interface
	lister      corelisters.ServiceLister
	synced      cache.InformerSynced
	queue       workqueue.TypedRateLimitingInterface[string]
	recorder    record.EventRecorder
	broadcaster record.EventBroadcaster
	// gone holds the last state of Services deleted without our finalizer
	// (force-removed, or deleted inside the window above), so their
	// addresses are still released.
	gone map[string]*v1.Service
	mu   sync.Mutex
	// running is true while the workers process the queue (see Check).
	running atomic.Bool
}

// New builds the controller; Run starts it.
func New(lb cloudprovider.LoadBalancer, client kubernetes.Interface, informer coreinformers.ServiceInformer, clusterName string, classes cloud.Classes) (*Controller, error) {
	b := record.NewBroadcaster()
	c := &Controller{
		classes:     classes,
		lb:          lb,
		clusterName: clusterName,
		client:      client,
		lister:      informer.Lister(),
		synced:      informer.Informer().HasSynced,
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](time.Second, 5*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "openelb_service"},
		),
		broadcaster: b,
		recorder:    b.NewRecorder(scheme.Scheme, v1.EventSource{Component: "service-controller"}),
		gone:        map[string]*v1.Service{},
	}
	_, err := informer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) {
			if svc, ok := obj.(*v1.Service); ok && c.relevant(svc) {
				klog.V(5).InfoS("Service added", "service", klog.KObj(svc))
				c.enqueue(svc)
			}
		},
		UpdateFunc: func(old, cur any) {
			o, ok1 := old.(*v1.Service)
			n, ok2 := cur.(*v1.Service)
			if ok1 && ok2 && changed(o, n) && (c.relevant(n) || c.relevant(o)) {
				c.enqueue(n)
			}
		},
		DeleteFunc: func(obj any) {
			svc, ok := obj.(*v1.Service)
			if !ok {
				tomb, ok := obj.(cache.DeletedFinalStateUnknown)
				if !ok {
					return
				}
				if svc, ok = tomb.Obj.(*v1.Service); !ok {
					return
				}
			}
			if !c.relevant(svc) {
				return
			}
			c.mu.Lock()
			c.gone[key(svc)] = svc
			c.mu.Unlock()
			c.enqueue(svc)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("registering service handler: %w", err)
	}
	return c, nil
}

func key(svc *v1.Service) string { return svc.Namespace + "/" + svc.Name }

func (c *Controller) enqueue(svc *v1.Service) { c.queue.Add(key(svc)) }

// wants says whether svc is this controller's to serve.
func (c *Controller) wants(svc *v1.Service) bool { return c.classes.Serves(svc) }

// relevant: Services that want a load balancer from us, or still carry the
// finalizer or an address that must be cleaned up. A Service of another
// class is never touched: its finalizer and addresses are its
// controller's.
func (c *Controller) relevant(svc *v1.Service) bool {
	if svc.Spec.LoadBalancerClass != nil && *svc.Spec.LoadBalancerClass != cloud.LoadBalancerClass {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil && c.classes.IgnoreClassless {
		return false
	}
	return c.wants(svc) || servicehelper.HasLBFinalizer(svc) || len(svc.Status.LoadBalancer.Ingress) > 0
}

// changed filters out updates that cannot change the outcome (resyncs,
// unrelated status fields), so the controller's own status patch costs no
// second reconciliation write.
func changed(o, n *v1.Service) bool {
	return !apiequality.Semantic.DeepEqual(o.Spec, n.Spec) ||
		!apiequality.Semantic.DeepEqual(o.Annotations, n.Annotations) ||
		// Labels decide which pools select the Service (Eip spec.serviceSelector).
		!apiequality.Semantic.DeepEqual(o.Labels, n.Labels) ||
		!slices.Equal(o.Finalizers, n.Finalizers) ||
		(o.DeletionTimestamp == nil) != (n.DeletionTimestamp == nil) ||
		!servicehelper.LoadBalancerStatusEqual(&o.Status.LoadBalancer, &n.Status.LoadBalancer)
}

// Run processes Services with the given number of workers until ctx ends.
func (c *Controller) Run(ctx context.Context, workers int) {
	defer utilruntime.HandleCrash()
	defer c.queue.ShutDown()
	c.broadcaster.StartStructuredLogging(3)
	c.broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.client.CoreV1().Events("")})
	defer c.broadcaster.Shutdown()
	logger := klog.FromContext(ctx)
	logger.Info("Starting openelb service controller", "workers", workers)
	if !cache.WaitForNamedCacheSync("openelb-service", ctx.Done(), c.synced) {
		return
	}
	for range workers {
		go func() {
			for c.processNext(ctx) {
			}
		}()
	}
	c.running.Store(true)
	logger.Info("Openelb service controller running", "workers", workers)
	<-ctx.Done()
	c.running.Store(false)
}

func (c *Controller) processNext(ctx context.Context) bool {
	k, quit := c.queue.Get()
	if quit {
		return false
	}
	defer c.queue.Done(k)
	err := c.sync(ctx, k)
	if err == nil {
		c.queue.Forget(k)
		return true
	}
	var re *api.RetryError
	if errors.As(err, &re) {
		klog.FromContext(ctx).V(2).Info("Retrying Service later", "service", k, "after", re.RetryAfter(), "reason", err)
		c.queue.AddAfter(k, re.RetryAfter())
		return true
	}
	if apierrors.IsConflict(err) {
		// The Service changed since the cache copy this sync started from:
		// not a failure, just retry soon from the newer copy.
		klog.FromContext(ctx).V(2).Info("Service changed while syncing; retrying", "service", k)
		c.queue.AddAfter(k, retryConflict)
		return true
	}
	utilruntime.HandleErrorWithContext(ctx, err, "Syncing Service failed; retrying with backoff", "service", k)
	c.queue.AddRateLimited(k)
	return true
}

func (c *Controller) sync(ctx context.Context, k string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(k)
	if err != nil {
		return nil
	}
	svc, err := c.lister.Services(ns).Get(name)
	switch {
	case apierrors.IsNotFound(err):
		c.mu.Lock()
		last := c.gone[k]
		c.mu.Unlock()
		if last == nil {
			return nil
		}
		if err := c.lb.EnsureLoadBalancerDeleted(ctx, c.clusterName, last); err != nil {
			return err
		}
		c.mu.Lock()
		if c.gone[k] == last {
			delete(c.gone, k)
		}
		c.mu.Unlock()
		return nil
	case err != nil:
		return err
	}
	if c.wants(svc) && svc.DeletionTimestamp == nil {
		return c.ensure(ctx, svc)
	}
	return c.cleanup(ctx, svc)
}

func (c *Controller) ensure(ctx context.Context, svc *v1.Service) error {
	logger := klog.FromContext(ctx)
	began := time.Now()
	logger.V(5).Info("Ensuring", "service", klog.KObj(svc))
	status, err := c.lb.EnsureLoadBalancer(ctx, c.clusterName, svc, nil)
	if err != nil {
		var re *api.RetryError
		if !errors.As(err, &re) && !cloud.IsReported(err) {
			c.recorder.Eventf(svc, v1.EventTypeWarning, "SyncLoadBalancerFailed", "Error syncing load balancer: %v", err)
		}
		return err
	}
	if status == nil {
		return fmt.Errorf("the provider returned no status for %s", key(svc))
	}
	if servicehelper.HasLBFinalizer(svc) && servicehelper.LoadBalancerStatusEqual(&svc.Status.LoadBalancer, status) {
		return nil
	}
	ensured := time.Now()
	if err := c.writeStatus(ctx, svc, status); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("writing status and finalizer of %s: %w", key(svc), err)
	}
	logger.V(4).Info("Service status written", "service", klog.KObj(svc),
		"ensure", ensured.Sub(began), "patch", time.Since(ensured))
	return nil
}

// writeStatus writes svc's load balancer status and adds the finalizer in
// one JSON merge patch through the status subresource. The patch is built
// directly (no two-way diff of the whole object) and carries svc's
// resourceVersion, so the API server refuses it (Conflict) if anything
// wrote the Service since: the status is only ever written from the latest
// version, which also makes replacing the finalizer list safe. This is what
// keeps two active replicas (a split brain, or a leader that lost its lease
// mid-write) from overwriting each other's address: the loser re-syncs,
// sees the winner's address and follows it.
func (c *Controller) writeStatus(ctx context.Context, svc *v1.Service, status *v1.LoadBalancerStatus) error {
	finalizers := svc.Finalizers
	if !servicehelper.HasLBFinalizer(svc) {
		finalizers = append(slices.Clone(finalizers), servicehelper.LoadBalancerCleanupFinalizer)
	}
	type meta struct {
		ResourceVersion string   `json:"resourceVersion"`
		Finalizers      []string `json:"finalizers"`
	}
	type lbStatus struct {
		// null removes the field, so an empty status clears old addresses.
		Ingress []v1.LoadBalancerIngress `json:"ingress"`
	}
	type body struct {
		Metadata meta `json:"metadata"`
		Status   struct {
			LoadBalancer lbStatus `json:"loadBalancer"`
		} `json:"status"`
	}
	var b body
	b.Metadata = meta{ResourceVersion: svc.ResourceVersion, Finalizers: finalizers}
	b.Status.LoadBalancer.Ingress = status.Ingress
	patch, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("encoding the status of %s: %w", key(svc), err)
	}
	_, err = c.client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

// retryConflict is how soon a Service whose status write lost a race is
// synced again: long enough for the cache to see the newer version.
const retryConflict = 100 * time.Millisecond

// patch writes upd's finalizers and status over old's through the status
// subresource as a strategic merge patch, which removes a finalizer by value
// without replacing the list, so it needs no resourceVersion.
func (c *Controller) patch(ctx context.Context, old, upd *v1.Service) error {
	upd.Spec = old.Spec
	oldJSON, err := json.Marshal(old)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key(old), err)
	}
	updJSON, err := json.Marshal(upd)
	if err != nil {
		return fmt.Errorf("encoding %s: %w", key(old), err)
	}
	patch, err := strategicpatch.CreateTwoWayMergePatch(oldJSON, updJSON, v1.Service{})
	if err != nil {
		return fmt.Errorf("building the patch of %s: %w", key(old), err)
	}
	_, err = c.client.CoreV1().Services(old.Namespace).Patch(ctx, old.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}, "status")
	return err
}

// cleanup releases the addresses of a Service that is being deleted or no
// longer wants a load balancer, then drops the finalizer (and, if the
// Service stays, its status) in one patch.
func (c *Controller) cleanup(ctx context.Context, svc *v1.Service) error {
	if _, exists, err := c.lb.GetLoadBalancer(ctx, c.clusterName, svc); err != nil {
		return err
	} else if exists {
		if err := c.lb.EnsureLoadBalancerDeleted(ctx, c.clusterName, svc); err != nil {
			c.recorder.Eventf(svc, v1.EventTypeWarning, "DeleteLoadBalancerFailed", "Error deleting load balancer: %v", err)
			return err
		}
	}
	if !servicehelper.HasLBFinalizer(svc) && len(svc.Status.LoadBalancer.Ingress) == 0 {
		return nil
	}
	upd := svc.DeepCopy()
	upd.Finalizers = slices.DeleteFunc(upd.Finalizers, func(f string) bool { return f == servicehelper.LoadBalancerCleanupFinalizer })
	upd.Status.LoadBalancer = v1.LoadBalancerStatus{}
	if err := c.patch(ctx, svc, upd); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("removing finalizer of %s: %w", key(svc), err)
	}
	return nil
}
