package cloud

import (
	"context"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// Cluster is everything the provider needs from Kubernetes. Reads come from
// informer caches and must not be mutated; writes go to the API server and
// return its errors unchanged (callers test them with apierrors.IsXxx).
// provider/kube implements it.
type Cluster interface {
	// Start runs the caches, registers handlers and returns once synced,
	// however long that takes (or with ctx's error). After an error it may
	// be called again.
	Start(ctx context.Context, handlers Handlers) error

	Eips(ctx context.Context) ([]*v1alpha2.Eip, error)
	Claims(ctx context.Context) ([]*v1alpha2.IPClaim, error)
	Services(ctx context.Context) ([]*v1.Service, error)
	BgpPeers(ctx context.Context) ([]*v1alpha2.BgpPeer, error)
	BgpConfs(ctx context.Context) ([]*v1alpha2.BgpConf, error)
	Nodes(ctx context.Context) ([]*v1.Node, error)
	EndpointSlices(ctx context.Context, namespace, service string) ([]*discoveryv1.EndpointSlice, error)
	Service(ctx context.Context, namespace, name string) (*v1.Service, error)
	Namespace(ctx context.Context, name string) (*v1.Namespace, error)
	Node(ctx context.Context, name string) (*v1.Node, error)
	Plan(ctx context.Context, namespace, name string) (*v1alpha2.LoadBalancerPlan, error)
	Racks(ctx context.Context) ([]*v1alpha2.LoadBalancerRack, error)
	Claim(ctx context.Context, name string) (*v1alpha2.IPClaim, error)
	LiveClaim(ctx context.Context, name string) (*v1alpha2.IPClaim, error)

	CreateClaim(ctx context.Context, claim *v1alpha2.IPClaim) error
	UpdateClaim(ctx context.Context, claim *v1alpha2.IPClaim) error
	DeleteClaim(ctx context.Context, claim *v1alpha2.IPClaim) error
	CreatePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error
	UpdatePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error
	DeletePlan(ctx context.Context, plan *v1alpha2.LoadBalancerPlan) error
	UpdateEipStatus(ctx context.Context, eip *v1alpha2.Eip) error
	// SetEipFinalizers replaces the Eip's finalizers, conditional on the
	// resourceVersion read.
	SetEipFinalizers(ctx context.Context, eip *v1alpha2.Eip, finalizers []string) error
	PatchPlanConditions(ctx context.Context, plan *v1alpha2.LoadBalancerPlan, conds []metav1.Condition) error
	CreateRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error
	UpdateRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error
	DeleteRack(ctx context.Context, rack *v1alpha2.LoadBalancerRack) error
	PatchRackConditions(ctx context.Context, rack *v1alpha2.LoadBalancerRack, conds []metav1.Condition) error
	PatchBgpPeerConditions(ctx context.Context, peer *v1alpha2.BgpPeer, conds []metav1.Condition) error
	PatchBgpConfConditions(ctx context.Context, conf *v1alpha2.BgpConf, conds []metav1.Condition) error

	Event(obj runtime.Object, eventType, reason, message string)
}

// Handlers are called with the cache key ("namespace/name" or "name") of
// every added, changed or deleted object of their kind; EndpointSlice
// handlers get the key of the slice's Service. Nil handlers are skipped.
// They must not block.
type Handlers struct {
	Eip, Claim, Plan, Rack, BgpPeer, BgpConf, Service, Namespace, Node, EndpointSlice func(key string)
}
