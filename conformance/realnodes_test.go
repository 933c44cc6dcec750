package conformance

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/kubenode"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// previousRelease is the release an in-place upgrade starts from: its
// deploy/ and its images are built from its commit (git tag v0.2.0; the
// commit, not the tag, so a clone without tags works too).
const previousRelease, previousReleaseCommit = "v0.2.0", "bb51a027a45dd87477fad246859fa5bb3920ec3d"

// realLab is seed 000 with real nodes: a kubelet, containerd and
// kube-proxy in each node's namespace (package kubenode), kube-scheduler
// and kube-controller-manager, and the openelb CCM.
type realLab struct {
	*lab
	s     *seedlab.Lab
	nodes map[string]*kubenode.Node
	// firstTaints are the taints each node had when the API server first
	// showed it.
	firstTaints map[string][]v1.Taint
}

// realLabOptions: processCCM runs the openelb CCM as a process of the
// test (the nodes are initialized before newRealLab returns); without it
// the nodes stay uninitialized until the shipped manifests run it.
// shippedImages also imports the provider's own images.
type realLabOptions struct {
	processCCM, shippedImages bool
	// images are more image tarballs to import on every node.
	images []string
}

func newRealLab(t *testing.T, opts realLabOptions) *realLab {
	t.Helper()
	ctx := context.Background()
	l := newLabWith(t, harness.Options{ControllerManager: true, Scheduler: true, StaticUsers: seedlab.NodeUsers(),
		ExtraAPIServerFlags: seedlab.InClusterAPIServerFlags})
	if opts.processCCM {
		l.ccm("ccm")
	}
	s, err := seedlab.New(ctx, l.cp, seedlab.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r := &realLab{lab: l, s: s, firstTaints: map[string][]v1.Taint{}}
	t.Cleanup(func() {
		if t.Failed() {
			for name, n := range r.nodes {
				t.Logf("--- %s: kubelet ---\n%s\n--- %s: containerd ---\n%s\n--- %s: kube-proxy ---\n%s",
					name, n.Kubelet.LogTail(40), name, n.Containerd.LogTail(20), name, n.KubeProxy.LogTail(20))
			}
		}
		if err := s.Close(); err != nil {
			t.Errorf("lab cleanup: %v", err)
		}
	})
	stop := r.watchFirstTaints()
	images, err := seedlab.BuildImages(ctx, "lab", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if opts.shippedImages {
		release, err := seedlab.BuildImages(ctx, "release", t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		images = append(images, release...)
	}
	images = append(images, opts.images...)
	began := time.Now()
	r.nodes, err = s.StartRealNodes(ctx, seedlab.RealNodesOptions{
		Images:       images,
		SandboxImage: seedlab.SandboxImage,
	})
	if err != nil {
		t.Fatal(err)
	}
	if opts.processCCM {
		r.waitInitialized()
		t.Logf("3 real nodes up and initialized in %v", time.Since(began).Round(time.Millisecond))
	} else {
		r.waitRegistered()
		t.Logf("3 real nodes up and registered in %v", time.Since(began).Round(time.Millisecond))
	}
	stop()
	return r
}

// waitRegistered waits until every node registered and is Ready.
func (r *realLab) waitRegistered() {
	r.t.Helper()
	r.waitNodes("registered", func(n *v1.Node, ip string) bool { return nodeReady(n) })
}

func nodeReady(n *v1.Node) bool {
	return slices.ContainsFunc(n.Status.Conditions, func(c v1.NodeCondition) bool {
		return c.Type == v1.NodeReady && c.Status == v1.ConditionTrue
	})
}

// watchFirstTaints records the taints of each node as first seen.
func (r *realLab) watchFirstTaints() (stop func()) {
	w, err := r.cs.CoreV1().Nodes().Watch(context.Background(), metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range w.ResultChan() {
			n, ok := ev.Object.(*v1.Node)
			if !ok || ev.Type != watch.Added {
				continue
			}
			mu.Lock()
			r.firstTaints[n.Name] = n.Spec.Taints
			mu.Unlock()
		}
	}()
	return func() { w.Stop(); <-done }
}

// waitInitialized waits until the provider initialized every node: its
// provider ID and InternalIP set, the uninitialized taint gone, Ready.
func (r *realLab) waitInitialized() {
	r.t.Helper()
	r.waitNodes("initialized", func(n *v1.Node, ip string) bool {
		internal := slices.ContainsFunc(n.Status.Addresses, func(a v1.NodeAddress) bool {
			return a.Type == v1.NodeInternalIP && a.Address == ip
		})
		tainted := slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == uninitializedTaint })
		return n.Spec.ProviderID == "openelb://"+n.Name && !tainted && internal && nodeReady(n)
	})
}

// waitNodes waits until ok holds for every node of the lab (given its
// InternalIP).
func (r *realLab) waitNodes(what string, ok func(n *v1.Node, ip string) bool) {
	r.t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		for _, tn := range r.s.Topo.Nodes {
			n, err := r.cs.CoreV1().Nodes().Get(ctx, tn.Name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			if !ok(n, tn.IP) {
				last = fmt.Sprintf("%s: providerID %q taints %v addresses %v ready %v", n.Name, n.Spec.ProviderID, n.Spec.Taints, n.Status.Addresses, nodeReady(n))
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		r.t.Fatalf("nodes not %s: %s", what, last)
	}
}

const uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

// waitPodsReady waits until n pods of app are Ready and returns them.
func (r *realLab) waitPodsReady(ns, app string, n int) []v1.Pod {
	r.t.Helper()
	return r.waitPods(ns, "app="+app, n)
}

// waitPods waits until n pods matching selector are Ready and returns
// them.
func (r *realLab) waitPods(ns, selector string, n int) []v1.Pod {
	r.t.Helper()
	var pods []v1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := r.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		var states []string
		for _, p := range list.Items {
			ready := p.DeletionTimestamp == nil && slices.ContainsFunc(p.Status.Conditions, func(c v1.PodCondition) bool {
				return c.Type == v1.PodReady && c.Status == v1.ConditionTrue
			})
			if ready {
				pods = append(pods, p)
			}
			states = append(states, fmt.Sprintf("%s on %s: %s ready=%v", p.Name, p.Spec.NodeName, p.Status.Phase, ready))
		}
		last = strings.Join(states, "; ")
		return len(pods) == n, nil
	})
	if err != nil {
		r.t.Fatalf("%d pods %s in %s not ready: %s", n, selector, ns, last)
	}
	return pods
}

// TestRealNodes runs seed 000's three nodes for real: each node's kubelet
// (--cloud-provider=external), containerd and kube-proxy (nftables) in its
// namespace. The nodes join with the uninitialized taint and the openelb
// CCM initializes them (provider ID openelb://<node>, the node's address,
// taint removed); a Deployment's pods run on every node behind the lab's
// bridge CNI and static pod routes; a ClusterIP Service reached from
// master1 is answered by the pods of all three nodes through kube-proxy.
// Stopping the nodes leaves no process, cgroup or mount behind (checked
// by kubenode.Close, whose error fails the test).
func TestRealNodes(t *testing.T) {
	r := newRealLab(t, realLabOptions{processCCM: true})
	ctx := context.Background()
	for _, n := range r.s.Topo.Nodes {
		if !slices.ContainsFunc(r.firstTaints[n.Name], func(t v1.Taint) bool { return t.Key == uninitializedTaint }) {
			t.Errorf("node %s joined with taints %v, want %s (kubelet --cloud-provider=external)", n.Name, r.firstTaints[n.Name], uninitializedTaint)
		}
	}

	const ns = "default"
	if _, err := r.cs.AppsV1().Deployments(ns).Create(ctx, seedlab.BackendDeployment(ns, "web", 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pods := r.waitPodsReady(ns, "web", 3)
	var onNodes []string
	for _, p := range pods {
		onNodes = append(onNodes, p.Spec.NodeName)
	}
	slices.Sort(onNodes)
	if want := []string{"master1", "worker-p001", "worker-p002"}; !slices.Equal(onNodes, want) {
		t.Fatalf("backend pods on %v, want one on each of %v", onNodes, want)
	}

	svc := &v1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web"},
		Spec: v1.ServiceSpec{
			Selector: map[string]string{"app": "web"},
			Ports:    []v1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: v1.ProtocolTCP}},
		},
	}
	created, err := r.cs.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	from := r.s.Topo.Node("master1").NS
	served := map[string]int{}
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		a, err := r.get(from, created.Spec.ClusterIP)
		if err != nil {
			return false, nil
		}
		served[a.node]++
		return len(served) == 3, nil
	})
	if err != nil {
		t.Fatalf("ClusterIP %s from master1: answered by the pods of %v, want all three nodes", created.Spec.ClusterIP, served)
	}
	t.Logf("ClusterIP %s from master1 answered by the pods of %v", created.Spec.ClusterIP, served)
}

