package harness

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// ModulePath is the module whose go.mod marks the repository root.
const ModulePath = "github.com/openelb/cloud-provider-openelb"

// Component names accepted by LogPath.
const (
	Etcd              = "etcd"
	APIServer         = "kube-apiserver"
	ControllerManager = "kube-controller-manager"
	Scheduler         = "kube-scheduler"
)

// Service CIDRs configured on the API server (dual-stack, IPv4 primary).
const (
	ServiceCIDRv4 = "10.96.0.0/16"
	ServiceCIDRv6 = "fd00:10:96::/112"
)

const (
	apiServerReadyTimeout = 60 * time.Second
	kcmReadyTimeout       = 60 * time.Second
	etcdReadyTimeout      = 30 * time.Second
	stopGrace             = 5 * time.Second
)

// Options configures Start.
type Options struct {
	// BinDir holds etcd, kube-apiserver, kube-controller-manager and kubectl.
	// Default: $OPENELB_BIN_DIR, else <repo root>/.cache/bin.
	BinDir string
	// ControllerManager also runs kube-controller-manager (with
	// --cloud-provider=external) and waits until it creates ServiceAccounts.
	ControllerManager bool
	// Scheduler also runs kube-scheduler (from BinDir/node, built by make
	// node-tools), for labs with real kubelets.
	Scheduler bool
	// LogDir receives <component>.log for each process. Default: <Dir>/logs.
	// A caller-supplied LogDir is never removed.
	LogDir string
	// ExtraAPIServerFlags are appended to the kube-apiserver command line
	// (for scalar flags the last occurrence wins, so they can override ours).
	ExtraAPIServerFlags []string
	// ExtraControllerManagerFlags are appended to the kube-controller-manager
	// command line.
	ExtraControllerManagerFlags []string
	// ProjectBinDir holds the project's own binaries
	// (openelb-cloud-controller-manager, openelb-speaker) that StartCCM
	// and ControlPlane.ProjectBinary use. Default: <repo root>/bin.
	ProjectBinDir string
	// DeployDir holds the CRDs and RBAC that ApplyCRDs and StartCCM apply.
	// Default: <repo root>/deploy. An older build runs with the manifests
	// it was built for: point both at its checkout.
	DeployDir string
	// StaticUsers are users of the API server's token file besides the
	// admin, e.g. a kubelet ("system:node:<name>", group "system:nodes")
	// or kube-proxy ("system:kube-proxy"); UserKubeconfig writes a
	// kubeconfig with one's token.
	StaticUsers []StaticUser
	// Keep leaves Dir (certs, kubeconfigs, logs) on disk after Stop; the
	// etcd data dir is removed regardless. Also enabled by
	// OPENELB_KEEP_CONTROLPLANE=1.
	Keep bool
}

// StaticUser is a user of the token file: its name and groups.
type StaticUser struct {
	Name   string
	Groups []string
}

// ControlPlane is a running etcd + kube-apiserver (+ kube-controller-manager).
type ControlPlane struct {
	// Dir holds certs, token file, kubeconfigs and (by default) logs. It is
	// removed by Stop unless Options.Keep.
	Dir string
	// Kubeconfig is the admin kubeconfig (static token in group
	// system:masters, real CA data of the API server's serving cert).
	Kubeconfig string
	// Config is the admin REST config (QPS 500, Burst 1000). It is shared:
	// use rest.CopyConfig before modifying it.
	Config *rest.Config
	// APIServerURL is https://127.0.0.1:<port>.
	APIServerURL string
	// CAFile is the PEM CA that signed the API server's serving certificate.
	CAFile string
	// StartupDuration is how long Start took.
	StartupDuration time.Duration

	opts       Options
	binDir     string
	logDir     string
	etcdDir    string // on tmpfs
	etcdURL    string
	adminToken string
	userTokens map[string]string // StaticUsers by name
	caPEM      []byte
	saKeyFile  string

	mu      sync.Mutex
	procs   []*process // in start order
	stopped bool
	stopErr error

	clientOnce sync.Once
	client     kubernetes.Interface
}

