package conformance

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/utils/ptr"

	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/kubenode"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// labImageTag tags the lab's own images (hack/ociimage -set lab).
const labImageTag = "v0.1.0"

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

func newRealLab(t *testing.T) *realLab {
	t.Helper()
	ctx := context.Background()
	l := newLabWith(t, harness.Options{ControllerManager: true, Scheduler: true, StaticUsers: seedlab.NodeUsers()})
	l.ccm("ccm")
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
	images := buildLabImages(t)
	began := time.Now()
	r.nodes, err = s.StartRealNodes(ctx, seedlab.RealNodesOptions{
		Images:       images,
		SandboxImage: "docker.io/openelb/openelb-lab-pause:" + labImageTag,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.waitInitialized()
	stop()
	t.Logf("3 real nodes up and initialized in %v", time.Since(began).Round(time.Millisecond))
	return r
}

// buildLabImages builds the lab's images (what make image-lab builds)
// into the test's temp dir.
func buildLabImages(t *testing.T) []string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("go", "run", "./hack/ociimage", "-set", "lab", "-out", dir, "-tag", labImageTag)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the lab images: %v\n%s", err, out)
	}
	return []string{filepath.Join(dir, "openelb-lab-pause.tar"), filepath.Join(dir, "openelb-lab-backend.tar")}
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
	want := map[string]string{}
	for _, n := range r.s.Topo.Nodes {
		want[n.Name] = n.IP
	}
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		for name, ip := range want {
			n, err := r.cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				last = err.Error()
				return false, nil
			}
			ready := slices.ContainsFunc(n.Status.Conditions, func(c v1.NodeCondition) bool {
				return c.Type == v1.NodeReady && c.Status == v1.ConditionTrue
			})
			internal := slices.ContainsFunc(n.Status.Addresses, func(a v1.NodeAddress) bool {
				return a.Type == v1.NodeInternalIP && a.Address == ip
			})
			tainted := slices.ContainsFunc(n.Spec.Taints, func(t v1.Taint) bool { return t.Key == uninitializedTaint })
			if n.Spec.ProviderID != "openelb://"+name || tainted || !internal || !ready {
				last = fmt.Sprintf("%s: providerID %q taints %v addresses %v ready %v", name, n.Spec.ProviderID, n.Spec.Taints, n.Status.Addresses, ready)
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		r.t.Fatalf("nodes not initialized: %s", last)
	}
}

const uninitializedTaint = "node.cloudprovider.kubernetes.io/uninitialized"

// backendDeployment runs the lab's backend, one replica per node.
func backendDeployment(ns, name string, replicas int32) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	fieldEnv := func(env, path string) v1.EnvVar {
		return v1.EnvVar{Name: env, ValueFrom: &v1.EnvVarSource{FieldRef: &v1.ObjectFieldSelector{FieldPath: path}}}
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: v1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: v1.PodSpec{
					Affinity: &v1.Affinity{PodAntiAffinity: &v1.PodAntiAffinity{
						RequiredDuringSchedulingIgnoredDuringExecution: []v1.PodAffinityTerm{{
							LabelSelector: &metav1.LabelSelector{MatchLabels: labels},
							TopologyKey:   v1.LabelHostname,
						}},
					}},
					Containers: []v1.Container{{
						Name: "backend", Image: "docker.io/openelb/openelb-lab-backend:" + labImageTag,
						ImagePullPolicy: v1.PullNever,
						Env:             []v1.EnvVar{fieldEnv("POD_NAME", "metadata.name"), fieldEnv("NODE_NAME", "spec.nodeName")},
						Ports:           []v1.ContainerPort{{ContainerPort: 8080}},
						ReadinessProbe: &v1.Probe{
							ProbeHandler:  v1.ProbeHandler{HTTPGet: &v1.HTTPGetAction{Path: "/healthz", Port: intstr.FromInt32(8080)}},
							PeriodSeconds: 1,
						},
					}},
				},
			},
		},
	}
}

// waitPodsReady waits until n pods of app are Ready and returns them.
func (r *realLab) waitPodsReady(ns, app string, n int) []v1.Pod {
	r.t.Helper()
	var pods []v1.Pod
	var last string
	err := wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 3*time.Minute, true, func(ctx context.Context) (bool, error) {
		list, err := r.cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
		if err != nil {
			return false, nil
		}
		pods = pods[:0]
		var states []string
		for _, p := range list.Items {
			ready := slices.ContainsFunc(p.Status.Conditions, func(c v1.PodCondition) bool {
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
		r.t.Fatalf("%d pods of %s/%s not ready: %s", n, ns, app, last)
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
	r := newRealLab(t)
	ctx := context.Background()
	for _, n := range r.s.Topo.Nodes {
		if !slices.ContainsFunc(r.firstTaints[n.Name], func(t v1.Taint) bool { return t.Key == uninitializedTaint }) {
			t.Errorf("node %s joined with taints %v, want %s (kubelet --cloud-provider=external)", n.Name, r.firstTaints[n.Name], uninitializedTaint)
		}
	}

	const ns = "default"
	if _, err := r.cs.AppsV1().Deployments(ns).Create(ctx, backendDeployment(ns, "web", 3), metav1.CreateOptions{}); err != nil {
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
		out, err := r.s.Net.Exec(ctx, from, "curl", "-sS", "--max-time", "3", "http://"+created.Spec.ClusterIP+"/")
		if err != nil {
			return false, nil
		}
		for _, f := range strings.Fields(out) {
			if node, ok := strings.CutPrefix(f, "node="); ok {
				served[node]++
			}
		}
		return len(served) == 3, nil
	})
	if err != nil {
		t.Fatalf("ClusterIP %s from master1: answered by the pods of %v, want all three nodes", created.Spec.ClusterIP, served)
	}
	t.Logf("ClusterIP %s from master1 answered by the pods of %v", created.Spec.ClusterIP, served)
}
