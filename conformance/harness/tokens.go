package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
)

// NodeExtra is the user extra the API server derives from a pod-bound
// ServiceAccount token: the name of the pod's node.
const NodeExtra = "authentication.kubernetes.io/node-name"

// NodeBoundToken issues a 1h token of ServiceAccount namespace/sa bound to
// a pod on node, as kubelet projects into a DaemonSet pod: the API server
// adds the node to the token, and requests made with it carry NodeExtra.
//
// No kubelet runs, so the pod is only an object: PodForNode creates it (or
// reuses it) with spec.nodeName set; the Node need not exist. The token
// stays valid while the pod does.
func (c *ControlPlane) NodeBoundToken(ctx context.Context, namespace, sa, node string) (string, error) {
	pod, err := c.PodForNode(ctx, namespace, sa, node)
	if err != nil {
		return "", err
	}
	exp := int64(3600)
	tr, err := c.Client().CoreV1().ServiceAccounts(namespace).CreateToken(ctx, sa, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{
			ExpirationSeconds: &exp,
			BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("token request for %s/%s bound to pod %s: %w", namespace, sa, pod.Name, err)
	}
	return tr.Status.Token, nil
}

// PodForNode returns the pod <sa>-<node> of namespace, running as
// ServiceAccount sa on node, creating it if needed. It never runs (no
// kubelet): it is what a pod-bound token refers to.
func (c *ControlPlane) PodForNode(ctx context.Context, namespace, sa, node string) (*corev1.Pod, error) {
	name := sa + "-" + node
	pods := c.Client().CoreV1().Pods(namespace)
	pod, err := pods.Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			ServiceAccountName:           sa,
			NodeName:                     node,
			AutomountServiceAccountToken: ptr.To(false),
			Containers:                   []corev1.Container{{Name: "main", Image: "registry.invalid/" + sa}},
		},
	}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		pod, err = pods.Get(ctx, name, metav1.GetOptions{})
	}
	if err != nil {
		return nil, fmt.Errorf("pod %s/%s on node %s: %w", namespace, name, node, err)
	}
	return pod, nil
}

// NodeBoundKubeconfig writes a kubeconfig holding NodeBoundToken and
// returns its path: a process run with it is the ServiceAccount as seen
// from node's pod, as a DaemonSet pod is.
func (c *ControlPlane) NodeBoundKubeconfig(ctx context.Context, namespace, sa, node string) (string, error) {
	tok, err := c.NodeBoundToken(ctx, namespace, sa, node)
	if err != nil {
		return "", err
	}
	path := filepath.Join(c.Dir, "kubeconfigs", "sa-"+sanitize(namespace)+"-"+sanitize(sa)+"-node-"+sanitize(node)+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := writeKubeconfig(path, c.APIServerURL, c.caPEM, "system:serviceaccount:"+namespace+":"+sa, tok, namespace, nil); err != nil {
		return "", err
	}
	return path, nil
}

// UserKubeconfig writes a kubeconfig for one of Options.StaticUsers and
// returns its path.
func (c *ControlPlane) UserKubeconfig(user string) (string, error) {
	tok, ok := c.userTokens[user]
	if !ok {
		return "", fmt.Errorf("no static user %q (Options.StaticUsers)", user)
	}
	path := filepath.Join(c.Dir, "kubeconfigs", "user-"+sanitize(user)+".kubeconfig")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := writeKubeconfig(path, c.APIServerURL, c.caPEM, user, tok, "", nil); err != nil {
		return "", err
	}
	return path, nil
}

// TokenConfig is the admin REST config with token as the only credential
// (no impersonation): the API server sees the token's user.
func (c *ControlPlane) TokenConfig(token string) *rest.Config {
	cfg := rest.CopyConfig(c.Config)
	cfg.BearerToken = token
	cfg.BearerTokenFile = ""
	cfg.Impersonate = rest.ImpersonationConfig{}
	return cfg
}
