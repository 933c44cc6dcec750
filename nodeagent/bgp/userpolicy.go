package bgp

// An admin's own GoBGP routing policy (OpenELB's BgpConf spec.policy: a
// ConfigMap whose key gobgp.conf holds a GoBGP configuration file in TOML).
// The speaker takes from that file what shapes what it announces: the
// defined sets, the policy definitions and global.apply-policy's export
// policy list and default export policy. It runs the admin's export
// policies after its own (peers, then next-hop-self and the attribute
// markers, then the send-community strip), so they see every path as it
// would leave and have the last word: a statement may change any
// attribute or reject the path, and its accept or reject ends the
// evaluation as in GoBGP. Everything else in the file (global settings,
// neighbors, peer groups, import policies...) is left out and named in
// UserPolicy.Ignored: sessions come from BgpConf and BgpPeers, and the
// speaker rejects every route it receives whatever an import policy says.
//
// Names starting with "openelb-" are the speaker's own and refused.
//
// GoBGP converts the file's policy definitions to its API only inside its
// own packages, so ParsePolicy has a throw-away GoBGP server (never
// started, no listener) load them and reads them back through its API:
// the conversion is GoBGP's, with its checks (a statement naming an
// undefined set is an error).

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/config"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/spf13/viper"
)

// PolicyConfigMapKey is the key of the policy ConfigMap that holds the
// GoBGP configuration (OpenELB's).
const PolicyConfigMapKey = "gobgp.conf"

// UserPolicy is a parsed admin routing policy.
type UserPolicy struct {
	// Text is the file as given; two policies are the same when their
	// texts are.
	Text string
	// Ignored names each part of the file the speaker does not use, and
	// why.
	Ignored []string

	sets          []*api.DefinedSet
	policies      []*api.Policy
	export        []string
	defaultReject bool
}

// Export is the export policy list, in order.
func (p *UserPolicy) Export() []string { return slices.Clone(p.export) }

// samePolicy compares policies by text (nil: none).
func samePolicy(a, b *UserPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.Text == b.Text
}

// policyCache keeps the last parse: every reconcile of an agent asks for
// the same text.
var policyCache struct {
	sync.Mutex
	text string
	p    *UserPolicy
	err  error
}

// ParsePolicy parses a GoBGP configuration file (TOML) into the policy
// the speaker applies. Its errors say what to fix.
func ParsePolicy(text string) (*UserPolicy, error) {
	policyCache.Lock()
	defer policyCache.Unlock()
	if policyCache.p != nil || policyCache.err != nil {
		if policyCache.text == text {
			return policyCache.p, policyCache.err
		}
	}
	p, err := parsePolicy(text)
	policyCache.text, policyCache.p, policyCache.err = text, p, err
	return p, err
}

