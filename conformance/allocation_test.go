package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

const ipTimeout = 30 * time.Second

// TestAllocation runs the real CCM against a real control plane and checks
// the allocation rules end to end. Subtests share the control plane and the
// CCM, each in its own namespaces and address ranges.
func TestAllocation(t *testing.T) {
	l := newLab(t)
	ccm := l.ccm("ccm")

	t.Run("NodeInitialization", func(t *testing.T) {
		l := l.in(t)
		testNodeInitialization(t, *l)
	})

	t.Run("OpenELBManifestsAndNamespaceRules", func(t *testing.T) {
		l := l.in(t)
		l.apply("openelb-eips.yaml")
		l.namespace("team-a", nil)
		l.namespace("team-b", map[string]string{"tier": "gold"})
		l.namespace("team-c", nil)
		l.namespace("team-d", nil)

		type group struct {
			ns, pool string
			n        int
			prefix   netip.Prefix
			tweaks   []svcTweak
		}
		groups := []group{
			{"team-a", "eip-team-a", 60, mustPrefix("10.10.1.0/24"), nil},      // priority 1 beats 5
			{"team-b", "eip-gold", 60, mustPrefix("10.10.3.0/24"), nil},        // namespaceSelector
			{"team-c", "eip-sample-pool", 60, mustPrefix("10.10.4.0/24"), nil}, // default pool
			{"team-d", "eip-manual", 20, mustPrefix("10.10.5.0/27"), []svcTweak{annotate(v1alpha2.AnnotationEip, "eip-manual")}},
		}
		var wg sync.WaitGroup
		errs := make(chan error, 200)
		for _, g := range groups {
			for i := range g.n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					s := newService(g.ns, fmt.Sprintf("svc-%d", i), g.tweaks...)
					if _, err := l.cs.CoreV1().Services(g.ns).Create(context.Background(), s, metav1.CreateOptions{}); err != nil {
						errs <- err
					}
				}()
			}
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("creating Services: %v", err)
		}
		seen := map[netip.Addr]string{}
		for _, g := range groups {
			for i := range g.n {
				name := fmt.Sprintf("svc-%d", i)
				ips := l.waitIPs(g.ns, name, 1, ipTimeout)
				if len(ips) != 1 {
					t.Fatalf("%s/%s: want one address, got %v", g.ns, name, ips)
				}
				if !g.prefix.Contains(ips[0]) {
					t.Errorf("%s/%s got %s, want an address of %s (pool %s)", g.ns, name, ips[0], g.prefix, g.pool)
				}
				if other, dup := seen[ips[0]]; dup {
					t.Errorf("%s given to both %s and %s/%s", ips[0], other, g.ns, name)
				}
				seen[ips[0]] = g.ns + "/" + name
			}
		}
		// Eip status tells the truth: usage, size, first/last, used.
		for _, g := range groups {
			e := l.waitEip(g.pool, 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Usage == g.n })
			if len(e.Status.Used) != g.n {
				t.Errorf("Eip %s: status.used has %d entries, want %d", g.pool, len(e.Status.Used), g.n)
			}
			for ip, holder := range e.Status.Used {
				if seen[netip.MustParseAddr(ip)] != holder {
					t.Errorf("Eip %s: status.used[%s]=%q, want %q", g.pool, ip, holder, seen[netip.MustParseAddr(ip)])
				}
			}
			if !e.Status.Ready || !e.Status.V4 {
				t.Errorf("Eip %s: ready=%v v4=%v, want both true", g.pool, e.Status.Ready, e.Status.V4)
			}
		}
		if e := l.getEip("eip-gold"); e.Status.PoolSize != 254 || e.Status.FirstIP != "10.10.3.1" || e.Status.LastIP != "10.10.3.254" {
			t.Errorf("Eip eip-gold: poolSize=%d first=%s last=%s, want 254 10.10.3.1 10.10.3.254", e.Status.PoolSize, e.Status.FirstIP, e.Status.LastIP)
		}
		if e := l.getEip("eip-team-a-backup"); e.Status.Usage != 0 {
			t.Errorf("the lower-priority Eip was used: usage=%d", e.Status.Usage)
		}
		// The first Service of team-a got the lowest address of its pool.
		if ips := l.waitIPs("team-a", "svc-0", 1, time.Second); !mustPrefix("10.10.1.0/24").Contains(ips[0]) {
			t.Errorf("team-a/svc-0: %v", ips)
		}
		l.assertNoDuplicates()
	})

	t.Run("PlanAndClaimPerService", func(t *testing.T) {
		l := l.in(t)
		l.namespace("plans", nil)
		l.eip("eip-plans", "10.11.0.10-10.11.0.20", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"plans"} })
		svc := l.create(newService("plans", "web"))
		ips := l.waitIPs("plans", "web", 1, ipTimeout)
		if ips[0] != netip.MustParseAddr("10.11.0.10") {
			t.Errorf("got %s, want the pool's first address 10.11.0.10", ips[0])
		}
		var plan v1alpha2.LoadBalancerPlan
		err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
			return l.crd.Get(ctx, client.ObjectKey{Namespace: "plans", Name: "web"}, &plan) == nil, nil
		})
		if err != nil {
			t.Fatalf("no LoadBalancerPlan plans/web: %v", err)
		}
		want := []v1alpha2.PlanAddress{{IP: "10.11.0.10", Pool: "eip-plans", Protocol: "bgp"}}
		if fmt.Sprint(plan.Spec.Addresses) != fmt.Sprint(want) || plan.Spec.ServiceUID != svc.UID {
			t.Errorf("plan spec = %+v, want addresses %+v and serviceUID %s", plan.Spec, want, svc.UID)
		}
		if len(plan.OwnerReferences) != 1 || plan.OwnerReferences[0].UID != svc.UID {
			t.Errorf("plan owner references = %+v, want the Service", plan.OwnerReferences)
		}
		claim := waitClaim(t, *l, ips[0], func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) > 0 })
		if len(claim.Spec.Owners) != 1 || claim.Spec.Owners[0].UID != svc.UID || claim.Spec.Pool != "eip-plans" || claim.Spec.ReservedBy != "" {
			t.Errorf("claim = %+v, want one owner plans/web in pool eip-plans", claim.Spec)
		}
		l.waitEvent("plans", "web", "IPAllocated", 5*time.Second)

		// Leaving type LoadBalancer releases the address, the claim and the plan.
		cur, err := l.cs.CoreV1().Services("plans").Get(context.Background(), "web", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		cur.Spec.Type = v1.ServiceTypeClusterIP
		cur.Spec.AllocateLoadBalancerNodePorts = nil
		if _, err := l.cs.CoreV1().Services("plans").Update(context.Background(), cur, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		l.waitEvent("plans", "web", "IPReleased", ipTimeout)
		waitGone(t, *l, &v1alpha2.IPClaim{}, client.ObjectKey{Name: claim.Name})
		waitGone(t, *l, &v1alpha2.LoadBalancerPlan{}, client.ObjectKey{Namespace: "plans", Name: "web"})
		// ...and the address is reused by the next Service.
		l.create(newService("plans", "next"))
		if got := l.waitIPs("plans", "next", 1, ipTimeout); got[0] != ips[0] {
			t.Errorf("next Service got %s, want the released %s", got[0], ips[0])
		}
	})

	t.Run("ExhaustionThenReleaseAndReuse", func(t *testing.T) {
		l := l.in(t)
		l.namespace("tiny", nil)
		// Named explicitly: a namespace-bound pool that is full would
		// otherwise fall through to the default pool, as OpenELB does.
		l.eip("eip-tiny", "10.12.0.1-10.12.0.2")
		tiny := annotate(v1alpha2.AnnotationEip, "eip-tiny")
		l.create(newService("tiny", "a", tiny))
		l.create(newService("tiny", "b", tiny))
		a := l.waitIPs("tiny", "a", 1, ipTimeout)
		l.waitIPs("tiny", "b", 1, ipTimeout)
		l.create(newService("tiny", "c", tiny))
		msg := l.waitEvent("tiny", "c", "PoolExhausted", ipTimeout)
		if !strings.Contains(msg, "eip-tiny") {
			t.Errorf("PoolExhausted event should name the pool: %q", msg)
		}
		l.waitEip("eip-tiny", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Occupied && e.Status.Usage == 2 })
		if err := l.cs.CoreV1().Services("tiny").Delete(context.Background(), "a", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		if got := l.waitIPs("tiny", "c", 1, ipTimeout); got[0] != a[0] {
			t.Errorf("c got %s, want the released %s", got[0], a[0])
		}
		// The deleted Service's plan went with it (owner reference, or the
		// provider), and the address's claim now names c.
		waitGone(t, *l, &v1alpha2.LoadBalancerPlan{}, client.ObjectKey{Namespace: "tiny", Name: "a"})
		claim := waitClaim(t, *l, a[0], func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) > 0 && c.Spec.Owners[0].Name != "a" })
		if len(claim.Spec.Owners) != 1 || claim.Spec.Owners[0].Name != "c" {
			t.Errorf("claim of the reused address = %+v, want only tiny/c", claim.Spec.Owners)
		}
	})

	t.Run("Refusals", func(t *testing.T) {
		l := l.in(t)
		l.namespace("refusals", nil)
		l.eip("eip-refusals", "10.13.0.0/29", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"refusals"} })
		l.eip("eip-off", "10.13.1.0/29", func(e *v1alpha2.Eip) { e.Spec.Disable = true })
		l.create(newService("refusals", "holder", withLoadBalancerIP("10.13.0.5")))
		if got := l.waitIPs("refusals", "holder", 1, ipTimeout); got[0] != netip.MustParseAddr("10.13.0.5") {
			t.Fatalf("holder got %v, want the requested 10.13.0.5", got)
		}
		for _, tc := range []struct {
			name, reason, mention string
			tweaks                []svcTweak
		}{
			{"unknown-pool", "PoolNotFound", "no-such-eip", []svcTweak{annotate(v1alpha2.AnnotationEip, "no-such-eip")}},
			{"taken", "IPTaken", "10.13.0.5", []svcTweak{withLoadBalancerIP("10.13.0.5")}},
			{"taken-annotation", "IPTaken", "10.13.0.5", []svcTweak{annotate(v1alpha2.AnnotationIP, "10.13.0.5")}},
			{"bad-ip", "InvalidAnnotation", "not-an-ip", []svcTweak{annotate(v1alpha2.AnnotationIP, "not-an-ip")}},
			{"disagree", "InvalidAnnotation", "disagree", []svcTweak{annotate(v1alpha2.AnnotationIP, "10.13.0.6"), withLoadBalancerIP("10.13.0.7")}},
			{"outside", "IPNotInPool", "192.0.2.77", []svcTweak{withLoadBalancerIP("192.0.2.77")}},
			{"disabled", "PoolDisabled", "eip-off", []svcTweak{annotate(v1alpha2.AnnotationEip, "eip-off")}},
			{"family", "FamilyMismatch", "10.13.0.6", []svcTweak{withLoadBalancerIP("10.13.0.6"), withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)}},
		} {
			l.create(newService("refusals", tc.name, tc.tweaks...))
			msg := l.waitEvent("refusals", tc.name, tc.reason, ipTimeout)
			if !strings.Contains(msg, tc.mention) {
				t.Errorf("%s: %s event %q should mention %q", tc.name, tc.reason, msg, tc.mention)
			}
			s, err := l.cs.CoreV1().Services("refusals").Get(context.Background(), tc.name, metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if len(s.Status.LoadBalancer.Ingress) != 0 {
				t.Errorf("%s: refused Service got an address: %v", tc.name, s.Status.LoadBalancer.Ingress)
			}
		}
		// A namespace no pool serves, with no default... the default pool of
		// the first subtest serves it, so check the NoPool reason with a
		// Service asking for IPv6 where only IPv4 default pools exist.
		l.create(newService("refusals", "nopool", withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
		l.waitEvent("refusals", "nopool", "NoPool", ipTimeout)

		// The CCM keeps serving after all of that.
		l.create(newService("refusals", "fine"))
		l.waitIPs("refusals", "fine", 1, ipTimeout)
		l.assertNoDuplicates()
	})

	t.Run("MalformedAndUnsupportedEips", func(t *testing.T) {
		l := l.in(t)
		for _, tc := range []struct {
			name     string
			address  v1alpha2.AddressRange
			ranges   []v1alpha2.AddressRange
			protocol string
			iface    string
			want     []string
		}{
			{name: "bad-ip", address: "10.14.0.300", want: []string{"spec.address", "must be an IP address, a CIDR, or a range"}},
			{name: "bad-range", address: "10.14.0.1-", want: []string{"spec.address", "must be an IP address"}},
			{name: "bad-second-range", ranges: []v1alpha2.AddressRange{"10.14.0.1", "10.14.0.9-10.14.0.3"}, want: []string{"spec.ranges[1]", "last address must not be before its first"}},
			{name: "no-address", want: []string{"spec.address or spec.ranges is required"}},
			{name: "bad-protocol", address: "10.14.0.1", protocol: "ospf", want: []string{"Unsupported value"}},
			{name: "l2-no-iface", address: "10.14.0.1", protocol: "layer2", want: []string{"spec.interface or spec.layer2.interfaces is required"}},
		} {
			e := &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: tc.name}, Spec: v1alpha2.EipSpec{Address: tc.address, Ranges: tc.ranges, Protocol: tc.protocol, Interface: tc.iface}}
			err := l.crd.Create(context.Background(), e)
			for _, want := range tc.want {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("Eip %s (%q %q): want a validation error containing %q, got %v", tc.name, tc.address, tc.ranges, want, err)
				}
			}
		}
		// Accepted but not served: reported in conditions, never silent.
		l.eip("eip-vip", "10.14.1.0/28", func(e *v1alpha2.Eip) { e.Spec.Protocol = "vip" })
		e := l.waitEip("eip-vip", 10*time.Second, func(e *v1alpha2.Eip) bool {
			return meta.IsStatusConditionTrue(e.Status.Conditions, "Unsupported")
		})
		if c := meta.FindStatusCondition(e.Status.Conditions, "Ready"); c == nil || c.Status != metav1.ConditionFalse || c.Reason != "UnsupportedProtocol" {
			t.Errorf("vip Eip Ready condition = %+v, want False/UnsupportedProtocol", c)
		}
		l.eip("eip-overlap", "10.10.1.128/25") // inside eip-team-a
		e = l.waitEip("eip-overlap", 10*time.Second, func(e *v1alpha2.Eip) bool {
			c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
			return c != nil && c.Status == metav1.ConditionFalse
		})
		if c := meta.FindStatusCondition(e.Status.Conditions, "Ready"); c.Reason != "Overlap" || !strings.Contains(c.Message, "eip-team-a") {
			t.Errorf("overlapping Eip condition = %+v, want reason Overlap naming eip-team-a", c)
		}
		l.eip("eip-known", "10.14.2.0/28", func(e *v1alpha2.Eip) { e.Spec.UsingKnownIPs = true })
		l.waitEip("eip-known", 10*time.Second, func(e *v1alpha2.Eip) bool {
			c := meta.FindStatusCondition(e.Status.Conditions, "Unsupported")
			return c != nil && c.Reason == "UsingKnownIPs"
		})
		l.namespace("vip", nil)
		l.create(newService("vip", "svc", annotate(v1alpha2.AnnotationEip, "eip-vip")))
		l.waitEvent("vip", "svc", "PoolUnsupported", ipTimeout)
	})

	t.Run("DualStack", func(t *testing.T) {
		l := l.in(t)
		l.namespace("dual", nil)
		l.namespace("v4only", nil)
		l.eip("eip-dual-v4", "10.15.0.0/24", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"dual", "v4only"} })
		l.eip("eip-dual-v6", "fd00:15::/112", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"dual"} })

		l.create(newService("dual", "both", withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol)))
		ips := l.waitIPs("dual", "both", 2, ipTimeout)
		if !(ips[0].Is4() && mustPrefix("10.15.0.0/24").Contains(ips[0]) && ips[1].Is6() && mustPrefix("fd00:15::/112").Contains(ips[1])) {
			t.Errorf("RequireDualStack got %v, want one IPv4 of 10.15.0.0/24 then one IPv6 of fd00:15::/112", ips)
		}
		l.create(newService("dual", "v6first", withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv6Protocol, v1.IPv4Protocol)))
		if ips := l.waitIPs("dual", "v6first", 2, ipTimeout); !(ips[0].Is6() && ips[1].Is4()) {
			t.Errorf("ipFamilies [IPv6 IPv4] got %v, want IPv6 first", ips)
		}
		l.create(newService("dual", "v6", withFamilies(v1.IPFamilyPolicySingleStack, v1.IPv6Protocol)))
		if ips := l.waitIPs("dual", "v6", 1, ipTimeout); !ips[0].Is6() {
			t.Errorf("SingleStack IPv6 got %v", ips)
		}
		// PreferDualStack where only an IPv4 pool serves: one address.
		l.create(newService("v4only", "prefer", withFamilies(v1.IPFamilyPolicyPreferDualStack, v1.IPv4Protocol, v1.IPv6Protocol)))
		ips = l.waitIPs("v4only", "prefer", 1, ipTimeout)
		time.Sleep(500 * time.Millisecond)
		s, _ := l.cs.CoreV1().Services("v4only").Get(context.Background(), "prefer", metav1.GetOptions{})
		if got := ingressAddrs(s); len(got) != 1 || !got[0].Is4() {
			t.Errorf("PreferDualStack with only IPv4 available got %v, want one IPv4", got)
		}
		// RequireDualStack where only IPv4 serves: refused, nothing kept.
		l.create(newService("v4only", "require", withFamilies(v1.IPFamilyPolicyRequireDualStack, v1.IPv4Protocol, v1.IPv6Protocol)))
		l.waitEvent("v4only", "require", "NoPool", ipTimeout)
		l.waitEip("eip-dual-v4", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Usage == 3 })
		l.assertNoDuplicates()
	})

	t.Run("SharedIP", func(t *testing.T) {
		l := l.in(t)
		l.namespace("share", nil)
		l.eip("eip-share", "10.16.0.0/28", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"share"} })
		key := annotate(v1alpha2.AnnotationSharedIP, "front")
		l.create(newService("share", "http", key, withPorts(80)))
		l.create(newService("share", "https", key, withPorts(443)))
		a := l.waitIPs("share", "http", 1, ipTimeout)
		b := l.waitIPs("share", "https", 1, ipTimeout)
		if a[0] != b[0] {
			t.Errorf("Services sharing key front got %s and %s, want one address", a[0], b[0])
		}
		l.create(newService("share", "clash", key, withPorts(80)))
		if msg := l.waitEvent("share", "clash", "SharedIPPortClash", ipTimeout); !strings.Contains(msg, "80") {
			t.Errorf("clash event should name the port: %q", msg)
		}
		// Without the key, nobody shares.
		l.create(newService("share", "loner", withPorts(8080)))
		if c := l.waitIPs("share", "loner", 1, ipTimeout); c[0] == a[0] {
			t.Errorf("a Service without the sharing key got the shared address %s", c[0])
		}
		claim := waitClaim(t, *l, a[0], func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) == 2 })
		if len(claim.Spec.Owners) != 2 || claim.Spec.SharingKey != "front" {
			t.Errorf("shared claim = %+v, want two owners and key front", claim.Spec)
		}
		e := l.waitEip("eip-share", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Usage == 2 })
		if got := e.Status.Used[a[0].String()]; got != "share/http,share/https" {
			t.Errorf("status.used[%s] = %q, want both holders", a[0], got)
		}
		// The shared address stays while one holder remains.
		if err := l.cs.CoreV1().Services("share").Delete(context.Background(), "http", metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		l.waitEip("eip-share", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Used[a[0].String()] == "share/https" })
	})

	// Last: by now the provider has counted allocations and refusals.
	t.Run("HealthAndMetrics", func(t *testing.T) {
		testHealthAndMetrics(t, ccm)
	})
}

// waitClaim returns the IPClaim of addr once ready accepts it, or the last
// version seen (failing the test if there is none) after 10 s: the claim of
// an address handed out from a reservation is bound right after the
// Service's status is written, not before.
func waitClaim(t *testing.T, l lab, addr netip.Addr, ready func(*v1alpha2.IPClaim) bool) *v1alpha2.IPClaim {
	t.Helper()
	var claim *v1alpha2.IPClaim
	_ = wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 10*time.Second, true, func(ctx context.Context) (bool, error) {
		var c v1alpha2.IPClaim
		if err := l.crd.Get(ctx, client.ObjectKey{Name: v1alpha2.ClaimName(addr)}, &c); err != nil {
			return false, nil
		}
		claim = &c
		return ready(&c), nil
	})
	if claim == nil {
		t.Fatalf("no IPClaim for %s", addr)
	}
	return claim
}

func waitGone(t *testing.T, l lab, obj client.Object, key client.ObjectKey) {
	t.Helper()
	err := wait.PollUntilContextTimeout(context.Background(), 50*time.Millisecond, 15*time.Second, true, func(ctx context.Context) (bool, error) {
		err := l.crd.Get(ctx, key, obj)
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("%T %s still exists", obj, key)
	}
}