// Start brings up etcd, kube-apiserver and, if requested,
// kube-controller-manager. On error everything already started is stopped
// and the error carries the tail of the failing process's log.
func Start(ctx context.Context, opts Options) (cp *ControlPlane, err error) {
	began := time.Now()
	binDir, err := resolveBinDir(opts.BinDir)
	if err != nil {
		return nil, err
	}
	if err := checkBinaries(ctx, binDir, opts.ControllerManager); err != nil {
		return nil, err
	}
	if os.Getenv("OPENELB_KEEP_CONTROLPLANE") == "1" {
		opts.Keep = true
	}

	dir, err := os.MkdirTemp("", "openelb-controlplane-")
	if err != nil {
		return nil, err
	}
	c := &ControlPlane{Dir: dir, opts: opts, binDir: binDir}
	defer func() {
		if err != nil {
			_ = c.Stop()
		}
	}()

	removeStaleEtcdDirs()
	shm := "/dev/shm"
	if st, serr := os.Stat(shm); serr != nil || !st.IsDir() {
		shm = "" // no tmpfs: fall back to the default temp dir
	}
	if c.etcdDir, err = os.MkdirTemp(shm, "openelb-etcd-"); err != nil {
		// /dev/shm may exist but be unwritable
		if c.etcdDir, err = os.MkdirTemp("", "openelb-etcd-"); err != nil {
			return nil, err
		}
	}

	// Record the owner so a later Start can reclaim the RAM if this
	// process dies without Stop (e.g. killed by a go test timeout).
	if err = os.WriteFile(filepath.Join(c.etcdDir, ownerFile), []byte(itoa(os.Getpid())), 0o600); err != nil {
		return nil, err
	}

	c.logDir = opts.LogDir
	if c.logDir == "" {
		c.logDir = filepath.Join(dir, "logs")
	}
	if err = os.MkdirAll(c.logDir, 0o755); err != nil {
		return nil, err
	}
	if err = c.writeSecrets(); err != nil {
		return nil, err
	}

	if err = retryOnBindFailure(func() (*process, error) { return c.startEtcd(ctx) }); err != nil {
		return nil, err
	}
	if err = retryOnBindFailure(func() (*process, error) { return c.startAPIServer(ctx) }); err != nil {
		return nil, err
	}
	if opts.ControllerManager {
		if err = retryOnBindFailure(func() (*process, error) { return c.startControllerManager(ctx) }); err != nil {
			return nil, err
		}
	}
	if opts.Scheduler {
		if err = retryOnBindFailure(func() (*process, error) { return c.startScheduler(ctx) }); err != nil {
			return nil, err
		}
	}
	c.StartupDuration = time.Since(began)
	return c, nil
}

// retryOnBindFailure runs start once more if the process lost a port race.
func retryOnBindFailure(start func() (*process, error)) error {
	p, err := start()
	if err != nil && p != nil && isBindFailure(p) {
		_, err = start()
	}
	return err
}

