package conformance

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// TestUpgradeReplacesPerServiceRacks installs the previous release's plan
// CRD (v0.1.0: racks inside every plan, one status entry per speaker), leaves
// a plan the way that release's CCM and speakers wrote it, then upgrades the
// CRDs as `kubectl apply -k deploy/` does and starts this CCM: the plan
// serves the new shape (no spec.racks, no status.nodes, the old rack
// problems gone from its conditions) and the racks have their own objects.
func TestUpgradeReplacesPerServiceRacks(t *testing.T) {
	l := newNodeLab(t)
	ctx := context.Background()
	old := filepath.Join("testdata", "upgrade", "loadbalancerplans-v0.1.0.yaml")
	if out, err := l.cp.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-f", old); err != nil {
		t.Fatalf("installing the v0.1.0 plan CRD: %v\n%s", err, out)
	}
	l.createSeedNodes()
	l.eip("eip-sample-pool", "172.22.0.2-172.22.0.10", func(e *v1alpha2.Eip) {
		e.Annotations = map[string]string{v1alpha2.AnnotationDefaultEip: "true"}
	})
	svc := l.create(newService("default", "nginx"))

	// What v0.1.0 left: the CCM's plan with per-Service racks and a rack
	// problem condition, and a speaker's per-node status entry.
	plan := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(), "kind": "LoadBalancerPlan",
		"metadata": map[string]any{"namespace": "default", "name": "nginx", "ownerReferences": []any{map[string]any{
			"apiVersion": "v1", "kind": "Service", "name": "nginx", "uid": string(svc.UID), "controller": true,
		}}},
		"spec": map[string]any{
			"serviceUID": string(svc.UID),
			"addresses":  []any{map[string]any{"ip": "172.22.0.2", "pool": "eip-sample-pool", "protocol": "bgp"}},
			"racks": []any{map[string]any{"name": "leaf1", "speakers": []any{"master1"},
				"nextHops": []any{"192.168.0.3", "192.168.0.4"}}},
		},
	}}
	if err := l.crd.Create(ctx, plan); err != nil {
		t.Fatalf("creating a v0.1.0 plan: %v", err)
	}
	oldStatus, _ := json.Marshal(map[string]any{
		"apiVersion": v1alpha2.SchemeGroupVersion.String(), "kind": "LoadBalancerPlan",
		"metadata": map[string]any{"namespace": "default", "name": "nginx"},
		"status": map[string]any{
			"nodes": map[string]any{"master1": map[string]any{"advertised": true, "reason": "Advertised"}},
			"conditions": []any{map[string]any{"type": "RackWithoutSpeaker", "status": "True", "reason": "RackWithoutSpeaker",
				"message": "rack leaf9 has 1 eligible node", "lastTransitionTime": "2026-11-01T00:00:00Z"}},
		},
	})
	if err := l.crd.Status().Patch(ctx, plan, client.RawPatch(types.ApplyPatchType, oldStatus),
		client.FieldOwner("openelb-speaker/master1"), client.ForceOwnership); err != nil {
		t.Fatalf("writing a v0.1.0 plan status: %v", err)
	}
	var before map[string]any
	raw, err := l.cs.CoreV1().RESTClient().Get().AbsPath("/apis/network.kubesphere.io/v1alpha2/namespaces/default/loadbalancerplans/nginx").DoRaw(ctx)
	if err != nil || json.Unmarshal(raw, &before) != nil {
		t.Fatalf("reading the v0.1.0 plan: %v", err)
	}
	t.Logf("the v0.1.0 plan: %s", raw)
	if _, ok := before["spec"].(map[string]any)["racks"]; !ok {
		t.Fatalf("the v0.1.0 CRD did not keep spec.racks: %s", raw)
	}

	// The upgrade: new CRDs, then the new CCM.
	if err := l.cp.ApplyCRDs(ctx); err != nil {
		t.Fatal(err)
	}
	l.ccm("ccm")
	if ips := l.waitIPs("default", "nginx", 1, ipTimeout); ips[0].String() != "172.22.0.2" {
		t.Fatalf("got %v, want 172.22.0.2", ips)
	}
	// Migrated in place or replaced (this Service held no address before
	// the CCM started, so its old plan is deleted and written anew): either
	// way only the new shape is served, without the old rack problems.

	var last error
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		raw, last = l.cs.CoreV1().RESTClient().Get().AbsPath("/apis/network.kubesphere.io/v1alpha2/namespaces/default/loadbalancerplans/nginx").DoRaw(ctx)
		if last != nil {
			return false, nil
		}
		var p struct {
			Spec   map[string]any `json:"spec"`
			Status struct {
				Nodes      map[string]any     `json:"nodes"`
				Conditions []metav1.Condition `json:"conditions"`
			} `json:"status"`
		}
		if last = json.Unmarshal(raw, &p); last != nil {
			return false, nil
		}
		_, racks := p.Spec["racks"]
		for _, c := range p.Status.Conditions {
			if c.Type != "Planned" || c.Status != metav1.ConditionTrue {
				return false, nil
			}
		}
		return !racks && p.Status.Nodes == nil && p.Spec["externalTrafficPolicy"] == "Cluster", nil
	})
	if err != nil {
		t.Fatalf("the plan after the upgrade (%v): %s", last, raw)
	}
	var p v1alpha2.LoadBalancerPlan
	if err := l.crd.Get(ctx, client.ObjectKey{Namespace: "default", Name: "nginx"}, &p); err != nil {
		t.Fatal(err)
	}
	wantAddrs := []v1alpha2.PlanAddress{{IP: "172.22.0.2", Pool: "eip-sample-pool", Protocol: v1alpha2.ProtocolBGP}}
	if diff := cmp.Diff(wantAddrs, p.Spec.Addresses); diff != "" || p.Spec.ServiceUID != svc.UID {
		t.Errorf("plan spec after the upgrade (-want +got):\n%s", diff)
	}
	var racks v1alpha2.LoadBalancerRackList
	if err := l.crd.List(ctx, &racks); err != nil || len(racks.Items) != 2 {
		t.Errorf("LoadBalancerRacks after the upgrade: %d (%v), want leaf1 and leaf2", len(racks.Items), err)
	}
}