// answer is what the lab's backend answered: the pod and node that
// served a request and the client address it saw.
type answer struct{ pod, node, client string }

// get sends one HTTP request (a new connection) from namespace ns to addr
// port 80 and parses the backend's answer.
func (r *realLab) get(ns, addr string) (answer, error) {
	out, err := r.s.Net.Exec(context.Background(), ns, "curl", "-sS", "--max-time", "3", "http://"+addr+"/")
	if err != nil {
		return answer{}, err
	}
	var a answer
	for _, f := range strings.Fields(out) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "pod":
			a.pod = v
		case "node":
			a.node = v
		case "client":
			a.client = v
		}
	}
	if a.node == "" {
		return a, fmt.Errorf("not the backend's answer: %q", out)
	}
	return a, nil
}

// waitServed waits until a request from ns to addr is answered: the routes
// may be in place before every kube-proxy has the Service's address.
func (r *realLab) waitServed(ns, addr string) {
	r.t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(context.Background(), 200*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, last = r.get(ns, addr)
		return last == nil, nil
	})
	if err != nil {
		r.t.Fatalf("%s from %s never answered: %v", addr, ns, last)
	}
}

// applyShipped runs `kubectl apply -k` on an overlay of deploy/ that only
// points the images at the tags the nodes imported (deploy/ itself is not
// edited).
func (r *realLab) applyShipped() {
	r.t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		r.t.Fatal(err)
	}
	r.applyOverlay(filepath.Join(root, "deploy"), seedlab.ImageTag)
}

