package agent

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"strings"

	apiequality "k8s.io/apimachinery/pkg/api/equality"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

// Reasons of a layer-2 pool in this node's LoadBalancerSpeaker
// (status.layer2[].reason), and of its layer-2 problems.
const (
	ReasonAnswering       = "Answering"
	ReasonStandby         = "Standby"
	ReasonNoInterface     = "InterfaceUnavailable"
	ReasonOutsideSubnet   = "OutsideSubnet"
	ReasonResponderFailed = "ResponderFailed"
	// ReasonDataPathUnhealthy: the node's kube-proxy health check fails.
	ReasonDataPathUnhealthy = "DataPathUnhealthy"
	ReasonNoLocalEndpoint   = "NoLocalEndpoint"
	ReasonRejected          = "Rejected"
	ReasonStopped           = "Stopped"
	// ReasonNodeNotSelected: the Eip's spec.layer2.nodeSelector leaves
	// this node out; a choice, not a problem.
	ReasonNodeNotSelected = "NodeNotSelected"
)

// l2Problem says why this node cannot answer for a pool or an address.
type l2Problem struct {
	Reason, Message string
}

// maxListed bounds the addresses and nodes a message lists: a pool may
// have thousands of addresses, and a report must stay small.
const maxListed = 3

// refreshStatusLocked recomputes this node's layer-2 report, one entry per
// pool and the problems with the Services they affect, and asks for a
// report when it changed. It is per pool, not per Service, so its size and
// its changes follow the pools; messages name no time and no other
// answering node, so a leadership change rewrites only the reports of the
// two nodes concerned.
func (m *layer2Manager) refreshStatusLocked() {
	status := make([]v1alpha2.SpeakerLayer2, 0, len(m.pools))
	var problems []Problem
	// Group keys sort each Eip's own group first ("pool" < "pool@...").
	for _, name := range slices.Sorted(maps.Keys(m.pools)) {
		e, probs := m.poolReportLocked(m.pools[name])
		if n := len(status); n > 0 && status[n-1].Pool == e.Pool {
			status[n-1] = mergeEntries(status[n-1], e, m.pools[name].spec)
		} else {
			if st := m.pools[name]; st.spec.Override {
				e.Message = overrideNote(st.spec) + e.Message
			}
			status = append(status, e)
		}
		problems = append(problems, probs...)
	}
	if apiequality.Semantic.DeepEqual(status, m.status) && reflect.DeepEqual(problems, m.problems) {
		return
	}
	m.status, m.problems = status, problems
	if m.statusChanged != nil {
		m.statusChanged()
	}
}

// addrIssue is one address of a pool this node cannot answer for.
type addrIssue struct {
	ip     netip.Addr
	plan   string
	detail string // why, for this address ("" when the reason says it all)
}

