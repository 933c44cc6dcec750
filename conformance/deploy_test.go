package conformance

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	apischeme "github.com/openelb/cloud-provider-openelb/api/scheme"
	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/conformance/harness"
)

// The shipped install: deploy/ (kustomize) and charts/openelb (Helm).
const (
	deployNamespace = "openelb-system"
	managerSA       = "openelb-manager"
	speakerSA       = "openelb-speaker"
	// speakerHealthPort is the speaker's documented /healthz and /metrics
	// port (deploy/speaker.yaml, chart value speaker.healthPort).
	speakerHealthPort = 10262
	// kubeVersionForHelm is what `helm template` assumes the cluster runs.
	kubeVersionForHelm = "1.37.2"
)

// TestDeploy installs deploy/ the way an admin does and checks it on the
// real API server: server-side dry runs of the kustomization, of the Helm
// render and of every sample; the chart rendering the same objects as the
// kustomization; the RBAC of each ServiceAccount, probed with TokenRequest
// tokens; OpenELB's documented commands (seeds 000 and 001) run verbatim
// against the applied manifests; and the CCM running in the shipped
// ServiceAccount serving the samples' Service.
func TestDeploy(t *testing.T) {
	cp := harness.StartForTest(t, harness.Options{ControllerManager: true})
	ctx := context.Background()
	root := repoRoot(t)
	kubectl := func(args ...string) string {
		t.Helper()
		out, err := cp.Kubectl(ctx, args...)
		if err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return out
	}
	deployDir := filepath.Join(root, "deploy")

	// A fresh cluster: only the namespace exists (a dry run creates
	// nothing, so namespaced objects need it).
	kubectl("apply", "-f", filepath.Join(deployDir, "namespace.yaml"))

	t.Run("KustomizeDryRunServer", func(t *testing.T) {
		out := kubectl("apply", "-k", deployDir, "--dry-run=server")
		for _, want := range []string{
			"deployment.apps/openelb-manager created (server dry run)",
			"daemonset.apps/openelb-speaker created (server dry run)",
			"customresourcedefinition.apiextensions.k8s.io/eips.network.kubesphere.io created (server dry run)",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl apply -k deploy/ --dry-run=server: no %q in\n%s", want, out)
			}
		}
	})

	helmOut := helmTemplate(t, "openelb", deployNamespace)
	t.Run("HelmDryRunServer", func(t *testing.T) {
		f := filepath.Join(t.TempDir(), "openelb.yaml")
		if err := os.WriteFile(f, []byte(helmOut), 0o644); err != nil {
			t.Fatal(err)
		}
		out := kubectl("apply", "-f", f, "--dry-run=server")
		if !strings.Contains(out, "daemonset.apps/openelb-speaker created (server dry run)") {
			t.Errorf("helm template | kubectl apply --dry-run=server:\n%s", out)
		}
	})

	t.Run("HelmRendersTheKustomization", func(t *testing.T) {
		kustomized := kubectl("kustomize", deployDir)
		k := objectsByKey(t, kustomized)
		h := objectsByKey(t, helmOut)
		// The chart leaves the namespace to `helm install --create-namespace`.
		delete(k, "Namespace//"+deployNamespace)
		if diff := cmp.Diff(sortedKeys(k), sortedKeys(h)); diff != "" {
			t.Fatalf("objects of deploy/ (-) and of the chart (+) differ:\n%s", diff)
		}
		for key := range k {
			if diff := cmp.Diff(normalize(k[key]), normalize(h[key])); diff != "" {
				t.Errorf("%s: deploy/ (-) and the chart with default values (+) differ:\n%s", key, diff)
			}
		}
	})

	// The real install.
	kubectl("apply", "-k", deployDir)
	kubectl("wait", "--for=condition=Established", "--timeout=60s",
		"crd/eips.network.kubesphere.io", "crd/bgpconfs.network.kubesphere.io", "crd/bgppeers.network.kubesphere.io",
		"crd/loadbalancerplans.network.kubesphere.io", "crd/loadbalancerracks.network.kubesphere.io",
		"crd/loadbalancerspeakers.network.kubesphere.io", "crd/ipclaims.network.kubesphere.io")

	samples, err := filepath.Glob(filepath.Join(deployDir, "samples", "*.yaml"))
	if err != nil || len(samples) == 0 {
		t.Fatalf("no samples in deploy/samples (%v)", err)
	}
	t.Run("SamplesDryRunServer", func(t *testing.T) {
		for _, f := range samples {
			if _, err := cp.Kubectl(ctx, "apply", "-f", f, "--dry-run=server"); err != nil {
				t.Errorf("deploy/samples/%s: %v", filepath.Base(f), err)
			}
		}
		// The seed-000 and layer-2 samples the README points at.
		for _, want := range []string{"eip-bgp.yaml", "bgpconf.yaml", "bgppeers-racks.yaml", "eip-layer2.yaml", "service.yaml"} {
			if !slices.Contains(samples, filepath.Join(deployDir, "samples", want)) {
				t.Errorf("deploy/samples/%s is missing", want)
			}
		}
	})
	for _, f := range samples {
		kubectl("apply", "-f", f)
	}

	t.Run("SpeakerRBAC", func(t *testing.T) {
		kc := saKubeconfig(t, cp, speakerSA)
		canI(t, cp, kc, true,
			"get nodes", "list nodes", "watch nodes",
			"list bgpconfs.network.kubesphere.io", "watch bgppeers.network.kubesphere.io",
			"list loadbalancerplans.network.kubesphere.io --all-namespaces", "list eips.network.kubesphere.io",
			"watch loadbalancerracks.network.kubesphere.io", "watch loadbalancerspeakers.network.kubesphere.io",
			"patch bgppeers.network.kubesphere.io --subresource=status",
			"create loadbalancerspeakers.network.kubesphere.io", "patch loadbalancerspeakers.network.kubesphere.io",
			"get secrets -n openelb-bgp-secrets", "watch secrets -n openelb-bgp-secrets",
			"create leases.coordination.k8s.io -n openelb-system", "update leases.coordination.k8s.io -n openelb-system",
		)
		canI(t, cp, kc, false,
			"update services -n default", "patch services -n default", "patch services --subresource=status -n default",
			"delete services -n default",
			"get secrets -n kube-system", "get secrets -n default", "list secrets --all-namespaces",
			"get secrets -n openelb-system", "list secrets -n openelb-system", "create secrets -n openelb-bgp-secrets",
			"delete leases.coordination.k8s.io -n openelb-system", "patch leases.coordination.k8s.io -n openelb-system",
			"update nodes", "patch nodes", "patch nodes --subresource=status",
			"patch bgppeers.network.kubesphere.io", "update bgpconfs.network.kubesphere.io",
			"patch bgpconfs.network.kubesphere.io --subresource=status",
			"update loadbalancerplans.network.kubesphere.io -n default", "create loadbalancerplans.network.kubesphere.io -n default",
			"patch loadbalancerplans.network.kubesphere.io --subresource=status -n default",
			"update loadbalancerracks.network.kubesphere.io", "patch loadbalancerracks.network.kubesphere.io --subresource=status",
			"delete loadbalancerspeakers.network.kubesphere.io",
			"list services --all-namespaces", "list endpointslices.discovery.k8s.io --all-namespaces",
			"update eips.network.kubesphere.io", "update eips.network.kubesphere.io --subresource=status",
			"create ipclaims.network.kubesphere.io", "list ipclaims.network.kubesphere.io",
			"create leases.coordination.k8s.io -n kube-system", "create leases.coordination.k8s.io -n default",
			"create pods -n openelb-system", "create tokenreviews.authentication.k8s.io",
		)

		// And for real, with the token of a speaker pod on master1 (its
		// status entry is master1's: speaker-admission.yaml).
		tok, err := cp.NodeBoundToken(ctx, deployNamespace, speakerSA, "master1")
		if err != nil {
			t.Fatal(err)
		}
		cfg := cp.TokenConfig(tok)
		cs := kubernetes.NewForConfigOrDie(cfg)
		c, err := client.New(cfg, client.Options{Scheme: apischeme.New()})
		if err != nil {
			t.Fatal(err)
		}
		status, _ := json.Marshal(map[string]any{
			"apiVersion": v1alpha2.SchemeGroupVersion.String(), "kind": "BgpPeer",
			"metadata": map[string]any{"name": "leaf1"},
			"status": map[string]any{"nodesPeerStatus": map[string]any{
				"master1": map[string]any{"peerState": map[string]any{"neighborAddress": "192.168.0.2", "sessionState": "IDLE"}},
			}},
		})
		if err := c.Status().Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}},
			client.RawPatch(types.ApplyPatchType, status), client.FieldOwner("openelb-speaker/master1"), client.ForceOwnership); err != nil {
			t.Errorf("speaker: server-side apply of BgpPeer leaf1 status: %v", err)
		}
		// The conditions are the CCM's (speaker-admission.yaml).
		fake := []byte(`{"status":{"conditions":[{"type":"Unsupported","status":"False","reason":"Forged","message":"m","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}`)
		if err := c.Status().Patch(ctx, &v1alpha2.BgpPeer{ObjectMeta: metav1.ObjectMeta{Name: "leaf1"}}, client.RawPatch(types.MergePatchType, fake)); !apierrors.IsForbidden(err) {
			t.Errorf("speaker: writing BgpPeer leaf1 status.conditions: want Forbidden, got %v", err)
		}
		if _, err := cs.CoreV1().Secrets("openelb-bgp-secrets").Get(ctx, "bgp-leaf2", metav1.GetOptions{}); err != nil {
			t.Errorf("speaker: reading the BgpPeer password Secret in openelb-bgp-secrets: %v", err)
		}
		if _, err := cs.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("speaker: listing Secrets in kube-system: want Forbidden, got %v", err)
		}
		svc, err := cp.Client().CoreV1().Services("default").Get(ctx, "nginx", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		svc.Spec.LoadBalancerIP = "172.22.0.9"
		if _, err := cs.CoreV1().Services("default").Update(ctx, svc, metav1.UpdateOptions{}); !apierrors.IsForbidden(err) {
			t.Errorf("speaker: updating a Service: want Forbidden, got %v", err)
		}
	})

	t.Run("ManagerRBAC", func(t *testing.T) {
		kc := saKubeconfig(t, cp, managerSA)
		canI(t, cp, kc, true,
			"list services --all-namespaces", "watch services --all-namespaces",
			"patch services --subresource=status -n default",
			"create events -n default", "patch events -n default",
			"get nodes", "update nodes", "patch nodes", "patch nodes --subresource=status",
			"list namespaces", "list endpointslices.discovery.k8s.io --all-namespaces",
			"list eips.network.kubesphere.io", "update eips.network.kubesphere.io --subresource=status",
			"list bgppeers.network.kubesphere.io", "list bgpconfs.network.kubesphere.io",
			"patch bgppeers.network.kubesphere.io --subresource=status", "patch bgpconfs.network.kubesphere.io --subresource=status",
			"create ipclaims.network.kubesphere.io", "update ipclaims.network.kubesphere.io", "delete ipclaims.network.kubesphere.io",
			"create loadbalancerplans.network.kubesphere.io -n default", "delete loadbalancerplans.network.kubesphere.io -n team-a",
			"patch loadbalancerplans.network.kubesphere.io --subresource=status -n default",
			"create loadbalancerracks.network.kubesphere.io", "update loadbalancerracks.network.kubesphere.io",
			"delete loadbalancerracks.network.kubesphere.io", "patch loadbalancerracks.network.kubesphere.io --subresource=status",
			"get leases.coordination.k8s.io -n openelb-system", "create leases.coordination.k8s.io -n openelb-system",
			"update leases.coordination.k8s.io/openelb-cloud-controller-manager -n openelb-system",
			"create tokenreviews.authentication.k8s.io", "create subjectaccessreviews.authorization.k8s.io",
			"get configmaps/extension-apiserver-authentication -n kube-system",
		)
		canI(t, cp, kc, false,
			"update services -n default", "patch services -n default", "delete services -n default",
			"get secrets -n openelb-system", "list secrets --all-namespaces",
			"delete nodes", "update eips.network.kubesphere.io", "delete eips.network.kubesphere.io",
			"update bgppeers.network.kubesphere.io", "patch bgppeers.network.kubesphere.io", "patch bgpconfs.network.kubesphere.io",
			"patch loadbalancerspeakers.network.kubesphere.io",
			"create leases.coordination.k8s.io -n kube-system",
			"get configmaps/kube-proxy -n kube-system", "list configmaps -n kube-system",
			"create pods -n openelb-system",
		)
	})

	t.Run("SeedCommandsVerbatim", func(t *testing.T) {
		for _, n := range []string{"master1", "worker-p001", "worker-p002"} {
			if _, err := cp.Client().CoreV1().Nodes().Create(ctx, &v1.Node{ObjectMeta: metav1.ObjectMeta{
				Name: n, Labels: map[string]string{"kubernetes.io/os": "linux", "kubernetes.io/hostname": n},
			}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		// Seed 000 and seed 001, step 1.
		shell(t, cp, "kubectl label --overwrite nodes master1 worker-p002 lb.kubesphere.io/v1alpha1=openelb")
		// Seed 000: racks.
		shell(t, cp, "kubectl label --overwrite nodes master1 openelb.kubesphere.io/rack=leaf1")
		shell(t, cp, "kubectl label --overwrite nodes worker-p002 openelb.kubesphere.io/rack=leaf2")
		// Seed 000: `kubectl edit ds openelb-speaker -n openelb-system`,
		// adding the nodeSelector (already shipped: the edit changes nothing).
		editAddingNodeSelector(t, cp, "kubectl edit ds openelb-speaker -n openelb-system")
		// Seed 001.
		shell(t, cp, "kubectl scale deployment openelb-manager --replicas=0 -n openelb-system")
		if d := deployment(t, cp); *d.Spec.Replicas != 0 {
			t.Errorf("after scaling to 0: replicas %d", *d.Spec.Replicas)
		}
		editAddingNodeSelector(t, cp, "kubectl edit deployment openelb-manager -n openelb-system")
		shell(t, cp, "kubectl scale deployment openelb-manager --replicas=2 -n openelb-system")

		want := map[string]string{"kubernetes.io/os": "linux", "lb.kubesphere.io/v1alpha1": "openelb"}
		d := deployment(t, cp)
		if *d.Spec.Replicas != 2 {
			t.Errorf("openelb-manager replicas: %d, want 2", *d.Spec.Replicas)
		}
		if diff := cmp.Diff(want, d.Spec.Template.Spec.NodeSelector); diff != "" {
			t.Errorf("openelb-manager nodeSelector (-want +got):\n%s", diff)
		}
		ds, err := cp.Client().AppsV1().DaemonSets(deployNamespace).Get(ctx, "openelb-speaker", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, ds.Spec.Template.Spec.NodeSelector); diff != "" {
			t.Errorf("openelb-speaker nodeSelector (-want +got):\n%s", diff)
		}

		// No kubelet or scheduler runs, so instead of `kubectl get po -o
		// wide`: the controllers created the pods (the templates passed
		// admission: ServiceAccount, priority class, pod security) for the
		// labelled nodes only.
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			ds, err := cp.Client().AppsV1().DaemonSets(deployNamespace).Get(ctx, "openelb-speaker", metav1.GetOptions{})
			if err != nil {
				return false, nil
			}
			return ds.Status.DesiredNumberScheduled == 2 && ds.Status.CurrentNumberScheduled == 2, nil
		})
		if err != nil {
			t.Errorf("openelb-speaker: want pods for master1 and worker-p002 (desired/current 2); status %+v", ds.Status)
		}
		speakerNodes := map[string]bool{}
		managerPods := 0
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			pods, err := cp.Client().CoreV1().Pods(deployNamespace).List(ctx, metav1.ListOptions{})
			if err != nil {
				return false, nil
			}
			clear(speakerNodes)
			managerPods = 0
			for _, p := range pods.Items {
				switch p.Labels["app.kubernetes.io/name"] {
				case "openelb-speaker":
					speakerNodes[daemonPodNode(&p)] = true
				case "openelb-manager":
					if p.DeletionTimestamp == nil && p.Spec.NodeSelector["lb.kubesphere.io/v1alpha1"] == "openelb" {
						managerPods++
					}
				}
			}
			return managerPods == 2 && len(speakerNodes) == 2, nil
		})
		if err != nil || !speakerNodes["master1"] || !speakerNodes["worker-p002"] {
			t.Errorf("pods: %d openelb-manager with the seed-001 nodeSelector (want 2), speakers for %v (want master1, worker-p002)", managerPods, speakerNodes)
		}
	})

	t.Run("ManagerServesTheSamples", func(t *testing.T) {
		// The CCM in the shipped ServiceAccount (StartCCM finds the RBAC
		// applied) gives the sample Service seed 000's first address.
		ccm, err := cp.StartCCM("openelb-manager", "--v=2")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("--- CCM log tail ---\n%s", ccm.LogTail(60))
			}
			_ = ccm.Stop()
		})
		var ip string
		err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			s, err := cp.Client().CoreV1().Services("default").Get(ctx, "nginx", metav1.GetOptions{})
			if err != nil || len(s.Status.LoadBalancer.Ingress) == 0 {
				return false, nil
			}
			ip = s.Status.LoadBalancer.Ingress[0].IP
			return true, nil
		})
		if err != nil || ip != "172.22.0.2" {
			t.Fatalf("Service default/nginx from deploy/samples: address %q, want 172.22.0.2", ip)
		}
		// The secure port authenticates with TokenReviews and authorizes
		// with SubjectAccessReviews made in the CCM's own identity: a
		// system:masters token passes, a ServiceAccount without rights on
		// /configz is refused (403, not a 500 from a failed review).
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}} //nolint:gosec // the CCM's self-signed serving cert
		get := func(path, token string) int {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", ccm.SecurePort, path), nil)
			if token != "" {
				req.Header.Set("Authorization", "Bearer "+token)
			}
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatalf("GET %s: %v", path, err)
			}
			defer resp.Body.Close()
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.StatusCode
		}
		if code := get("/configz", cp.Config.BearerToken); code != http.StatusOK {
			t.Errorf("/configz as system:masters: %d, want 200", code)
		}
		speakerToken, err := cp.ServiceAccountToken(ctx, deployNamespace, speakerSA)
		if err != nil {
			t.Fatal(err)
		}
		if code := get("/configz", speakerToken); code != http.StatusForbidden {
			t.Errorf("/configz as %s: %d, want 403", speakerSA, code)
		}
		if code := get("/healthz", ""); code != http.StatusOK {
			t.Errorf("/healthz: %d, want 200", code)
		}
		if ccm.LogContains("forbidden") {
			t.Errorf("the CCM was refused something by the shipped RBAC:\n%s", grepLog(ccm.LogPath(), "forbidden"))
		}
	})
}