// applyOverlay runs kubectl apply -k on an overlay of the deploy/
// directory at deployDir that only names the images' tag.
func (r *realLab) applyOverlay(deployDir, tag string) {
	r.t.Helper()
	if err := r.s.ApplyDeploy(context.Background(), r.t.TempDir(), deployDir, tag); err != nil {
		r.t.Fatal(err)
	}
}

// TestShippedManifestsOnRealNodes runs deploy/ as it ships (an overlay only names the
// locally imported image tags) on the real nodes: openelb-manager is
// scheduled onto a node still tainted uninitialized, reaches the API
// server in-cluster (Service "kubernetes" through kube-proxy) and
// initializes every node; after the guide's labelling commands the
// openelb-speaker DaemonSet runs, Ready, on exactly the labelled nodes,
// under the shipped probes, capabilities and security context.
func TestShippedManifestsOnRealNodes(t *testing.T) {
	r := newRealLab(t, realLabOptions{shippedImages: true})
	r.dumpOnFailure()
	r.applyShipped()
	b, vip := r.seed000OnPods()
	ctx := context.Background()

	// externalTrafficPolicy Local: a backend on worker-p001 only. Only
	// that node is a next hop, and the pod sees the client's own address.
	local := seedlab.BackendDeployment("default", "solo", 1)
	local.Spec.Template.Spec.NodeSelector = map[string]string{v1.LabelHostname: "worker-p001"}
	if _, err := r.cs.AppsV1().Deployments("default").Create(ctx, local, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitPodsReady("default", "solo", 1)
	if _, err := r.cs.CoreV1().Services("default").Create(ctx, newService("default", "solo", toBackend("solo"), func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lvip := b.waitAddress("default", "solo")
	b.waitKernel("leaf1: the endpoint's node only", b.topo.Leaf1, lvip+"/32", "192.168.0.4")
	b.waitKernel("spine: leaf1 only", b.topo.Spine, lvip+"/32", "10.0.1.2")
	r.waitServed(b.topo.Client, lvip)
	for range 10 {
		a, err := r.get(b.topo.Client, lvip)
		if err != nil {
			t.Fatalf("client → %s: %v", lvip, err)
		}
		if host, _, _ := strings.Cut(a.client, ":"); a.node != "worker-p001" || host != netlab.ClientIP {
			t.Fatalf("client → %s (Local): answered by %s on %s seeing client %s, want worker-p001 seeing %s", lvip, a.pod, a.node, a.client, netlab.ClientIP)
		}
	}

	t.Run("RollingRestart", func(t *testing.T) { testRollingRestart(t, r, vip) })
	t.Run("Seed001Replicas", func(t *testing.T) { testSeed001(t, r, vip) })
	// After seed 001 the managers run on master1 and worker-p002, so the
	// drain of worker-p001 measures the data path, not a manager moving.
	t.Run("Drain", func(t *testing.T) { testDrain(t, r, vip) })
	t.Run("DataPathHealth", func(t *testing.T) { testDataPathHealth(t, r, vip) })
	t.Run("MissingCapabilityFails", func(t *testing.T) { testMissingCapability(t, r) })
}

// dumpOnFailure logs every pod and event when the test fails.
func (r *realLab) dumpOnFailure() {
	r.t.Cleanup(func() {
		if r.t.Failed() {
			out, _ := r.cp.Kubectl(context.Background(), "get", "pods", "-A", "-o", "wide")
			r.t.Logf("--- pods ---\n%s", out)
			out, _ = r.cp.Kubectl(context.Background(), "get", "events", "-A", "--sort-by=.lastTimestamp")
			r.t.Logf("--- events ---\n%s", out)
		}
	})
}

// seed000OnPods follows seed 000 once the manifests are applied: the
// manager initializes the nodes, the guide's commands label them and the
// speakers run on the labelled ones, then the rest of the guide's
// configuration and a backend Deployment (3 pods) behind the LoadBalancer
// Service default/web, answered from the client through leaf, node,
// kube-proxy and pod on all three nodes. It returns the lab and web's
// address.
func (r *realLab) seed000OnPods() (*bgpLab, string) {
	t := r.t
	t.Helper()
	ctx := context.Background()
	r.waitPods("openelb-system", "app.kubernetes.io/name=openelb-manager", 1)
	r.waitInitialized()
	for _, line := range seedlab.GuideCommands {
		if err := r.s.Kubectl(ctx, line); err != nil {
			t.Fatal(err)
		}
	}
	speakers := r.waitPods("openelb-system", "app.kubernetes.io/name=openelb-speaker", 2)
	var on []string
	for _, p := range speakers {
		on = append(on, p.Spec.NodeName)
	}
	slices.Sort(on)
	if want := []string{"master1", "worker-p002"}; !slices.Equal(on, want) {
		t.Errorf("speakers on %v, want %v (the nodes labelled lb.kubesphere.io/v1alpha1=openelb)", on, want)
	}

	// Seed 000 with pods: the rest of the guide's configuration, a
	// backend on every node behind a LoadBalancer Service.
	b := &bgpLab{lab: r.lab, s: r.s, net: r.s.Net, topo: r.s.Topo}
	if err := r.s.Configure(ctx, "172.22.0.2-172.22.0.10"); err != nil {
		t.Fatal(err)
	}
	b.kubectl("kubectl label --overwrite nodes worker-p001 openelb.kubesphere.io/rack=leaf1")
	if _, err := r.cs.AppsV1().Deployments("default").Create(ctx, seedlab.BackendDeployment("default", "web", 3), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitPodsReady("default", "web", 3)
	if _, err := r.cs.CoreV1().Services("default").Create(ctx, newService("default", "web", toBackend("web")), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	vip := b.waitAddress("default", "web")
	b.waitKernel("leaf1 ECMP over its rack", b.topo.Leaf1, vip+"/32", "192.168.0.3", "192.168.0.4")
	b.waitKernel("leaf2", b.topo.Leaf2, vip+"/32", "192.168.1.2")
	b.waitKernel("spine ECMP over the leaves", b.topo.Spine, vip+"/32", "10.0.1.2", "10.0.2.2")
	r.waitServed(b.topo.Client, vip)
	served := map[string]int{}
	for range 30 {
		a, err := r.get(b.topo.Client, vip)
		if err != nil {
			t.Fatalf("client → %s: %v", vip, err)
		}
		served[a.node]++
	}
	t.Logf("client → %s (externalTrafficPolicy Cluster): 30 requests answered by the pods of %v", vip, served)
	if len(served) != 3 {
		t.Errorf("answered by the pods of %v, want all three nodes' pods", served)
	}
	return b, vip
}

// toBackend points a Service at the pods of a backendDeployment.
func toBackend(app string) svcTweak {
	return func(s *v1.Service) {
		s.Spec.Selector = map[string]string{"app": app}
		s.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
	}
}

// testMissingCapability shows that the pods run with what the DaemonSet
// grants, no more: with BgpConf listenPort 179 the shipped speakers listen
// (NET_BIND_SERVICE); a speaker patched to drop that capability cannot
// bind, is never Ready and so stops the rollout; rolling back restores it.
func testMissingCapability(t *testing.T, r *realLab) {
	ctx := context.Background()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var conf v1alpha2.BgpConf
		if err := r.crd.Get(ctx, client.ObjectKey{Name: "default"}, &conf); err != nil {
			return err
		}
		conf.Spec.ListenPort = 179
		return r.crd.Update(ctx, &conf)
	})
	if err != nil {
		t.Fatal(err)
	}
	master1 := r.s.Topo.Node("master1").NS
	listening := func() bool {
		out, err := r.s.Net.Exec(ctx, master1, "ss", "-Hltn", "sport = :179")
		return err == nil && strings.TrimSpace(out) != ""
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) { return listening(), nil }); err != nil {
		t.Fatal("the shipped speaker on master1 never listened on port 179")
	}
	r.waitPods("openelb-system", "app.kubernetes.io/name=openelb-speaker", 2)

	if err := r.s.Kubectl(ctx, `kubectl patch daemonset openelb-speaker -n openelb-system --type json -p [{"op":"replace","path":"/spec/template/spec/containers/0/securityContext/capabilities/add","value":["NET_RAW"]}]`); err != nil {
		t.Fatal(err)
	}
	reduced := func(p v1.Pod) bool {
		sc := p.Spec.Containers[0].SecurityContext
		return sc != nil && sc.Capabilities != nil && !slices.Contains(sc.Capabilities.Add, "NET_BIND_SERVICE")
	}
	var seen *v1.Pod
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		list, err := r.cs.CoreV1().Pods("openelb-system").List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=openelb-speaker"})
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range list.Items {
			if !reduced(p) || p.DeletionTimestamp != nil {
				continue
			}
			if seen == nil && p.Status.Phase == v1.PodRunning {
				seen = &p
				t.Logf("speaker %s on %s runs without NET_BIND_SERVICE", p.Name, p.Spec.NodeName)
			}
			if slices.ContainsFunc(p.Status.Conditions, func(c v1.PodCondition) bool { return c.Type == v1.PodReady && c.Status == v1.ConditionTrue }) {
				t.Fatalf("speaker %s without NET_BIND_SERVICE became Ready with listenPort 179", p.Name)
			}
		}
		time.Sleep(time.Second)
	}
	if seen == nil {
		t.Fatal("no speaker pod without NET_BIND_SERVICE ever ran")
	}
	for _, line := range []string{
		"kubectl rollout undo daemonset/openelb-speaker -n openelb-system",
		"kubectl rollout status daemonset/openelb-speaker -n openelb-system --timeout=3m",
	} {
		if err := r.s.Kubectl(ctx, line); err != nil {
			t.Fatal(err)
		}
	}
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) { return listening(), nil }); err != nil {
		t.Fatal("after the rollback the speaker on master1 never listened on port 179 again")
	}
}

