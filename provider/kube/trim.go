package kube

import (
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// Cache transforms: with tens of thousands of Services, what the caches
// hold per object is most of the CCM's memory, so each kind keeps only what
// some reader uses. They run on objects fresh from the API server, before
// anything else sees them, and are idempotent as client-go requires.

// lastApplied is kubectl's client-side apply annotation: a JSON copy of the
// whole object as last applied, which nothing in the CCM reads.
const lastApplied = v1.LastAppliedConfigAnnotation

// TrimService drops what nothing in the CCM reads from a cached Service:
// managed fields and kubectl's last-applied-configuration annotation.
// Readers compare annotations (a change to only that one wakes nothing
// up; it never changes an outcome) and the service controller patches
// status and finalizers as a diff of two copies of the cached object, so
// neither depends on them. It is the transform of the shared Service
// informer, set by whoever uses the informer first.
func TrimService(obj any) (any, error) {
	if s, ok := obj.(*v1.Service); ok {
		s.ManagedFields = nil
		delete(s.Annotations, lastApplied)
	}
	return obj, nil
}

// trimPlan drops a plan's managed fields: the provider reads spec and
// status.conditions, writes the spec with an update of the main resource
// (nil managed fields there leave them as they are) and the conditions
// with a merge patch of only them.
func trimPlan(obj any) (any, error) {
	if p, ok := obj.(*v1alpha2.LoadBalancerPlan); ok {
		p.ManagedFields = nil
	}
	return obj, nil
}

// trimEndpointSlice keeps of each endpoint what planning reads (nodeName,
// conditions) and the labels naming the slice's Service; slices are only
// read, never written back.
func trimEndpointSlice(obj any) (any, error) {
	if es, ok := obj.(*discoveryv1.EndpointSlice); ok {
		es.ManagedFields = nil
		es.Annotations = nil
		es.Ports = nil
		for i := range es.Endpoints {
			ep := &es.Endpoints[i]
			ep.Addresses = nil
			ep.Hostname = nil
			ep.TargetRef = nil
			ep.DeprecatedTopology = nil
			ep.Zone = nil
			ep.Hints = nil
		}
	}
	return obj, nil
}
