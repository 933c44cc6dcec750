package harness

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apiextensionsclient "k8s.io/apiextensions-apiserver/pkg/client/clientset/clientset"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
)

// Component is one of the project's own binaries (the CCM, a speaker)
// started by a test or the demo against this control plane.
type Component struct {
	p *process
	// SecurePort is where a CCM serves /healthz and /metrics (0 otherwise).
	SecurePort int
}

// StartComponent runs bin with args; output goes to <LogDir>/<name>.log.
// The caller stops it (Stop or Kill); the control plane does not.
func (c *ControlPlane) StartComponent(name, bin string, args ...string) (*Component, error) {
	p, err := startProcess(name, bin, args, filepath.Join(c.logDir, sanitize(name)+".log"))
	if err != nil {
		return nil, err
	}
	return &Component{p: p}, nil
}

// Pid is the process ID.
func (c *Component) Pid() int { return c.p.pid() }

// Stop sends SIGTERM, waits up to 10s, then SIGKILLs. Idempotent.
func (c *Component) Stop() error { return c.p.stop(10 * time.Second) }

// Kill SIGKILLs the process (a crash, not a shutdown) and reaps it.
func (c *Component) Kill() error {
	if !c.p.exited() {
		_ = syscall.Kill(-c.p.pid(), syscall.SIGKILL)
	}
	select {
	case <-c.p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", c.p.name, c.p.pid())
	}
}

// Exited reports whether the process has ended.
func (c *Component) Exited() bool { return c.p.exited() }

// LogTail is the last n lines of the component's log.
func (c *Component) LogTail(n int) string { return tailFile(c.p.logPath, n, 64<<10) }

// LogContains reports whether the log mentions s.
func (c *Component) LogContains(s string) bool { return c.p.logContains(s) }

// LogPath is the component's log file.
func (c *Component) LogPath() string { return c.p.logPath }

// FreePort returns a TCP port free on 127.0.0.1 right now.
func FreePort() (int, error) { return freePort() }

// ApplyCRDs installs deploy/crds with kubectl and waits until every CRD is
// Established, so objects of those kinds can be created at once.
func (c *ControlPlane) ApplyCRDs(ctx context.Context) error {
	deploy, err := c.DeployDir()
	if err != nil {
		return err
	}
	dir := filepath.Join(deploy, "crds")
	if out, err := c.Kubectl(ctx, "apply", "--server-side", "-f", dir); err != nil {
		return fmt.Errorf("kubectl apply -f %s: %w\n%s", dir, err, out)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".yaml") {
			continue
		}
		// Files are named <group>_<plural>.yaml; the CRD is <plural>.<group>.
		base := strings.TrimSuffix(e.Name(), ".yaml")
		group, plural, ok := strings.Cut(base, "_")
		if !ok {
			continue
		}
		name := plural + "." + group
		if err := c.waitEstablished(ctx, name); err != nil {
			return err
		}
	}
	return nil
}

func (c *ControlPlane) waitEstablished(ctx context.Context, name string) error {
	cs, err := apiextensionsclient.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		crd, err := cs.ApiextensionsV1().CustomResourceDefinitions().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		for _, cond := range crd.Status.Conditions {
			if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
				return true, nil
			}
		}
		return false, nil
	})
}

// CCMNamespace is where the CCM's leader-election Lease lives (the
// provider's shipped default).
const CCMNamespace = "openelb-system"

// ProjectBinary is the path of one of the project's binaries (make build).
func ProjectBinary(name string) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return binaryIn(filepath.Join(root, "bin"), name)
}

// ProjectBinary is the path of one of the project's binaries in
// Options.ProjectBinDir (default: as the package-level ProjectBinary).
func (c *ControlPlane) ProjectBinary(name string) (string, error) {
	if c.opts.ProjectBinDir == "" {
		return ProjectBinary(name)
	}
	return binaryIn(c.opts.ProjectBinDir, name)
}

func binaryIn(dir, name string) (string, error) {
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%s missing: run `make build`: %w", p, err)
	}
	return p, nil
}

// DeployDir is Options.DeployDir, default <repo root>/deploy.
func (c *ControlPlane) DeployDir() (string, error) {
	if c.opts.DeployDir != "" {
		return c.opts.DeployDir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "deploy"), nil
}