// testDrain drains worker-p001 (kubectl drain) while the client opens
// connections to the Service of the web pods and to a Local Service of
// the same pods: the cordon takes worker-p001 out of leaf1's next hops
// before its web pod is gone (the backend serves for 5 s after SIGTERM,
// as applications do), and no connection fails to be established.
func testDrain(t *testing.T, r *realLab, vip string) {
	ctx := context.Background()
	b := &bgpLab{lab: r.lab.in(t), s: r.s, net: r.s.Net, topo: r.s.Topo}
	if _, err := r.cs.CoreV1().Services("default").Create(ctx, newService("default", "web-local", func(s *v1.Service) {
		s.Spec.Selector = map[string]string{"app": "web"}
		s.Spec.Ports[0].TargetPort = intstr.FromInt32(8080)
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	lvip := b.waitAddress("default", "web-local")
	b.waitKernel("leaf1: both nodes with a web pod", b.topo.Leaf1, lvip+"/32", "192.168.0.3", "192.168.0.4")
	r.waitServed(b.topo.Client, lvip)
	var victim string
	for _, p := range r.waitPodsReady("default", "web", 3) {
		if p.Spec.NodeName == "worker-p001" {
			victim = p.Name
		}
	}
	leaf1 := watchFIB(t, b.topo.Leaf1)
	w, err := r.cs.CoreV1().Pods("default").Watch(ctx, metav1.ListOptions{FieldSelector: "metadata.name=" + victim})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	gone := make(chan time.Time, 1)
	go func() {
		for ev := range w.ResultChan() {
			if ev.Type == watch.Deleted {
				gone <- time.Now()
				return
			}
		}
	}()

	stopCluster, stopLocal := r.clientLoop(vip), r.clientLoop(lvip)
	began := time.Now()
	if err := r.s.Kubectl(ctx, "kubectl drain worker-p001 --ignore-daemonsets --delete-emptydir-data --timeout=2m"); err != nil {
		t.Fatal(err)
	}
	var goneAt time.Time
	select {
	case goneAt = <-gone:
	case <-time.After(time.Minute):
		t.Fatalf("web pod %s on worker-p001 never went away", victim)
	}
	onlyMaster := func(h []netip.Addr) bool { return slices.Equal(h, addrs("192.168.0.3")) }
	outAt, err := leaf1.await([]netip.Addr{netip.MustParseAddr(lvip), netip.MustParseAddr(vip)}, 10*time.Second, onlyMaster)
	if err != nil {
		t.Fatalf("leaf1 never dropped worker-p001: %v", err)
	}
	time.Sleep(2 * time.Second)
	cluster, local := stopCluster(), stopLocal()
	t.Logf("kubectl drain worker-p001: out of leaf1's next hops %v after the drain began, its web pod gone after %v; Cluster Service: %d connections, %d not established, %d not answered; Local Service: %d, %d, %d",
		outAt.Sub(began).Round(time.Millisecond), goneAt.Sub(began).Round(time.Millisecond),
		cluster.tries, cluster.notConnected, cluster.notAnswered, local.tries, local.notConnected, local.notAnswered)
	if !outAt.Before(goneAt) {
		t.Errorf("worker-p001 left leaf1's next hops at +%v, after its pod was gone at +%v", outAt.Sub(began), goneAt.Sub(began))
	}
	if cluster.notConnected+local.notConnected > 0 {
		t.Errorf("connections failed to be established during the drain: %v %v", cluster.failures, local.failures)
	}
	if err := r.s.Kubectl(ctx, "kubectl uncordon worker-p001"); err != nil {
		t.Fatal(err)
	}
	b.waitKernel("leaf1 after uncordon", b.topo.Leaf1, vip+"/32", "192.168.0.3", "192.168.0.4")
}

// testDataPathHealth kills kube-proxy on worker-p001 (a node without a
// speaker: master1's speaker announces it to leaf1): master1's probe of
// its health check fails, worker-p001 leaves leaf1's next hops, and comes
// back when kube-proxy runs again. Both reaction times are logged and
// bounded; master1's LoadBalancerSpeaker says which node it left out.
func testDataPathHealth(t *testing.T, r *realLab, vip string) {
	ctx := context.Background()
	b := &bgpLab{lab: r.lab.in(t), s: r.s, net: r.s.Net, topo: r.s.Topo}
	as := []netip.Addr{netip.MustParseAddr(vip)}
	both := func(h []netip.Addr) bool { return slices.Equal(h, addrs("192.168.0.3", "192.168.0.4")) }
	onlyMaster := func(h []netip.Addr) bool { return slices.Equal(h, addrs("192.168.0.3")) }
	leaf1 := watchFIB(t, b.topo.Leaf1)
	if _, err := leaf1.await(as, 30*time.Second, both); err != nil {
		t.Fatalf("leaf1 before: %v", err)
	}
	unhealthy := func() []string {
		var sp v1alpha2.LoadBalancerSpeaker
		if err := r.crd.Get(ctx, client.ObjectKey{Name: "master1"}, &sp); err != nil || sp.Status.DataPath == nil {
			return []string{fmt.Sprintf("no report: %v", err)}
		}
		var out []string
		for _, u := range sp.Status.DataPath.Unhealthy {
			out = append(out, u.Node+": "+u.Message)
		}
		return out
	}
	if u := unhealthy(); len(u) != 0 {
		t.Fatalf("master1 reports unhealthy data paths before any fault: %v", u)
	}
	n := r.nodes["worker-p001"]
	stop := r.clientLoop(vip)
	killed := time.Now()
	if err := n.KubeProxy.Kill(); err != nil {
		t.Fatal(err)
	}
	outAt, err := leaf1.await(as, 15*time.Second, onlyMaster)
	if err != nil {
		t.Fatalf("leaf1 never dropped worker-p001 after its kube-proxy was killed: %v (master1 reports %v)", err, unhealthy())
	}
	out := outAt.Sub(killed)
	var report []string
	if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		report = unhealthy()
		return len(report) == 1 && strings.HasPrefix(report[0], "worker-p001: "), nil
	}); err != nil {
		t.Errorf("master1's LoadBalancerSpeaker reports unhealthy %v, want worker-p001 alone", report)
	}
	restarted := time.Now()
	if err := n.StartKubeProxy(); err != nil {
		t.Fatal(err)
	}
	backAt, err := leaf1.await(as, 30*time.Second, both)
	if err != nil {
		t.Fatalf("worker-p001 never came back to leaf1's next hops after kube-proxy restarted: %v (master1 reports %v)", err, unhealthy())
	}
	back := backAt.Sub(restarted)
	time.Sleep(time.Second)
	st := stop()
	t.Logf("kube-proxy killed on worker-p001: out of leaf1's next hops after %v (master1 reports %v); kube-proxy restarted: back after %v; %d connections, %d not established, %d not answered %v",
		out.Round(time.Millisecond), report, back.Round(time.Millisecond), st.tries, st.notConnected, st.notAnswered, st.failures)
	// Two failed probes a second apart, then one apply: about 2 s.
	if out > 4*time.Second {
		t.Errorf("worker-p001 left leaf1's next hops %v after its kube-proxy died, want within 4 s", out)
	}
	if u := unhealthy(); len(u) != 0 {
		t.Errorf("master1 still reports unhealthy data paths after recovery: %v", u)
	}
}

// clientStats counts a client loop's connections: those that could not
// be established, and those established but not answered.
type clientStats struct {
	tries, notConnected, notAnswered int
	failures                         []string // the first ten
}

func (c clientStats) failed() int { return c.notConnected + c.notAnswered }

// clientLoop opens a connection from seed 000's client to addr:80 every
// 50 ms, each an HTTP request the backend must answer, until stop.
func (r *realLab) clientLoop(addr string) (stop func() clientStats) {
	done := make(chan struct{})
	var mu sync.Mutex
	var st clientStats
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
			}
			connected, err := httpOnce(r.s.Topo.Client, addr)
			mu.Lock()
			st.tries++
			if err != nil {
				if connected {
					st.notAnswered++
				} else {
					st.notConnected++
				}
				if len(st.failures) < 10 {
					st.failures = append(st.failures, time.Now().Format("15:04:05.000")+" "+err.Error())
				}
			}
			mu.Unlock()
		}
	}()
	return func() clientStats {
		close(done)
		wg.Wait()
		return st
	}
}

