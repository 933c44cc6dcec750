package agent

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

func TestTrimPlan(t *testing.T) {
	full := &v1alpha2.LoadBalancerPlan{
		TypeMeta: metav1.TypeMeta{APIVersion: "network.kubesphere.io/v1alpha2", Kind: "LoadBalancerPlan"},
		ObjectMeta: metav1.ObjectMeta{
			Namespace: "default", Name: "web", UID: "plan-uid", ResourceVersion: "42", Generation: 3,
			Labels:          map[string]string{"app": "web"},
			Annotations:     map[string]string{"note": "big"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "v1", Kind: "Service", Name: "web", UID: "svc-uid"}},
			ManagedFields:   []metav1.ManagedFieldsEntry{{Manager: "openelb-ccm"}},
		},
		Spec: v1alpha2.LoadBalancerPlanSpec{
			ServiceUID: "svc-uid",
			Addresses: []v1alpha2.PlanAddress{
				{IP: "172.22.0.2", Pool: "eip", Protocol: v1alpha2.ProtocolBGP, Prefix: "172.22.0.0/24",
					BGP: &v1alpha2.BGPAttributes{Communities: []string{"no-export"}, ASPathPrepend: 2, ASPathPrependPeers: map[string]int32{"leaf2": 1}}},
				{IP: "192.168.50.100", Pool: "l2", Protocol: v1alpha2.ProtocolLayer2, Interface: "eth0"},
			},
			ExternalTrafficPolicy: "Local",
			EndpointNodes:         []string{"node1", "node2"},
		},
		Status: v1alpha2.LoadBalancerPlanStatus{Conditions: []metav1.Condition{{Type: "Planned", Status: metav1.ConditionTrue}}},
	}
	want := &v1alpha2.LoadBalancerPlan{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web", ResourceVersion: "42"},
		Spec:       full.Spec,
	}
	var transform toolscache.TransformFunc = trimPlan
	got, err := transform(full.DeepCopy())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	again, _ := transform(got)
	if diff := cmp.Diff(got, again); diff != "" {
		t.Errorf("not idempotent (-once +twice):\n%s", diff)
	}
	// Plans with equal attributes share one copy.
	other, _ := transform(full.DeepCopy())
	if a, b := got.(*v1alpha2.LoadBalancerPlan).Spec.Addresses[0].BGP, other.(*v1alpha2.LoadBalancerPlan).Spec.Addresses[0].BGP; a != b {
		t.Errorf("equal BGP attributes of two plans are two copies")
	}
	// A plan without addresses or endpoints keeps them nil.
	bare, _ := transform(&v1alpha2.LoadBalancerPlan{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "bare"}})
	if p := bare.(*v1alpha2.LoadBalancerPlan); p.Spec.Addresses != nil || p.Spec.EndpointNodes != nil {
		t.Errorf("bare plan: %+v", p.Spec)
	}
	// Tombstones and other objects pass through.
	tomb := toolscache.DeletedFinalStateUnknown{Key: "default/web", Obj: full}
	if out, _ := transform(tomb); out != any(tomb) {
		t.Errorf("tombstone changed: %v", out)
	}
}

func TestTrimEipAndSpeaker(t *testing.T) {
	eip := &v1alpha2.Eip{
		ObjectMeta: metav1.ObjectMeta{Name: "l2", UID: types.UID("uid-l2"), Generation: 2, ResourceVersion: "7",
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}, Annotations: map[string]string{"a": "b"}},
		Spec:   v1alpha2.EipSpec{Address: "192.168.50.100-192.168.50.110", Protocol: v1alpha2.ProtocolLayer2, Interface: "eth0"},
		Status: v1alpha2.EipStatus{Usage: 1},
	}
	got, _ := trimEip(eip)
	want := &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "l2", UID: "uid-l2", Generation: 2, ResourceVersion: "7"}, Spec: eip.Spec}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Eip (-want +got):\n%s", diff)
	}

	sp := &v1alpha2.LoadBalancerSpeaker{
		ObjectMeta: metav1.ObjectMeta{Name: "node2", ResourceVersion: "9", ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "openelb-speaker/node2"}}},
		Status: v1alpha2.LoadBalancerSpeakerStatus{
			Rack: "leaf1", Announcing: true, Paths: 10,
			Sessions: []v1alpha2.SpeakerSession{{Peer: "leaf1", State: "established"}},
			Layer2: []v1alpha2.SpeakerLayer2{
				{Pool: "l2", Interface: "eth0", MAC: "02:00:00:00:50:12", Answering: true, Addresses: 3, Reason: ReasonAnswering, Message: "m"},
				{Pool: "l2missing", Reason: ReasonNoInterface, Message: "no eth9"},
			},
			Problems: []v1alpha2.SpeakerProblem{{Object: "Eip/l2missing", Message: "no eth9"}},
		},
	}
	got, _ = trimSpeaker(sp)
	wantSp := &v1alpha2.LoadBalancerSpeaker{ObjectMeta: metav1.ObjectMeta{Name: "node2", ResourceVersion: "9"},
		Status: v1alpha2.LoadBalancerSpeakerStatus{Layer2: []v1alpha2.SpeakerLayer2{{Pool: "l2", MAC: "02:00:00:00:50:12"}}}}
	if diff := cmp.Diff(wantSp, got); diff != "" {
		t.Errorf("LoadBalancerSpeaker (-want +got):\n%s", diff)
	}
}
