package agent

import (
	"fmt"
	"strings"

	v1 "k8s.io/api/core/v1"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// Reasons of the problems of BgpConf spec.policy.
const (
	// ReasonBgpPolicyInvalid: the ConfigMap is missing, lacks the key, or
	// holds a file the speaker cannot use; the policy last applied stays
	// (none, if none was).
	ReasonBgpPolicyInvalid = "BgpPolicyInvalid"
	// ReasonBgpPolicyIgnored: the file sets things beyond a routing policy
	// (neighbors, global settings, import policies...), which the speaker
	// leaves out.
	ReasonBgpPolicyIgnored = "BgpPolicyIgnored"
)

// ConfigMapReader reads a ConfigMap of the speakers' namespace by name
// (nil, nil when it does not exist).
type ConfigMapReader func(name string) (*v1.ConfigMap, error)

// resolvePolicy sets st's admin routing policy from BgpConf spec.policy:
// the ConfigMap of that name in the speakers' namespace, key gobgp.conf
// (OpenELB's layout). A policy that cannot be used keeps last, the one
// applied before, so a typo in the ConfigMap never changes what routers
// receive; the problem says so. No spec.policy: no admin policy.
func resolvePolicy(st *State, conf *v1alpha2.BgpConf, ns string, read ConfigMapReader, last *bgp.UserPolicy) []Problem {
	if !st.Enabled || conf == nil || strings.TrimSpace(conf.Spec.Policy) == "" {
		return nil
	}
	name := strings.TrimSpace(conf.Spec.Policy)
	obj := "ConfigMap/" + ns + "/" + name
	keep := func(format string, args ...any) []Problem {
		st.Global.Policy = last
		kept := "no policy is applied"
		if last != nil {
			kept = "the policy last applied stays"
		}
		return []Problem{{Object: obj, Reason: ReasonBgpPolicyInvalid, Message: fmt.Sprintf(format, args...) + " (BgpConf default spec.policy; " + kept + ")"}}
	}
	cm, err := read(name)
	if err != nil {
		return keep("reading it: %v", err)
	}
	if cm == nil {
		return keep("no ConfigMap %q in namespace %s", name, ns)
	}
	text, ok := cm.Data[bgp.PolicyConfigMapKey]
	if !ok {
		return keep("no key %q in it", bgp.PolicyConfigMapKey)
	}
	p, err := bgp.ParsePolicy(text)
	if err != nil {
		return keep("key %s: %v", bgp.PolicyConfigMapKey, err)
	}
	st.Global.Policy = p
	if len(p.Ignored) > 0 {
		return []Problem{{Object: obj, Reason: ReasonBgpPolicyIgnored,
			Message: "the speakers use only defined-sets, policy-definitions and the export policies of global.apply-policy; left out: " + strings.Join(p.Ignored, "; ")}}
	}
	return nil
}
