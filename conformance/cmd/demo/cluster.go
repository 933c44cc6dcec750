package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// webService is the demo's LoadBalancer Service in front of the backend
// pods (port 80 to the pods' 8080).
const webService = `apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
    - name: http
      port: 80
      targetPort: 8080
`

// runCluster is make demo-cluster: the same guide on real nodes. Each of
// master1, worker-p001 and worker-p002 runs containerd, a kubelet
// (--cloud-provider=external) and kube-proxy; the provider runs as the
// pods of deploy/ (kubectl apply -k), initializes the nodes, and a
// backend Deployment answers the client's requests through leaf, node,
// kube-proxy and pod.
func runCluster(ctx context.Context, keep bool, requests int) error {
	tmp, err := os.MkdirTemp("", "openelb-demo-cluster-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)

	step("building the images: the provider's two (as make image) and the lab's sandbox and backend (as make image-lab)")
	var images []string
	for _, set := range []string{"release", "lab"} {
		dir := filepath.Join(tmp, set)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		tars, err := seedlab.BuildImages(ctx, set, dir)
		if err != nil {
			return err
		}
		for _, t := range tars {
			fmt.Println("  " + filepath.Base(t))
		}
		images = append(images, tars...)
	}

	step("starting etcd, kube-apiserver, kube-controller-manager and kube-scheduler")
	cp, err := harness.Start(ctx, harness.Options{ControllerManager: true, Scheduler: true,
		StaticUsers: seedlab.NodeUsers(), ExtraAPIServerFlags: seedlab.InClusterAPIServerFlags})
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		_ = cp.Stop()
	}()
	fmt.Printf("control plane up in %s; export KUBECONFIG=%s\n", cp.StartupDuration.Round(time.Millisecond), cp.Kubeconfig)
	kubectl := printingKubectl(ctx, cp)

	step("building the guide's network: FRR spine, leaf1, leaf2; nodes master1, worker-p001 (leaf1), worker-p002 (leaf2); a client behind the spine")
	lab, err := seedlab.New(ctx, cp, seedlab.Options{})
	if err != nil {
		return err
	}
	defer lab.Close()

	step("starting containerd, the kubelet (--cloud-provider=external) and kube-proxy on each node; importing the images")
	began := time.Now()
	if _, err := lab.StartRealNodes(ctx, seedlab.RealNodesOptions{Images: images, SandboxImage: seedlab.SandboxImage}); err != nil {
		return err
	}
	if err := waitNodes(ctx, cp, "registered and Ready", func(n *v1.Node) bool {
		for _, c := range n.Status.Conditions {
			if c.Type == v1.NodeReady {
				return c.Status == v1.ConditionTrue
			}
		}
		return false
	}); err != nil {
		return err
	}
	fmt.Printf("3 nodes registered in %s, waiting for a cloud provider:\n", time.Since(began).Round(time.Millisecond))
	nodeColumns := "custom-columns=NAME:.metadata.name,PROVIDER-ID:.spec.providerID,ADDRESS:.status.addresses[0].address,TAINTS:.spec.taints[*].key"
	if err := kubectl("get", "nodes", "-o", nodeColumns); err != nil {
		return err
	}

	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	step("installing the provider: kubectl apply -k deploy/ (an overlay names the imported image tag)")
	if err := lab.ApplyDeploy(ctx, tmp, filepath.Join(root, "deploy"), seedlab.ImageTag); err != nil {
		return err
	}
	if err := kubectl("rollout", "status", "deployment/openelb-manager", "-n", "openelb-system", "--timeout=5m"); err != nil {
		return err
	}
	if err := waitNodes(ctx, cp, "initialized by openelb", func(n *v1.Node) bool {
		for _, t := range n.Spec.Taints {
			if t.Key == "node.cloudprovider.kubernetes.io/uninitialized" {
				return false
			}
		}
		return strings.HasPrefix(n.Spec.ProviderID, "openelb://")
	}); err != nil {
		return err
	}
	if err := kubectl("get", "nodes", "-o", nodeColumns); err != nil {
		return err
	}

	if err := guideCommands(ctx, lab); err != nil {
		return err
	}
	if err := waitPods(ctx, cp, "openelb-system", "app.kubernetes.io/name=openelb-speaker", 2); err != nil {
		return err
	}
	if err := kubectl("get", "po", "-n", "openelb-system", "-o", "wide"); err != nil {
		return err
	}

	if err := configure(ctx, lab, kubectl); err != nil {
		return err
	}

	step("a backend Deployment (3 pods, one per node) behind a LoadBalancer Service")
	if _, err := cp.Client().AppsV1().Deployments("default").Create(ctx, seedlab.BackendDeployment("default", "web", 3), metav1.CreateOptions{}); err != nil {
		return err
	}
	if err := kubectl("rollout", "status", "deployment/web", "--timeout=5m"); err != nil {
		return err
	}
	svcFile := filepath.Join(tmp, "web.yaml")
	if err := os.WriteFile(svcFile, []byte(webService), 0o644); err != nil {
		return err
	}
	fmt.Print(webService)
	if err := kubectl("apply", "-f", svcFile); err != nil {
		return err
	}
	var ip string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		s, err := cp.Client().CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
		if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
			return false, nil
		}
		ip = s.Status.LoadBalancer.Ingress[0].IP
		return true, nil
	}); err != nil {
		return fmt.Errorf("the Service got no address: %w", err)
	}
	if err := kubectl("get", "svc", "web", "-o", "wide"); err != nil {
		return err
	}

	step("waiting for the routes: leaf1 via master1+worker-p001, leaf2 via worker-p002, spine via both leaves")
	if err := printRoutes(ctx, lab, ip); err != nil {
		return err
	}

	step("%d requests from the client (%s) to http://%s/; each answered by a pod: its name, its node, the client address it sees", requests, netlab.ClientIP, ip)
	count := map[string]int{}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, err := lab.Net.Exec(ctx, lab.Topo.Client, "curl", "-sS", "--max-time", "2", "http://"+ip+"/")
		return err == nil, nil
	}); err != nil {
		return fmt.Errorf("the Service never answered: %w", err)
	}
	for i := range requests {
		out, err := lab.Net.Exec(ctx, lab.Topo.Client, "curl", "-sS", "--max-time", "3", "http://"+ip+"/")
		if err != nil {
			return err
		}
		out = strings.TrimSpace(out)
		for _, f := range strings.Fields(out) {
			if node, ok := strings.CutPrefix(f, "node="); ok {
				count[node]++
			}
		}
		fmt.Printf("  request %2d -> %s\n", i+1, out)
	}
	fmt.Printf("answers per node: %v\n", count)

	step("the cluster: pods, the plan, the racks, the speakers")
	for _, args := range [][]string{
		{"get", "po", "-A", "-o", "wide"},
		{"get", "lbplan", "web", "-o", "wide"},
		{"get", "lbrack"},
		{"get", "lbspeaker"},
	} {
		if err := kubectl(args...); err != nil {
			return err
		}
	}
	if keep {
		step("lab running; KUBECONFIG=%s; Ctrl-C to stop", cp.Kubeconfig)
		<-ctx.Done()
	}
	return nil
}

// waitNodes waits until the three nodes exist and each passes ok.
func waitNodes(ctx context.Context, cp *harness.ControlPlane, what string, ok func(*v1.Node) bool) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		nodes, err := cp.Client().CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		var good []string
		for _, n := range nodes.Items {
			if ok(&n) {
				good = append(good, n.Name)
			}
		}
		last = fmt.Sprintf("%v of %d", good, len(nodes.Items))
		return len(good) == 3, nil
	})
	if err != nil {
		return fmt.Errorf("nodes not %s (%s): %w", what, last, err)
	}
	return nil
}

// waitPods waits until n pods of selector run Ready.
func waitPods(ctx context.Context, cp *harness.ControlPlane, ns, selector string, n int) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		pods, err := cp.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		ready := 0
		for _, p := range pods.Items {
			for _, c := range p.Status.Conditions {
				if c.Type == v1.PodReady && c.Status == v1.ConditionTrue {
					ready++
				}
			}
		}
		last = fmt.Sprintf("%d of %d pods ready", ready, len(pods.Items))
		return ready == n && len(pods.Items) == n, nil
	})
	if err != nil {
		return fmt.Errorf("pods %s in %s: %s: %w", selector, ns, last, err)
	}
	return nil
}