func parsePolicy(text string) (*UserPolicy, error) {
	set, err := oc.ReadConfig(strings.NewReader(text), "toml")
	if err != nil {
		return nil, fmt.Errorf("not a GoBGP configuration file (TOML): %w", err)
	}
	p := &UserPolicy{Text: text}
	ap := set.Global.ApplyPolicy.Config
	p.export = ap.ExportPolicyList
	switch ap.DefaultExportPolicy {
	case "", oc.DEFAULT_POLICY_TYPE_ACCEPT_ROUTE:
	case oc.DEFAULT_POLICY_TYPE_REJECT_ROUTE:
		p.defaultReject = true
	default:
		return nil, fmt.Errorf("global.apply-policy.config.default-export-policy %q: want accept-route or reject-route", ap.DefaultExportPolicy)
	}
	p.Ignored = ignoredParts(text)

	if p.sets, err = oc.NewAPIDefinedSetsFromConfigStruct(&set.DefinedSets); err != nil {
		return nil, fmt.Errorf("defined-sets: %w", err)
	}
	for _, s := range p.sets {
		if strings.HasPrefix(s.Name, "openelb-") {
			return nil, fmt.Errorf("defined set %q: names starting with openelb- are the speaker's own", s.Name)
		}
	}
	names := map[string]bool{}
	for _, d := range set.PolicyDefinitions {
		if strings.HasPrefix(d.Name, "openelb-") {
			return nil, fmt.Errorf("policy definition %q: names starting with openelb- are the speaker's own", d.Name)
		}
		names[d.Name] = true
	}
	for _, name := range p.export {
		if !names[name] {
			return nil, fmt.Errorf("global.apply-policy.config.export-policy-list names %q, which no policy-definitions entry defines", name)
		}
	}
	if len(set.PolicyDefinitions) > 0 {
		if p.policies, err = convertPolicies(set); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// ignoredParts lists the keys a file sets beyond the policy, with why:
// read from the file's own keys, as the parsed configuration holds GoBGP's
// defaults too.
func ignoredParts(text string) []string {
	v := viper.New()
	v.SetConfigType("toml")
	if err := v.ReadConfig(strings.NewReader(text)); err != nil {
		return nil // ReadConfig already accepted it
	}
	used := func(k string) bool {
		return strings.HasPrefix(k, "defined-sets") || strings.HasPrefix(k, "policy-definitions") ||
			k == "global.apply-policy.config.export-policy-list" || k == "global.apply-policy.config.default-export-policy"
	}
	why := func(k string) string {
		switch {
		case strings.HasPrefix(k, "global.apply-policy"):
			return "the speakers reject every route they receive"
		case strings.HasPrefix(k, "global"):
			return "global settings come from BgpConf"
		case strings.HasPrefix(k, "neighbors"), strings.HasPrefix(k, "peer-groups"), strings.HasPrefix(k, "dynamic-neighbors"):
			return "sessions come from BgpPeers"
		}
		return "not used by the speakers"
	}
	var out []string
	for _, k := range slices.Sorted(slices.Values(v.AllKeys())) {
		if !used(k) {
			out = append(out, k+" ("+why(k)+")")
		}
	}
	return out
}

// convertPolicies has a throw-away GoBGP server load the file's defined
// sets and policy definitions, and reads the policies back in API form.
func convertPolicies(set *oc.BgpConfigSet) ([]*api.Policy, error) {
	rec := &errorRecorder{}
	srv := server.NewBgpServer(server.LoggerOption(slog.New(rec), nil))
	go srv.Serve()
	defer srv.Stop()
	ctx := context.Background()
	only := &oc.BgpConfigSet{DefinedSets: set.DefinedSets, PolicyDefinitions: set.PolicyDefinitions}
	if _, err := config.UpdateConfig(ctx, srv, &oc.BgpConfigSet{}, only); err != nil {
		return nil, fmt.Errorf("policy-definitions: %w", err)
	}
	var out []*api.Policy
	if err := srv.ListPolicy(ctx, &api.ListPolicyRequest{}, func(p *api.Policy) { out = append(out, p) }); err != nil {
		return nil, fmt.Errorf("reading the policies back: %w", err)
	}
	// GoBGP's own default policy entries are not the file's.
	out = slices.DeleteFunc(out, func(p *api.Policy) bool {
		return !slices.ContainsFunc(set.PolicyDefinitions, func(d oc.PolicyDefinition) bool { return d.Name == p.Name })
	})
	if len(out) != len(set.PolicyDefinitions) {
		if err := rec.err(); err != nil {
			return nil, fmt.Errorf("policy-definitions: %w", err)
		}
		return nil, fmt.Errorf("policy-definitions: GoBGP loaded %d of %d", len(out), len(set.PolicyDefinitions))
	}
	return out, nil
}

// errorRecorder is a slog handler keeping the errors GoBGP logs while it
// loads a policy (UpdateConfig logs them rather than returning them).
type errorRecorder struct {
	mu   sync.Mutex
	errs []error
}

func (r *errorRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *errorRecorder) Handle(_ context.Context, rec slog.Record) error {
	if rec.Level < slog.LevelError {
		return nil
	}
	msg := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "Error" {
			msg += ": " + a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.errs = append(r.errs, errors.New(msg))
	r.mu.Unlock()
	return nil
}
func (r *errorRecorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *errorRecorder) WithGroup(string) slog.Handler      { return r }

func (r *errorRecorder) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return errors.Join(r.errs...)
}

// exportAssignment is the global export policy chain: the speaker's own
// policies, then the admin's (user may be nil).
func exportAssignment(user *UserPolicy) *api.PolicyAssignment {
	a := &api.PolicyAssignment{
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies:      []*api.Policy{{Name: peerPolicyName}, {Name: exportPolicyName}, {Name: peerLastPolicyName}},
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}
	if user != nil {
		for _, name := range user.export {
			a.Policies = append(a.Policies, &api.Policy{Name: name})
		}
		if user.defaultReject {
			a.DefaultAction = api.RouteAction_ROUTE_ACTION_REJECT
		}
	}
	return a
}

// setUserPolicyLocked replaces the admin policy GoBGP runs with p (nil:
// none) and re-sends every peer its paths through the new chain (a soft
// reset out). On error the speaker is left with no admin policy and the
// next Apply tries again.
func (s *GoBGP) setUserPolicyLocked(ctx context.Context, p *UserPolicy) error {
	old := s.userPolicy
	s.userPolicy = nil
	if old != nil {
		if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: exportAssignment(nil)}); err != nil {
			return fmt.Errorf("removing the admin export policies: %w", err)
		}
		for _, pol := range old.policies {
			if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: pol.Name}, All: true}); err != nil {
				return fmt.Errorf("removing admin policy %s: %w", pol.Name, err)
			}
		}
		for _, set := range old.sets {
			if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{
				DefinedSet: &api.DefinedSet{DefinedType: set.DefinedType, Name: set.Name}, All: true}); err != nil {
				return fmt.Errorf("removing admin defined set %s: %w", set.Name, err)
			}
		}
	}
	if p != nil {
		for _, set := range p.sets {
			if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: set}); err != nil {
				return fmt.Errorf("adding defined set %s: %w", set.Name, err)
			}
		}
		for _, pol := range p.policies {
			if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
				return fmt.Errorf("adding policy %s: %w", pol.Name, err)
			}
		}
		if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: exportAssignment(p)}); err != nil {
			return fmt.Errorf("assigning the admin export policies: %w", err)
		}
		s.userPolicy = p
	}
	for addr, peer := range s.peers {
		// A session that is down gets the paths through the new chain
		// when it comes up.
		if err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{Address: addr.String(), Soft: true,
			Direction: api.ResetPeerRequest_DIRECTION_OUT}); err != nil {
			s.log.V(1).Info("Soft reset out after a policy change failed", "peer", peer.Name, "err", err)
		}
	}
	return nil
}