// writeSecrets creates the admin token file and the service-account key.
func (c *ControlPlane) writeSecrets() error {
	tok := make([]byte, 24)
	if _, err := rand.Read(tok); err != nil {
		return err
	}
	c.adminToken = hex.EncodeToString(tok)
	lines := c.adminToken + ",admin,admin-uid,system:masters\n"
	c.userTokens = map[string]string{}
	for _, u := range c.opts.StaticUsers {
		if _, err := rand.Read(tok); err != nil {
			return err
		}
		c.userTokens[u.Name] = hex.EncodeToString(tok)
		lines += fmt.Sprintf("%s,%s,%s-uid,\"%s\"\n", c.userTokens[u.Name], u.Name, u.Name, strings.Join(u.Groups, ","))
	}
	tokenFile := filepath.Join(c.Dir, "tokens.csv")
	if err := os.WriteFile(tokenFile, []byte(lines), 0o600); err != nil {
		return err
	}

	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	c.saKeyFile = filepath.Join(c.Dir, "sa.key")
	return os.WriteFile(c.saKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
}

// addProcess records p so that Stop (and a failed Start) can reap it.
func (c *ControlPlane) addProcess(p *process) {
	c.mu.Lock()
	c.procs = append(c.procs, p)
	c.mu.Unlock()
}

// dropProcess stops p and forgets it (used before a retry).
func (c *ControlPlane) dropProcess(p *process) {
	_ = p.stop(stopGrace)
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, q := range c.procs {
		if q == p {
			c.procs = append(c.procs[:i], c.procs[i+1:]...)
			return
		}
	}
}

func (c *ControlPlane) startEtcd(ctx context.Context) (*process, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	client := "http://127.0.0.1:" + itoa(ports[0])
	peer := "http://127.0.0.1:" + itoa(ports[1])
	dataDir := filepath.Join(c.etcdDir, "data")
	_ = os.RemoveAll(dataDir) // a previous attempt may have left one
	args := []string{
		"--name=default",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=default=" + peer,
		"--initial-cluster-state=new",
		"--unsafe-no-fsync=true",
		"--log-level=warn",
	}
	p, err := startProcess(Etcd, filepath.Join(c.binDir, "etcd"), args, c.LogPath(Etcd))
	if err != nil {
		return nil, err
	}
	c.addProcess(p)

	hc := &http.Client{Timeout: 2 * time.Second}
	err = waitFor(ctx, p, etcdReadyTimeout, func() error { return etcdHealthy(hc, client) })
	if err != nil {
		c.dropProcess(p)
		return p, fmt.Errorf("etcd: %w", err)
	}
	c.etcdURL = client
	return p, nil
}

func (c *ControlPlane) startAPIServer(ctx context.Context) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(c.Dir, "apiserver-certs")
	_ = os.RemoveAll(certDir)
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	args := []string{
		"--etcd-servers=" + c.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + itoa(port),
		"--cert-dir=" + certDir,
		"--token-auth-file=" + filepath.Join(c.Dir, "tokens.csv"),
		"--service-account-key-file=" + c.saKeyFile,
		"--service-account-signing-key-file=" + c.saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--authorization-mode=Node,RBAC",
		"--service-cluster-ip-range=" + ServiceCIDRv4 + "," + ServiceCIDRv6,
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		// The lease reconciler would try to publish 127.0.0.1 as the
		// endpoint of Service "kubernetes", which validation rejects
		// (loopback) every 10s; nothing in-cluster can use it anyway.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
	}
	args = append(args, c.opts.ExtraAPIServerFlags...)
	p, err := startProcess(APIServer, filepath.Join(c.binDir, "kube-apiserver"), args, c.LogPath(APIServer))
	if err != nil {
		return nil, err
	}
	c.addProcess(p)

	url := "https://127.0.0.1:" + itoa(port)
	certFile := filepath.Join(certDir, "apiserver.crt")
	var hc *http.Client
	err = waitFor(ctx, p, apiServerReadyTimeout, func() error {
		if hc == nil {
			// The API server writes its self-signed cert (serving cert
			// followed by its CA) before it starts listening.
			ca, err := caFromBundle(certFile)
			if err != nil {
				return err
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(ca) {
				return fmt.Errorf("no usable CA in %s", certFile)
			}
			c.caPEM = ca
			hc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
				TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			}}
		}
		return apiServerReady(ctx, hc, url, c.adminToken)
	})
	if err != nil {
		c.dropProcess(p)
		return p, fmt.Errorf("kube-apiserver: %w", err)
	}

	c.APIServerURL = url
	c.CAFile = filepath.Join(c.Dir, "ca.crt")
	if err := os.WriteFile(c.CAFile, c.caPEM, 0o644); err != nil {
		return p, err
	}
	c.Config = &rest.Config{
		Host:            url,
		BearerToken:     c.adminToken,
		TLSClientConfig: rest.TLSClientConfig{CAData: c.caPEM},
		QPS:             500,
		Burst:           1000,
		Timeout:         30 * time.Second,
	}
	c.Kubeconfig = filepath.Join(c.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(c.Kubeconfig, url, c.caPEM, "admin", c.adminToken, "", nil); err != nil {
		return p, err
	}
	return p, nil
}