// StartCCM runs bin/openelb-cloud-controller-manager (from
// Options.ProjectBinDir) against this control plane with its shipped
// defaults, on a free secure port, plus extra flags (later flags win).
//
// It runs as the shipped ServiceAccount openelb-system/openelb-manager with
// exactly the shipped RBAC: the first call on a control plane applies
// deploy/namespace.yaml and deploy/rbac/manager.yaml of Options.DeployDir
// (which creates the namespace holding the Lease), and every CCM gets a
// TokenRequest token of that ServiceAccount for its API client and for the
// delegated authentication/authorization of its secure port. A permission
// missing from deploy/rbac therefore fails whatever test needs it, with
// "forbidden" in the CCM's log.
func (c *ControlPlane) StartCCM(name string, extra ...string) (*Component, error) {
	const (
		saNamespace = CCMNamespace
		saName      = "openelb-manager"
		// Longer than any test, bench or demo run; the CCM reads its
		// kubeconfig once and does not refresh a static token.
		tokenSeconds = int64(24 * 3600)
	)
	bin, err := c.ProjectBinary("openelb-cloud-controller-manager")
	if err != nil {
		return nil, err
	}
	deploy, err := c.DeployDir()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Apply the shipped RBAC once per control plane: its ClusterRoleBinding
	// existing means an earlier call (or a test) applied it.
	if _, err := c.Client().RbacV1().ClusterRoleBindings().Get(ctx, saName, metav1.GetOptions{}); apierrors.IsNotFound(err) {
		files := []string{filepath.Join(deploy, "namespace.yaml"), filepath.Join(deploy, "rbac", "manager.yaml")}
		if out, err := c.Kubectl(ctx, "apply", "--server-side", "--force-conflicts", "-f", files[0], "-f", files[1]); err != nil {
			return nil, fmt.Errorf("applying the shipped RBAC of the CCM: %w\n%s", err, out)
		}
	} else if err != nil {
		return nil, fmt.Errorf("checking the shipped RBAC of the CCM: %w", err)
	}
	exp := tokenSeconds
	tr, err := c.Client().CoreV1().ServiceAccounts(saNamespace).CreateToken(ctx, saName,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}},
		metav1.CreateOptions{})
	if err != nil {
		return nil, fmt.Errorf("token request for %s/%s: %w", saNamespace, saName, err)
	}
	kubeconfig := filepath.Join(c.Dir, "kubeconfigs", "ccm-"+sanitize(name)+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(kubeconfig), 0o700); err != nil {
		return nil, err
	}
	if err := writeKubeconfig(kubeconfig, c.APIServerURL, c.caPEM,
		"system:serviceaccount:"+saNamespace+":"+saName, tr.Status.Token, saNamespace, nil); err != nil {
		return nil, err
	}

	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := append([]string{
		"--kubeconfig=" + kubeconfig,
		// In a cluster these default to the in-cluster config; here they
		// are explicit so the secure port's TokenReviews and
		// SubjectAccessReviews run under the shipped RBAC too. This API
		// server has no client CA, hence no ConfigMap
		// kube-system/extension-apiserver-authentication to look up (a
		// kubeadm cluster has one; deploy_test checks the CCM may read it).
		"--authentication-kubeconfig=" + kubeconfig,
		"--authorization-kubeconfig=" + kubeconfig,
		"--authentication-skip-lookup=true",
		"--cloud-provider=openelb",
		"--bind-address=127.0.0.1",
		fmt.Sprintf("--secure-port=%d", port),
		"--authorization-always-allow-paths=/healthz,/readyz,/livez,/metrics",
	}, extra...)
	comp, err := c.StartComponent(name, bin, args...)
	if err != nil {
		return nil, err
	}
	comp.SecurePort = port
	return comp, nil
}

// EnsureNamespace creates a namespace unless it exists.
func (c *ControlPlane) EnsureNamespace(ctx context.Context, name string, labels map[string]string) error {
	_, err := c.Client().CoreV1().Namespaces().Create(ctx, &corev1.Namespace{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating namespace %s: %w", name, err)
	}
	return nil
}

// EtcdPut writes value under key straight into the control plane's etcd
// (its JSON gateway), past the API server and its validation: how a test
// stores an object the API server would refuse today, as one written by an
// older version or schema. Custom resources live under
// /registry/<group>/<plural>/[<namespace>/]<name>, as JSON.
func (c *ControlPlane) EtcdPut(ctx context.Context, key string, value []byte) error {
	body, err := json.Marshal(map[string]string{
		"key":   base64.StdEncoding.EncodeToString([]byte(key)),
		"value": base64.StdEncoding.EncodeToString(value),
	})
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.etcdURL+"/v3/kv/put", bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("etcd put %s: %w", key, err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("etcd put %s: %s: %s", key, resp.Status, out)
	}
	return nil
}

// PIDs maps each running control-plane process (etcd, kube-apiserver,
// kube-controller-manager) to its PID, for resource accounting.
func (c *ControlPlane) PIDs() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for _, p := range c.procs {
		if !p.exited() {
			out[p.name] = p.pid()
		}
	}
	return out
}
