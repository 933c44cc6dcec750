package cloud

import (
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

// fuzzFamilies are the spec.ipFamilies the API server accepts (none when
// a client skipped defaulting).
var fuzzFamilies = [][]v1.IPFamily{
	nil, {v1.IPv4Protocol}, {v1.IPv6Protocol},
	{v1.IPv4Protocol, v1.IPv6Protocol}, {v1.IPv6Protocol, v1.IPv4Protocol},
}

var fuzzPolicies = []*v1.IPFamilyPolicy{
	nil, ptrPolicy(v1.IPFamilyPolicySingleStack), ptrPolicy(v1.IPFamilyPolicyPreferDualStack), ptrPolicy(v1.IPFamilyPolicyRequireDualStack),
}

func ptrPolicy(p v1.IPFamilyPolicy) *v1.IPFamilyPolicy { return &p }

// FuzzBuildRequest feeds buildRequest arbitrary spec.loadBalancerIP,
// eip.openelb.kubesphere.io/v1alpha1 addresses, v1alpha2 pools and
// openelb.kubesphere.io/shared-ip keys with every ipFamilies/policy the API
// server allows. It must never panic; a refusal is an errInvalidService
// (reported, retried only with backoff); an accepted request holds valid
// addresses without zone or IPv4-mapped form, at most one per family and
// no more than families, exactly what the Service asked for, and 1 or 2
// distinct families that follow spec.ipFamilies and the policy.
func FuzzBuildRequest(f *testing.F) {
	for _, s := range []struct{ lbIP, annIP, pools, key string }{
		{"", "", "", ""},
		{"172.22.0.2", "", "eip-sample-pool", "web"},
		{"", "172.22.0.2,2001:db8::2", "pool-v4, pool-v6", " key "},
		{"2001:db8::2, 172.22.0.2", "172.22.0.2,2001:db8::2", "", ""},
		{"172.22.0.2,172.22.0.3", "", "a,,b", ""},
		{"fe80::1%eth0", "::ffff:172.22.0.2", " ", ""},
		{"172.22.0.2", "172.22.0.3", "pool", "k"},
		{" ", "2001:db8::1", "", ""},
		{"127.0.0.1", "ff02::1", "", ""},
	} {
		for fam := range fuzzFamilies {
			f.Add(s.lbIP, s.annIP, s.pools, s.key, uint8(fam), uint8(fam%len(fuzzPolicies)), true)
		}
	}
	f.Fuzz(func(t *testing.T, lbIP, annIP, pools, key string, fam, policy uint8, annotate bool) {
		svc := &v1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "svc", Annotations: map[string]string{}},
			Spec: v1.ServiceSpec{
				Type:           v1.ServiceTypeLoadBalancer,
				LoadBalancerIP: lbIP,
				Ports:          []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}},
				IPFamilies:     fuzzFamilies[int(fam)%len(fuzzFamilies)],
				IPFamilyPolicy: fuzzPolicies[int(policy)%len(fuzzPolicies)],
			},
		}
		if annotate {
			svc.Annotations[v1alpha2.AnnotationIP] = annIP
			svc.Annotations[v1alpha2.AnnotationEip] = pools
			svc.Annotations[v1alpha2.AnnotationSharedIP] = key
		}
		req, err := buildRequest(svc, nil)
		if err != nil {
			if !errors.Is(err, errInvalidService) {
				t.Fatalf("refusal %v is not an errInvalidService", err)
			}
			return
		}
		checkRequest(t, svc, req)
	})
}