func (c *ControlPlane) startControllerManager(ctx context.Context) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	certDir := filepath.Join(c.Dir, "kcm-certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--cloud-provider=external",
		"--leader-elect=false",
		"--use-service-account-credentials=true",
		"--service-account-private-key-file=" + c.saKeyFile,
		"--root-ca-file=" + c.CAFile,
		"--bind-address=127.0.0.1",
		"--secure-port=" + itoa(port),
		"--cert-dir=" + certDir,
		"--controllers=*",
		"--kube-api-qps=100",
		"--kube-api-burst=200",
		"--profiling=false",
	}
	args = append(args, c.opts.ExtraControllerManagerFlags...)
	p, err := startProcess(ControllerManager, filepath.Join(c.binDir, "kube-controller-manager"), args, c.LogPath(ControllerManager))
	if err != nil {
		return nil, err
	}
	c.addProcess(p)

	// The ServiceAccount controller creating "default" in "default" shows
	// that the controllers run and can write through RBAC.
	cs := c.Client()
	err = waitFor(ctx, p, kcmReadyTimeout, func() error {
		_, err := cs.CoreV1().ServiceAccounts(metav1.NamespaceDefault).Get(ctx, "default", metav1.GetOptions{})
		return err
	})
	if err != nil {
		c.dropProcess(p)
		return p, fmt.Errorf("kube-controller-manager: %w", err)
	}
	return p, nil
}

// startScheduler runs kube-scheduler and waits for its /healthz.
func (c *ControlPlane) startScheduler(ctx context.Context) (*process, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + c.Kubeconfig,
		"--leader-elect=false",
		"--bind-address=127.0.0.1",
		"--secure-port=" + itoa(port),
		"--cert-dir=" + filepath.Join(c.Dir, "scheduler-certs"),
		"--profiling=false",
	}
	p, err := startProcess(Scheduler, filepath.Join(c.binDir, "node", "kube-scheduler"), args, c.LogPath(Scheduler))
	if err != nil {
		return nil, err
	}
	c.addProcess(p)
	// Its serving certificate is self-signed; /healthz is open to anyone.
	hc := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	err = waitFor(ctx, p, kcmReadyTimeout, func() error {
		resp, err := hc.Get("https://127.0.0.1:" + itoa(port) + "/healthz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/healthz: %s", resp.Status)
		}
		return nil
	})
	if err != nil {
		c.dropProcess(p)
		return p, fmt.Errorf("kube-scheduler: %w", err)
	}
	return p, nil
}

// waitFor polls check every 100ms until it succeeds, the process exits,
// timeout elapses or ctx is done.
func waitFor(ctx context.Context, p *process, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if p.exited() {
			return p.exitError()
		}
		if last = check(); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready after %v: %v\n--- last lines of %s ---\n%s",
				timeout, last, p.logPath, tailFile(p.logPath, 40, 8<<10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last check: %v)", ctx.Err(), last)
		case <-p.done:
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// caFromBundle returns the CA certificate(s) from the API server's
// self-signed bundle (serving cert + CA). If no certificate in it is marked
// as a CA, the whole bundle is returned.
func caFromBundle(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var ca, all []byte
	rest := data
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		enc := pem.EncodeToMemory(block)
		all = append(all, enc...)
		if cert.IsCA {
			ca = append(ca, enc...)
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%s: no certificate yet", path)
	}
	if len(ca) == 0 {
		return all, nil
	}
	return ca, nil
}

// Stop stops kube-controller-manager, kube-apiserver and etcd (in that
// order, each by PID/process group: SIGTERM, then SIGKILL after 5s), waits
// for them and removes the temp dirs. It is idempotent.
func (c *ControlPlane) Stop() error {
	c.mu.Lock()
	if c.stopped {
		c.mu.Unlock()
		return c.stopErr
	}
	c.stopped = true
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()

	var errs []error
	for i := len(procs) - 1; i >= 0; i-- {
		if err := procs[i].stop(stopGrace); err != nil {
			errs = append(errs, err)
		}
	}
	// The etcd data lives in RAM (/dev/shm) and is useless once etcd is
	// gone, so it is removed even with Keep.
	dirs := []string{c.etcdDir}
	if !c.opts.Keep {
		dirs = append(dirs, c.Dir)
	}
	for _, d := range dirs {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, err)
		}
	}
	c.stopErr = errors.Join(errs...)
	return c.stopErr
}

