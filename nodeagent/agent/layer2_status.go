package agent

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/layer2"
)

// addrOutcome is what this node does for one layer-2 address, and why.
type addrOutcome struct {
	ip        netip.Addr
	answering bool
	reason    string
	message   string
}

// refreshStatusLocked recomputes this node's layer-2 status of every plan
// and asks for a report when it changed. Messages name no other node and
// no time, so a leadership change rewrites only the entries of the two
// nodes concerned.
func (m *layer2Manager) refreshStatusLocked() {
	per := map[string][]addrOutcome{}
	for _, st := range m.pools {
		for _, a := range st.spec.Addrs {
			per[a.Plan.Key] = append(per[a.Plan.Key], m.outcomeLocked(st, a.IP))
		}
	}
	status := make(map[string]l2Status, len(m.plans))
	for _, lp := range m.plans {
		var s l2Status
		if st := m.pools[lp.Pools[0]]; st != nil {
			s.MAC = st.mac
		}
		outs := per[lp.Key]
		slices.SortFunc(outs, func(a, b addrOutcome) int { return a.ip.Compare(b.ip) })
		var msgs []string
		for _, o := range outs {
			s.Answering = s.Answering || o.answering
			if s.Reason == "" {
				s.Reason = o.reason
			}
			if !slices.Contains(msgs, o.message) {
				msgs = append(msgs, o.message)
			}
		}
		if s.Answering {
			s.Reason = ReasonAnswering
		}
		s.Message = strings.Join(msgs, "; ")
		status[lp.Key] = s
	}
	if !maps.Equal(status, m.status) {
		m.status = status
		if m.statusChanged != nil {
			m.statusChanged()
		}
	}
}

func (m *layer2Manager) outcomeLocked(st *poolState, ip netip.Addr) addrOutcome {
	o := addrOutcome{ip: ip}
	lease := m.namespace + "/" + LeaseName(st.spec.Name)
	switch {
	case m.closed:
		o.reason, o.message = ReasonStopped, "the speaker stopped"
	case st.addrProblems[ip] != nil:
		o.reason, o.message = ReasonRejected, fmt.Sprintf("%s on interface %s: %v", ip, st.ifname, st.addrProblems[ip])
		if errors.Is(st.addrProblems[ip], layer2.ErrOutsideSubnets) {
			o.reason = ReasonOutsideSubnet
		}
	case st.problem.Reason != "":
		o.reason, o.message = st.problem.Reason, st.problem.Message
	case st.term == nil:
		o.reason, o.message = ReasonStandby, fmt.Sprintf("standby on %s: the holder of Lease %s answers for pool %s", st.iface.name, lease, st.spec.Name)
	default:
		c, chosen := st.chosen[ip]
		rej := st.iface.rejected[ip]
		switch {
		case rej != nil:
			o.reason, o.message = ReasonRejected, fmt.Sprintf("%s on interface %s: %v", ip, st.iface.name, rej)
		case !chosen:
			o.reason, o.message = ReasonNoLocalEndpoint, fmt.Sprintf("not answering for %s: no node with a ready endpoint of the Service has published its MAC on this segment (externalTrafficPolicy Local)", ip)
		case c.node != m.node:
			o.answering, o.reason = true, ReasonAnswering
			o.message = fmt.Sprintf("answering for %s on %s with %s of node %s, which has a ready endpoint (externalTrafficPolicy Local)", ip, st.iface.name, c.mac, c.node)
		default:
			o.answering, o.reason = true, ReasonAnswering
			o.message = fmt.Sprintf("answering for %s on %s with %s (Lease %s)", ip, st.iface.name, c.mac, lease)
		}
	}
	return o
}

// planStatus returns this node's layer-2 status of each plan with layer-2
// addresses, by namespace/name, and whether it is known yet (false until
// the first reconcile: until then the entries written before a restart
// stand).
func (m *layer2Manager) planStatus() (map[string]l2Status, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return maps.Clone(m.status), m.synced
}

// hasLayer2 says whether a plan has layer-2 addresses.
func hasLayer2(p *v1alpha2.LoadBalancerPlan) bool {
	return p != nil && slices.ContainsFunc(p.Spec.Addresses, func(a v1alpha2.PlanAddress) bool { return a.Protocol == v1alpha2.ProtocolLayer2 })
}

// withLayer2 merges the layer-2 part into a plan's status entry; bgp says
// whether e already holds a BGP part (a dual-stack Service may have one
// address of each protocol).
func withLayer2(e v1alpha2.NodeAnnouncement, bgp bool, s l2Status) v1alpha2.NodeAnnouncement {
	e.Answering, e.MAC = s.Answering, s.MAC
	if !bgp {
		e.Reason, e.Message = s.Reason, s.Message
		return e
	}
	e.Reason = e.Reason + "," + s.Reason
	e.Message = "bgp: " + e.Message + "; layer2: " + s.Message
	return e
}

// sameEntry compares what the speaker writes (not LastUpdate).
func sameEntry(a, b v1alpha2.NodeAnnouncement) bool {
	return a.Advertised == b.Advertised && a.Answering == b.Answering && a.MAC == b.MAC && a.Reason == b.Reason && a.Message == b.Message
}

// reportLayer2Stopped marks, on shutdown, the plans this node answered for
// as no longer answered, so only the new answering node says answering.
// Best effort within ctx: a speaker that dies without it leaves its entry
// until it runs again.
func (a *Agent) reportLayer2Stopped(ctx context.Context) {
	var plans v1alpha2.LoadBalancerPlanList
	if err := a.cache.List(ctx, &plans); err != nil {
		return
	}
	status, _ := a.l2.planStatus()
	now := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
	for i := range plans.Items {
		p := &plans.Items[i]
		cur, has := p.Status.Nodes[a.opts.NodeName]
		s, ok := status[p.Namespace+"/"+p.Name]
		if !has || !cur.Answering || !ok || ctx.Err() != nil {
			continue
		}
		want := cur
		want.Answering, want.LastUpdate = false, now
		if !cur.Advertised {
			want.Reason, want.Message = s.Reason, s.Message
		}
		klog.FromContext(ctx).V(2).Info("Reporting layer-2 answering stopped", "plan", klog.KObj(p))
		a.writePlanStatus(ctx, p, &want)
	}
}
