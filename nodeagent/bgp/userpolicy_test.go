package bgp

import (
	"strings"
	"testing"

	api "github.com/osrg/gobgp/v4/api"
)

// samplePolicy is a GoBGP configuration as OpenELB users write it: a
// prefix set, a policy that tags its paths and one that rejects the rest,
// a neighbor (ignored) and an import policy (ignored).
const samplePolicy = `
[global.config]
  as = 65000
  router-id = "10.0.0.1"
[global.apply-policy.config]
  export-policy-list = ["tag-pool", "only-pool"]
  default-export-policy = "accept-route"
  import-policy-list = ["tag-pool"]

[[neighbors]]
  [neighbors.config]
    neighbor-address = "10.0.0.2"
    peer-as = 65001

[[defined-sets.prefix-sets]]
  prefix-set-name = "pool"
  [[defined-sets.prefix-sets.prefix-list]]
    ip-prefix = "172.22.0.0/24"
    masklength-range = "24..32"

[[policy-definitions]]
  name = "tag-pool"
  [[policy-definitions.statements]]
    name = "tag"
    [policy-definitions.statements.conditions.match-prefix-set]
      prefix-set = "pool"
    [policy-definitions.statements.actions.bgp-actions.set-community]
      options = "add"
      [policy-definitions.statements.actions.bgp-actions.set-community.set-community-method]
        communities-list = ["65000:777"]

[[policy-definitions]]
  name = "only-pool"
  [[policy-definitions.statements]]
    name = "reject-others"
    [policy-definitions.statements.conditions.match-prefix-set]
      prefix-set = "pool"
      match-set-options = "invert"
    [policy-definitions.statements.actions]
      route-disposition = "reject-route"
`

func TestParsePolicy(t *testing.T) {
	p, err := ParsePolicy(samplePolicy)
	if err != nil {
		t.Fatal(err)
	}
	if got := p.Export(); len(got) != 2 || got[0] != "tag-pool" || got[1] != "only-pool" {
		t.Errorf("export list %v", got)
	}
	if len(p.policies) != 2 || len(p.sets) != 1 {
		t.Fatalf("policies %v, sets %v", p.policies, p.sets)
	}
	var tag *api.Policy
	for _, pol := range p.policies {
		if pol.Name == "tag-pool" {
			tag = pol
		}
	}
	if tag == nil || len(tag.Statements) != 1 || tag.Statements[0].Conditions.GetPrefixSet().GetName() != "pool" ||
		strings.Join(tag.Statements[0].Actions.GetCommunity().GetCommunities(), ",") != "65000:777" {
		t.Errorf("tag-pool converted to %v", tag)
	}
	ignored := strings.Join(p.Ignored, "; ")
	for _, want := range []string{"global.config.as", "import-policy-list", "neighbors"} {
		if !strings.Contains(ignored, want) {
			t.Errorf("ignored %q does not mention %s", ignored, want)
		}
	}
	again, err := ParsePolicy(samplePolicy)
	if err != nil || again != p {
		t.Errorf("the same text parsed again: %v, %v", again, err)
	}

	for name, c := range map[string]struct{ text, want string }{
		"not TOML":            {"[[policy-definitions]\nname=", "TOML"},
		"undefined set":       {strings.ReplaceAll(samplePolicy, `prefix-set = "pool"`, `prefix-set = "nope"`), "nope"},
		"export names nobody": {strings.Replace(samplePolicy, `"only-pool"]`, `"missing"]`, 1), "missing"},
		"reserved name":       {strings.ReplaceAll(samplePolicy, `"tag-pool"`, `"openelb-x"`), "openelb-"},
		"bad default":         {strings.Replace(samplePolicy, `default-export-policy = "accept-route"`, `default-export-policy = "maybe"`, 1), "default-export-policy"},
	} {
		if _, err := ParsePolicy(c.text); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", name, err, c.want)
		}
	}
}
