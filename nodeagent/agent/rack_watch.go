package agent

import (
	"context"
	"fmt"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/rest"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// rackWatch watches the one LoadBalancerRack of this node's rack. A
// controller-runtime cache fixes its selectors when it is built, and
// watching every rack would make each speaker receive every rack change of
// the cluster; so this is an informer of its own, restricted to one name,
// restarted when the node's rack label changes.
//
// The store keeps its last content while the API server is unreachable
// (the reflector only replaces it on a successful list), so the speaker
// keeps announcing. After a restart on a new name, synced is false until
// the new rack's object (or its absence) is known: the agent keeps what it
// applied until then rather than withdraw for lack of news.
type rackWatch struct {
	// listWatch lists and watches the rack object of that name.
	listWatch func(name string) toolscache.ListerWatcher
	// changed is called on every event and once the watch has synced.
	changed func()

	mu    sync.Mutex
	name  string
	store toolscache.Store
	ctrl  toolscache.Controller
	stop  context.CancelFunc // nil: not watching
}

// newRackListWatch returns the list-watch factory of rackWatch: the
// LoadBalancerRacks with metadata.name=name, through a REST client of
// their group.
func newRackListWatch(cfg *rest.Config, scheme *runtime.Scheme) (func(name string) toolscache.ListerWatcher, error) {
	cfg = rest.CopyConfig(cfg)
	cfg.GroupVersion = &v1alpha2.SchemeGroupVersion
	cfg.APIPath = "/apis"
	cfg.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	rc, err := rest.RESTClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("building the LoadBalancerRack client: %w", err)
	}
	return func(name string) toolscache.ListerWatcher {
		sel := fields.OneTermEqualSelector("metadata.name", name).String()
		return toolscache.NewFilteredListWatchFromClient(rc, "loadbalancerracks", metav1.NamespaceAll,
			func(o *metav1.ListOptions) { o.FieldSelector = sel })
	}, nil
}

// watch makes the watch follow the rack object called name, restarting it
// if it followed another one. The watch ends with ctx.
func (w *rackWatch) watch(ctx context.Context, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stop != nil && w.name == name {
		return
	}
	w.stopLocked()
	wctx, stop := context.WithCancel(ctx)
	kick := func(any) { w.changed() }
	store, ctrl := toolscache.NewInformerWithOptions(toolscache.InformerOptions{
		ListerWatcher: w.listWatch(name),
		ObjectType:    &v1alpha2.LoadBalancerRack{},
		Handler: toolscache.ResourceEventHandlerFuncs{
			AddFunc: kick, UpdateFunc: func(_, o any) { kick(o) }, DeleteFunc: kick,
		},
		Transform: trimRack,
	})
	w.name, w.store, w.ctrl, w.stop = name, store, ctrl, stop
	go ctrl.RunWithContext(wctx)
	go func() {
		// Handlers run while the initial list is processed, when
		// HasSynced may still be false, and an absent object sends no
		// event at all: say once that the rack is known.
		err := wait.PollUntilContextCancel(wctx, 20*time.Millisecond, true, func(context.Context) (bool, error) {
			return ctrl.HasSynced(), nil
		})
		if err == nil {
			w.changed()
		}
	}()
}

// close stops watching (the node is no longer a speaker).
func (w *rackWatch) close() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopLocked()
}

func (w *rackWatch) stopLocked() {
	if w.stop != nil {
		w.stop()
	}
	w.name, w.store, w.ctrl, w.stop = "", nil, nil, nil
}

// current returns the rack object watched (nil when it does not exist) and
// whether the watch has synced; before that the object is unknown.
func (w *rackWatch) current() (*v1alpha2.LoadBalancerRack, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ctrl == nil || !w.ctrl.HasSynced() {
		return nil, false
	}
	obj, ok, err := w.store.GetByKey(w.name)
	if err != nil || !ok {
		return nil, true
	}
	r, _ := obj.(*v1alpha2.LoadBalancerRack)
	return r, true
}