// Client returns a clientset for the admin config (created once).
func (c *ControlPlane) Client() kubernetes.Interface {
	c.clientOnce.Do(func() {
		c.client = kubernetes.NewForConfigOrDie(c.Config)
	})
	return c.client
}

// LogPath returns the log file of a component: Etcd, APIServer or
// ControllerManager ("etcd", "kube-apiserver", "kube-controller-manager").
func (c *ControlPlane) LogPath(component string) string {
	return filepath.Join(c.logDir, component+".log")
}

// ImpersonatingConfig returns a copy of the admin config that impersonates
// user (and groups), so requests are authorized as that identity by RBAC.
// For a ServiceAccount use "system:serviceaccount:<ns>:<name>" and the
// groups "system:serviceaccounts", "system:serviceaccounts:<ns>".
func (c *ControlPlane) ImpersonatingConfig(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// KubeconfigFor writes a kubeconfig that authenticates as admin but
// impersonates user (and groups); see ImpersonatingConfig. Returns its path.
func (c *ControlPlane) KubeconfigFor(user string, groups ...string) (string, error) {
	path := filepath.Join(c.Dir, "kubeconfigs", "user-"+sanitize(user)+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	imp := &impersonation{user: user, groups: groups}
	if err := writeKubeconfig(path, c.APIServerURL, c.caPEM, "admin-as-"+sanitize(user), c.adminToken, "", imp); err != nil {
		return "", err
	}
	return path, nil
}

// ServiceAccountToken issues a 1h token for ServiceAccount namespace/name
// via the TokenRequest API. The ServiceAccount must exist.
func (c *ControlPlane) ServiceAccountToken(ctx context.Context, namespace, name string) (string, error) {
	exp := int64(3600)
	tr, err := c.Client().CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &exp}},
		metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for %s/%s: %w", namespace, name, err)
	}
	return tr.Status.Token, nil
}

// ServiceAccountKubeconfig writes a kubeconfig holding a 1h token (from the
// TokenRequest API) for ServiceAccount namespace/name and returns its path.
// Components run with it get exactly that ServiceAccount's RBAC rights.
func (c *ControlPlane) ServiceAccountKubeconfig(ctx context.Context, namespace, name string) (string, error) {
	tok, err := c.ServiceAccountToken(ctx, namespace, name)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "kubeconfigs", "sa-"+sanitize(namespace)+"-"+sanitize(name)+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := writeKubeconfig(path, c.APIServerURL, c.caPEM, "system:serviceaccount:"+namespace+":"+name, tok, namespace, nil); err != nil {
		return "", err
	}
	return path, nil
}

// Kubectl runs <BinDir>/kubectl --kubeconfig=<admin kubeconfig> args... and
// returns its stdout; on failure the error includes stderr.
func (c *ControlPlane) Kubectl(ctx context.Context, args ...string) (string, error) {
	return c.KubectlWith(ctx, c.Kubeconfig, args...)
}

// KubectlWith is Kubectl with another kubeconfig (e.g. from
// ServiceAccountKubeconfig or KubeconfigFor).
func (c *ControlPlane) KubectlWith(ctx context.Context, kubeconfig string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, "kubectl"), append([]string{"--kubeconfig=" + kubeconfig}, args...)...)
	var stdout, stderr strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// LogDir returns the directory holding the process logs.
func (c *ControlPlane) LogDir() string { return c.logDir }

