package conformance

import (
	"cmp"
	"context"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

func withClass(class string) svcTweak {
	return func(s *v1.Service) { s.Spec.LoadBalancerClass = ptr.To(class) }
}

// untouched checks that Service ns/name has no address, no finalizer, no
// plan and no event from the provider.
func (l *lab) untouched(ns, name string) {
	l.t.Helper()
	ctx := context.Background()
	s, err := l.cs.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	if len(s.Status.LoadBalancer.Ingress) > 0 || len(s.Finalizers) > 0 {
		l.t.Errorf("Service %s/%s was touched: status %v, finalizers %v", ns, name, s.Status.LoadBalancer.Ingress, s.Finalizers)
	}
	var plan v1alpha2.LoadBalancerPlan
	if err := l.crd.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, &plan); !apierrors.IsNotFound(err) {
		l.t.Errorf("Service %s/%s has a plan (err %v)", ns, name, err)
	}
	evs, err := l.cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
	if err != nil {
		l.t.Fatal(err)
	}
	for _, e := range evs.Items {
		if apiServerEventSources[e.ReportingController] || apiServerEventSources[e.Source.Component] {
			continue
		}
		l.t.Errorf("Service %s/%s has an event from %s: %s", ns, name, cmp.Or(e.ReportingController, e.Source.Component), e.Message)
	}
}

// apiServerEventSources are the kube-apiserver's own controllers that may
// write events about any Service: the cluster IP and node port repair
// loops ("Cluster IP [IPv4]: ... is not allocated; repairing" when a
// repair pass races a Service's creation). Their events say nothing about
// the provider.
var apiServerEventSources = map[string]bool{
	"ipallocator-repair-controller":   true,
	"portallocator-repair-controller": true,
}

// TestLoadBalancerClass: the provider serves Services without a class and
// those of class openelb.kubesphere.io/lb, and never touches a Service of
// another class. With --ignore-classless-services it leaves class-less
// Services to the cluster's default implementation and still serves its
// own class.
func TestLoadBalancerClass(t *testing.T) {
	l := newLab(t)
	ccm := l.ccm("ccm")
	l.namespace("classes", nil)
	l.eip("eip-classes", "10.16.0.0/24", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})

	l.create(newService("classes", "other", withClass("example.com/other-lb")))
	l.create(newService("classes", "classless"))
	l.create(newService("classes", "ours", withClass(cloud.LoadBalancerClass)))
	l.waitIPs("classes", "classless", 1, ipTimeout)
	l.waitIPs("classes", "ours", 1, ipTimeout)
	time.Sleep(2 * time.Second) // the other class had as long as ours, and more
	l.untouched("classes", "other")

	if err := ccm.Stop(); err != nil {
		t.Fatal(err)
	}
	l.ccm("ccm-class-only", "--ignore-classless-services")
	l.create(newService("classes", "classless-2"))
	l.create(newService("classes", "ours-2", withClass(cloud.LoadBalancerClass)))
	l.waitIPs("classes", "ours-2", 1, ipTimeout)
	time.Sleep(2 * time.Second)
	l.untouched("classes", "classless-2")
	l.untouched("classes", "other")
}
