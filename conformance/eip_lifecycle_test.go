package conformance

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestEipInUse shrinks and then deletes an Eip whose addresses Services
// hold: the addresses stay the Services' and stay in their plans (so they
// stay announced), the Eip says which addresses are outside its range and,
// while deleted, that it waits for them, and it is gone once the last
// Service lets go.
func TestEipInUse(t *testing.T) {
	l := newLab(t)
	l.ccm("ccm")
	ctx := context.Background()
	l.namespace("life", nil)
	l.eip("eip-life", "10.18.0.0/28", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"life"} })
	l.waitEip("eip-life", 10*time.Second, func(e *v1alpha2.Eip) bool {
		return slices.Contains(e.Finalizers, v1alpha2.FinalizerEipProtection)
	})
	for _, name := range []string{"a", "b"} {
		l.create(newService("life", name))
	}
	if got := l.waitIPs("life", "a", 1, ipTimeout)[0]; got != netip.MustParseAddr("10.18.0.0") {
		t.Fatalf("life/a got %s, want 10.18.0.0", got)
	}
	l.waitIPs("life", "b", 1, ipTimeout)
	announced := func(name, ip string) {
		t.Helper()
		l.waitPlan("life", name, func(p *v1alpha2.LoadBalancerPlan) bool {
			return len(p.Spec.Addresses) == 1 && p.Spec.Addresses[0].IP == ip &&
				p.Spec.Addresses[0].Pool == "eip-life" && p.Spec.Addresses[0].Protocol == v1alpha2.ProtocolBGP
		})
	}
	announced("a", "10.18.0.0")

	// Shrink the range below a's address.
	e := l.getEip("eip-life")
	e.Spec.Address = "10.18.0.1-10.18.0.15"
	if err := l.crd.Update(ctx, e); err != nil {
		t.Fatal(err)
	}
	e = l.waitEip("eip-life", 10*time.Second, func(e *v1alpha2.Eip) bool {
		return meta.IsStatusConditionTrue(e.Status.Conditions, "AddressesOutsideRange")
	})
	if c := meta.FindStatusCondition(e.Status.Conditions, "AddressesOutsideRange"); !strings.Contains(c.Message, "10.18.0.0") {
		t.Errorf("AddressesOutsideRange should name 10.18.0.0: %q", c.Message)
	}
	if got := ingressAddrs(l.get("life", "a")); len(got) != 1 || got[0] != netip.MustParseAddr("10.18.0.0") {
		t.Errorf("life/a holds %v after the shrink, want 10.18.0.0 kept", got)
	}
	announced("a", "10.18.0.0")
	l.create(newService("life", "c"))
	if got := l.waitIPs("life", "c", 1, ipTimeout)[0]; got == netip.MustParseAddr("10.18.0.0") || !mustPrefix("10.18.0.0/28").Contains(got) {
		t.Errorf("life/c got %s, want a free address of the shrunk range", got)
	}

	// Delete it while a, b and c hold addresses.
	if err := l.crd.Delete(ctx, e); err != nil {
		t.Fatal(err)
	}
	e = l.waitEip("eip-life", 10*time.Second, func(e *v1alpha2.Eip) bool {
		c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
		return e.DeletionTimestamp != nil && c != nil && c.Status == metav1.ConditionFalse && c.Reason == "Deleting"
	})
	if c := meta.FindStatusCondition(e.Status.Conditions, "Ready"); !strings.Contains(c.Message, "10.18.0.0") || !strings.Contains(c.Message, "3 of its addresses") {
		t.Errorf("Deleting condition should count and name the held addresses: %q", c.Message)
	}
	l.waitObjectEvent("eip-life", "DeletionBlocked")
	announced("a", "10.18.0.0")
	// Nothing new comes from a deleted pool.
	l.create(newService("life", "late", withLoadBalancerIP("10.18.0.9")))
	l.waitEvent("life", "late", "PoolDisabled", ipTimeout)

	for _, name := range []string{"a", "b", "c"} {
		if err := l.cs.CoreV1().Services("life").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitGone(t, *l, &v1alpha2.Eip{}, client.ObjectKey{Name: "eip-life"})
}

// waitObjectEvent waits for an event with the reason on a cluster-scoped
// object of that name.
func (l *lab) waitObjectEvent(name, reason string) {
	l.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		evs, err := l.cs.CoreV1().Events(metav1.NamespaceDefault).List(context.Background(), metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
		if err == nil {
			for _, e := range evs.Items {
				if e.Reason == reason {
					return
				}
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	l.t.Errorf("no %s event on %s within 10s", reason, name)
}
