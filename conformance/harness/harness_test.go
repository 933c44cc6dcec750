package harness

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

func TestControlPlane(t *testing.T) {
	cp := StartForTest(t, Options{ControllerManager: true})
	t.Logf("Start took %v", cp.StartupDuration)

	pids := map[string]int{}
	for _, p := range cp.procs {
		pids[p.name] = p.pid()
	}
	for _, name := range []string{Etcd, APIServer, ControllerManager} {
		if pids[name] == 0 {
			t.Fatalf("no %s process recorded (have %v)", name, pids)
		}
		if _, err := os.Stat(cp.LogPath(name)); err != nil {
			t.Errorf("log of %s: %v", name, err)
		}
	}
	dirs := []string{cp.Dir, cp.etcdDir}
	if !strings.HasPrefix(cp.etcdDir, "/dev/shm/") {
		t.Errorf("etcd data dir %s is not on /dev/shm", cp.etcdDir)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cs := cp.Client()
	ns := "harness-" + strconv.FormatInt(time.Now().UnixNano()%1e6, 10)

	t.Run("NamespaceAndServices", func(t *testing.T) {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		svc, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web"},
			Spec: corev1.ServiceSpec{
				Type:     corev1.ServiceTypeClusterIP,
				Selector: map[string]string{"app": "web"},
				Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(8080)}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !inPrefix(t, svc.Spec.ClusterIP, ServiceCIDRv4) {
			t.Errorf("ClusterIP %q not in %s", svc.Spec.ClusterIP, ServiceCIDRv4)
		}

		policy := corev1.IPFamilyPolicyRequireDualStack
		ds, err := cs.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "web-ds"},
			Spec: corev1.ServiceSpec{
				Type:           corev1.ServiceTypeClusterIP,
				IPFamilyPolicy: &policy,
				Selector:       map[string]string{"app": "web"},
				Ports:          []corev1.ServicePort{{Name: "http", Port: 80}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("dual-stack Service: %v", err)
		}
		if len(ds.Spec.ClusterIPs) != 2 || !inPrefix(t, ds.Spec.ClusterIPs[0], ServiceCIDRv4) || !inPrefix(t, ds.Spec.ClusterIPs[1], ServiceCIDRv6) {
			t.Errorf("dual-stack ClusterIPs = %v, want one from %s and one from %s", ds.Spec.ClusterIPs, ServiceCIDRv4, ServiceCIDRv6)
		}

		// The ServiceAccount controller (kube-controller-manager) creates
		// "default" in every new namespace.
		err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 60*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return false, nil
			}
			return err == nil, err
		})
		if err != nil {
			t.Fatalf("default ServiceAccount in %s: %v", ns, err)
		}
	})

	t.Run("ServiceAccountKubeconfig", func(t *testing.T) {
		if _, err := cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "limited"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// Allow exactly "get services" in ns.
		if _, err := cs.RbacV1().Roles(ns).Create(ctx, &rbacv1.Role{
			ObjectMeta: metav1.ObjectMeta{Name: "svc-reader"},
			Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"services"}, Verbs: []string{"get"}}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		if _, err := cs.RbacV1().RoleBindings(ns).Create(ctx, &rbacv1.RoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "svc-reader"},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "svc-reader"},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "limited", Namespace: ns}},
		}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}

		path, err := cp.ServiceAccountKubeconfig(ctx, ns, "limited")
		if err != nil {
			t.Fatal(err)
		}
		sa := clientFromKubeconfig(t, path)
		if got := whoami(ctx, t, sa); got != "system:serviceaccount:"+ns+":limited" {
			t.Errorf("SA kubeconfig authenticates as %q", got)
		}
		_, err = sa.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
		assertForbidden(t, "list secrets cluster-wide as SA", err)
		if _, err := sa.CoreV1().Services(ns).Get(ctx, "web", metav1.GetOptions{}); err != nil {
			t.Errorf("get service via RoleBinding: %v", err)
		}

		if out, err := cp.KubectlWith(ctx, path, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"); err != nil || out != "system:serviceaccount:"+ns+":limited" {
			t.Errorf("kubectl auth whoami with SA kubeconfig = %q, %v", out, err)
		}
	})

	t.Run("KubeconfigFor", func(t *testing.T) {
		path, err := cp.KubeconfigFor("jane", "developers")
		if err != nil {
			t.Fatal(err)
		}
		jane := clientFromKubeconfig(t, path)
		if got := whoami(ctx, t, jane); got != "jane" {
			t.Errorf("impersonating kubeconfig authenticates as %q", got)
		}
		_, err = jane.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
		assertForbidden(t, "list secrets as jane", err)
	})

	t.Run("Kubectl", func(t *testing.T) {
		out, err := cp.Kubectl(ctx, "get", "ns")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"default", "kube-system", ns} {
			if !strings.Contains(out, want) {
				t.Errorf("kubectl get ns output lacks %q:\n%s", want, out)
			}
		}
		if _, err := cp.Kubectl(ctx, "get", "nosuchresource"); err == nil || !strings.Contains(err.Error(), "nosuchresource") {
			t.Errorf("kubectl error should carry stderr, got %v", err)
		}
	})

	t.Run("NamespaceDeletion", func(t *testing.T) {
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
			_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return false, err
		})
		if err != nil {
			t.Fatalf("namespace %s not deleted: %v", ns, err)
		}
		t.Logf("namespace gone after %v", time.Since(start).Round(time.Millisecond))
	})

	if t.Failed() {
		return // keep the logs for StartForTest's cleanup report
	}
	stopStart := time.Now()
	if err := cp.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	t.Logf("Stop took %v", time.Since(stopStart).Round(time.Millisecond))
	if err := cp.Stop(); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("%s (pid %d) still exists after Stop: kill(0) = %v", name, pid, err)
		}
		if err := syscall.Kill(-pid, 0); !errors.Is(err, syscall.ESRCH) {
			t.Errorf("process group of %s (%d) still exists after Stop: kill(0) = %v", name, pid, err)
		}
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("%s still exists after Stop (err %v)", d, err)
		}
	}
}

