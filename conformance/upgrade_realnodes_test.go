package conformance

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
	"github.com/openelb/cloud-provider-openelb/conformance/netlab"
	"github.com/openelb/cloud-provider-openelb/conformance/seedlab"
)

// TestUpgradeInPlaceOnRealNodes installs the previous release as an admin
// has it (its deploy/ and its images, built from its commit), runs seed
// 000 on it with graceful restart configured, then applies this tree's
// manifests over it (kubectl apply -k deploy/, as the README's Upgrading
// section says) while the client opens connections: the manager and every
// speaker are replaced, no Service's address changes, and no router loses
// a next hop of any route at any moment. A Service created after the
// upgrade gets an address and routes.
func TestUpgradeInPlaceOnRealNodes(t *testing.T) {
	oldDeploy, oldImages := buildRelease(t, previousReleaseCommit, previousRelease)
	r := newRealLab(t, realLabOptions{shippedImages: true, images: oldImages})
	r.dumpOnFailure()
	r.applyOverlay(oldDeploy, previousRelease)
	b, vip := r.seed000OnPods()
	ctx := context.Background()
	if got := r.podImages("app.kubernetes.io/name=openelb-speaker"); !allTagged(got, previousRelease) {
		t.Fatalf("speakers before the upgrade run %v, want %s images", got, previousRelease)
	}
	// A second Service, Local, whose only endpoint is on worker-p001.
	local := seedlab.BackendDeployment("default", "solo", 1)
	local.Spec.Template.Spec.NodeSelector = map[string]string{v1.LabelHostname: "worker-p001"}
	if _, err := r.cs.AppsV1().Deployments("default").Create(ctx, local, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitPodsReady("default", "solo", 1)
	b.create(newService("default", "solo", toBackend("solo"), func(s *v1.Service) {
		s.Spec.ExternalTrafficPolicy = v1.ServiceExternalTrafficPolicyLocal
	}))
	lvip := b.waitAddress("default", "solo")
	b.waitKernel("leaf1: the endpoint's node only", b.topo.Leaf1, lvip+"/32", "192.168.0.4")
	r.waitServed(b.topo.Client, lvip)

	as := []netip.Addr{netip.MustParseAddr(vip), netip.MustParseAddr(lvip)}
	fl := &faultLab{lab: r.lab, s: r.s, net: r.s.Net, topo: r.s.Topo, fib: map[string]*fibGuard{}}
	for _, router := range []*netlab.FRR{r.s.Topo.Leaf1, r.s.Topo.Leaf2, r.s.Topo.Spine} {
		fl.fib[router.Name] = watchFIB(t, router)
	}
	fl.setGracefulRestart(t, as[:1], true, map[string]string{"leaf1": "192.168.0.3", "leaf2": "192.168.1.2"})
	before := r.serviceAddresses()
	claims := r.claimNames()

	webAt := []netip.Addr{as[0]}
	fl.fib["leaf1"].protect(webAt, addrs("192.168.0.3", "192.168.0.4"))
	fl.fib["leaf2"].protect(webAt, addrs("192.168.1.2"))
	fl.fib["spine"].protect(webAt, addrs("10.0.1.2", "10.0.2.2"))
	soloAt := []netip.Addr{as[1]}
	fl.fib["leaf1"].protect(soloAt, addrs("192.168.0.4"))
	fl.fib["spine"].protect(soloAt, addrs("10.0.1.2"))
	stopWeb, stopSolo := r.clientLoop(vip), r.clientLoop(lvip)
	began := time.Now()
	r.applyShipped()
	for _, line := range []string{
		"kubectl rollout status deployment/openelb-manager -n openelb-system --timeout=5m",
		"kubectl rollout status daemonset/openelb-speaker -n openelb-system --timeout=5m",
	} {
		if err := r.s.Kubectl(ctx, line); err != nil {
			t.Fatal(err)
		}
	}
	took := time.Since(began)
	for _, sel := range []string{"app.kubernetes.io/name=openelb-manager", "app.kubernetes.io/name=openelb-speaker"} {
		if got := r.podImages(sel); !allTagged(got, seedlab.ImageTag) {
			t.Errorf("%s after the upgrade: %v, want only %s images", sel, got, seedlab.ImageTag)
		}
	}
	// The new speakers ended graceful restart (End-of-RIB) with every path.
	fl.settled(as[:1])
	b.waitKernel("leaf1 after the upgrade: solo's endpoint node only", b.topo.Leaf1, lvip+"/32", "192.168.0.4")
	time.Sleep(2 * time.Second)
	web, solo := stopWeb(), stopSolo()
	var broken []string
	for _, g := range fl.fib {
		broken = append(broken, g.takeViolations()...)
	}
	fl.unprotectAll()
	t.Logf("upgrade %s → this tree: rolled out in %v; web (Cluster): %d connections, %d not established, %d not answered %v; solo (Local): %d, %d, %d %v",
		previousRelease, took.Round(time.Millisecond), web.tries, web.notConnected, web.notAnswered, web.failures,
		solo.tries, solo.notConnected, solo.notAnswered, solo.failures)
	if len(broken) != 0 {
		t.Errorf("routes lost next hops during the upgrade: %v", broken)
	}
	if after := r.serviceAddresses(); !maps.Equal(before, after) {
		t.Errorf("addresses changed in the upgrade: before %v, after %v", before, after)
	}
	if after := r.claimNames(); !slices.Equal(claims, after) {
		t.Errorf("IPClaims changed in the upgrade: before %v, after %v", claims, after)
	}
	// The new manager allocates, and the new speakers announce.
	b.create(newService("default", "after", toBackend("web")))
	avip := b.waitAddress("default", "after")
	b.waitKernel("leaf1: a Service created after the upgrade", b.topo.Leaf1, avip+"/32", "192.168.0.3", "192.168.0.4")
	r.waitServed(b.topo.Client, avip)
}

// buildRelease builds the images of the release at commit (tagged tag),
// from a copy of its tree (git archive), and returns that tree's deploy/
// directory and the image tarballs.
func buildRelease(t *testing.T, commit, tag string) (deployDir string, images []string) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src, out := t.TempDir(), t.TempDir()
	archive := filepath.Join(out, "src.tar")
	if b, err := exec.Command("git", "-C", root, "archive", "--format=tar", "-o", archive, commit).CombinedOutput(); err != nil {
		t.Fatalf("git archive %s (%s): %v\n%s", commit, tag, err, b)
	}
	if b, err := exec.Command("tar", "-xf", archive, "-C", src).CombinedOutput(); err != nil {
		t.Fatalf("unpacking %s: %v\n%s", tag, err, b)
	}
	began := time.Now()
	cmd := exec.Command("go", "run", "./hack/ociimage", "-out", out, "-tag", tag)
	cmd.Dir = src
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the %s images: %v\n%s", tag, err, b)
	}
	tars, err := filepath.Glob(filepath.Join(out, "openelb-*.tar"))
	if err != nil || len(tars) != 2 {
		t.Fatalf("the %s images in %s: %v %v", tag, out, tars, err)
	}
	t.Logf("%s (%s) images built in %v", tag, commit[:7], time.Since(began).Round(time.Second))
	return filepath.Join(src, "deploy"), tars
}

