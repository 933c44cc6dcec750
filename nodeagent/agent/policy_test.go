package agent

import (
	"errors"
	"strings"
	"testing"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

const policyText = `
[global.apply-policy.config]
  export-policy-list = ["tag"]
[[policy-definitions]]
  name = "tag"
  [[policy-definitions.statements]]
    name = "all"
    [policy-definitions.statements.actions.bgp-actions.set-community]
      options = "add"
      [policy-definitions.statements.actions.bgp-actions.set-community.set-community-method]
        communities-list = ["65000:1"]
`

func TestResolvePolicy(t *testing.T) {
	conf := &v1alpha2.BgpConf{Spec: v1alpha2.BgpConfSpec{As: 65000, Policy: "pol"}}
	cm := func(data map[string]string) ConfigMapReader {
		return func(name string) (*v1.ConfigMap, error) {
			if name != "pol" || data == nil {
				return nil, nil
			}
			return &v1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: data}, nil
		}
	}
	last, err := bgp.ParsePolicy(strings.ReplaceAll(policyText, "65000:1", "65000:2"))
	if err != nil {
		t.Fatal(err)
	}

	st := State{Enabled: true}
	if problems := resolvePolicy(&st, conf, "openelb-system", cm(map[string]string{"gobgp.conf": policyText}), nil); len(problems) != 0 {
		t.Errorf("good policy: problems %+v", problems)
	}
	if st.Global.Policy == nil || st.Global.Policy.Text != policyText {
		t.Errorf("good policy not set: %+v", st.Global.Policy)
	}

	for name, c := range map[string]struct {
		read ConfigMapReader
		want string
	}{
		"missing ConfigMap": {cm(nil), `no ConfigMap "pol" in namespace openelb-system`},
		"missing key":       {cm(map[string]string{"other": "x"}), `no key "gobgp.conf"`},
		"bad file":          {cm(map[string]string{"gobgp.conf": "[[x"}), "TOML"},
		"read error":        {func(string) (*v1.ConfigMap, error) { return nil, errors.New("boom") }, "boom"},
	} {
		st := State{Enabled: true}
		problems := resolvePolicy(&st, conf, "openelb-system", c.read, last)
		if len(problems) != 1 || problems[0].Reason != ReasonBgpPolicyInvalid || !strings.Contains(problems[0].Message, c.want) ||
			!strings.Contains(problems[0].Message, "last applied stays") || problems[0].Object != "ConfigMap/openelb-system/pol" {
			t.Errorf("%s: problems %+v", name, problems)
		}
		if st.Global.Policy != last {
			t.Errorf("%s: the policy last applied was not kept", name)
		}
	}

	st = State{Enabled: true}
	problems := resolvePolicy(&st, conf, "openelb-system", cm(map[string]string{"gobgp.conf": "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"10.0.0.2\"\n    peer-as = 1\n" + policyText}), nil)
	if len(problems) != 1 || problems[0].Reason != ReasonBgpPolicyIgnored || !strings.Contains(problems[0].Message, "neighbors") || st.Global.Policy == nil {
		t.Errorf("ignored parts: problems %+v, policy %v", problems, st.Global.Policy)
	}

	st = State{Enabled: true}
	if problems := resolvePolicy(&st, &v1alpha2.BgpConf{Spec: v1alpha2.BgpConfSpec{As: 65000}}, "openelb-system", cm(nil), last); len(problems) != 0 || st.Global.Policy != nil {
		t.Errorf("no spec.policy: problems %+v, policy %v", problems, st.Global.Policy)
	}
}
