package cloud

import (
	"errors"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/ipam"
)

type tweak func(*v1.Service)

func newService(name string, tweaks ...tweak) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name},
		Spec: v1.ServiceSpec{
			Type:       v1.ServiceTypeLoadBalancer,
			Ports:      []v1.ServicePort{{Port: 80, Protocol: v1.ProtocolTCP}},
			IPFamilies: []v1.IPFamily{v1.IPv4Protocol},
		},
	}
	for _, f := range tweaks {
		f(s)
	}
	return s
}

func tweakAnnotation(k, v string) tweak {
	return func(s *v1.Service) {
		if s.Annotations == nil {
			s.Annotations = map[string]string{}
		}
		s.Annotations[k] = v
	}
}

func tweakFamilies(p v1.IPFamilyPolicy, fams ...v1.IPFamily) tweak {
	return func(s *v1.Service) { s.Spec.IPFamilyPolicy, s.Spec.IPFamilies = &p, fams }
}

func tweakLBIP(ip string) tweak { return func(s *v1.Service) { s.Spec.LoadBalancerIP = ip } }

func TestBuildRequest(t *testing.T) {
	base := ipam.Request{Service: "ns/web", Namespace: "ns", Families: []ipam.Family{ipam.IPv4},
		Ports: []ipam.Port{{Protocol: "TCP", Port: 80}}}
	with := func(f func(*ipam.Request)) ipam.Request {
		r := base
		f(&r)
		return r
	}
	for _, tc := range []struct {
		name    string
		svc     *v1.Service
		want    ipam.Request
		wantErr bool
	}{
		{name: "plain", svc: newService("web"), want: base},
		{name: "pool annotation", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationEip, "eip-a")),
			want: with(func(r *ipam.Request) { r.Pools = []string{"eip-a"} })},
		{name: "one pool per family", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationEip, "eip-a, eip-b")),
			want: with(func(r *ipam.Request) { r.Pools = []string{"eip-a", "eip-b"} })},
		{name: "empty pool name", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationEip, "eip-a,")), wantErr: true},
		{name: "ip annotation", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "10.0.0.1")),
			want: with(func(r *ipam.Request) { r.Addresses = []netip.Addr{netip.MustParseAddr("10.0.0.1")} })},
		{name: "loadBalancerIP", svc: newService("web", tweakLBIP("10.0.0.2")),
			want: with(func(r *ipam.Request) { r.Addresses = []netip.Addr{netip.MustParseAddr("10.0.0.2")} })},
		{name: "annotation and loadBalancerIP agree", svc: newService("web", tweakLBIP("10.0.0.2"), tweakAnnotation(v1alpha2.AnnotationIP, "10.0.0.2")),
			want: with(func(r *ipam.Request) { r.Addresses = []netip.Addr{netip.MustParseAddr("10.0.0.2")} })},
		{name: "annotation and loadBalancerIP disagree", svc: newService("web", tweakLBIP("10.0.0.2"), tweakAnnotation(v1alpha2.AnnotationIP, "10.0.0.3")), wantErr: true},
		{name: "garbage ip", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "ten")), wantErr: true},
		{name: "zone", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "fe80::1%eth0")), wantErr: true},
		{name: "mapped", svc: newService("web", tweakLBIP("::ffff:10.0.0.1")), wantErr: true},
		{name: "two v4", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "10.0.0.1,10.0.0.2")), wantErr: true},
		{name: "two addresses single stack", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "10.0.0.1,fd00::1")), wantErr: true},
		{name: "require dual stack",
			svc: newService("web", tweakFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv6Protocol, v1.IPv4Protocol)),
			want: with(func(r *ipam.Request) {
				r.Families = []ipam.Family{ipam.IPv6, ipam.IPv4}
				r.RequireAll = true
			})},
		{name: "prefer dual stack",
			svc:  newService("web", tweakFamilies(v1.IPFamilyPolicyPreferDualStack, v1.IPv4Protocol, v1.IPv6Protocol)),
			want: with(func(r *ipam.Request) { r.Families = []ipam.Family{ipam.IPv4, ipam.IPv6} })},
		{name: "single stack keeps the first family",
			svc:  newService("web", tweakFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)),
			want: with(func(r *ipam.Request) { r.Families = []ipam.Family{ipam.IPv6} })},
		{name: "sharing key", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationSharedIP, " front ")),
			want: with(func(r *ipam.Request) { r.Sharing.Key = "front" })},
		{name: "sharing namespaces", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationSharedIP, "front"),
			tweakAnnotation(v1alpha2.AnnotationSharedIPNamespaces, "team-b, *,")),
			want: with(func(r *ipam.Request) { r.Sharing.Key, r.Sharing.Namespaces = "front", []string{"team-b", "*"} })},
		{name: "sharing namespaces need a key", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationSharedIPNamespaces, "team-b")), wantErr: true},
		{name: "sharing namespace not a name", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationSharedIP, "k"),
			tweakAnnotation(v1alpha2.AnnotationSharedIPNamespaces, "Team_B")), wantErr: true},
		{name: "local traffic with selector", svc: newService("web", func(s *v1.Service) {
			s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
			s.Spec.Selector = map[string]string{"tier": "web", "app": "shop"}
		}), want: with(func(r *ipam.Request) { r.Sharing.Local, r.Sharing.Endpoints = true, "ns/app=shop,tier=web" })},
		{name: "loopback", svc: newService("web", tweakLBIP("127.0.0.1")), wantErr: true},
		{name: "multicast", svc: newService("web", tweakAnnotation(v1alpha2.AnnotationIP, "224.0.0.5")), wantErr: true},
		{name: "unspecified", svc: newService("web", tweakLBIP("0.0.0.0")), wantErr: true},
		{name: "link-local v6", svc: newService("web", tweakFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol), tweakLBIP("fe80::1")), wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svc := tc.svc.DeepCopy()
			tc.svc.Name = "web"
			svc.Name = "web"
			orig := svc.DeepCopy()
			got, err := buildRequest(svc, nil)
			if tc.wantErr {
				if !errors.Is(err, errInvalidService) {
					t.Fatalf("want errInvalidService, got %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateComparable(netip.Addr{}), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("request (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(orig, svc); diff != "" {
				t.Errorf("buildRequest mutated the Service (-before +after):\n%s", diff)
			}
		})
	}
}

func TestClaimNameIsOneToOne(t *testing.T) {
	for _, tc := range []struct{ addr, want string }{
		{"10.0.0.1", "10.0.0.1"},
		{"fd00::1", "v6-fd000000000000000000000000000001"},
		{"::ffff:10.0.0.1", "10.0.0.1"},
	} {
		if got := v1alpha2.ClaimName(netip.MustParseAddr(tc.addr)); got != tc.want {
			t.Errorf("ClaimName(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
}
