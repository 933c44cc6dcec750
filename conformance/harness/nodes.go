package harness

import (
	"context"
	"fmt"
	"sync"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
)

// SimNode is a Node object with no kubelet behind it: the lab writes the
// status a kubelet would. Control planes that hold such nodes run without
// kube-controller-manager's node lifecycle controller, which would mark
// them NotReady for lack of heartbeats.
type SimNode struct {
	Name    string
	Labels  map[string]string
	Address string // InternalIP
	Ready   bool
}

// CreateNodes creates the nodes with their labels and status, workers at a
// time (the API server's write path is the bound, not the client).
func CreateNodes(ctx context.Context, cs kubernetes.Interface, nodes []SimNode, workers int) error {
	work := make(chan SimNode)
	errs := make(chan error, len(nodes))
	var wg sync.WaitGroup
	for range max(workers, 1) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range work {
				errs <- createNode(ctx, cs, n)
			}
		}()
	}
	for _, n := range nodes {
		work <- n
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func createNode(ctx context.Context, cs kubernetes.Interface, n SimNode) error {
	if _, err := cs.CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{Name: n.Name, Labels: n.Labels}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", n.Name, err)
	}
	if err := setNodeStatus(ctx, cs, n.Name, nodeStatus(n.Ready, n.Name, n.Address)); err != nil {
		return fmt.Errorf("node %s status: %w", n.Name, err)
	}
	return nil
}

// SetNodeReady writes a node's Ready condition as its kubelet would,
// keeping its addresses; it retries on conflicts with the CCM's node
// controller.
func SetNodeReady(ctx context.Context, cs kubernetes.Interface, name string, ready bool) error {
	return setNodeStatus(ctx, cs, name, nodeStatus(ready, name, ""))
}

// setNodeStatus writes the Ready condition of st and, when st has any, its
// addresses, retrying on conflicts with the CCM's node controller (which
// initializes the same nodes).
func setNodeStatus(ctx context.Context, cs kubernetes.Interface, name string, st v1.NodeStatus) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		n, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		n.Status.Conditions = st.Conditions
		if len(st.Addresses) > 0 {
			n.Status.Addresses = st.Addresses
		}
		_, err = cs.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{})
		return err
	})
}

// nodeStatus is the status a kubelet reports: the Ready condition and,
// with addr, the InternalIP and the hostname, in the order the CCM's node
// controller writes them. Without the hostname that controller adds it at
// its first periodic sync, 5 minutes after it started: one write per node
// landing in whatever a test or bench measures then.
func nodeStatus(ready bool, name, addr string) v1.NodeStatus {
	st := v1.ConditionFalse
	if ready {
		st = v1.ConditionTrue
	}
	now := metav1.Now()
	s := v1.NodeStatus{Conditions: []v1.NodeCondition{{Type: v1.NodeReady, Status: st, LastHeartbeatTime: now, LastTransitionTime: now}}}
	if addr != "" {
		s.Addresses = []v1.NodeAddress{{Type: v1.NodeInternalIP, Address: addr}, {Type: v1.NodeHostName, Address: name}}
	}
	return s
}
