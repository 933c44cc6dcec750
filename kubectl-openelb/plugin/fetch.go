package plugin

import (
	"context"
	"errors"
	"fmt"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/fields"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/election"
)

// LoadBalancerClass is the spec.loadBalancerClass openelb serves, besides
// Services without a class.
const LoadBalancerClass = "openelb.kubesphere.io/lb"

// Errors a user gets for a Service openelb does not serve; wrapped with
// the Service's name.
var (
	ErrNotLoadBalancer = errors.New("not a LoadBalancer: openelb serves only Services of type LoadBalancer")
	ErrOtherClass      = errors.New("openelb serves only Services without a loadBalancerClass or of class " + LoadBalancerClass)
)

// fetcher reads what the commands show with one API client. It reads
// straight from the API server (no cache): a plugin runs once.
type fetcher struct {
	c   client.Client
	now func() time.Time
	// openelbNamespace is where the speakers run and keep their layer-2
	// node Leases.
	openelbNamespace string
}

// statusInput reads the Service named (every LoadBalancer Service openelb
// serves in the namespace when name is "", in every namespace when
// namespace is "") and the objects that describe it.
func (f *fetcher) statusInput(ctx context.Context, namespace, name string) (StatusInput, error) {
	in := StatusInput{Now: f.now(), LeaseNamespace: f.openelbNamespace}
	if name != "" {
		var svc corev1.Service
		if err := f.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &svc); err != nil {
			if apierrors.IsNotFound(err) {
				return in, fmt.Errorf("Service %s not found in namespace %s: %w", name, namespace, err)
			}
			return in, fmt.Errorf("reading Service %s/%s: %w", namespace, name, err)
		}
		if err := served(&svc); err != nil {
			return in, err
		}
		in.Services = []corev1.Service{svc}
	} else {
		var list corev1.ServiceList
		if err := f.c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return in, fmt.Errorf("listing Services%s: %w", inNamespace(namespace), err)
		}
		for _, s := range list.Items {
			if served(&s) == nil {
				in.Services = append(in.Services, s)
			}
		}
		if len(in.Services) == 0 {
			return in, nil
		}
	}

	if name != "" {
		var p v1alpha2.LoadBalancerPlan
		switch err := f.c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, &p); {
		case err == nil:
			in.Plans = []v1alpha2.LoadBalancerPlan{p}
		case !apierrors.IsNotFound(err):
			return in, crdError("reading LoadBalancerPlan "+namespace+"/"+name, err)
		}
	} else {
		var plans v1alpha2.LoadBalancerPlanList
		if err := f.c.List(ctx, &plans, client.InNamespace(namespace)); err != nil {
			return in, crdError("listing LoadBalancerPlans"+inNamespace(namespace), err)
		}
		in.Plans = plans.Items
	}
	var racks v1alpha2.LoadBalancerRackList
	if err := f.c.List(ctx, &racks); err != nil {
		return in, crdError("listing LoadBalancerRacks", err)
	}
	in.Racks = racks.Items
	var speakers v1alpha2.LoadBalancerSpeakerList
	if err := f.c.List(ctx, &speakers); err != nil {
		return in, crdError("listing LoadBalancerSpeakers", err)
	}
	in.Speakers = speakers.Items
	// BgpPeers only add which sessions a peerSelector leaves out: a user
	// who may not read them still gets the rest.
	var peers v1alpha2.BgpPeerList
	switch err := f.c.List(ctx, &peers); {
	case err == nil:
		in.Peers = peers.Items
	case !apierrors.IsForbidden(err):
		return in, crdError("listing BgpPeers", err)
	}

	if layer2(in.Plans) {
		if err := f.leases(ctx, &in); err != nil {
			return in, err
		}
	}

	planned := map[string]bool{}
	for _, p := range in.Plans {
		planned[p.Namespace+"/"+p.Name+"/"+string(p.Spec.ServiceUID)] = len(p.Spec.Addresses) > 0
	}
	for _, s := range in.Services {
		if planned[s.Namespace+"/"+s.Name+"/"+string(s.UID)] {
			continue
		}
		evs, err := f.warnings(ctx, &s)
		if err != nil {
			return in, err
		}
		in.Events = append(in.Events, evs...)
	}
	return in, nil
}

