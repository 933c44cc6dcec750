package cloud

import v1 "k8s.io/api/core/v1"

// LoadBalancerClass is the spec.loadBalancerClass this provider serves
// whatever else the cluster runs: a Service asks for openelb by naming
// it, and no other implementation touches it (Kubernetes leaves a
// Service with a class to the controller of that class).
const LoadBalancerClass = "openelb.kubesphere.io/lb"

// Classes says which LoadBalancer Services the provider serves: those of
// LoadBalancerClass always, those without a class unless IgnoreClassless
// (another implementation is the cluster's default load balancer), those
// of any other class never.
type Classes struct {
	IgnoreClassless bool
}

// Serves says whether svc, a LoadBalancer Service, is this provider's to
// serve (deletion aside).
func (c Classes) Serves(svc *v1.Service) bool {
	if svc.Spec.Type != v1.ServiceTypeLoadBalancer {
		return false
	}
	if svc.Spec.LoadBalancerClass == nil {
		return !c.IgnoreClassless
	}
	return *svc.Spec.LoadBalancerClass == LoadBalancerClass
}
