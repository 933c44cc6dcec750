package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestReservedClaims covers the claims the leader makes ahead of demand:
// what a new leader does with those an earlier one left (bind the one a
// Service's status shows, follow a status that shows one later, delete the
// rest after the grace period), that new Services are served from them in
// address order and their claims end up bound, and that disabling the pool
// withdraws them.
func TestReservedClaims(t *testing.T) {
	l := newLab(t)
	ctx := context.Background()
	l.namespace("resv", nil)
	l.eip("eip-resv", "10.30.0.0/29", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"resv"} })

	// What a leader that died leaves behind: an unused reservation, and
	// one handed to a Service whose status was written but whose claim was
	// never bound.
	const dead = "dead-leader_00000001"
	reserve := func(addr string) {
		t.Helper()
		c := &v1alpha2.IPClaim{
			ObjectMeta: metav1.ObjectMeta{Name: v1alpha2.ClaimName(netip.MustParseAddr(addr))},
			Spec:       v1alpha2.IPClaimSpec{Address: addr, Pool: "eip-resv", ReservedBy: dead, Owners: []v1alpha2.ClaimOwner{}},
		}
		if err := l.crd.Create(ctx, c); err != nil {
			t.Fatalf("creating reserved claim %s: %v", addr, err)
		}
	}
	reserve("10.30.0.3")
	reserve("10.30.0.5")
	reserve("10.30.0.6")
	crashed := l.create(newService("resv", "crashed"))
	crashed.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "10.30.0.6", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)}}
	if _, err := l.cs.CoreV1().Services("resv").UpdateStatus(ctx, crashed, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	// A claim holding more than one owner would be refused by the API
	// server's validation: a reservation has none.
	bad := &v1alpha2.IPClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "10.30.0.7"},
		Spec: v1alpha2.IPClaimSpec{Address: "10.30.0.7", ReservedBy: dead,
			Owners: []v1alpha2.ClaimOwner{{Namespace: "resv", Name: "x", UID: "1"}}},
	}
	if err := l.crd.Create(ctx, bad); err == nil || !apierrors.IsInvalid(err) {
		t.Errorf("a reserved claim with owners was accepted (err %v)", err)
	}
	// A Service the dead leader's last status write reaches only after the
	// new leader started. It lives in a namespace no pool serves, so the
	// new leader cannot give it an address of its own first.
	l.namespace("resv-late", nil)
	late := l.create(newService("resv-late", "late"))

	const grace = 10 * time.Second
	l.ccm("ccm", "--stale-reservation-grace="+grace.String())
	started := time.Now()
	// The late status write lands: the Service keeps that address and the
	// reservation is bound to it.
	l.waitEvent("resv-late", "late", "NoPool", ipTimeout)
	late = l.get("resv-late", "late")
	late.Status.LoadBalancer.Ingress = []v1.LoadBalancerIngress{{IP: "10.30.0.3", IPMode: ptr.To(v1.LoadBalancerIPModeVIP)}}
	if _, err := l.cs.CoreV1().Services("resv-late").UpdateStatus(ctx, late, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The reservation the status shows is bound to that Service...
	claim := waitClaim(t, *l, netip.MustParseAddr("10.30.0.6"), func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) > 0 })
	if len(claim.Spec.Owners) != 1 || claim.Spec.Owners[0].UID != crashed.UID || claim.Spec.ReservedBy != "" {
		t.Errorf("claim of 10.30.0.6 = %+v, want bound to resv/crashed", claim.Spec)
	}
	// ...and the new leader reserves the two lowest free addresses.
	mine := l.waitReservations("eip-resv", []string{"10.30.0.0", "10.30.0.1"})
	for _, c := range mine {
		if c.Spec.ReservedBy == dead || c.Spec.ReservedBy == "" {
			t.Errorf("reservation %s made by %q, want the new leader", c.Name, c.Spec.ReservedBy)
		}
	}
	if got := ingressAddrs(l.get("resv", "crashed")); len(got) != 1 || got[0].String() != "10.30.0.6" {
		t.Errorf("resv/crashed now has %v, want to keep 10.30.0.6", got)
	}

	c3 := waitClaim(t, *l, netip.MustParseAddr("10.30.0.3"), func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) > 0 })
	if len(c3.Spec.Owners) != 1 || c3.Spec.Owners[0].UID != late.UID {
		t.Errorf("claim of 10.30.0.3 = %+v, want bound to resv/late", c3.Spec)
	}
	if got := ingressAddrs(l.get("resv-late", "late")); len(got) != 1 || got[0].String() != "10.30.0.3" {
		t.Errorf("resv/late has %v, want the address its status showed, 10.30.0.3", got)
	}
	// The unused one is held for the grace period, then deleted.
	var c5 v1alpha2.IPClaim
	if err := l.crd.Get(ctx, client.ObjectKey{Name: "10.30.0.5"}, &c5); err != nil && time.Since(started) < grace {
		t.Errorf("the unused reservation of the earlier leader went before the grace period: %v", err)
	}
	waitGone(t, *l, &v1alpha2.IPClaim{}, client.ObjectKey{Name: "10.30.0.5"})
	if time.Since(started) < grace {
		t.Errorf("the unused reservation was deleted %s after the start, before the %s grace", time.Since(started), grace)
	}

	// New Services take the addresses in order, the reserved ones included,
	// and their claims are bound.
	for i, want := range []string{"10.30.0.0", "10.30.0.1", "10.30.0.2"} {
		name := fmt.Sprintf("fresh-%d", i)
		svc := l.create(newService("resv", name))
		got := l.waitIPs("resv", name, 1, ipTimeout)
		if got[0].String() != want {
			t.Errorf("%s got %s, want %s", name, got[0], want)
		}
		c := waitClaim(t, *l, got[0], func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) > 0 })
		if len(c.Spec.Owners) != 1 || c.Spec.Owners[0].UID != svc.UID || c.Spec.ReservedBy != "" {
			t.Errorf("claim of %s = %+v, want bound to resv/%s", got[0], c.Spec, name)
		}
		l.waitEvent("resv", name, "IPAllocated", 5*time.Second)
	}
	l.waitReservations("eip-resv", []string{"10.30.0.4", "10.30.0.5"})
	// Reservations are not usage.
	l.waitEip("eip-resv", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Usage == 5 })

	// Disabling the pool withdraws its reservations; Services keep theirs.
	e := l.getEip("eip-resv")
	e.Spec.Disable = true
	if err := l.crd.Update(ctx, e); err != nil {
		t.Fatal(err)
	}
	l.waitReservations("eip-resv", nil)
	if got := ingressAddrs(l.get("resv", "fresh-0")); len(got) != 1 || got[0].String() != "10.30.0.0" {
		t.Errorf("resv/fresh-0 has %v after the pool was disabled, want 10.30.0.0", got)
	}
	l.checkClaims("resv", map[string]netip.Addr{
		"crashed": netip.MustParseAddr("10.30.0.6"),
		"late":    netip.MustParseAddr("10.30.0.3"), // in resv-late
		"fresh-0": netip.MustParseAddr("10.30.0.0"),
		"fresh-1": netip.MustParseAddr("10.30.0.1"),
		"fresh-2": netip.MustParseAddr("10.30.0.2"),
	})
}

// waitReservations waits until the reserved claims of pool are exactly want
// (addresses) and returns them.
func (l *lab) waitReservations(pool string, want []string) []v1alpha2.IPClaim {
	l.t.Helper()
	var got []string
	var claims []v1alpha2.IPClaim
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		var list v1alpha2.IPClaimList
		if err := l.crd.List(ctx, &list); err != nil {
			return false, nil
		}
		got, claims = nil, nil
		for _, c := range list.Items {
			if c.Spec.Pool == pool && c.Spec.ReservedBy != "" {
				got = append(got, c.Spec.Address)
				claims = append(claims, c)
			}
		}
		sort.Strings(got)
		return fmt.Sprint(got) == fmt.Sprint(want), nil
	})
	if err != nil {
		l.t.Fatalf("reserved claims of %s = %v, want %v", pool, got, want)
	}
	return claims
}

func (l *lab) get(ns, name string) *v1.Service {
	l.t.Helper()
	s, err := l.cs.CoreV1().Services(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		l.t.Fatal(err)
	}
	return s
}
