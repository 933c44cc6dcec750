package conformance

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestPoolRanges: an Eip of several ranges (spec.address plus spec.ranges)
// with skipNetworkAndBroadcast hands out exactly the addresses of its
// ranges, less each CIDR's first and last, and reports them in its status;
// asking for a skipped address is refused; a pool mixing families, or
// whose range overlaps another Eip's second range, is kept out with a
// reason; adding a range serves the Service that waited.
func TestPoolRanges(t *testing.T) {
	l := newLab(t)
	l.ccm("ccm")
	l.namespace("rng", nil)
	l.eip("eip-multi", "10.19.0.0/30", func(e *v1alpha2.Eip) {
		e.Spec.Ranges = []v1alpha2.AddressRange{"10.19.5.0/30", "10.19.9.7"}
		e.Spec.SkipNetworkAndBroadcast = true
		e.Spec.Namespaces = []string{"rng"}
	})
	e := l.waitEip("eip-multi", ipTimeout, func(e *v1alpha2.Eip) bool { return e.Status.Ready })
	if e.Status.PoolSize != 5 || e.Status.FirstIP != "10.19.0.1" || e.Status.LastIP != "10.19.9.7" || !e.Status.V4 {
		t.Errorf("eip-multi status: size %d first %s last %s v4 %v, want 5 10.19.0.1 10.19.9.7 true",
			e.Status.PoolSize, e.Status.FirstIP, e.Status.LastIP, e.Status.V4)
	}

	var got []string
	for i := range 5 {
		l.create(newService("rng", fmt.Sprintf("s%d", i)))
	}
	for i := range 5 {
		got = append(got, l.waitIPs("rng", fmt.Sprintf("s%d", i), 1, ipTimeout)[0].String())
	}
	slices.SortFunc(got, func(a, b string) int { return netip.MustParseAddr(a).Compare(netip.MustParseAddr(b)) })
	if want := "10.19.0.1 10.19.0.2 10.19.5.1 10.19.5.2 10.19.9.7"; strings.Join(got, " ") != want {
		t.Errorf("five Services got %s, want %s (each CIDR without its first and last address)", strings.Join(got, " "), want)
	}
	l.waitEip("eip-multi", ipTimeout, func(e *v1alpha2.Eip) bool { return e.Status.Usage == 5 && e.Status.Occupied })

	// The pool is full: a sixth Service waits, saying why.
	l.create(newService("rng", "sixth"))
	l.waitEvent("rng", "sixth", "PoolExhausted", ipTimeout)
	// A skipped address is not the pool's.
	l.create(newService("rng", "broadcast", annotate(v1alpha2.AnnotationIP, "10.19.5.3")))
	l.waitEvent("rng", "broadcast", "IPNotInPool", ipTimeout)

	l.eip("eip-mixed", "10.19.20.0/30", func(e *v1alpha2.Eip) { e.Spec.Ranges = []v1alpha2.AddressRange{"fd00:19::/126"} })
	l.waitEip("eip-mixed", ipTimeout, func(e *v1alpha2.Eip) bool {
		c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "InvalidAddress" && strings.Contains(c.Message, "one family")
	})
	l.eip("eip-over", "10.19.30.0/30", func(e *v1alpha2.Eip) { e.Spec.Ranges = []v1alpha2.AddressRange{"10.19.5.2-10.19.5.9"} })
	l.waitEip("eip-over", ipTimeout, func(e *v1alpha2.Eip) bool {
		c := meta.FindStatusCondition(e.Status.Conditions, "Ready")
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == "Overlap" && strings.Contains(c.Message, "eip-multi")
	})

	// A /31 keeps both addresses even with skipNetworkAndBroadcast.
	if err := l.crd.Patch(context.Background(), &v1alpha2.Eip{ObjectMeta: metav1.ObjectMeta{Name: "eip-multi"}}, client.RawPatch(types.MergePatchType,
		[]byte(`{"spec":{"ranges":["10.19.5.0/30","10.19.9.7","10.19.12.0/31"]}}`))); err != nil {
		t.Fatal(err)
	}
	if ips := l.waitIPs("rng", "sixth", 1, ipTimeout); !mustPrefix("10.19.12.0/31").Contains(ips[0]) {
		t.Errorf("after adding 10.19.12.0/31 the waiting Service got %v, want an address of it", ips)
	}
	l.waitEip("eip-multi", ipTimeout, func(e *v1alpha2.Eip) bool {
		return e.Status.PoolSize == 7 && e.Status.LastIP == "10.19.12.1" && e.Status.Usage == 6
	})
}
