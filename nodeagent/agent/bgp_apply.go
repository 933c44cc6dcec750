package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/bgp"
)

// applyBGP makes the BGP speaker do what st says: stop when BGP is off on
// this node, apply otherwise. It returns the peers the speaker left out
// (it applied everything else: their BgpPeers get a problem, and nothing
// is retried until the state changes) and an error for any other failure
// (the caller retries).
func (a *Agent) applyBGP(ctx context.Context, st State) ([]*bgp.PeerError, error) {
	if !st.Enabled {
		if err := a.opts.Speaker.Stop(ctx, false); err != nil {
			metricApplies.WithLabelValues("error").Inc()
			return nil, fmt.Errorf("stopping the BGP speaker: %w", err)
		}
		metricApplies.WithLabelValues("ok").Inc()
		return nil, nil
	}
	refused, err := bgp.SplitPeerErrors(a.opts.Speaker.Apply(ctx, st.Global, st.Peers, st.Paths))
	if err != nil {
		metricApplies.WithLabelValues("error").Inc()
		return refused, fmt.Errorf("applying to the BGP speaker: %w", err)
	}
	metricApplies.WithLabelValues("ok").Inc()
	return refused, nil
}

// refusedProblems are the problems of the BgpPeers the speaker left out.
// services lists the Services the node announces; it is called only when
// there is a problem (see Desired).
func refusedProblems(refused []*bgp.PeerError, services func() []string) []Problem {
	if len(refused) == 0 {
		return nil
	}
	affected := services()
	out := make([]Problem, 0, len(refused))
	for _, e := range refused {
		reason := ReasonBgpPeerRefused
		if errors.Is(e.Err, bgp.ErrInvalidConfig) {
			reason = ReasonInvalidBgpPeer
		}
		out = append(out, Problem{Object: "BgpPeer/" + e.Name, Reason: reason,
			Message: fmt.Sprintf("neighbor %s not configured: %v", e.Address, e.Err), Services: affected})
	}
	return out
}

// affectedServices lists, sorted, the Services node announces as a
// speaker of rack.
func affectedServices(node string, rack *v1alpha2.LoadBalancerRack, plans []*v1alpha2.LoadBalancerPlan) []string {
	return slices.Sorted(maps.Keys(planPathCounts(node, rack, plans)))
}

// prefixLimitMessage explains a session held down for its prefix limit
// ("" when it is not).
func prefixLimitMessage(s bgp.PeerState) string {
	if !s.PrefixLimitExceeded {
		return ""
	}
	return fmt.Sprintf("the router at %s sent more than %d prefixes of one address family, which the speaker would have to hold: "+
		"the session is closed (Cease, maximum number of prefixes reached) and retried after a backoff (30s, doubling up to 10m); "+
		"until a retry finds the router within the limit it receives none of this node's paths. "+
		"Routers should send the speakers nothing: filter what they export to them (README, BGP)", s.Address, s.PrefixLimit)
}

// sessionProblems are the problems the speaker's sessions show: those
// held down for their prefix limit.
func sessionProblems(sessions []bgp.PeerState) []Problem {
	var out []Problem
	for _, s := range sessions {
		if msg := prefixLimitMessage(s); msg != "" {
			out = append(out, Problem{Object: "BgpPeer/" + s.Name, Reason: ReasonPrefixLimitExceeded, Message: msg})
		}
	}
	return out
}