// BinDir returns the directory the binaries were taken from.
func (c *ControlPlane) BinDir() string { return c.binDir }

// logTails returns the last lines of every process log, for failure reports.
func (c *ControlPlane) logTails(lines int) string {
	c.mu.Lock()
	procs := append([]*process(nil), c.procs...)
	c.mu.Unlock()
	var b strings.Builder
	for _, p := range procs {
		fmt.Fprintf(&b, "--- last %d lines of %s ---\n%s\n", lines, p.logPath, tailFile(p.logPath, lines, 32<<10))
	}
	return b.String()
}

var unsafeChars = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

func sanitize(s string) string { return unsafeChars.ReplaceAllString(s, "_") }

// resolveBinDir applies the BinDir defaults.
func resolveBinDir(dir string) (string, error) {
	if dir == "" {
		dir = os.Getenv("OPENELB_BIN_DIR")
	}
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", fmt.Errorf("no BinDir and no OPENELB_BIN_DIR: %w", err)
		}
		dir = filepath.Join(root, ".cache", "bin")
	}
	return filepath.Abs(dir)
}

// RepoRoot finds the directory whose go.mod declares ModulePath, walking up
// from the working directory and then from this source file's directory.
func RepoRoot() (string, error) {
	var starts []string
	if wd, err := os.Getwd(); err == nil {
		starts = append(starts, wd)
	}
	if _, file, _, ok := runtime.Caller(0); ok {
		starts = append(starts, filepath.Dir(file))
	}
	for _, d := range starts {
		for {
			if isModuleRoot(filepath.Join(d, "go.mod")) {
				return d, nil
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return "", fmt.Errorf("no go.mod with module %s above %v", ModulePath, starts)
}

func isModuleRoot(gomod string) bool {
	f, err := os.Open(gomod)
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "module" {
			return strings.Trim(fields[1], `"`) == ModulePath
		}
	}
	return false
}

// checkBinaries makes sure the needed binaries exist and that etcd is new
// enough (etcd 3.4 breaks kube-apiserver >= 1.3x watches).
func checkBinaries(ctx context.Context, binDir string, kcm bool) error {
	need := []string{"etcd", "kube-apiserver", "kubectl"}
	if kcm {
		need = append(need, "kube-controller-manager")
	}
	for _, n := range need {
		st, err := os.Stat(filepath.Join(binDir, n))
		if err != nil {
			return fmt.Errorf("%s not found in %s (set Options.BinDir or OPENELB_BIN_DIR): %w", n, binDir, err)
		}
		if st.IsDir() || st.Mode()&0o111 == 0 {
			return fmt.Errorf("%s is not an executable file", filepath.Join(binDir, n))
		}
	}
	out, err := exec.CommandContext(ctx, filepath.Join(binDir, "etcd"), "--version").CombinedOutput()
	if err != nil {
		return fmt.Errorf("etcd --version: %w: %s", err, out)
	}
	m := regexp.MustCompile(`etcd Version: (\d+)\.(\d+)`).FindSubmatch(out)
	if m == nil {
		return fmt.Errorf("cannot parse etcd version from %q", out)
	}
	major, _ := strconv.Atoi(string(m[1]))
	minor, _ := strconv.Atoi(string(m[2]))
	if major < 3 || (major == 3 && minor < 5) {
		return fmt.Errorf("etcd %d.%d in %s is too old (need >= 3.5)", major, minor, binDir)
	}
	return nil
}

const ownerFile = "owner.pid"

// removeStaleEtcdDirs deletes /dev/shm/openelb-etcd-* dirs whose owning
// process no longer exists (left behind by a killed test binary).
func removeStaleEtcdDirs() {
	dirs, _ := filepath.Glob(filepath.Join("/dev/shm", "openelb-etcd-*"))
	for _, d := range dirs {
		b, err := os.ReadFile(filepath.Join(d, ownerFile))
		if err != nil {
			continue // not ours to judge (or still being set up)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 0 {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			_ = os.RemoveAll(d)
		}
	}
}