// TestHelmValues checks that the chart's values reach the objects.
func TestHelmValues(t *testing.T) {
	out := helmTemplate(t, "lb", "lb-system",
		"--set", "manager.replicas=3",
		"--set", "manager.image.tag=v9.9.9",
		"--set", "manager.leaderElection.leaseDuration=30s",
		"--set", "manager.kubeAPIQPS=50",
		"--set", "manager.kubeAPIBurst=100",
		"--set", "manager.nodeSelector.lb\\.kubesphere\\.io/v1alpha1=openelb",
		"--set", "speaker.healthPort=9443",
		"--set", "speaker.image.repository=registry.example/openelb-speaker",
		"--set", "manager.extraArgs={--logging-format=json}",
		"--set", "speaker.bgpSecretsNamespace=lb-bgp-secrets",
	)
	objs := objectsByKey(t, out)
	var d appsv1.Deployment
	fromObject(t, objs["Deployment/lb-system/openelb-manager"], &d)
	var ds appsv1.DaemonSet
	fromObject(t, objs["DaemonSet/lb-system/openelb-speaker"], &ds)

	if *d.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *d.Spec.Replicas)
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Image != "openelb/openelb-cloud-controller-manager:v9.9.9" {
		t.Errorf("manager image %s", c.Image)
	}
	for _, a := range []string{"--leader-elect-lease-duration=30s", "--kube-api-qps=50", "--kube-api-burst=100", "--logging-format=json", "--cloud-provider=openelb", "--leader-elect=true"} {
		if !slices.Contains(c.Args, a) {
			t.Errorf("manager args %v lack %s", c.Args, a)
		}
	}
	if d.Spec.Template.Spec.NodeSelector["lb.kubesphere.io/v1alpha1"] != "openelb" {
		t.Errorf("manager nodeSelector %v", d.Spec.Template.Spec.NodeSelector)
	}
	sc := ds.Spec.Template.Spec.Containers[0]
	if !slices.Contains(sc.Args, "--health-address=[$(HOST_IP)]:9443") || sc.Ports[0].ContainerPort != 9443 || sc.LivenessProbe.HTTPGet.Port.String() != "health" {
		t.Errorf("speaker health port: args %v ports %v", sc.Args, sc.Ports)
	}
	if !strings.HasPrefix(sc.Image, "registry.example/openelb-speaker:") {
		t.Errorf("speaker image %s", sc.Image)
	}
	// The speaker reads Secrets in its own namespace only, and the
	// admission policies name the release's ServiceAccount.
	if !slices.Contains(sc.Args, "--bgp-secrets-namespace=lb-bgp-secrets") || objs["Namespace//lb-bgp-secrets"] == nil || objs["Role/lb-bgp-secrets/openelb-speaker"] == nil {
		t.Errorf("speaker.bgpSecretsNamespace: args %v, rendered objects %v", sc.Args, sortedKeys(objs))
	}
	for _, p := range []string{"openelb-speaker-leases", "openelb-speaker-node-status"} {
		if b, _ := json.Marshal(objs["ValidatingAdmissionPolicy//"+p]); !strings.Contains(string(b), "system:serviceaccount:lb-system:openelb-speaker") {
			t.Errorf("ValidatingAdmissionPolicy %s does not match the release's speaker: %s", p, b)
		}
	}
	for key, o := range objs {
		if ns, _ := o["metadata"].(map[string]any)["namespace"].(string); ns != "" && ns != "lb-system" && ns != "kube-system" && ns != "lb-bgp-secrets" {
			t.Errorf("%s is in namespace %s, not the release's", key, ns)
		}
	}
}

