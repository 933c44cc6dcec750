package agent

import (
	"context"
	"fmt"

	v1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultSecretsNamespace is where BgpPeer password Secrets live unless
// --bgp-secrets-namespace says otherwise.
//
// It is a namespace of its own, not the speakers': RBAC cannot grant
// list/watch of some Secrets by name, so a speaker allowed to watch
// Secrets in openelb-system could read every Secret there (Helm release
// Secrets, tokens...). In a namespace holding only the Secrets that
// BgpPeers name, watching them all reveals nothing more than reading each
// by name would: the speaker reads every BgpPeer anyway.
//
// The agent watches that namespace rather than getting each referenced
// Secret when it reconciles: a watch is one long-lived request per node
// served from the API server's watch cache, and a rotated password reaches
// the BGP sessions at once, whereas a get per Secret per reconcile would
// cost 1,000 nodes × peers requests on every plan change and need polling
// to notice a rotation.
const DefaultSecretsNamespace = "openelb-bgp-secrets"

// secretReader reads BgpPeer password Secrets of namespace ns from r (the
// agent's cache). Its errors name the namespace, so a BgpPeer status says
// where the Secret was looked for (one left behind in openelb-system by
// an upgrade, say).
func secretReader(ctx context.Context, r client.Reader, ns string) SecretReader {
	return func(name, key string) (string, error) {
		var s v1.Secret
		if err := r.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &s); err != nil {
			if apierrors.IsNotFound(err) {
				return "", fmt.Errorf("no Secret %q in namespace %s, where the speakers read BgpPeer password Secrets", name, ns)
			}
			return "", fmt.Errorf("reading Secret %s/%s: %w", ns, name, err)
		}
		v, ok := s.Data[key]
		if !ok {
			return "", fmt.Errorf("no key %q in Secret %s/%s", key, ns, name)
		}
		return string(v), nil
	}
}
