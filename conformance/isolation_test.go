package conformance

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestTenantIsolation checks, with two namespaces against the real API
// server and CCM, that a namespace reaches neither another namespace's pool
// nor its addresses: not by naming the pool, not by asking for an address,
// not by guessing a sharing key; that externalTrafficPolicy Local sharing is
// refused unless the endpoints are the same; and that special-purpose
// addresses are refused as pools and as requests.
func TestTenantIsolation(t *testing.T) {
	l := newLab(t)
	ccm := l.ccm("ccm")
	l.namespace("iso-a", nil)
	l.namespace("iso-b", nil)
	l.eip("eip-iso-a", "10.17.0.0/28", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"iso-a"} })
	// Open to every namespace by name: no binding.
	l.eip("eip-iso-open", "10.17.1.0/28")

	// refused creates a Service, waits for the refusal and checks it got
	// no address.
	refused := func(t *testing.T, ns, name, reason, mention string, tweaks ...svcTweak) {
		t.Helper()
		l.create(newService(ns, name, tweaks...))
		msg := l.waitEvent(ns, name, reason, ipTimeout)
		if !strings.Contains(msg, mention) {
			t.Errorf("%s/%s: %s event %q should mention %q", ns, name, reason, msg, mention)
		}
		if got := ingressAddrs(l.get(ns, name)); len(got) != 0 {
			t.Errorf("%s/%s: refused Service got %v", ns, name, got)
		}
	}

	t.Run("BindingsHoldOnEveryPath", func(t *testing.T) {
		l := l.in(t)
		l.create(newService("iso-a", "owner"))
		if got := l.waitIPs("iso-a", "owner", 1, ipTimeout); got[0] != netip.MustParseAddr("10.17.0.0") {
			t.Fatalf("iso-a/owner got %v, want 10.17.0.0 of its bound pool", got)
		}
		refused(t, "iso-b", "by-pool", "PoolNotBound", "eip-iso-a", annotate(v1alpha2.AnnotationEip, "eip-iso-a"))
		refused(t, "iso-b", "by-spec", "PoolNotBound", "10.17.0.5", withLoadBalancerIP("10.17.0.5"))
		refused(t, "iso-b", "by-annotation", "PoolNotBound", "10.17.0.6", annotate(v1alpha2.AnnotationIP, "10.17.0.6"))
		// Nothing of the bound pool went to iso-b.
		e := l.waitEip("eip-iso-a", 10*time.Second, func(e *v1alpha2.Eip) bool { return e.Status.Usage == 1 })
		for addr, holders := range e.Status.Used {
			if strings.Contains(holders, "iso-b/") {
				t.Errorf("address %s of iso-a's pool is held by %s", addr, holders)
			}
		}
		// The Eip's explicit opt-in restores OpenELB's naming by anyone.
		l.eip("eip-iso-legacy", "10.17.2.0/28", func(e *v1alpha2.Eip) {
			e.Spec.Namespaces = []string{"iso-a"}
			e.Spec.AllowAnyNamespace = true
		})
		l.create(newService("iso-b", "legacy", annotate(v1alpha2.AnnotationEip, "eip-iso-legacy")))
		if got := l.waitIPs("iso-b", "legacy", 1, ipTimeout); !mustPrefix("10.17.2.0/28").Contains(got[0]) {
			t.Errorf("iso-b/legacy got %v, want an address of the opted-in pool", got)
		}
		l.assertNoDuplicates()
	})

	t.Run("SharingStaysInItsNamespace", func(t *testing.T) {
		l := l.in(t)
		open := annotate(v1alpha2.AnnotationEip, "eip-iso-open")
		key := annotate(v1alpha2.AnnotationSharedIP, "web")
		l.create(newService("iso-a", "front", open, key, withPorts(80)))
		a := l.waitIPs("iso-a", "front", 1, ipTimeout)[0]
		// Same key, other namespace: an address of its own.
		l.create(newService("iso-b", "guess", open, key, withPorts(443)))
		if b := l.waitIPs("iso-b", "guess", 1, ipTimeout)[0]; b == a {
			t.Fatalf("iso-b/guess joined iso-a's shared address %s with the same key", a)
		}
		refused(t, "iso-b", "grab", "SharedIPNamespace", "iso-a/front", open, key, withPorts(8443), withLoadBalancerIP(a.String()))
		// iso-a still adds the port the intruder wanted.
		s := l.get("iso-a", "front")
		s.Spec.Ports = append(s.Spec.Ports, v1.ServicePort{Name: "p8443", Port: 8443, Protocol: v1.ProtocolTCP})
		if _, err := l.cs.CoreV1().Services("iso-a").Update(context.Background(), s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		l.waitClaimPorts(a, "iso-a/front", 2)

		// Both opting in share across namespaces.
		mesh := annotate(v1alpha2.AnnotationSharedIP, "mesh")
		l.create(newService("iso-a", "mesh", open, mesh, withPorts(80), annotate(v1alpha2.AnnotationSharedIPNamespaces, "iso-b")))
		m := l.waitIPs("iso-a", "mesh", 1, ipTimeout)[0]
		refused(t, "iso-b", "one-sided", "SharedIPNamespace", "iso-a/mesh", open, mesh, withPorts(81), withLoadBalancerIP(m.String()))
		l.create(newService("iso-b", "mesh", open, mesh, withPorts(82), annotate(v1alpha2.AnnotationSharedIPNamespaces, "iso-a")))
		if got := l.waitIPs("iso-b", "mesh", 1, ipTimeout)[0]; got != m {
			t.Errorf("mutually opted-in Services got %s and %s, want one address", m, got)
		}
	})

	t.Run("LocalTrafficSharesOnlyTheSameEndpoints", func(t *testing.T) {
		l := l.in(t)
		open := annotate(v1alpha2.AnnotationEip, "eip-iso-open")
		key := annotate(v1alpha2.AnnotationSharedIP, "local")
		localTo := func(app string) svcTweak {
			return func(s *v1.Service) {
				s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
				s.Spec.Selector = map[string]string{"app": app}
			}
		}
		l.create(newService("iso-a", "l-http", open, key, withPorts(80), localTo("web")))
		x := l.waitIPs("iso-a", "l-http", 1, ipTimeout)[0]
		l.create(newService("iso-a", "l-https", open, key, withPorts(443), localTo("web")))
		if got := l.waitIPs("iso-a", "l-https", 1, ipTimeout)[0]; got != x {
			t.Errorf("Local Services with the same selector got %s and %s, want one address", x, got)
		}
		refused(t, "iso-a", "l-db", "SharedIPTrafficPolicy", "different pods", open, key, withPorts(5432), localTo("db"))
		refused(t, "iso-a", "cluster", "SharedIPTrafficPolicy", "Cluster", open, key, withPorts(8080),
			func(s *v1.Service) { s.Spec.Selector = map[string]string{"app": "web"} })
	})

	t.Run("SpecialPurposeAddresses", func(t *testing.T) {
		l := l.in(t)
		for _, tc := range []struct{ name, address string }{
			{"eip-loopback", "127.0.0.0/30"},
			{"eip-multicast", "224.0.0.0/28"},
			{"eip-this-network", "0.0.0.0/30"},
			{"eip-broadcast", "255.255.255.255"},
			{"eip-v6-linklocal", "fe80::/120"},
			{"eip-v6-loopback", "::1"},
		} {
			l.eip(tc.name, tc.address)
			e := l.waitEip(tc.name, 10*time.Second, func(e *v1alpha2.Eip) bool {
				c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
				return c != nil && c.Status == metav1.ConditionFalse
			})
			if c := meta.FindStatusCondition(e.Status.Conditions, "Ready"); c.Reason != "InvalidAddress" || !strings.Contains(c.Message, "cannot be load-balancer addresses") {
				t.Errorf("Eip %s (%s): Ready = %+v, want False/InvalidAddress saying why", tc.name, tc.address, c)
			}
		}
		refused(t, "iso-a", "loopback", "InvalidAnnotation", "loopback", withLoadBalancerIP("127.0.0.1"))
		refused(t, "iso-a", "multicast", "InvalidAnnotation", "multicast", annotate(v1alpha2.AnnotationIP, "239.1.1.1"))
	})

	t.Run("PreferDualStackTakesWhatItCan", func(t *testing.T) {
		l := l.in(t)
		l.namespace("iso-v4", nil)
		l.eip("eip-iso-v4", "10.17.3.0/28", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"iso-v4"} })
		l.create(newService("iso-v4", "v6-first", withFamilies(v1.IPFamilyPolicyPreferDualStack, v1.IPv6Protocol, v1.IPv4Protocol)))
		got := l.waitIPs("iso-v4", "v6-first", 1, ipTimeout)
		if len(got) != 1 || !mustPrefix("10.17.3.0/28").Contains(got[0]) {
			t.Errorf("PreferDualStack [IPv6 IPv4] with only IPv4 available got %v, want one IPv4 of 10.17.3.0/28", got)
		}
	})

	// Last, since it restarts the CCM: a sharing key with spaces is
	// normalised on re-adoption from a Service's status (a Service from
	// before the provider: no IPClaim) as it is on allocation.
	t.Run("SharingKeyNormalisedOnReadoption", func(t *testing.T) {
		l := l.in(t)
		open := annotate(v1alpha2.AnnotationEip, "eip-iso-open")
		l.create(newService("iso-a", "spaced", open, annotate(v1alpha2.AnnotationSharedIP, "  spaced "), withPorts(80)))
		addr := l.waitIPs("iso-a", "spaced", 1, ipTimeout)[0]
		claim := waitClaim(t, *l, addr, func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) == 1 })
		if claim.Spec.SharingKey != "spaced" {
			t.Errorf("claim sharing key %q, want it trimmed to %q", claim.Spec.SharingKey, "spaced")
		}
		if err := ccm.Stop(); err != nil {
			t.Fatal(err)
		}
		if err := l.crd.Delete(context.Background(), claim); err != nil {
			t.Fatal(err)
		}
		waitGone(t, *l, &v1alpha2.IPClaim{}, client.ObjectKey{Name: claim.Name})
		l.ccm("ccm-again")
		l.create(newService("iso-a", "joiner", open, annotate(v1alpha2.AnnotationSharedIP, "spaced"), withPorts(443), withLoadBalancerIP(addr.String())))
		if got := l.waitIPs("iso-a", "joiner", 1, ipTimeout)[0]; got != addr {
			t.Errorf("joiner got %s, want the re-adopted shared %s", got, addr)
		}
		if got := ingressAddrs(l.get("iso-a", "spaced")); len(got) != 1 || got[0] != addr {
			t.Errorf("spaced holds %v after the restart, want %s", got, addr)
		}
	})
}

// waitClaimPorts waits until holder's entry in the claim of addr lists n
// ports.
func (l *lab) waitClaimPorts(addr netip.Addr, holder string, n int) {
	l.t.Helper()
	has := func(c *v1alpha2.IPClaim) bool {
		for _, o := range c.Spec.Owners {
			if o.Namespace+"/"+o.Name == holder && len(o.Ports) == n {
				return true
			}
		}
		return false
	}
	if c := waitClaim(l.t, *l, addr, has); !has(c) {
		l.t.Errorf("claim of %s: %s does not hold %d ports: %+v", addr, holder, n, c.Spec.Owners)
	}
}
