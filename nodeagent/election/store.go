package election

import (
	"context"
	"fmt"
	"sync"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
)

// LeaseCache reads Leases from a watch cache (the agent's informers), so
// that a candidate's reads cost the API server nothing.
type LeaseCache interface {
	// Get returns the cached Lease, or a NotFound error.
	Get(ctx context.Context, namespace, name string) (*coordinationv1.Lease, error)
}

// LeaseWriter writes Leases to the API server; client-go's
// LeaseInterface is one.
type LeaseWriter interface {
	Create(ctx context.Context, lease *coordinationv1.Lease, opts metav1.CreateOptions) (*coordinationv1.Lease, error)
	Update(ctx context.Context, lease *coordinationv1.Lease, opts metav1.UpdateOptions) (*coordinationv1.Lease, error)
}

// LeaseInformer is the informer behind the LeaseCache: its events say when
// a Lease changed. client-go's and controller-runtime's informers are one.
type LeaseInformer interface {
	AddEventHandler(handler toolscache.ResourceEventHandler) (toolscache.ResourceEventHandlerRegistration, error)
}

// CachedLeases is the agent's Store: reads from its watch cache
// (namespace-scoped Lease informer), writes through the API client, and
// wakes the candidates waiting for a Lease on each of its watch events
// (Watch), so nobody polls.
type CachedLeases struct {
	namespace string
	cache     LeaseCache
	client    LeaseWriter

	mu      sync.Mutex
	waiters map[string]chan struct{}
}

var _ Store = (*CachedLeases)(nil)

// NewCachedLeases returns the Store of the namespace's Leases. Call Watch
// before the informer starts.
func NewCachedLeases(namespace string, cache LeaseCache, client LeaseWriter) *CachedLeases {
	return &CachedLeases{namespace: namespace, cache: cache, client: client, waiters: map[string]chan struct{}{}}
}

// Watch makes every event of inf (the informer filling the cache) wake
// whoever waits for a change of that Lease. Without it a blocked Get only
// sees a change after maxBlock.
func (c *CachedLeases) Watch(inf LeaseInformer) error {
	changed := func(o any) {
		if d, ok := o.(toolscache.DeletedFinalStateUnknown); ok {
			o = d.Obj
		}
		if l, _ := o.(*coordinationv1.Lease); l != nil {
			c.notify(l.Name)
		}
	}
	if _, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc: changed, UpdateFunc: func(_, o any) { changed(o) }, DeleteFunc: changed,
	}); err != nil {
		return fmt.Errorf("event handler for Leases: %w", err)
	}
	return nil
}

// Get returns the cached Lease, or a NotFound error.
func (c *CachedLeases) Get(ctx context.Context, name string) (*coordinationv1.Lease, error) {
	return c.cache.Get(ctx, c.namespace, name)
}

// Changed returns a channel closed at the next watch event of the Lease.
func (c *CachedLeases) Changed(name string) <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := c.waiters[name]
	if ch == nil {
		ch = make(chan struct{})
		c.waiters[name] = ch
	}
	return ch
}

// notify wakes whoever waits for a change of the Lease.
func (c *CachedLeases) notify(name string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if ch := c.waiters[name]; ch != nil {
		close(ch)
		delete(c.waiters, name)
	}
}

// Create writes a new Lease to the API server.
func (c *CachedLeases) Create(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.client.Create(ctx, l, metav1.CreateOptions{})
}

// Update writes the Lease to the API server (optimistic concurrency on its
// resourceVersion).
func (c *CachedLeases) Update(ctx context.Context, l *coordinationv1.Lease) (*coordinationv1.Lease, error) {
	return c.client.Update(ctx, l, metav1.UpdateOptions{})
}