// layer2 says whether a plan has a layer-2 address.
func layer2(plans []v1alpha2.LoadBalancerPlan) bool {
	for _, p := range plans {
		for _, a := range p.Spec.Addresses {
			if a.Protocol == v1alpha2.ProtocolLayer2 {
				return true
			}
		}
	}
	return false
}

// leases reads the speakers' layer-2 node Leases, which say the nodes
// each layer-2 address is shared out among; a user who may not read them
// gets the rest (in.LeasesListed stays false).
func (f *fetcher) leases(ctx context.Context, in *StatusInput) error {
	var leases coordinationv1.LeaseList
	err := f.c.List(ctx, &leases, client.InNamespace(f.openelbNamespace), client.MatchingLabels{labelComponent: election.LeaseComponent})
	switch {
	case err == nil:
		in.Leases, in.LeasesListed = leases.Items, true
	case !apierrors.IsForbidden(err):
		return fmt.Errorf("listing the layer-2 node Leases in namespace %s: %w", f.openelbNamespace, err)
	}
	return nil
}

// warnings lists the Warning events of a Service (of this incarnation).
func (f *fetcher) warnings(ctx context.Context, s *corev1.Service) ([]corev1.Event, error) {
	var evs corev1.EventList
	sel := fields.SelectorFromSet(fields.Set{
		"involvedObject.kind": "Service",
		"involvedObject.name": s.Name,
		"involvedObject.uid":  string(s.UID),
		"type":                corev1.EventTypeWarning,
	})
	if err := f.c.List(ctx, &evs, client.InNamespace(s.Namespace), client.MatchingFieldsSelector{Selector: sel}); err != nil {
		if apierrors.IsForbidden(err) {
			return nil, nil
		}
		return nil, fmt.Errorf("listing the events of Service %s/%s: %w", s.Namespace, s.Name, err)
	}
	return evs.Items, nil
}

// poolsInput reads the Eips and IPClaims.
func (f *fetcher) poolsInput(ctx context.Context) (PoolsInput, error) {
	var in PoolsInput
	var eips v1alpha2.EipList
	if err := f.c.List(ctx, &eips); err != nil {
		return in, crdError("listing Eips", err)
	}
	in.Eips = eips.Items
	var claims v1alpha2.IPClaimList
	switch err := f.c.List(ctx, &claims); {
	case err == nil:
		in.Claims, in.ClaimsListed = claims.Items, true
	case !apierrors.IsForbidden(err):
		return in, crdError("listing IPClaims", err)
	}
	return in, nil
}

// served says why openelb does not serve the Service, if it does not.
func served(s *corev1.Service) error {
	if s.Spec.Type != corev1.ServiceTypeLoadBalancer {
		return fmt.Errorf("Service %s/%s is of type %s, %w", s.Namespace, s.Name, s.Spec.Type, ErrNotLoadBalancer)
	}
	if c := s.Spec.LoadBalancerClass; c != nil && *c != LoadBalancerClass {
		return fmt.Errorf("Service %s/%s has loadBalancerClass %s: %w", s.Namespace, s.Name, *c, ErrOtherClass)
	}
	return nil
}

// crdError says so when the API server does not know OpenELB's kinds.
func crdError(what string, err error) error {
	if meta.IsNoMatchError(err) || apierrors.IsNotFound(err) {
		return fmt.Errorf("%s: are OpenELB's CRDs (%s) installed? %w", what, v1alpha2.SchemeGroupVersion, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

// inNamespace is " in namespace ns" for a message, or " in all
// namespaces" for "".
func inNamespace(ns string) string {
	if ns == "" {
		return " in all namespaces"
	}
	return " in namespace " + ns
}
