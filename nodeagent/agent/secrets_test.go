package agent

import (
	"context"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

func TestSecretReader(t *testing.T) {
	c := fake.NewClientBuilder().WithObjects(
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: DefaultSecretsNamespace, Name: "bgp-leaf2"}, Data: map[string][]byte{"password": []byte("s3cret")}},
		// Where Secrets lived before: not read.
		&v1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "openelb-system", Name: "bgp-leaf1"}, Data: map[string][]byte{"password": []byte("old")}},
	).Build()
	read := secretReader(context.Background(), c, DefaultSecretsNamespace)

	if pw, err := read("bgp-leaf2", "password"); err != nil || pw != "s3cret" {
		t.Errorf("bgp-leaf2: %q, %v", pw, err)
	}
	for _, tc := range []struct{ name, key, want string }{
		{"bgp-leaf1", "password", `no Secret "bgp-leaf1" in namespace openelb-bgp-secrets`},
		{"bgp-leaf2", "pw", `no key "pw" in Secret openelb-bgp-secrets/bgp-leaf2`},
	} {
		if _, err := read(tc.name, tc.key); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s key %s: error %v, want one containing %q", tc.name, tc.key, err, tc.want)
		}
	}
}
