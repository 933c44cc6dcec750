package conformance

import (
	"context"
	"slices"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// testNodeInitialization checks the minimal InstancesV2: a node registered
// by a kubelet started with --cloud-provider=external (uninitialized taint,
// --node-ip given as annotation) is initialized by the CCM's node controller.
func testNodeInitialization(t *testing.T, l lab) {
	node := &v1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        "worker-p001",
			Annotations: map[string]string{"alpha.kubernetes.io/provided-node-ip": "192.168.0.4"},
		},
		Spec: v1.NodeSpec{Taints: []v1.Taint{{
			Key: "node.cloudprovider.kubernetes.io/uninitialized", Value: "true", Effect: v1.TaintEffectNoSchedule,
		}}},
	}
	if _, err := l.cs.CoreV1().Nodes().Create(context.Background(), node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *v1.Node
	err := wait.PollUntilContextTimeout(context.Background(), 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		n, err := l.cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		got = n
		// The node controller writes spec (provider ID, labels, taint) and
		// status (addresses) in separate updates: wait for both.
		return n.Spec.ProviderID != "" && len(n.Status.Addresses) > 0 && !slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool {
			return t.Key == "node.cloudprovider.kubernetes.io/uninitialized"
		}), nil
	})
	if err != nil {
		t.Fatalf("node not initialized within 30s: providerID=%q taints=%v addresses=%v", got.Spec.ProviderID, got.Spec.Taints, got.Status.Addresses)
	}
	if got.Spec.ProviderID != "openelb://worker-p001" {
		t.Errorf("providerID = %q, want openelb://worker-p001", got.Spec.ProviderID)
	}
	if !slices.Contains(got.Status.Addresses, v1.NodeAddress{Type: v1.NodeInternalIP, Address: "192.168.0.4"}) {
		t.Errorf("node addresses %v lack InternalIP 192.168.0.4 from --node-ip", got.Status.Addresses)
	}
	if got.Labels["node.kubernetes.io/instance-type"] != "bare-metal" {
		t.Errorf("instance-type label = %q, want bare-metal", got.Labels["node.kubernetes.io/instance-type"])
	}
}
