package kube

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

var managed = []metav1.ManagedFieldsEntry{{Manager: "kubectl", Operation: metav1.ManagedFieldsOperationApply}}

// TestTransforms checks each cache transform keeps every field a reader of
// the cache uses, drops the rest, and is idempotent (client-go may apply it
// to an object twice).
func TestTransforms(t *testing.T) {
	meta := func(ann map[string]string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace: "ns", Name: "web", UID: "u1", ResourceVersion: "7", Generation: 3,
			Labels:      map[string]string{discoveryv1.LabelServiceName: "web"},
			Annotations: ann, ManagedFields: managed,
			Finalizers: []string{"service.kubernetes.io/load-balancer-cleanup"},
		}
	}
	trimmedMeta := func(ann map[string]string) metav1.ObjectMeta {
		m := meta(ann)
		m.ManagedFields = nil
		return m
	}
	svcSpec := v1.ServiceSpec{
		Type:           v1.ServiceTypeLoadBalancer,
		LoadBalancerIP: "10.0.0.5",
		Ports:          []v1.ServicePort{{Protocol: v1.ProtocolTCP, Port: 80}},
		IPFamilies:     []v1.IPFamily{v1.IPv4Protocol},
	}
	svcStatus := v1.ServiceStatus{LoadBalancer: v1.LoadBalancerStatus{Ingress: []v1.LoadBalancerIngress{{IP: "10.0.0.5"}}}}
	conds := []metav1.Condition{{Type: "Planned", Status: metav1.ConditionTrue, Reason: "Planned"}}
	planSpec := v1alpha2.LoadBalancerPlanSpec{ServiceUID: "u1", Addresses: []v1alpha2.PlanAddress{{IP: "10.0.0.5", Pool: "p"}}}
	ready := discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)}

	for _, tc := range []struct {
		name      string
		transform toolscache.TransformFunc
		in, want  any
	}{
		{
			name:      "Service: managed fields and last-applied dropped, OpenELB annotations kept",
			transform: TrimService,
			in: &v1.Service{
				ObjectMeta: meta(map[string]string{lastApplied: `{"big":"copy"}`, v1alpha2.AnnotationSharedIP: "k"}),
				Spec:       svcSpec, Status: svcStatus,
			},
			want: &v1.Service{
				ObjectMeta: trimmedMeta(map[string]string{v1alpha2.AnnotationSharedIP: "k"}),
				Spec:       svcSpec, Status: svcStatus,
			},
		},
		{
			name:      "Service without annotations",
			transform: TrimService,
			in:        &v1.Service{ObjectMeta: meta(nil), Spec: svcSpec},
			want:      &v1.Service{ObjectMeta: trimmedMeta(nil), Spec: svcSpec},
		},
		{
			name:      "plan: managed fields dropped, annotations, spec and conditions kept",
			transform: trimPlan,
			in: &v1alpha2.LoadBalancerPlan{
				ObjectMeta: meta(map[string]string{"a": "b"}),
				Spec:       planSpec,
				Status:     v1alpha2.LoadBalancerPlanStatus{Conditions: conds},
			},
			want: &v1alpha2.LoadBalancerPlan{
				ObjectMeta: trimmedMeta(map[string]string{"a": "b"}),
				Spec:       planSpec,
				Status:     v1alpha2.LoadBalancerPlanStatus{Conditions: conds},
			},
		},
		{
			name:      "EndpointSlice: node names, conditions and Service label kept",
			transform: trimEndpointSlice,
			in: &discoveryv1.EndpointSlice{
				ObjectMeta:  meta(map[string]string{"endpoints.kubernetes.io/last-change-trigger-time": "x"}),
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints: []discoveryv1.Endpoint{{
					Addresses:  []string{"10.1.0.1"},
					Conditions: ready,
					Hostname:   ptr.To("h"),
					TargetRef:  &v1.ObjectReference{Kind: "Pod", Name: "p"},
					NodeName:   ptr.To("n1"),
					Zone:       ptr.To("z"),
					Hints:      &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: "z"}}},
				}},
				Ports: []discoveryv1.EndpointPort{{Port: ptr.To[int32](80)}},
			},
			want: &discoveryv1.EndpointSlice{
				ObjectMeta:  trimmedMeta(nil),
				AddressType: discoveryv1.AddressTypeIPv4,
				Endpoints:   []discoveryv1.Endpoint{{Conditions: ready, NodeName: ptr.To("n1")}},
			},
		},
		{
			name:      "tombstone passes through",
			transform: trimEndpointSlice,
			in:        toolscache.DeletedFinalStateUnknown{Key: "ns/web"},
			want:      toolscache.DeletedFinalStateUnknown{Key: "ns/web"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.transform(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("transform (-want +got):\n%s", diff)
			}
			again, err := tc.transform(got)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, again); diff != "" {
				t.Errorf("second transform (-want +got):\n%s", diff)
			}
		})
	}
}