// checkRequest checks an accepted request against the Service it came from.
func checkRequest(t *testing.T, svc *v1.Service, req ipam.Request) {
	t.Helper()
	seen := map[ipam.Family]bool{}
	for _, a := range req.Addresses {
		if !a.IsValid() || a.Zone() != "" || a.Is4In6() {
			t.Fatalf("accepted address %v (valid %v, zone %q, IPv4-mapped %v)", a, a.IsValid(), a.Zone(), a.Is4In6())
		}
		if seen[familyOf(a)] {
			t.Fatalf("two %s addresses accepted: %v", familyOf(a), req.Addresses)
		}
		seen[familyOf(a)] = true
	}
	// The addresses are those asked for, in order: the annotation's, or
	// spec.loadBalancerIP's, which must then say the same.
	ann, spec := fuzzAddrs(svc.Annotations[v1alpha2.AnnotationIP]), fuzzAddrs(svc.Spec.LoadBalancerIP)
	want := spec
	if len(ann) > 0 {
		want = ann
		if len(spec) > 0 && !slices.Equal(ann, spec) {
			t.Fatalf("annotation %v and loadBalancerIP %v disagree, yet the request was accepted", ann, spec)
		}
	}
	if !slices.Equal(req.Addresses, want) {
		t.Fatalf("request addresses %v, the Service asked for %v", req.Addresses, want)
	}

	if n := len(req.Families); n < 1 || n > 2 || (n == 2 && req.Families[0] == req.Families[1]) {
		t.Fatalf("families %v: want 1 or 2 distinct", req.Families)
	}
	if len(req.Addresses) > len(req.Families) {
		t.Fatalf("%d addresses for families %v", len(req.Addresses), req.Families)
	}
	policy := v1.IPFamilyPolicySingleStack
	if svc.Spec.IPFamilyPolicy != nil {
		policy = *svc.Spec.IPFamilyPolicy
	}
	if policy == v1.IPFamilyPolicySingleStack && len(req.Families) != 1 {
		t.Fatalf("SingleStack Service got families %v", req.Families)
	}
	if req.RequireAll != (policy == v1.IPFamilyPolicyRequireDualStack) {
		t.Fatalf("policy %s, RequireAll %v", policy, req.RequireAll)
	}
	if fams := svc.Spec.IPFamilies; len(fams) > 0 {
		for i, f := range req.Families {
			if i >= len(fams) || fams[i] != apiFamily(f) {
				t.Fatalf("families %v do not follow spec.ipFamilies %v", req.Families, fams)
			}
		}
		if policy != v1.IPFamilyPolicySingleStack && len(req.Families) != len(fams) {
			t.Fatalf("%s Service with ipFamilies %v got families %v", policy, fams, req.Families)
		}
	} else {
		for _, a := range req.Addresses {
			if !slices.Contains(req.Families, familyOf(a)) {
				t.Fatalf("families %v, derived from the addresses, miss %v's", req.Families, a)
			}
		}
	}

	for _, p := range req.Pools {
		if p == "" || p != strings.TrimSpace(p) || strings.Contains(p, ",") {
			t.Fatalf("pool name %q in %v", p, req.Pools)
		}
	}
	if v, ok := svc.Annotations[v1alpha2.AnnotationEip]; ok && strings.Join(req.Pools, ",") != trimmedList(v) {
		t.Fatalf("pools %q from annotation %q", req.Pools, v)
	}
	if k := strings.TrimSpace(svc.Annotations[v1alpha2.AnnotationSharedIP]); req.Sharing.Key != k {
		t.Fatalf("sharing key %q, annotation says %q", req.Sharing.Key, k)
	}
}

// fuzzAddrs is what an address list says when it is valid.
func fuzzAddrs(s string) []netip.Addr {
	var out []netip.Addr
	if strings.TrimSpace(s) == "" {
		return nil
	}
	for _, part := range strings.Split(s, ",") {
		if a, err := netip.ParseAddr(strings.TrimSpace(part)); err == nil {
			out = append(out, a)
		}
	}
	return out
}

func apiFamily(f ipam.Family) v1.IPFamily {
	if f == ipam.IPv4 {
		return v1.IPv4Protocol
	}
	return v1.IPv6Protocol
}

func trimmedList(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = strings.TrimSpace(p)
	}
	return strings.Join(parts, ",")
}