// httpOnce opens one connection from namespace ns to addr:80 and reads
// the backend's answer to a GET; connected says whether the connection
// was established.
func httpOnce(ns, addr string) (connected bool, err error) {
	c, err := netlab.DialTCP(ns, addr+":80", 2*time.Second)
	if err != nil {
		return false, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(3 * time.Second))
	if _, err := c.Write([]byte("GET / HTTP/1.0\r\nHost: lab\r\n\r\n")); err != nil {
		return true, err
	}
	b, err := io.ReadAll(c)
	if err != nil {
		return true, err
	}
	if !strings.Contains(string(b), "node=") {
		return true, fmt.Errorf("not the backend's answer: %q", b)
	}
	return true, nil
}

// testRollingRestart restarts the speaker DaemonSet (kubectl rollout
// restart) while the client opens connections continuously: with graceful
// restart no connection fails and no leaf or spine route of the Service
// loses a next hop; without it, the gap is measured and logged.
func testRollingRestart(t *testing.T, r *realLab, vip string) {
	ctx := context.Background()
	as := []netip.Addr{netip.MustParseAddr(vip)}
	fl := &faultLab{lab: r.lab.in(t), s: r.s, net: r.s.Net, topo: r.s.Topo, fib: map[string]*fibGuard{}}
	sessions := map[string]string{"leaf1": "192.168.0.3", "leaf2": "192.168.1.2"}
	for _, router := range []*netlab.FRR{r.s.Topo.Leaf1, r.s.Topo.Leaf2, r.s.Topo.Spine} {
		fl.fib[router.Name] = watchFIB(t, router)
	}
	fl.setGracefulRestart(t, as, true, sessions)
	speakerUIDs := func() []string {
		var uids []string
		for _, p := range r.waitPods("openelb-system", "app.kubernetes.io/name=openelb-speaker", 2) {
			uids = append(uids, string(p.UID))
		}
		slices.Sort(uids)
		return uids
	}
	restart := func() (st clientStats, took time.Duration) {
		before := speakerUIDs()
		stop := r.clientLoop(vip)
		began := time.Now()
		for _, line := range []string{
			"kubectl rollout restart daemonset/openelb-speaker -n openelb-system",
			"kubectl rollout status daemonset/openelb-speaker -n openelb-system --timeout=5m",
		} {
			if err := r.s.Kubectl(ctx, line); err != nil {
				t.Fatal(err)
			}
		}
		took = time.Since(began)
		fl.settled(as)
		st = stop()
		if after := speakerUIDs(); slices.ContainsFunc(after, func(u string) bool { return slices.Contains(before, u) }) {
			t.Fatalf("the rollout left speaker pods %v in place (before: %v)", after, before)
		}
		return st, took
	}

	fl.fib["leaf1"].protect(as, addrs("192.168.0.3", "192.168.0.4"))
	fl.fib["leaf2"].protect(as, addrs("192.168.1.2"))
	fl.fib["spine"].protect(as, addrs("10.0.1.2", "10.0.2.2"))
	unreach := r.icmpUnreachables()
	st, took := restart()
	var broken []string
	for _, g := range fl.fib {
		broken = append(broken, g.takeViolations()...)
	}
	fl.unprotectAll()
	t.Logf("rolling restart with graceful restart: %v, %d connections, %d failed %v", took.Round(time.Millisecond), st.tries, st.failed(), st.failures)
	if len(broken) != 0 {
		t.Errorf("with graceful restart, routes lost next hops: %v", broken)
	}
	if st.failed() != 0 {
		// Which namespace answered with ICMP destination unreachable
		// tells a routing gap (a router) from a neighbour or pod
		// problem (a node).
		t.Errorf("with graceful restart, %d of %d connections failed: %v; ICMP destination unreachables sent meanwhile: %v",
			st.failed(), st.tries, st.failures, r.icmpUnreachablesSince(unreach))
	}

	// Without graceful restart each speaker withdraws on SIGTERM: leaf1
	// loses the route until master1's new speaker announces it again, and
	// the spine sends everything through leaf2 meanwhile.
	fl.setGracefulRestart(t, as, false, sessions)
	fl.fib["leaf1"].protect(as, addrs("192.168.0.3", "192.168.0.4"))
	st, took = restart()
	withdrawn := fl.fib["leaf1"].takeViolations()
	fl.unprotectAll()
	t.Logf("rolling restart without graceful restart: %v, %d connections, %d failed %v; leaf1's route changed %d times: %v",
		took.Round(time.Millisecond), st.tries, st.failed(), st.failures, len(withdrawn), withdrawn)
	if len(withdrawn) == 0 {
		t.Errorf("without graceful restart leaf1 never lost the route: the speakers did not restart")
	}
}

