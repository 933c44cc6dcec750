package cloud

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// errInvalidService marks a Service whose own fields or annotations are
// wrong; it is reported with reason InvalidAnnotation and retried only with
// backoff, since only an edit of the Service can fix it.
var errInvalidService = errors.New("invalid service")

func serviceKey(svc *v1.Service) ipam.ServiceKey {
	return ipam.ServiceKey(svc.Namespace + "/" + svc.Name)
}

// buildRequest turns a Service into an allocation request. It reads the
// OpenELB annotations and spec.loadBalancerIP / ipFamilies / ipFamilyPolicy.
func buildRequest(svc *v1.Service, nsLabels map[string]string) (ipam.Request, error) {
	sh, err := sharingOf(svc)
	req := ipam.Request{
		Service:         serviceKey(svc),
		Namespace:       svc.Namespace,
		NamespaceLabels: nsLabels,
		ServiceLabels:   svc.Labels,
		Sharing:         sh,
	}
	if err != nil {
		return req, err
	}
	for _, p := range svc.Spec.Ports {
		req.Ports = append(req.Ports, ipam.Port{Protocol: string(p.Protocol), Port: p.Port})
	}
	if v, ok := svc.Annotations[v1alpha2.AnnotationEip]; ok {
		for _, name := range strings.Split(v, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				return req, fmt.Errorf("%w: annotation %s=%q names an empty pool", errInvalidService, v1alpha2.AnnotationEip, v)
			}
			req.Pools = append(req.Pools, name)
		}
	}

	annIPs, err := parseAddresses(svc.Annotations[v1alpha2.AnnotationIP])
	if err != nil {
		return req, fmt.Errorf("%w: annotation %s: %w", errInvalidService, v1alpha2.AnnotationIP, err)
	}
	specIPs, err := parseAddresses(svc.Spec.LoadBalancerIP)
	if err != nil {
		return req, fmt.Errorf("%w: spec.loadBalancerIP: %w", errInvalidService, err)
	}
	switch {
	case len(annIPs) > 0 && len(specIPs) > 0 && !slices.Equal(annIPs, specIPs):
		return req, fmt.Errorf("%w: annotation %s=%q and spec.loadBalancerIP=%q disagree", errInvalidService,
			v1alpha2.AnnotationIP, svc.Annotations[v1alpha2.AnnotationIP], svc.Spec.LoadBalancerIP)
	case len(annIPs) > 0:
		req.Addresses = annIPs
	default:
		req.Addresses = specIPs
	}

	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case v1.IPv4Protocol:
			req.Families = append(req.Families, ipam.IPv4)
		case v1.IPv6Protocol:
			req.Families = append(req.Families, ipam.IPv6)
		}
	}
	if len(req.Families) == 0 {
		// The API server always defaults ipFamilies; fall back to the
		// explicit addresses, then IPv4, for objects that skipped defaulting.
		for _, a := range req.Addresses {
			req.Families = append(req.Families, familyOf(a))
		}
		if len(req.Families) == 0 {
			req.Families = []ipam.Family{ipam.IPv4}
		}
	}
	policy := v1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	switch policy {
	case v1.IPFamilyPolicyRequireDualStack:
		req.RequireAll = true
	case v1.IPFamilyPolicyPreferDualStack:
	default:
		req.Families = req.Families[:1]
	}
	if len(req.Addresses) > len(req.Families) {
		return req, fmt.Errorf("%w: %d addresses requested but the Service has %d IP families (%v, policy %s)",
			errInvalidService, len(req.Addresses), len(req.Families), svc.Spec.IPFamilies, policy)
	}
	return req, nil
}

func parseAddresses(s string) ([]netip.Addr, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, nil
	}
	var out []netip.Addr
	seen := map[ipam.Family]bool{}
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		a, err := netip.ParseAddr(part)
		if err != nil {
			return nil, fmt.Errorf("%q is not an IP address", part)
		}
		if err := ipam.CheckUsable(a); err != nil {
			return nil, fmt.Errorf("%q: %w", part, err)
		}
		if seen[familyOf(a)] {
			return nil, fmt.Errorf("%q: at most one address per IP family", s)
		}
		seen[familyOf(a)] = true
		out = append(out, a)
	}
	return out, nil
}

// sharingOf reads with whom the Service may share an address. The key is
// trimmed here, the one place every path (allocation and re-adoption)
// reads it. The error names a malformed namespace list; the rest of the
// result is still filled in, for re-adoption, which must not fail.
func sharingOf(svc *v1.Service) (ipam.Sharing, error) {
	sh := ipam.Sharing{
		Key:   strings.TrimSpace(svc.Annotations[v1alpha2.AnnotationSharedIP]),
		Local: svc.Spec.ExternalTrafficPolicy == v1.ServiceExternalTrafficPolicyLocal,
	}
	if len(svc.Spec.Selector) > 0 {
		// Same namespace and same selector: the same pods, so the same
		// endpoint nodes. labels.Set sorts its keys.
		sh.Endpoints = svc.Namespace + "/" + labels.Set(svc.Spec.Selector).String()
	}
	v, ok := svc.Annotations[v1alpha2.AnnotationSharedIPNamespaces]
	if !ok {
		return sh, nil
	}
	for _, ns := range strings.Split(v, ",") {
		ns = strings.TrimSpace(ns)
		if ns == "" {
			continue
		}
		if ns != "*" {
			if errs := validation.IsDNS1123Label(ns); len(errs) > 0 {
				return sh, fmt.Errorf("%w: annotation %s=%q: %q is not a namespace name: %s",
					errInvalidService, v1alpha2.AnnotationSharedIPNamespaces, v, ns, strings.Join(errs, "; "))
			}
		}
		sh.Namespaces = append(sh.Namespaces, ns)
	}
	if sh.Key == "" && len(sh.Namespaces) > 0 {
		return sh, fmt.Errorf("%w: annotation %s needs a sharing key in %s", errInvalidService,
			v1alpha2.AnnotationSharedIPNamespaces, v1alpha2.AnnotationSharedIP)
	}
	return sh, nil
}

func familyOf(a netip.Addr) ipam.Family {
	if a.Is4() {
		return ipam.IPv4
	}
	return ipam.IPv6
}

// statusAddrs reads the addresses a Service already holds from its status.
func statusAddrs(svc *v1.Service) []netip.Addr {
	var out []netip.Addr
	for _, ing := range svc.Status.LoadBalancer.Ingress {
		if a, err := netip.ParseAddr(ing.IP); err == nil {
			out = append(out, a.Unmap())
		}
	}
	return out
}

// wantsLoadBalancer mirrors the service controller's rule (Classes): the
// Service is this provider's and not being deleted.
func (p *Provider) wantsLoadBalancer(svc *v1.Service) bool {
	return p.opts.Classes.Serves(svc) && svc.DeletionTimestamp == nil
}
