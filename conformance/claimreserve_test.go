package conformance

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// waitClaim polls the IPClaim named name until cond holds.
func (l *lab) waitClaim(name string, what string, cond func(*v1alpha2.IPClaim) bool) *v1alpha2.IPClaim {
	l.t.Helper()
	var c v1alpha2.IPClaim
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, ipTimeout, true, func(ctx context.Context) (bool, error) {
		if err := l.crd.Get(ctx, client.ObjectKey{Name: name}, &c); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return cond(&c), nil
	})
	if err != nil {
		l.t.Fatalf("IPClaim %s: %s: %v (last seen %+v)", name, what, err, c.Spec)
	}
	return &c
}

// TestReservedForService: an admin reserves the lowest address of a pool
// for a Service that does not exist yet (an IPClaim with
// spec.reservedFor). Automatic allocation passes it by, another Service
// asking for it is refused, the Service gets it when it appears, and keeps
// the reservation across its deletion and a CCM restart; deleting the
// claim frees the address. A claim not named after its address is refused
// by the API server.
func TestReservedForService(t *testing.T) {
	l := newLab(t)
	ccm := l.ccm("ccm")
	ctx := context.Background()
	l.namespace("resv", nil)
	l.eip("eip-resv", "10.21.0.0/29", func(e *v1alpha2.Eip) { e.Spec.Namespaces = []string{"resv"} })
	l.waitEip("eip-resv", ipTimeout, func(e *v1alpha2.Eip) bool { return e.Status.Ready })

	reserve := func(name, addr string) error {
		return l.crd.Create(ctx, &v1alpha2.IPClaim{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       v1alpha2.IPClaimSpec{Address: addr, ReservedFor: &v1alpha2.ClaimService{Namespace: "resv", Name: "future"}},
		})
	}
	if err := reserve("10.21.0.7", "10.21.0.5"); err == nil || !strings.Contains(err.Error(), "metadata.name must be spec.address") {
		t.Errorf("a reservation not named after its address: %v, want refused", err)
	}
	// 10.21.0.5, not the lowest addresses: the CCM leader holds claims of
	// the lowest ones ahead of demand (spec.reservedBy).
	if err := reserve("10.21.0.5", "10.21.0.5"); err != nil {
		t.Fatal(err)
	}

	// Seven automatic Services take every other address of the /29.
	names := []string{"a", "b", "c", "d", "e", "f", "g"}
	for _, n := range names {
		l.create(newService("resv", "early-"+n))
	}
	var got []string
	for _, n := range names {
		got = append(got, l.waitIPs("resv", "early-"+n, 1, ipTimeout)[0].String())
	}
	if slices.Contains(got, "10.21.0.5") {
		t.Errorf("automatic allocation handed out the reserved address: %v", got)
	}
	l.create(newService("resv", "full"))
	l.waitEvent("resv", "full", "PoolExhausted", ipTimeout) // the only free address is reserved
	if err := l.cs.CoreV1().Services("resv").Delete(ctx, "full", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.create(newService("resv", "thief", annotate(v1alpha2.AnnotationIP, "10.21.0.5")))
	if msg := l.waitEvent("resv", "thief", "IPTaken", ipTimeout); !strings.Contains(msg, "10.21.0.5") {
		t.Errorf("the refusal does not name the address: %s", msg)
	}
	// Gone, so its retries do not race the last step for the address.
	if err := l.cs.CoreV1().Services("resv").Delete(ctx, "thief", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	l.create(newService("resv", "future"))
	if ips := l.waitIPs("resv", "future", 1, ipTimeout); ips[0].String() != "10.21.0.5" {
		t.Fatalf("the Service the address is reserved for got %v, want 10.21.0.5", ips)
	}
	l.waitClaim("10.21.0.5", "bound to future, still reserved", func(c *v1alpha2.IPClaim) bool {
		return len(c.Spec.Owners) == 1 && c.Spec.Owners[0].Name == "future" && c.Spec.ReservedFor != nil
	})

	// Deleted, the Service leaves the reservation in place: a new Service
	// does not get the address, the next incarnation does, even across a
	// CCM restart in between.
	if err := l.cs.CoreV1().Services("resv").Delete(ctx, "future", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitClaim("10.21.0.5", "released by future, still reserved", func(c *v1alpha2.IPClaim) bool {
		return len(c.Spec.Owners) == 0 && c.Spec.ReservedFor != nil
	})
	if err := ccm.Stop(); err != nil {
		t.Fatal(err)
	}
	l.ccm("ccm-2")
	l.create(newService("resv", "late"))
	l.waitEvent("resv", "late", "PoolExhausted", ipTimeout) // the only free address is reserved
	l.create(newService("resv", "future"))
	if ips := l.waitIPs("resv", "future", 1, ipTimeout); ips[0].String() != "10.21.0.5" {
		t.Errorf("the recreated Service got %v, want its reserved 10.21.0.5", ips)
	}

	// Deleting the claim ends the reservation once the Service is gone.
	if err := l.cs.CoreV1().Services("resv").Delete(ctx, "future", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	l.waitClaim("10.21.0.5", "released again", func(c *v1alpha2.IPClaim) bool { return len(c.Spec.Owners) == 0 })
	if err := l.crd.Delete(ctx, &v1alpha2.IPClaim{ObjectMeta: metav1.ObjectMeta{Name: "10.21.0.5"}}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	l.create(newService("resv", "after", annotate(v1alpha2.AnnotationIP, "10.21.0.5")))
	if ips := l.waitIPs("resv", "after", 1, ipTimeout); ips[0].String() != "10.21.0.5" {
		t.Errorf("after the reservation was deleted, asking for 10.21.0.5 got %v", ips)
	}
}
