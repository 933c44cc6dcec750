package agent

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
	"github.com/openelb/cloud-provider-openelb/nodeagent/spread"
)

// l2Pool is one layer-2 pool with addresses in use: this node competes for
// its Lease when it can answer on the pool's interface.
type l2Pool struct {
	// Name is the group's key: the Eip's name for the addresses answered
	// on the Eip's interfaces, <eip>@<interfaces> for those of Services
	// that choose theirs (v1alpha2.AnnotationLayer2Interface). Each group
	// has its own candidates (the nodes that can answer on its
	// interfaces) and so its own owners.
	Name string
	// Eip is the pool's name.
	Eip string
	// Interfaces are tried in order (names, patterns, can_reach:<IP>).
	Interfaces []string
	// Override: the Services of this group chose their interfaces; the
	// other nodes' MACs (published for the Eip's interfaces) do not apply.
	Override bool
	// EipUID owns the pool's Lease (so it goes with the Eip); empty when
	// the Eip is gone and the plans still name it.
	EipUID types.UID
	Addrs  []l2Addr // sorted by IP
	// Local: some of its addresses are of externalTrafficPolicy Local
	// plans, which the answering node may answer with another node's MAC.
	Local bool
	// NotSelected says why the Eip's spec.layer2.nodeSelector leaves this
	// node out (empty: it may answer).
	NotSelected string
	// Preferred: this node matches the Eip's
	// spec.layer2.preferredNodeSelector; while any preferred node is a
	// candidate, only preferred nodes answer.
	Preferred bool
}

// l2Addr is one address of a pool and the plan it belongs to.
type l2Addr struct {
	IP   netip.Addr
	Plan *l2Plan
}

// l2Plan is a plan with layer-2 addresses, as the answering node needs it.
type l2Plan struct {
	Key       string // namespace/name
	Namespace string
	Name      string
	Local     bool // externalTrafficPolicy Local
	// EndpointNodes have a ready endpoint of the Service (Local only),
	// from the plan's spec.
	EndpointNodes []string
}

// poolMACs are the MACs the nodes publish in their LoadBalancerSpeaker for
// each layer-2 pool: by pool, then node.
type poolMACs map[string]map[string]net.HardwareAddr

// layer2Desired computes, from the objects, the layer-2 pools this node may
// answer for, each address with the plan it serves. A node without the
// speaker label, or excluded from load balancers, answers for nothing: with
// externalTrafficPolicy Cluster all of a pool's traffic enters through its
// answering node. It never mutates the objects.
func layer2Desired(node *v1.Node, eips []*v1alpha2.Eip, plans []*v1alpha2.LoadBalancerPlan) map[string]*l2Pool {
	if node == nil || node.Labels[v1alpha2.LabelSpeaker] != v1alpha2.LabelSpeakerValue {
		return nil
	}
	if _, excluded := node.Labels[v1.LabelNodeExcludeBalancers]; excluded {
		return nil
	}
	byName := make(map[string]*v1alpha2.Eip, len(eips))
	for _, e := range eips {
		byName[e.Name] = e
	}
	pools := map[string]*l2Pool{}
	for _, p := range plans {
		if !hasLayer2(p) {
			continue
		}
		lp := &l2Plan{Key: p.Namespace + "/" + p.Name, Namespace: p.Namespace, Name: p.Name,
			Local: p.Spec.ExternalTrafficPolicy == string(v1.ServiceExternalTrafficPolicyLocal)}
		if lp.Local {
			lp.EndpointNodes = p.Spec.EndpointNodes
		}
		for _, a := range p.Spec.Addresses {
			if a.Protocol != v1alpha2.ProtocolLayer2 || a.Pool == "" {
				continue
			}
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				continue
			}
			e := byName[a.Pool]
			key, ifaces, override := l2Group(a, e)
			pool := pools[key]
			if pool == nil {
				pool = &l2Pool{Name: key, Eip: a.Pool, Interfaces: ifaces, Override: override}
				if e != nil {
					pool.EipUID = e.UID
					pool.NotSelected = notSelected(node, e)
					pool.Preferred = preferred(node, e)
				}
				pools[key] = pool
			}
			pool.Addrs = append(pool.Addrs, l2Addr{IP: ip.Unmap(), Plan: lp})
			pool.Local = pool.Local || lp.Local
		}
	}
	for _, pool := range pools {
		slices.SortFunc(pool.Addrs, func(a, b l2Addr) int { return a.IP.Compare(b.IP) })
	}
	return pools
}

