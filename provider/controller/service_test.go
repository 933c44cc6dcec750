package controller

import (
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	servicehelper "k8s.io/cloud-provider/service/helpers"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

func svc(tweaks ...func(*v1.Service)) *v1.Service {
	s := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "web", ResourceVersion: "1"},
		Spec:       v1.ServiceSpec{Type: v1.ServiceTypeLoadBalancer},
	}
	for _, f := range tweaks {
		f(s)
	}
	return s
}

func TestRelevantAndChanged(t *testing.T) {
	withIP := func(s *v1.Service) { s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "10.0.0.1"}} }
	clusterIP := func(s *v1.Service) { s.Spec.Type = v1.ServiceTypeClusterIP }
	finalizer := func(s *v1.Service) { s.Finalizers = []string{servicehelper.LoadBalancerCleanupFinalizer} }
	for _, tc := range []struct {
		name     string
		old, cur *v1.Service
		relevant bool
		changed  bool
	}{
		{"resync", svc(), svc(func(s *v1.Service) { s.ResourceVersion = "2" }), true, false},
		{"own status write", svc(), svc(withIP, finalizer), true, true},
		{"unrelated status", svc(withIP), svc(withIP, func(s *v1.Service) {
			s.Status.Conditions = []metav1.Condition{{Type: "X"}}
		}), true, false},
		{"annotation", svc(), svc(func(s *v1.Service) { s.Annotations = map[string]string{"a": "b"} }), true, true},
		{"class set: not ours", svc(), svc(func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To("other") }), false, true},
		{"to ClusterIP with address", svc(withIP), svc(withIP, clusterIP), true, true},
		{"ClusterIP never served", svc(clusterIP), svc(clusterIP, func(s *v1.Service) { s.Labels = map[string]string{"x": "y"} }), false, true},
		{"labels choose pools", svc(), svc(func(s *v1.Service) { s.Labels = map[string]string{"tier": "gold"} }), true, true},
		{"deleting", svc(finalizer), svc(finalizer, func(s *v1.Service) { s.DeletionTimestamp = ptr.To(metav1.Now()) }), true, true},
		{"openelb's class", svc(), svc(func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To(cloud.LoadBalancerClass) }), true, true},
		{"another class with an address is left alone", svc(), svc(withIP, finalizer, func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To("other") }), false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := (&Controller{}).relevant(tc.cur); got != tc.relevant {
				t.Errorf("relevant = %v, want %v", got, tc.relevant)
			}
			if got := changed(tc.old, tc.cur); got != tc.changed {
				t.Errorf("changed = %v, want %v", got, tc.changed)
			}
		})
	}
}

// TestClassesWithoutClassless: with IgnoreClassless, class-less Services
// are another implementation's (even with the shared finalizer), openelb's
// class is still served.
func TestClassesWithoutClassless(t *testing.T) {
	c := &Controller{classes: cloud.Classes{IgnoreClassless: true}}
	withIP := func(s *v1.Service) { s.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "10.0.0.1"}} }
	if c.relevant(svc()) || c.relevant(svc(withIP)) || c.wants(svc()) {
		t.Error("a class-less Service is served with IgnoreClassless")
	}
	ours := svc(func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To(cloud.LoadBalancerClass) })
	if !c.relevant(ours) || !c.wants(ours) {
		t.Error("a Service of openelb's class is not served")
	}
}