// icmpUnreachables reads, per namespace of the lab (client, routers,
// nodes), how many ICMP destination unreachable messages it sent.
func (r *realLab) icmpUnreachables() map[string]int {
	nss := map[string]string{"client": r.s.Topo.Client, "spine": r.s.Topo.Spine.NS, "leaf1": r.s.Topo.Leaf1.NS, "leaf2": r.s.Topo.Leaf2.NS}
	for _, n := range r.s.Topo.Nodes {
		nss[n.Name] = n.NS
	}
	out := map[string]int{}
	for name, ns := range nss {
		snmp, err := r.s.Net.Exec(context.Background(), ns, "cat", "/proc/net/snmp")
		if err != nil {
			continue
		}
		var head []string
		for _, l := range strings.Split(snmp, "\n") {
			f := strings.Fields(l)
			if len(f) == 0 || f[0] != "Icmp:" {
				continue
			}
			if head == nil {
				head = f
				continue
			}
			if i := slices.Index(head, "OutDestUnreachs"); i > 0 && i < len(f) {
				out[name], _ = strconv.Atoi(f[i])
			}
			break
		}
	}
	return out
}

// icmpUnreachablesSince lists the namespaces that sent ICMP destination
// unreachables since before.
func (r *realLab) icmpUnreachablesSince(before map[string]int) map[string]int {
	diff := map[string]int{}
	for name, n := range r.icmpUnreachables() {
		if d := n - before[name]; d > 0 {
			diff[name] = d
		}
	}
	return diff
}

