package conformance

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/provider/cloud"
)

// TestUnsupportedFieldsReported: OpenELB fields the speakers do not carry
// out are accepted and said so on the object (condition Unsupported naming
// each and why), follow edits, and go when the fields go; honoured fields
// raise nothing. Which fields are which: v1alpha2.BgpPeerFields and
// BgpConfFields (TestFieldSupport checks they cover every field).
func TestUnsupportedFieldsReported(t *testing.T) {
	l := newNodeLab(t)
	ctx := context.Background()
	l.ccm("ccm")
	peer := &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}, Spec: v1alpha2.BgpPeerSpec{
		Conf:      &v1alpha2.PeerConf{PeerAs: 65001, NeighborAddress: "192.0.2.1", Vrf: "red", PeerGroup: "leaves", AdminDown: true, SendCommunity: 3},
		Transport: &v1alpha2.Transport{PassiveMode: true, MtuDiscovery: true},
	}}
	honoured := &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf2"}, Spec: v1alpha2.BgpPeerSpec{
		Conf: &v1alpha2.PeerConf{PeerAs: 65002, NeighborAddress: "192.0.2.2", AdminDown: true, RemovePrivateAs: "all", LocalAs: 65010},
	}}
	conf := &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}, Spec: v1alpha2.BgpConfSpec{As: 65000, Policy: "my-policy", UseMultiplePaths: true, ListenAddresses: []string{"192.0.2.9"}}}
	for _, o := range []client.Object{peer, honoured, conf} {
		if err := l.crd.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	peerConds := func(name string) func(context.Context) ([]metav1.Condition, error) {
		return func(ctx context.Context) ([]metav1.Condition, error) {
			var bp v1alpha2.BgpPeer
			err := l.crd.Get(ctx, client.ObjectKey{Name: name}, &bp)
			return bp.Status.Conditions, err
		}
	}
	for _, f := range []string{"spec.conf.vrf (a GoBGP VRF", "spec.conf.peerGroup", "spec.transport.mtuDiscovery"} {
		l.waitConditions("BgpPeer leaf1", cloud.ConditionUnsupported, metav1.ConditionTrue, f, peerConds("leaf1"))
	}
	l.waitConditions("BgpConf default", cloud.ConditionUnsupported, metav1.ConditionTrue, "spec.useMultiplePaths (", func(ctx context.Context) ([]metav1.Condition, error) {
		var c v1alpha2.BgpConf
		err := l.crd.Get(ctx, client.ObjectKey{Name: "default"}, &c)
		return c.Status.Conditions, err
	})
	var c v1alpha2.BgpConf
	if err := l.crd.Get(ctx, client.ObjectKey{Name: "default"}, &c); err != nil {
		t.Fatal(err)
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, cloud.ConditionUnsupported); cond != nil && strings.Contains(cond.Message, "spec.policy") {
		t.Errorf("the honoured spec.policy is reported: %s", cond.Message)
	}
	var bp v1alpha2.BgpPeer
	if err := l.crd.Get(ctx, client.ObjectKey{Name: "leaf1"}, &bp); err != nil {
		t.Fatal(err)
	}
	for _, honouredField := range []string{"adminDown", "sendCommunity", "passiveMode"} {
		if c := meta.FindStatusCondition(bp.Status.Conditions, cloud.ConditionUnsupported); strings.Contains(c.Message, honouredField) {
			t.Errorf("honoured field %s reported: %s", honouredField, c.Message)
		}
	}
	t.Logf("BgpPeer leaf1: %s", meta.FindStatusCondition(bp.Status.Conditions, cloud.ConditionUnsupported).Message)

	// The edits follow: vrf removed, then the rest; the condition goes.
	patch := func(p string) {
		t.Helper()
		if err := l.crd.Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}}, client.RawPatch(types.MergePatchType, []byte(p))); err != nil {
			t.Fatal(err)
		}
	}
	patch(`{"spec":{"conf":{"vrf":null}}}`)
	err := wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		conds, err := peerConds("leaf1")(ctx)
		c := meta.FindStatusCondition(conds, cloud.ConditionUnsupported)
		return err == nil && c != nil && !strings.Contains(c.Message, "vrf") && strings.Contains(c.Message, "peerGroup"), nil
	})
	if err != nil {
		t.Fatal("vrf removed: the condition still names it, or lost the others")
	}
	patch(`{"spec":{"conf":{"peerGroup":null},"transport":{"mtuDiscovery":null}}}`)
	err = wait.PollUntilContextTimeout(ctx, 50*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		conds, err := peerConds("leaf1")(ctx)
		return err == nil && meta.FindStatusCondition(conds, cloud.ConditionUnsupported) == nil, nil
	})
	if err != nil {
		t.Fatal("every unsupported field removed: the condition stays")
	}
	// A BgpPeer with honoured fields only never gets the condition.
	if conds, err := peerConds("leaf2")(ctx); err != nil || meta.FindStatusCondition(conds, cloud.ConditionUnsupported) != nil {
		t.Errorf("BgpPeer leaf2 (honoured fields only): conditions %v, %v", conds, err)
	}
}
