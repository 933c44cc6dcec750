package plugin

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

func claim(addr, pool, sharingKey string, owners ...string) v1alpha2.IPClaim {
	c := v1alpha2.IPClaim{ObjectMeta: metav1.ObjectMeta{Name: addr}, Spec: v1alpha2.IPClaimSpec{Address: addr, Pool: pool, SharingKey: sharingKey}}
	for i := 0; i+1 < len(owners); i += 2 {
		c.Spec.Owners = append(c.Spec.Owners, v1alpha2.ClaimOwner{Namespace: owners[i], Name: owners[i+1]})
	}
	if len(owners) == 0 {
		c.Spec.ReservedBy = "ccm-0_1234"
	}
	return c
}

func poolsInput() PoolsInput {
	ready := metav1.Condition{Type: "Ready", Status: metav1.ConditionTrue, Reason: "Serving", Message: "serving allocations"}
	return PoolsInput{
		Eips: []v1alpha2.Eip{
			{
				ObjectMeta: metav1.ObjectMeta{Name: "l2-rack1"},
				Spec:       v1alpha2.EipSpec{Address: "192.168.0.200-192.168.0.209", Protocol: "layer2", Interface: "eth0"},
				Status:     v1alpha2.EipStatus{Usage: 1, PoolSize: 10, Ready: true, V4: true, ObservedGeneration: 1, Conditions: []metav1.Condition{ready}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "eip-sample-pool", Annotations: map[string]string{v1alpha2.AnnotationDefaultEip: "true"}},
				Spec:       v1alpha2.EipSpec{Address: "172.22.0.2-172.22.0.10"},
				Status: v1alpha2.EipStatus{Usage: 3, PoolSize: 9, Ready: true, V4: true, ObservedGeneration: 1, Conditions: []metav1.Condition{ready,
					{Type: "Unsupported", Status: metav1.ConditionTrue, Reason: "UnsupportedField", Message: "spec.usingKnownIPs has no effect"},
					{Type: "UsedTruncated", Status: metav1.ConditionFalse, Reason: "Complete"}}},
			},
			{
				ObjectMeta: metav1.ObjectMeta{Name: "v6"},
				Spec:       v1alpha2.EipSpec{Address: "fd00::/120", Ranges: []v1alpha2.AddressRange{"fd00::1:0-fd00::1:f"}, Disable: true},
				Status: v1alpha2.EipStatus{PoolSize: 272, ObservedGeneration: 2, Conditions: []metav1.Condition{
					{Type: "Ready", Status: metav1.ConditionFalse, Reason: "Disabled", Message: "spec.disable is set: no new address is handed out"}}},
			},
			{ObjectMeta: metav1.ObjectMeta{Name: "fresh"}, Spec: v1alpha2.EipSpec{Address: "10.9.0.0/24"}},
		},
		Claims: []v1alpha2.IPClaim{
			claim("172.22.0.10", "eip-sample-pool", "", "default", "zeta"),
			claim("172.22.0.2", "eip-sample-pool", "", "default", "nginx"),
			claim("172.22.0.3", "eip-sample-pool", "web", "shop", "b", "shop", "a"),
			claim("172.22.0.5", "eip-sample-pool", ""),
			claim("172.22.0.4", "eip-sample-pool", ""),
			claim("192.168.0.200", "l2-rack1", "", "default", "web"),
			claim("10.0.0.7", "gone", "", "old", "svc"),
		},
		ClaimsListed: true,
	}
}

func TestRenderPools(t *testing.T) {
	want := `eip-sample-pool: 172.22.0.2-172.22.0.10, bgp, 3/9 used, ready, default pool
├── [Unsupported] spec.usingKnownIPs has no effect
├── 172.22.0.2   default/nginx
├── 172.22.0.3   shop/a, shop/b (shared-ip web)
├── 172.22.0.10  default/zeta
└── reserved ahead of demand: 172.22.0.4, 172.22.0.5
fresh: 10.9.0.0/24, bgp, no status yet (is the openelb CCM running?)
l2-rack1: 192.168.0.200-192.168.0.209, layer2 on eth0, 1/10 used, ready
└── 192.168.0.200  default/web
v6: fd00::/120 + fd00::1:0-fd00::1:f, bgp, 0/272 used, not ready (Disabled), disabled
└── [Disabled] spec.disable is set: no new address is handed out
addresses claimed from pool gone, which does not exist (any more)
└── 10.0.0.7  old/svc
`
	if diff := cmp.Diff(want, RenderPools(poolsInput())); diff != "" {
		t.Errorf("RenderPools (-want +got):\n%s", diff)
	}
}

// TestRenderPoolsFromEipStatus: without the IPClaims (RBAC), the holders
// come from each Eip's status.used.
func TestRenderPoolsFromEipStatus(t *testing.T) {
	in := poolsInput()
	in.Eips = in.Eips[:2]
	in.Claims, in.ClaimsListed = nil, false
	in.Eips[1].Status.Used = map[string]string{"172.22.0.3": "shop/b,shop/a", "172.22.0.2": "default/nginx"}
	want := `eip-sample-pool: 172.22.0.2-172.22.0.10, bgp, 3/9 used, ready, default pool
├── [Unsupported] spec.usingKnownIPs has no effect
├── 172.22.0.2  default/nginx
├── 172.22.0.3  shop/a, shop/b
└── holders from the Eip's status.used (IPClaims not readable)
l2-rack1: 192.168.0.200-192.168.0.209, layer2 on eth0, 1/10 used, ready
`
	if diff := cmp.Diff(want, RenderPools(in)); diff != "" {
		t.Errorf("RenderPools (-want +got):\n%s", diff)
	}
}