// A failing start must not leave processes or temp dirs behind.
func TestStartFailureCleansUp(t *testing.T) {
	before := shmDirs(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cp, err := Start(ctx, Options{ExtraAPIServerFlags: []string{"--no-such-flag-for-test"}})
	if err == nil {
		cp.Stop()
		t.Fatal("Start succeeded with a bogus kube-apiserver flag")
	}
	if !strings.Contains(err.Error(), "no-such-flag-for-test") {
		t.Errorf("error should show the apiserver log tail, got: %v", err)
	}

	// A context that expires during start-up must also clean up.
	short, cancelShort := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancelShort()
	if cp, err := Start(short, Options{ControllerManager: true}); err == nil {
		cp.Stop()
		t.Fatal("Start succeeded within 300ms; cannot test cancellation")
	} else {
		t.Logf("Start with expiring context: %v", err)
	}

	if kids := childProcesses(t); len(kids) > 0 {
		t.Errorf("child processes left after failed Start: %v", kids)
	}
	for d := range shmDirs(t) {
		if !before[d] {
			t.Errorf("%s left behind after failed Start", d)
		}
	}
}

func TestRepoRootAndBinDir(t *testing.T) {
	root, err := RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "conformance", "harness", "doc.go")); err != nil {
		t.Errorf("RepoRoot %s does not look like the repo: %v", root, err)
	}
	t.Setenv("OPENELB_BIN_DIR", "")
	d, err := resolveBinDir("")
	if err != nil || d != filepath.Join(root, ".cache", "bin") {
		t.Errorf("resolveBinDir() = %q, %v", d, err)
	}
	t.Setenv("OPENELB_BIN_DIR", "/opt/x")
	if d, _ := resolveBinDir(""); d != "/opt/x" {
		t.Errorf("resolveBinDir with env = %q", d)
	}
	if d, _ := resolveBinDir("/opt/y"); d != "/opt/y" {
		t.Errorf("resolveBinDir(explicit) = %q", d)
	}
}

func clientFromKubeconfig(t *testing.T, path string) kubernetes.Interface {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		t.Fatalf("load %s: %v", path, err)
	}
	return kubernetes.NewForConfigOrDie(cfg)
}

func whoami(ctx context.Context, t *testing.T, cs kubernetes.Interface) string {
	t.Helper()
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("SelfSubjectReview: %v", err)
	}
	return r.Status.UserInfo.Username
}

func assertForbidden(t *testing.T, what string, err error) {
	t.Helper()
	if !apierrors.IsForbidden(err) {
		t.Errorf("%s: want 403 Forbidden, got %v", what, err)
		return
	}
	var st apierrors.APIStatus
	if errors.As(err, &st) && st.Status().Code != 403 {
		t.Errorf("%s: status code %d, want 403", what, st.Status().Code)
	}
}

func inPrefix(t *testing.T, ip, cidr string) bool {
	t.Helper()
	a, err := netip.ParseAddr(ip)
	if err != nil {
		return false
	}
	return netip.MustParsePrefix(cidr).Contains(a)
}

// childProcesses lists live (non-zombie) children of the test binary.
func childProcesses(t *testing.T) []string {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatalf("reading /proc: %v", err)
	}
	me := os.Getpid()
	var kids []string
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == me {
			kids = append(kids, e.Name()+" "+s[strings.IndexByte(s, '('):i+1])
		}
	}
	return kids
}

func shmDirs(t *testing.T) map[string]bool {
	t.Helper()
	m := map[string]bool{}
	for _, pat := range []string{"/dev/shm/openelb-etcd-*", filepath.Join(os.TempDir(), "openelb-controlplane-*")} {
		got, _ := filepath.Glob(pat)
		for _, g := range got {
			m[g] = true
		}
	}
	return m
}
