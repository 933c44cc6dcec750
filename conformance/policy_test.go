package conformance

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// gobgpPolicy is an admin's GoBGP policy as OpenELB's BgpConf spec.policy
// ConfigMap holds it: toward leaf2 (by neighbor address) the paths get
// community 65000:777; the address in reject-set goes to no router.
func gobgpPolicy(rejected string) string {
	return fmt.Sprintf(`
[global.apply-policy.config]
  export-policy-list = ["tag-leaf2", "drop-some"]
  default-export-policy = "accept-route"

[[defined-sets.neighbor-sets]]
  neighbor-set-name = "leaf2"
  neighbor-info-list = ["%s/32"]

[[defined-sets.prefix-sets]]
  prefix-set-name = "reject-set"
  [[defined-sets.prefix-sets.prefix-list]]
    ip-prefix = "%s/32"

[[policy-definitions]]
  name = "tag-leaf2"
  [[policy-definitions.statements]]
    name = "tag"
    [policy-definitions.statements.conditions.match-neighbor-set]
      neighbor-set = "leaf2"
    [policy-definitions.statements.actions.bgp-actions.set-community]
      options = "add"
      [policy-definitions.statements.actions.bgp-actions.set-community.set-community-method]
        communities-list = ["65000:777"]

[[policy-definitions]]
  name = "drop-some"
  [[policy-definitions.statements]]
    name = "drop"
    [policy-definitions.statements.conditions.match-prefix-set]
      prefix-set = "reject-set"
    [policy-definitions.statements.actions]
      route-disposition = "reject-route"
`, netlab.Leaf2Addr, rejected)
}

// TestBgpConfPolicy: OpenELB's BgpConf spec.policy, a ConfigMap of GoBGP
// policy definitions, shapes what the speakers send real FRR leaves: a
// community toward leaf2 only, one address rejected toward every router.
// An edit of the ConfigMap re-sends the paths; a broken one keeps the
// policy last applied and says so; parts beyond a routing policy are
// reported as left out; removing spec.policy removes the policy.
func TestBgpConfPolicy(t *testing.T) {
	b := newBGPLab(t, seedlab.Options{})
	ctx := context.Background()
	b.configureSeed()
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	const cmName = "openelb-bgp-policy"
	second := "172.22.0.3"
	cm := &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: seedlab.Namespace, Name: cmName},
		Data: map[string]string{"gobgp.conf": gobgpPolicy(second)}}
	if _, err := b.cs.CoreV1().ConfigMaps(seedlab.Namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := b.crd.Patch(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"policy":"`+cmName+`"}}`))); err != nil {
		t.Fatal(err)
	}
	b.startSpeaker("master1")
	b.startSpeaker("worker-p002")
	for _, name := range []string{"nginx", "web"} {
		if _, err := b.cs.CoreV1().Services("default").Create(ctx, newService("default", name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if got := b.waitAddress("default", "nginx"); got != seedVIP {
		t.Fatalf("nginx got %s, want %s", got, seedVIP)
	}
	if got := b.waitAddress("default", "web"); got != second {
		t.Fatalf("web got %s, want %s", got, second)
	}
	secondPrefix := second + "/32"

	b.waitRouterPaths("leaf2 gets the community", b.topo.Leaf2, seedPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:777"
	})
	b.waitRouterPaths("leaf1 does not", b.topo.Leaf1, seedPrefix, "192.168.0.3", func(p netlab.BGPPath) bool {
		return p.Communities == ""
	})
	b.waitPaths("leaf1 ECMP for the first address", b.topo.Leaf1, seedPrefix, "192.168.0.3", "192.168.0.4")
	for _, r := range []*netlab.FRR{b.topo.Leaf1, b.topo.Leaf2} {
		b.waitPaths("the rejected address goes nowhere", r, secondPrefix)
	}

	// The edited ConfigMap rejects nothing any more: the address is sent.
	cm.Data["gobgp.conf"] = gobgpPolicy("192.0.2.99")
	if _, err := b.cs.CoreV1().ConfigMaps(seedlab.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.waitPaths("edit: no longer rejected", b.topo.Leaf1, secondPrefix, "192.168.0.3", "192.168.0.4")
	b.waitRouterPaths("edit: leaf2 gets it, with the community", b.topo.Leaf2, secondPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:777"
	})

	// A broken file: reported, and what the routers hold does not change.
	cm.Data["gobgp.conf"] = "[[policy-definitions]\nname = "
	if _, err := b.cs.CoreV1().ConfigMaps(seedlab.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := b.waitSpeakerProblem("worker-p002", "ConfigMap/"+seedlab.Namespace+"/"+cmName, "BgpPolicyInvalid", true)
	if !strings.Contains(p.Message, "TOML") || !strings.Contains(p.Message, "the policy last applied stays") {
		t.Errorf("broken policy problem: %q", p.Message)
	}
	time.Sleep(2 * time.Second)
	b.waitRouterPaths("broken: leaf2 keeps the community", b.topo.Leaf2, seedPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == "65000:777"
	})

	// A file with a neighbor and global settings: used, the rest named.
	cm.Data["gobgp.conf"] = "[global.config]\n  as = 65000\n  router-id = \"10.0.0.1\"\n" + gobgpPolicy("192.0.2.99")
	if _, err := b.cs.CoreV1().ConfigMaps(seedlab.Namespace).Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	b.waitSpeakerProblem("worker-p002", "ConfigMap/"+seedlab.Namespace+"/"+cmName, "BgpPolicyInvalid", false)
	p = b.waitSpeakerProblem("worker-p002", "ConfigMap/"+seedlab.Namespace+"/"+cmName, "BgpPolicyIgnored", true)
	if !strings.Contains(p.Message, "global.config") {
		t.Errorf("left-out parts problem: %q", p.Message)
	}

	// spec.policy removed: no admin policy, no community.
	if err := b.crd.Patch(ctx, &v1alpha2.BgpConf{ObjectMeta: metav1.ObjectMeta{Name: "default"}},
		client.RawPatch(types.MergePatchType, []byte(`{"spec":{"policy":null}}`))); err != nil {
		t.Fatal(err)
	}
	b.waitRouterPaths("policy removed", b.topo.Leaf2, seedPrefix, "192.168.1.2", func(p netlab.BGPPath) bool {
		return p.Communities == ""
	})
	b.waitSpeakerProblem("worker-p002", "ConfigMap/"+seedlab.Namespace+"/"+cmName, "BgpPolicyIgnored", false)
}