// poolReportLocked is this node's entry for one pool, and its problems.
func (m *layer2Manager) poolReportLocked(st *poolState) (v1alpha2.SpeakerLayer2, []Problem) {
	pool := st.spec.Eip
	e := v1alpha2.SpeakerLayer2{Pool: pool, Interface: st.ifname, MAC: st.mac}
	switch {
	case m.closed:
		e.Reason, e.Message = ReasonStopped, "the speaker stopped"
		return e, nil
	case st.problem.Reason == ReasonNodeNotSelected:
		e.Reason, e.Message = st.problem.Reason, st.problem.Message
		return e, nil
	case st.problem.Reason != "":
		e.Reason, e.Message = st.problem.Reason, st.problem.Message
		return e, []Problem{{Object: "Eip/" + pool, Reason: st.problem.Reason, Message: st.problem.Message, Services: planKeys(st.spec.Addrs)}}
	case st.iface == nil:
		// Between a responder failure and the reconcile that rebuilds it.
		e.Reason, e.Message = ReasonResponderFailed, fmt.Sprintf("the responder on %s failed; rebuilding it", st.ifname)
		return e, nil
	}
	issues := map[string][]addrIssue{}
	var firstIssue string
	answered, viaOthers := 0, 0
	endpointNodes := map[string]bool{}
	issue := func(reason string, a l2Addr, detail string) {
		if firstIssue == "" {
			firstIssue = reason
		}
		issues[reason] = append(issues[reason], addrIssue{ip: a.IP, plan: a.Plan.Key, detail: detail})
	}
	for _, a := range st.spec.Addrs {
		if err := st.addrProblems[a.IP]; err != nil {
			reason := ReasonRejected
			if errors.Is(err, layer2.ErrOutsideSubnets) {
				reason = ReasonOutsideSubnet
			}
			issue(reason, a, err.Error())
			continue
		}
		if !st.answering[a.IP] {
			continue
		}
		if rej := st.iface.rejected[a.IP]; rej != nil {
			issue(ReasonRejected, a, rej.Error())
			continue
		}
		c, ok := st.chosen[a.IP]
		if !ok {
			issue(ReasonNoLocalEndpoint, a, "")
			continue
		}
		answered++
		if c.node != m.node {
			viaOthers++
			endpointNodes[c.node] = true
		}
	}
	others := len(st.view.Candidates) - 1
	switch {
	case answered > 0:
		e.Answering, e.Addresses, e.Reason = true, int32(answered), ReasonAnswering
		msg := []string{fmt.Sprintf("answering for %d of %d address(es) on %s, its share with %d other candidate node(s)", answered, len(st.spec.Addrs), st.ifname, others)}
		if own := answered - viaOthers; own > 0 {
			msg = append(msg, fmt.Sprintf("%d with %s of this node", own, st.iface.mac))
		}
		if viaOthers > 0 {
			msg = append(msg, fmt.Sprintf("%d with the MAC of a node with a ready endpoint (externalTrafficPolicy Local): %s",
				viaOthers, listed(slices.Sorted(maps.Keys(endpointNodes)), ", ")))
		}
		if n := len(st.mine) - len(st.answering); n > 0 {
			msg = append(msg, fmt.Sprintf("%d more once %s acknowledge(s) the new set of candidates", n, listed(st.waiting, ", ")))
		}
		e.Message = strings.Join(msg, "; ")
	case len(st.mine) > 0 && len(st.answering) == 0:
		e.Reason = ReasonStandby
		e.Message = fmt.Sprintf("candidate on %s: taking over %d address(es) once %s acknowledge(s) the new set of candidates", st.ifname, len(st.mine), listed(st.waiting, ", "))
	case len(st.mine) == 0:
		e.Reason = ReasonStandby
		e.Message = fmt.Sprintf("standby on %s: the %d other candidate node(s) own the %d address(es) of pool %s", st.ifname, others, len(st.spec.Addrs), pool)
	default:
		e.Reason = firstIssue
		e.Message = fmt.Sprintf("owning %d address(es) of pool %s but answering for none on %s (see problems)", len(st.mine), pool, st.ifname)
	}
	var problems []Problem
	for _, reason := range []string{ReasonOutsideSubnet, ReasonRejected, ReasonNoLocalEndpoint} {
		if is := issues[reason]; len(is) > 0 {
			problems = append(problems, issueProblem(pool, st.ifname, reason, is))
		}
	}
	return e, problems
}

// overrideNote introduces the part of an entry about the Services that
// chose their interfaces.
func overrideNote(spec *l2Pool) string {
	return fmt.Sprintf("Services choosing interface %s: ", strings.Join(spec.Interfaces, ","))
}

// mergeEntries adds to an Eip's entry the part of a group of its Services
// that chose their own interfaces: the counts add up, the Eip's own group
// keeps the interface, MAC and reason unless it answers nothing.
func mergeEntries(e, g v1alpha2.SpeakerLayer2, spec *l2Pool) v1alpha2.SpeakerLayer2 {
	e.Message += "; " + overrideNote(spec) + g.Message
	if g.Answering && !e.Answering {
		e.Reason = g.Reason
	}
	e.Answering = e.Answering || g.Answering
	e.Addresses += g.Addresses
	return e
}

// issueProblem summarizes the addresses of a pool refused for one reason:
// the first few, and the Services of all of them.
func issueProblem(pool, iface, reason string, is []addrIssue) Problem {
	items := make([]string, len(is))
	plans := make([]string, len(is))
	for i, x := range is {
		items[i] = x.ip.String()
		if x.detail != "" {
			items[i] += ": " + x.detail
		}
		plans[i] = x.plan
	}
	slices.Sort(plans)
	p := Problem{Object: "Eip/" + pool, Reason: reason, Services: slices.Compact(plans)}
	if reason == ReasonNoLocalEndpoint {
		p.Message = fmt.Sprintf("%d address(es) not answered: no node with a ready endpoint of the Service has published its MAC for pool %s (externalTrafficPolicy Local): %s",
			len(is), pool, listed(items, "; "))
	} else {
		p.Message = fmt.Sprintf("%d address(es) cannot be answered on %s: %s", len(is), iface, listed(items, "; "))
	}
	return p
}

// listed joins the first maxListed items with sep, and says how many more
// there are.
func listed(items []string, sep string) string {
	if len(items) <= maxListed {
		return strings.Join(items, sep)
	}
	return fmt.Sprintf("%s%sand %d more", strings.Join(items[:maxListed], sep), sep, len(items)-maxListed)
}

// planKeys lists, sorted, the plans the addresses belong to.
func planKeys(addrs []l2Addr) []string {
	out := make([]string, len(addrs))
	for i, a := range addrs {
		out[i] = a.Plan.Key
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// report returns this node's layer-2 report, and whether it is known yet
// (false until the first reconcile: until then the report written before a
// restart stands, so the MACs the node publishes never blink).
func (m *layer2Manager) report() ([]v1alpha2.SpeakerLayer2, []Problem, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.status), slices.Clone(m.problems), m.synced
}