// TestShippedManifests checks, without a cluster, what must hold between the
// install's files: the chart's CRDs are the generated ones byte for byte,
// and the image tag is the same in deploy/, the chart and the Makefile.
func TestShippedManifests(t *testing.T) {
	root := repoRoot(t)
	gen, _ := filepath.Glob(filepath.Join(root, "deploy", "crds", "*.yaml"))
	chart, _ := filepath.Glob(filepath.Join(root, "charts", "openelb", "crds", "*.yaml"))
	base := func(l []string) []string {
		out := make([]string, len(l))
		for i, p := range l {
			out[i] = filepath.Base(p)
		}
		return out
	}
	if len(gen) == 0 || !slices.Equal(base(gen), base(chart)) {
		t.Fatalf("charts/openelb/crds %v differs from deploy/crds %v: run `make chart-crds`", base(chart), base(gen))
	}
	for i := range gen {
		a, _ := os.ReadFile(gen[i])
		b, _ := os.ReadFile(chart[i])
		if !bytes.Equal(a, b) {
			t.Errorf("charts/openelb/crds/%s differs from deploy/crds: run `make chart-crds`", filepath.Base(gen[i]))
		}
	}

	var kust struct {
		Resources []string                        `json:"resources"`
		Images    []struct{ Name, NewTag string } `json:"images"`
	}
	readYAML(t, filepath.Join(root, "deploy", "kustomization.yaml"), &kust)
	// deploy/crds holds only generated files (ApplyCRDs applies the whole
	// directory), so the kustomization names each CRD file itself.
	for _, f := range base(gen) {
		if !slices.Contains(kust.Resources, "crds/"+f) {
			t.Errorf("deploy/kustomization.yaml does not list crds/%s", f)
		}
	}
	var chartMeta struct {
		AppVersion string `json:"appVersion"`
	}
	readYAML(t, filepath.Join(root, "charts", "openelb", "Chart.yaml"), &chartMeta)
	mk, err := os.ReadFile(filepath.Join(root, "Makefile"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^IMAGE_TAG\s*\?=\s*(\S+)`).FindSubmatch(mk)
	if m == nil {
		t.Fatal("no IMAGE_TAG in the Makefile")
	}
	tag := string(m[1])
	if chartMeta.AppVersion != tag {
		t.Errorf("chart appVersion %q, Makefile IMAGE_TAG %q", chartMeta.AppVersion, tag)
	}
	names := map[string]bool{}
	for _, im := range kust.Images {
		names[im.Name] = true
		if im.NewTag != tag {
			t.Errorf("deploy/kustomization.yaml: %s newTag %q, Makefile IMAGE_TAG %q", im.Name, im.NewTag, tag)
		}
	}
	for _, n := range []string{"openelb/openelb-cloud-controller-manager", "openelb/openelb-speaker"} {
		if !names[n] {
			t.Errorf("deploy/kustomization.yaml sets no tag for %s", n)
		}
	}
}

// --- helpers ---------------------------------------------------------------

func repoRoot(t testing.TB) string {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// toolPath is a tool of `make tools` ($OPENELB_BIN_DIR, else .cache/bin).
func toolPath(t testing.TB, name string) string {
	t.Helper()
	dir := os.Getenv("OPENELB_BIN_DIR")
	if dir == "" {
		dir = filepath.Join(repoRoot(t), ".cache", "bin")
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("%s missing: run `make tools`: %v", p, err)
	}
	return p
}

// helmTemplate renders charts/openelb (CRDs included) as release name in
// namespace ns.
func helmTemplate(t testing.TB, name, ns string, args ...string) string {
	t.Helper()
	cmd := exec.Command(toolPath(t, "helm"), append([]string{"template", name, filepath.Join(repoRoot(t), "charts", "openelb"),
		"--namespace", ns, "--include-crds", "--kube-version", kubeVersionForHelm}, args...)...)
	// helm keeps caches and config under $HOME; keep them out of it.
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home, "HELM_CONFIG_HOME="+home, "HELM_DATA_HOME="+home)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template: %v\n%s", err, stderr.String())
	}
	return string(out)
}

// objectsByKey decodes a multi-document YAML stream into objects keyed
// Kind/namespace/name.
func objectsByKey(t testing.TB, stream string) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(stream), 4096)
	for {
		var o map[string]any
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("decoding manifests: %v", err)
		}
		if o == nil {
			continue
		}
		md, _ := o["metadata"].(map[string]any)
		ns, _ := md["namespace"].(string)
		name, _ := md["name"].(string)
		key := fmt.Sprintf("%v/%s/%s", o["kind"], ns, name)
		if _, dup := out[key]; dup {
			t.Fatalf("%s appears twice", key)
		}
		out[key] = o
	}
}

// normalize drops what legitimately differs between the kustomization and
// the chart: labels and annotations (Helm's release labels).
func normalize(o map[string]any) map[string]any {
	b, _ := json.Marshal(o)
	var c map[string]any
	_ = json.Unmarshal(b, &c)
	strip := func(m any) {
		if md, ok := m.(map[string]any); ok {
			delete(md, "labels")
			delete(md, "annotations")
		}
	}
	strip(c["metadata"])
	if spec, ok := c["spec"].(map[string]any); ok {
		if tmpl, ok := spec["template"].(map[string]any); ok {
			strip(tmpl["metadata"])
		}
	}
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func fromObject(t testing.TB, o map[string]any, into any) {
	t.Helper()
	if o == nil {
		t.Fatalf("object for %T not rendered", into)
	}
	b, err := json.Marshal(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, into); err != nil {
		t.Fatal(err)
	}
}

func readYAML(t testing.TB, path string, into any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, into); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func saKubeconfig(t testing.TB, cp *harness.ControlPlane, sa string) string {
	t.Helper()
	kc, err := cp.ServiceAccountKubeconfig(context.Background(), deployNamespace, sa)
	if err != nil {
		t.Fatal(err)
	}
	return kc
}

// saConfig is a REST config that authenticates with a TokenRequest token
// of the ServiceAccount (no impersonation: the API server sees the SA).
func saConfig(t testing.TB, cp *harness.ControlPlane, sa string) *rest.Config {
	t.Helper()
	tok, err := cp.ServiceAccountToken(context.Background(), deployNamespace, sa)
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.CopyConfig(cp.Config)
	cfg.BearerToken = tok
	cfg.Impersonate = rest.ImpersonationConfig{}
	return cfg
}

// canI runs `kubectl auth can-i <verb> <resource> [flags]` with the
// kubeconfig for every query and wants the answer allowed.
func canI(t *testing.T, cp *harness.ControlPlane, kubeconfig string, allowed bool, queries ...string) {
	t.Helper()
	for _, q := range queries {
		out, err := cp.KubectlWith(context.Background(), kubeconfig, append([]string{"auth", "can-i"}, strings.Fields(q)...)...)
		got := strings.TrimSpace(out)
		switch {
		case got == "yes" && err == nil:
			if !allowed {
				t.Errorf("can-i %s: yes, want no", q)
			}
		case strings.HasPrefix(got, "no"):
			if allowed {
				t.Errorf("can-i %s: no, want yes", q)
			}
		default:
			t.Errorf("can-i %s: %q, %v", q, got, err)
		}
	}
}

// shell runs a documented kubectl command line verbatim (split on spaces)
// against the control plane.
func shell(t *testing.T, cp *harness.ControlPlane, line string) string {
	t.Helper()
	args := strings.Fields(line)
	if args[0] != "kubectl" {
		t.Fatalf("not a kubectl command: %s", line)
	}
	out, err := cp.Kubectl(context.Background(), args[1:]...)
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	return out
}

// editAddingNodeSelector runs a documented `kubectl edit` verbatim with an
// editor that does what the document asks of the reader: under
// spec.template.spec, nodeSelector kubernetes.io/os: linux and
// lb.kubesphere.io/v1alpha1: openelb.
func editAddingNodeSelector(t *testing.T, cp *harness.ControlPlane, line string) {
	t.Helper()
	editor := filepath.Join(t.TempDir(), "editor.sh")
	// The shipped templates already select kubernetes.io/os: linux; the
	// label line is added right below it, at the same indentation, unless
	// present.
	script := `#!/bin/sh
set -e
grep -q '^ *lb.kubesphere.io/v1alpha1: openelb$' "$1" && exit 0
sed -i 's|^\( *\)kubernetes.io/os: linux$|&\n\1lb.kubesphere.io/v1alpha1: openelb|' "$1"
grep -q '^ *lb.kubesphere.io/v1alpha1: openelb$' "$1"
`
	if err := os.WriteFile(editor, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	args := strings.Fields(line)
	cmd := exec.Command(filepath.Join(cp.BinDir(), "kubectl"), append([]string{"--kubeconfig=" + cp.Kubeconfig}, args[1:]...)...)
	cmd.Env = append(os.Environ(), "KUBE_EDITOR="+editor, "EDITOR="+editor)
	cmd.Stdin = nil
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", line, err, out)
	}
	t.Logf("$ %s\n%s", line, strings.TrimSpace(string(out)))
}

func deployment(t *testing.T, cp *harness.ControlPlane) *appsv1.Deployment {
	t.Helper()
	d, err := cp.Client().AppsV1().Deployments(deployNamespace).Get(context.Background(), "openelb-manager", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// daemonPodNode is the node a DaemonSet pod is bound to (by the node
// affinity the DaemonSet controller sets, or spec.nodeName).
func daemonPodNode(p *v1.Pod) string {
	if p.Spec.NodeName != "" {
		return p.Spec.NodeName
	}
	if a := p.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			for _, f := range term.MatchFields {
				if f.Key == "metadata.name" && len(f.Values) == 1 {
					return f.Values[0]
				}
			}
		}
	}
	return ""
}

func grepLog(path, s string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(strings.ToLower(l), strings.ToLower(s)) {
			lines = append(lines, l)
		}
	}
	if len(lines) > 20 {
		lines = lines[:20]
	}
	return strings.Join(lines, "\n")
}