// testSeed001 follows "Configure Multiple OpenELB Replicas" verbatim on
// the running pods (its `kubectl edit` as the equivalent `kubectl patch`):
// two manager pods on the labelled nodes, one of them leader, and the
// Services keep their addresses while new ones still get one.
func testSeed001(t *testing.T, r *realLab, vip string) {
	ctx := context.Background()
	for _, line := range []string{
		"kubectl label --overwrite nodes master1 worker-p002 lb.kubesphere.io/v1alpha1=openelb",
		"kubectl scale deployment openelb-manager --replicas=0 -n openelb-system",
		`kubectl patch deployment openelb-manager -n openelb-system --type merge -p {"spec":{"template":{"spec":{"nodeSelector":{"kubernetes.io/os":"linux","lb.kubesphere.io/v1alpha1":"openelb"}}}}}`,
		"kubectl scale deployment openelb-manager --replicas=2 -n openelb-system",
	} {
		if err := r.s.Kubectl(ctx, line); err != nil {
			t.Fatal(err)
		}
	}
	managers := r.waitPods("openelb-system", "app.kubernetes.io/name=openelb-manager", 2)
	out, err := r.cp.Kubectl(ctx, "get", "po", "-n", "openelb-system", "-o", "wide")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("kubectl get po -n openelb-system -o wide\n%s", out)
	var on []string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) >= 7 && strings.HasPrefix(f[0], "openelb-manager-") {
			if f[1] != "1/1" || f[2] != "Running" {
				t.Errorf("manager pod %s is %s %s, want 1/1 Running", f[0], f[1], f[2])
			}
			on = append(on, f[6])
		}
	}
	slices.Sort(on)
	if want := []string{"master1", "worker-p002"}; !slices.Equal(on, want) {
		t.Errorf("kubectl get po shows the managers on %v, want %v", on, want)
	}
	// One leader: exactly one manager's log says it acquired the Lease
	// (once the Lease of the replica scaled away expired).
	leaders := func() int {
		n := 0
		for _, p := range managers {
			log, err := r.nodes[p.Spec.NodeName].ContainerLog(p.Namespace, p.Name, "openelb-manager")
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(log, "Successfully acquired lease") {
				n++
			}
		}
		return n
	}
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, time.Minute, true, func(context.Context) (bool, error) { return leaders() > 0, nil })
	if err != nil {
		t.Fatal("neither manager replica became leader within a minute")
	}
	time.Sleep(3 * time.Second) // a second leader would show by now
	if n := leaders(); n != 1 {
		t.Errorf("%d of the 2 manager replicas acquired the leader Lease, want 1", n)
	}
	svc, err := r.cs.CoreV1().Services("default").Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got := svc.Status.LoadBalancer.Ingress; len(got) != 1 || got[0].IP != vip {
		t.Errorf("Service web has %v after the managers were replaced, want %s kept", got, vip)
	}
	if _, err := r.cs.CoreV1().Services("default").Create(ctx, newService("default", "after-replicas"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	b := &bgpLab{lab: r.lab.in(t), s: r.s, net: r.s.Net, topo: r.s.Topo}
	b.waitAddress("default", "after-replicas")
}