// podImages lists the images of the openelb-system pods matching selector.
func (r *realLab) podImages(selector string) []string {
	r.t.Helper()
	pods, err := r.cs.CoreV1().Pods("openelb-system").List(context.Background(), metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, p := range pods.Items {
		for _, c := range p.Spec.Containers {
			out = append(out, fmt.Sprintf("%s:%s", p.Name, c.Image))
		}
	}
	return out
}

func allTagged(images []string, tag string) bool {
	return len(images) > 0 && !slices.ContainsFunc(images, func(s string) bool { return !strings.HasSuffix(s, ":"+tag) })
}

// serviceAddresses maps each LoadBalancer Service to its ingress IPs.
func (r *realLab) serviceAddresses() map[string]string {
	r.t.Helper()
	svcs, err := r.cs.CoreV1().Services("").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		r.t.Fatal(err)
	}
	out := map[string]string{}
	for _, s := range svcs.Items {
		if s.Spec.Type != v1.ServiceTypeLoadBalancer {
			continue
		}
		var ips []string
		for _, in := range s.Status.LoadBalancer.Ingress {
			ips = append(ips, in.IP)
		}
		out[s.Namespace+"/"+s.Name] = strings.Join(ips, ",")
	}
	return out
}

// claimNames lists the IPClaims (one per held address), sorted.
func (r *realLab) claimNames() []string {
	r.t.Helper()
	var l v1alpha2.IPClaimList
	if err := r.crd.List(context.Background(), &l); err != nil {
		r.t.Fatal(err)
	}
	var out []string
	for _, c := range l.Items {
		out = append(out, c.Name)
	}
	slices.Sort(out)
	return out
}