// l2Group is the group of a plan address (see l2Pool.Name): the plan
// carries the interfaces the CCM chose for it (the Service's annotation,
// else the Eip's); when those are the Eip's own, or the plan names none,
// the Eip's group.
func l2Group(a v1alpha2.PlanAddress, e *v1alpha2.Eip) (key string, ifaces []string, override bool) {
	var own []string
	if e != nil {
		own = e.Layer2Interfaces()
	}
	if a.Interface == "" || (e != nil && a.Interface == strings.Join(own, ",")) {
		if e == nil {
			return a.Pool, nil, false
		}
		return a.Pool, own, false
	}
	list := strings.Split(a.Interface, ",")
	if e == nil {
		// The Eip is gone and the plan still names it: its interfaces
		// are what the plan says.
		return a.Pool, list, false
	}
	return a.Pool + "@" + a.Interface, list, true
}

// notSelected says why e's spec.layer2.nodeSelector leaves node out, or
// "" when it may answer. An invalid selector selects no node (the CCM
// reports it on the Eip).
func notSelected(node *v1.Node, e *v1alpha2.Eip) string {
	if e.Spec.Layer2 == nil || e.Spec.Layer2.NodeSelector == nil {
		return ""
	}
	sel, err := metav1.LabelSelectorAsSelector(e.Spec.Layer2.NodeSelector)
	if err != nil {
		return fmt.Sprintf("spec.layer2.nodeSelector of Eip %s is invalid (%v): no node answers for it", e.Name, err)
	}
	if !sel.Matches(labels.Set(node.Labels)) {
		return fmt.Sprintf("this node's labels do not match spec.layer2.nodeSelector (%s) of Eip %s", sel, e.Name)
	}
	return ""
}

// preferred says whether node matches e's
// spec.layer2.preferredNodeSelector (false when unset or invalid).
func preferred(node *v1.Node, e *v1alpha2.Eip) bool {
	if e.Spec.Layer2 == nil || e.Spec.Layer2.PreferredNodeSelector == nil {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(e.Spec.Layer2.PreferredNodeSelector)
	return err == nil && sel.Matches(labels.Set(node.Labels))
}

// hasLayer2 says whether a plan has layer-2 addresses.
func hasLayer2(p *v1alpha2.LoadBalancerPlan) bool {
	return p != nil && slices.ContainsFunc(p.Spec.Addresses, func(a v1alpha2.PlanAddress) bool { return a.Protocol == v1alpha2.ProtocolLayer2 })
}

// hasLocalLayer2 says whether a plan is an externalTrafficPolicy Local
// one with layer-2 addresses: only those need the other nodes' MACs.
func hasLocalLayer2(p *v1alpha2.LoadBalancerPlan) bool {
	return hasLayer2(p) && p.Spec.ExternalTrafficPolicy == string(v1.ServiceExternalTrafficPolicyLocal)
}

// speakerMACs collects the MACs the nodes publish for the pools in
// LoadBalancerSpeaker status.layer2 (entries that do not parse as an
// Ethernet MAC are ignored).
func speakerMACs(speakers []*v1alpha2.LoadBalancerSpeaker, pools map[string]*l2Pool) poolMACs {
	out := poolMACs{}
	for _, s := range speakers {
		for _, l := range s.Status.Layer2 {
			p := pools[l.Pool]
			if p == nil || !p.Local {
				continue
			}
			mac, err := net.ParseMAC(l.MAC)
			if err != nil || len(mac) != 6 {
				continue
			}
			if out[l.Pool] == nil {
				out[l.Pool] = map[string]net.HardwareAddr{}
			}
			out[l.Pool][s.Name] = mac
		}
	}
	return out
}

// answerMAC is the MAC the answering node gives for ip of plan, and the
// node it belongs to; nil when no node can take the traffic. macs are those
// the nodes publish for ip's pool.
//
// With externalTrafficPolicy Cluster it is the answering node's own. With
// Local it is a node with a ready endpoint: the answering node itself when
// it has one (its own MAC needs no publication), else one of the endpoint
// nodes that published their MAC for the pool, chosen by rendezvous hashing
// of the IP (spread.Owner),
// so Services spread over the endpoint nodes and an IP's choice changes
// only when its node stops qualifying.
func answerMAC(ip netip.Addr, plan *l2Plan, macs map[string]net.HardwareAddr, self string, selfMAC net.HardwareAddr) (net.HardwareAddr, string) {
	if !plan.Local || slices.Contains(plan.EndpointNodes, self) {
		return selfMAC, self
	}
	var published []string
	for _, n := range plan.EndpointNodes {
		if macs[n] != nil {
			published = append(published, n)
		}
	}
	best := spread.Owner("", ip, published, nil)
	if best == "" {
		return nil, ""
	}
	return macs[best], best
}
