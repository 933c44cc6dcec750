package agent

import (
	"cmp"
	"hash/fnv"
	"net"
	"net/netip"
	"slices"

	v1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/openelb/cloud-provider-openelb/api/v1alpha2"
)

// l2Pool is one layer-2 pool with addresses in use: this node competes for
// its Lease when it can answer on the pool's interface.
type l2Pool struct {
	Name string
	// Interface is the Eip's spec.interface (a name or can_reach:<IP>).
	Interface string
	// EipUID owns the pool's Lease (so it goes with the Eip); empty when
	// the Eip is gone and the plans still name it.
	EipUID types.UID
	Addrs  []l2Addr // sorted by IP
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
	// Pools of its layer-2 addresses, in address order; the first one's
	// interface is the one whose MAC this node publishes in the plan.
	Pools []string
	// EndpointNodes have a ready endpoint of the Service (Local only).
	EndpointNodes []string
	// MACs the nodes published in the plan status, by node.
	MACs map[string]net.HardwareAddr
}

// endpointNodes lists the nodes with a ready endpoint of a Service.
type endpointNodes func(namespace, service string) []string

// layer2Desired computes, from the objects, the layer-2 pools this node may
// answer for and the plans they serve. A node without the speaker label,
// or excluded from load balancers, answers for nothing (nil, nil): with
// externalTrafficPolicy Cluster all of a pool's traffic enters through its
// answering node. It never mutates the objects.
func layer2Desired(node *v1.Node, eips []*v1alpha2.Eip, plans []*v1alpha2.LoadBalancerPlan, endpoints endpointNodes) (map[string]*l2Pool, []*l2Plan) {
	if node == nil || node.Labels[v1alpha2.LabelSpeaker] != v1alpha2.LabelSpeakerValue {
		return nil, nil
	}
	if _, excluded := node.Labels[v1.LabelNodeExcludeBalancers]; excluded {
		return nil, nil
	}
	byName := make(map[string]*v1alpha2.Eip, len(eips))
	for _, e := range eips {
		byName[e.Name] = e
	}
	pools := map[string]*l2Pool{}
	var out []*l2Plan
	for _, p := range plans {
		lp := &l2Plan{Key: p.Namespace + "/" + p.Name, Namespace: p.Namespace, Name: p.Name,
			Local: p.Spec.ExternalTrafficPolicy == string(v1.ServiceExternalTrafficPolicyLocal)}
		for _, a := range p.Spec.Addresses {
			if a.Protocol != v1alpha2.ProtocolLayer2 || a.Pool == "" {
				continue
			}
			ip, err := netip.ParseAddr(a.IP)
			if err != nil {
				continue
			}
			pool := pools[a.Pool]
			if pool == nil {
				pool = &l2Pool{Name: a.Pool, Interface: a.Interface}
				if e := byName[a.Pool]; e != nil {
					pool.EipUID = e.UID
					if e.Spec.Interface != "" {
						pool.Interface = e.Spec.Interface
					}
				}
				pools[a.Pool] = pool
			}
			pool.Addrs = append(pool.Addrs, l2Addr{IP: ip.Unmap(), Plan: lp})
			lp.Pools = append(lp.Pools, a.Pool)
		}
		if len(lp.Pools) == 0 {
			continue
		}
		if lp.Local && endpoints != nil {
			lp.EndpointNodes = endpoints(p.Namespace, p.Name)
		}
		for n, e := range p.Status.Nodes {
			if mac, err := net.ParseMAC(e.MAC); err == nil && len(mac) == 6 {
				if lp.MACs == nil {
					lp.MACs = map[string]net.HardwareAddr{}
				}
				lp.MACs[n] = mac
			}
		}
		out = append(out, lp)
	}
	for _, pool := range pools {
		slices.SortFunc(pool.Addrs, func(a, b l2Addr) int { return a.IP.Compare(b.IP) })
	}
	slices.SortFunc(out, func(a, b *l2Plan) int { return cmp.Compare(a.Key, b.Key) })
	return pools, out
}

// readyEndpointNodes lists, sorted, the nodes with a ready endpoint in the
// slices (a nil Ready condition means ready, as the API says consumers
// should assume).
func readyEndpointNodes(slices_ []discoveryv1.EndpointSlice) []string {
	var nodes []string
	for _, s := range slices_ {
		for _, e := range s.Endpoints {
			if e.NodeName == nil || *e.NodeName == "" || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			nodes = append(nodes, *e.NodeName)
		}
	}
	slices.Sort(nodes)
	return slices.Compact(nodes)
}

// answerMAC is the MAC the answering node gives for ip of plan, and the
// node it belongs to; nil when no node can take the traffic.
//
// With externalTrafficPolicy Cluster it is the answering node's own. With
// Local it is a node with a ready endpoint: the answering node itself when
// it has one (its own MAC needs no publication), else one of the endpoint
// nodes that published their MAC, chosen by rendezvous hashing of the IP,
// so Services spread over the endpoint nodes and an IP's choice changes
// only when its node stops qualifying.
func answerMAC(ip netip.Addr, plan *l2Plan, self string, selfMAC net.HardwareAddr) (net.HardwareAddr, string) {
	if !plan.Local || slices.Contains(plan.EndpointNodes, self) {
		return selfMAC, self
	}
	var best string
	var bestScore uint64
	for _, n := range plan.EndpointNodes {
		if plan.MACs[n] == nil {
			continue
		}
		h := fnv.New64a()
		_, _ = h.Write(ip.AsSlice())
		_, _ = h.Write([]byte(n))
		if s := h.Sum64(); best == "" || s > bestScore {
			best, bestScore = n, s
		}
	}
	if best == "" {
		return nil, ""
	}
	return plan.MACs[best], best
}
